#ifndef GEN_CSYSTEM_SHIM_H
#define GEN_CSYSTEM_SHIM_H
// What gen needs from the C system headers beyond Glibc's Swift module:
// glibc's heap statistics (mallinfo2) and allocation trace (mtrace), for proving that a
// training step allocates nothing,
// the CPU's spin-wait hint, for the thread pool, a prefetch hint, for kernels that stream
// weights faster than the hardware prefetchers fetch them, a vector square root, and the
// counter-based draws of dropout masks.
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
// Dropout mask entries first..<first+n of the stream `key`: entry i is 0 when the top 24 bits
// of SplitMix64's output for i (state key + (i+1)·γ) fall below `threshold` (p·2^24 rounded
// up), else `keep` (1/(1-p)). Each entry depends on (key, i) alone, so any split of a mask over
// threads draws the same values; a plain loop, which the compiler vectorizes.
static inline void gen_dropout_mask(float *mask, long n, unsigned long long key, unsigned long long first,
                                    unsigned int threshold, float keep) {
    for (long j = 0; j < n; j++) {
        unsigned long long z = key + (first + (unsigned long long)j + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        mask[j] = (unsigned int)(z >> 40) < threshold ? 0.0f : keep;
    }
}
#endif
