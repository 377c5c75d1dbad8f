#ifndef GEN_CSYSTEM_SHIM_H
#define GEN_CSYSTEM_SHIM_H
// What gen needs from the C system headers beyond Glibc's Swift module:
// glibc's heap statistics (mallinfo2) and allocation trace (mtrace), for proving that a
// training step allocates nothing,
// the CPU's spin-wait hint, for the thread pool, and a prefetch hint, for kernels that stream
// weights faster than the hardware prefetchers fetch them.
#include <malloc.h>
// mtrace/muntrace log every malloc and free (with libc_malloc_debug.so preloaded).
#include <mcheck.h>

static inline void gen_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void gen_prefetch(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

// For data read once and not again soon: kept out of the outer caches where the CPU allows.
static inline void gen_prefetch_once(const void *p) {
    __builtin_prefetch(p, 0, 0);
}
#endif
