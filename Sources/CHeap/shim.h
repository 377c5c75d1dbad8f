#ifndef GEN_CHEAP_SHIM_H
#define GEN_CHEAP_SHIM_H
// glibc's heap statistics (mallinfo2), for the tests that prove a training step allocates nothing.
#include <malloc.h>
#endif
