#ifndef GEN_COPENBLAS_SHIM_H
#define GEN_COPENBLAS_SHIM_H
// OpenBLAS's CBLAS interface and its runtime controls (openblas_get_corename,
// openblas_set_num_threads), from Debian's libopenblas-dev.
#include <cblas.h>
#endif
