#ifndef GEN_CSYSTEM_SHIM_H
#define GEN_CSYSTEM_SHIM_H
// What gen needs from the C system headers beyond Glibc's Swift module:
// glibc's heap statistics (mallinfo2) and allocation trace (mtrace), for proving that a
// training step allocates nothing,
// the CPU's spin-wait hint, for the thread pool, a prefetch hint, for kernels that stream
// weights faster than the hardware prefetchers fetch them, and a vector square root.
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

// Sixteen square roots in one vector instruction (Swift's SIMD16<Float>.squareRoot() takes
// them one lane at a time). Imported into Swift as SIMD16<Float>.
typedef float gen_float16 __attribute__((ext_vector_type(16)));
static inline gen_float16 gen_sqrt16(gen_float16 x) {
    return __builtin_elementwise_sqrt(x);
}
#endif
