#ifndef GEN_COPENBLAS_SHIM_H
#define GEN_COPENBLAS_SHIM_H
// OpenBLAS's CBLAS types (the order and transpose flags), from Debian's libopenblas-dev. The
// library itself is not linked: gen loads it when a matrix product first needs it (BLAS.swift),
// and calls cblas_sgemm, openblas_get_corename and openblas_set_num_threads through dlsym.
#include <cblas.h>
#include <dlfcn.h>
#endif
