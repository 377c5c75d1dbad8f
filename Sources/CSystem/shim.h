#ifndef GEN_CSYSTEM_SHIM_H
#define GEN_CSYSTEM_SHIM_H
// What gen needs from the C system headers beyond Glibc's Swift module:
// glibc's heap statistics (mallinfo2) and allocation trace (mtrace), for proving that a
// training step allocates nothing,
// the CPU's spin-wait hint, for the thread pool, a prefetch hint, for kernels that stream
// weights faster than the hardware prefetchers fetch them, a vector square root, the
// counter-based draws of dropout masks, the rounding and packing of 8-bit weights, the
// integer products of the output layer's 8-bit screen, masked moves of a vector's first
// lanes (for the tails of rows), and the runs of memory the kernel maps in huge pages (for
// reading a model's weights where its file maps them).
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

// A fetch of p's line ahead of its use: into every cache level (temporal), or marked as read
// once and not again soon, kept out of the outer caches where the CPU allows (not temporal).
static inline void gen_prefetch(const void *p, int temporal) {
    if (temporal) __builtin_prefetch(p, 0, 3); else __builtin_prefetch(p, 0, 0);
}

// Whether the CPU is Intel's (cpuid's vendor "GenuineIntel"): kernels whose best prefetch hint
// differs between vendors ask.
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static inline int gen_cpu_is_intel(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    return b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;
}
#else
static inline int gen_cpu_is_intel(void) { return 0; }
#endif

// Sixteen square roots in one vector instruction (Swift's SIMD16<Float>.squareRoot() takes
// them one lane at a time). Imported into Swift as SIMD16<Float>.
typedef float gen_float16 __attribute__((ext_vector_type(16)));
static inline gen_float16 gen_sqrt16(gen_float16 x) {
    return __builtin_elementwise_sqrt(x);
}
// Rounding to the nearest integer, halves away from zero (Swift's Float.rounded()), sixteen
// lanes in vector instructions.
static inline gen_float16 gen_round16(gen_float16 x) {
    return __builtin_elementwise_round(x);
}
// Whole numbers in -128…127 as q + 128 in 32-bit lanes; four vectors of them as bytes in the
// lanes of one: lane i holds v0[i], v1[i], v2[i] and v3[i] from its lowest byte up.
typedef unsigned int gen_uint16 __attribute__((ext_vector_type(16)));
static inline gen_uint16 gen_bytes16(gen_float16 v) {
    return __builtin_convertvector(v + 128.0f, gen_uint16);
}
static inline gen_uint16 gen_pack_bytes16(gen_float16 v0, gen_float16 v1, gen_float16 v2, gen_float16 v3) {
    return gen_bytes16(v0) | (gen_bytes16(v1) << 8) | (gen_bytes16(v2) << 16) | (gen_bytes16(v3) << 24);
}
// Σ|v| over four vectors of whole numbers (rounded weights, |v| ≤ 127), as a float: exact.
static inline float gen_absolute_sum64(gen_float16 v0, gen_float16 v1, gen_float16 v2, gen_float16 v3) {
    gen_float16 a = __builtin_elementwise_abs(v0) + __builtin_elementwise_abs(v1)
                  + __builtin_elementwise_abs(v2) + __builtin_elementwise_abs(v3);
    return (float)__builtin_reduce_add(__builtin_convertvector(a, gen_uint16));
}
// Dropout's counter-based draws: entry i of the stream `key` is the top 24 bits of SplitMix64's
// output for state key + (i+1)·γ; an entry is dropped when its draw is below `threshold` (p·2^24
// rounded up) and kept scaled by `keep` (1/(1-p)) otherwise. Each entry depends on (key, i)
// alone, so any split over threads, and a backward pass that draws again, see the same values.
// Plain loops, which the compiler vectorizes.
static inline unsigned int gen_dropout_draw(unsigned long long key, unsigned long long i) {
    unsigned long long z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (unsigned int)(z >> 40);
}

// y[j] = x[j] · (0 or keep) for entries first..<first+n: the mask applied without storing it
// (y may be x).
static inline void gen_dropout_scale(float *y, const float *x, long n, unsigned long long key,
                                     unsigned long long first, unsigned int threshold, float keep) {
    for (long j = 0; j < n; j++)
        y[j] = x[j] * (gen_dropout_draw(key, first + (unsigned long long)j) < threshold ? 0.0f : keep);
}

// The 8-bit screen of an output row: Σ over blocks b of sw[b]·sx[b]·Σ w[k]·x[k], w holding
// q + 128 (unsigned), x signed, both laid out alike and `bytes` long (a multiple of 32), one
// block per 64 bytes (the last may be 32). The products are exact integers; with AVX-512 VNNI
// one instruction takes 64 of them; with AVX2, gen_screen_dot32 takes 32.
typedef int gen_int32x16 __attribute__((vector_size(64)));
typedef int gen_int32x8 __attribute__((vector_size(32)));
typedef float gen_f32x16 __attribute__((vector_size(64)));
typedef float gen_f32x8 __attribute__((vector_size(32)));
typedef short gen_i16x16 __attribute__((vector_size(32)));
typedef char gen_c8x32 __attribute__((vector_size(32)));
#if defined(__AVX2__) && !(defined(__AVX512VNNI__) && defined(__AVX512VL__))
// What x's 32 bytes give every row without VNNI: |x|, and 128·Σx over each lane's 4 bytes.
typedef struct { gen_c8x32 x, ax; gen_int32x8 x128; } gen_screen_x32;
static inline gen_screen_x32 gen_screen_x(const signed char *x) {
    gen_screen_x32 r;
    __builtin_memcpy(&r.x, x, 32);
    r.ax = __builtin_ia32_psignb256(r.x, r.x);
    gen_i16x16 pairs = __builtin_ia32_pmaddubsw256((gen_c8x32){0} + 1, r.x), ones = (gen_i16x16){0} + 1;
    r.x128 = __builtin_ia32_pmaddwd256(pairs, ones) * 128;
    return r;
}
// Σ w·x over each lane's 4 bytes of 32 (vpdpbusd's lanes), exact, with AVX2 alone (llama.cpp's
// way for its 8-bit dot products): q = w − 128 (|q| ≤ 127, as `Int8Blocks` rounds) takes x's
// sign, so that vpmaddubsw multiplies |x| (unsigned) by q·sign(x) (signed) and its pairs stay
// within 16 bits (2·127·127 < 2¹⁵); vpmaddwd sums the pairs, and 128·Σx restores w = q + 128.
static inline gen_int32x8 gen_screen_dot32(const unsigned char *w, gen_screen_x32 x) {
    gen_c8x32 wv;
    __builtin_memcpy(&wv, w, 32);
    gen_c8x32 q = wv ^ (char)0x80;
    gen_i16x16 pairs = __builtin_ia32_pmaddubsw256(x.ax, __builtin_ia32_psignb256(q, x.x)), ones = (gen_i16x16){0} + 1;
    return __builtin_ia32_pmaddwd256(pairs, ones) + x.x128;
}
#endif
#if defined(__AVX2__) && !(defined(__AVX512VNNI__) && defined(__AVX512VL__))
// One row without VNNI, 32 bytes at a time (gen_screen_dot32), x's chunks prepared (xs[k/32]).
static inline float gen_screen_row_avx2(const unsigned char *w, const gen_screen_x32 *xs, const float *sw,
                                        const float *sx, long bytes) {
    gen_f32x8 acc = {0};
    for (long k = 0, b = 0; k < bytes; k += 64, b++) {
        gen_int32x8 d = gen_screen_dot32(w + k, xs[k / 32]);
        if (k + 64 <= bytes) d += gen_screen_dot32(w + k + 32, xs[k / 32 + 1]);
        acc += __builtin_convertvector(d, gen_f32x8) * (sw[b] * sx[b]);
    }
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}
#endif
// One row with VNNI, or one value at a time without AVX2.
static inline float gen_screen_row(const unsigned char *w, const signed char *x, const float *sw,
                                   const float *sx, long bytes) {
    float r = 0;
    long k = 0, b = 0;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    gen_f32x16 acc = {0};
    for (; k + 64 <= bytes; k += 64, b++) {
        gen_int32x16 wv, xv, zero = {0};
        __builtin_memcpy(&wv, w + k, 64);
        __builtin_memcpy(&xv, x + k, 64);
        gen_int32x16 d = __builtin_ia32_vpdpbusd512(zero, wv, xv);
        acc += __builtin_convertvector(d, gen_f32x16) * (sw[b] * sx[b]);
    }
    for (int i = 0; i < 16; i++) r += acc[i];
    if (k < bytes) {
        gen_int32x8 wv, xv, zero = {0};
        __builtin_memcpy(&wv, w + k, 32);
        __builtin_memcpy(&xv, x + k, 32);
        gen_int32x8 d = __builtin_ia32_vpdpbusd256(zero, wv, xv);
        int t = 0;
        for (int i = 0; i < 8; i++) t += d[i];
        r += (float)t * (sw[b] * sx[b]);
    }
#else
    for (; k < bytes; k += 64, b++) {
        int t = 0;
        for (long i = k; i < k + 64 && i < bytes; i++) t += (int)w[i] * (int)x[i];
        r += (float)t * (sw[b] * sx[b]);
    }
#endif
    return r;
}

// Row n's estimate from its products' sum r, and its bound (the sums over blocks below).
static inline void gen_screen_finish(float r, const float *sw, const float *as, const float *xterm, const float *qterm,
                                     const float *off, long nb, long n, float *y, float *bound) {
    const float *swr = sw + n * nb, *asr = as + n * nb;
    float e = 0, o = 0;
    for (long b = 0; b < nb; b++) {
        e += swr[b] * (xterm[b] + qterm[b] * asr[b]);
        o += swr[b] * off[b];
    }
    y[n] = r - o;
    bound[n] = e;
}

// Rows n..n+3 finished from their lanes [h0 h1 h2 h3]: the lane sums by pairs, then
// quadruples, then the two halves.
static inline void gen_screen_finish4(gen_f32x8 h0, gen_f32x8 h1, gen_f32x8 h2, gen_f32x8 h3, const float *sw,
                                      const float *as, const float *xterm, const float *qterm, const float *off,
                                      long nb, long n, float *y, float *bound) {
    gen_f32x8 p01 = __builtin_shufflevector(h0, h1, 0, 8, 2, 10, 4, 12, 6, 14) + __builtin_shufflevector(h0, h1, 1, 9, 3, 11, 5, 13, 7, 15);
    gen_f32x8 p23 = __builtin_shufflevector(h2, h3, 0, 8, 2, 10, 4, 12, 6, 14) + __builtin_shufflevector(h2, h3, 1, 9, 3, 11, 5, 13, 7, 15);
    gen_f32x8 q = __builtin_shufflevector(p01, p23, 0, 1, 8, 9, 4, 5, 12, 13) + __builtin_shufflevector(p01, p23, 2, 3, 10, 11, 6, 7, 14, 15);
    float r[4] = {q[0] + q[4], q[1] + q[5], q[2] + q[6], q[3] + q[7]};
    for (int i = 0; i < 4; i++) gen_screen_finish(r[i], sw, as, xterm, qterm, off, nb, n + i, y, bound);
}

// Rows n0..<n1 of the screen, each an estimate and its bound:
//   y[n]     = Σ_b sw[n,b]·(sx[b]·Σ w·x over block b − off[b])
//   bound[n] = Σ_b sw[n,b]·(xterm[b] + qterm[b]·as[n,b])
// w: rows of `bytes` bytes as gen_screen_row reads them; sw, as: (rows, nb) floats (the rows'
// scales and Σ|q| per block); x, sx, xterm, qterm, off: the input's bytes and per-block terms;
// prefetch: fetch the rows two groups of four ahead (the faster on Intel's and AMD's CPUs;
// without VNNI, rows go four at a time only then).
#define GEN_SCREEN_CHUNKS 256
static inline void gen_screen_rows(const unsigned char *w, const signed char *x, const float *sw, const float *as,
                                   const float *sx, const float *xterm, const float *qterm, const float *off,
                                   long nb, long bytes, long n0, long n1, float *y, float *bound, int prefetch) {
    long n = n0;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    // Four rows at a time: x's block loaded once for the four, and their lane sums in one
    // transposing reduction (a row's 16 lanes summed one after another were a chain of 16
    // dependent adds per row).
    for (; n + 4 <= n1; n += 4) {
        const unsigned char *w0 = w + n * bytes, *w1 = w0 + bytes, *w2 = w1 + bytes, *w3 = w2 + bytes;
        const float *s0 = sw + n * nb, *s1 = s0 + nb, *s2 = s1 + nb, *s3 = s2 + nb;
        gen_f32x16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        long k = 0, b = 0;
        const char *ahead = (const char *)(w0 + 8 * bytes);
        for (; k + 64 <= bytes; k += 64, b++) {
            if (prefetch) {
                gen_prefetch(ahead + 4 * k, 1); gen_prefetch(ahead + 4 * k + 64, 1);
                gen_prefetch(ahead + 4 * k + 128, 1); gen_prefetch(ahead + 4 * k + 192, 1);
            }
            gen_int32x16 xv, v0, v1, v2, v3, zero = {0};
            __builtin_memcpy(&xv, x + k, 64);
            __builtin_memcpy(&v0, w0 + k, 64); __builtin_memcpy(&v1, w1 + k, 64);
            __builtin_memcpy(&v2, w2 + k, 64); __builtin_memcpy(&v3, w3 + k, 64);
            a0 += __builtin_convertvector(__builtin_ia32_vpdpbusd512(zero, v0, xv), gen_f32x16) * (s0[b] * sx[b]);
            a1 += __builtin_convertvector(__builtin_ia32_vpdpbusd512(zero, v1, xv), gen_f32x16) * (s1[b] * sx[b]);
            a2 += __builtin_convertvector(__builtin_ia32_vpdpbusd512(zero, v2, xv), gen_f32x16) * (s2[b] * sx[b]);
            a3 += __builtin_convertvector(__builtin_ia32_vpdpbusd512(zero, v3, xv), gen_f32x16) * (s3[b] * sx[b]);
        }
        gen_f32x8 h0 = __builtin_shufflevector(a0, a0, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(a0, a0, 8, 9, 10, 11, 12, 13, 14, 15);
        gen_f32x8 h1 = __builtin_shufflevector(a1, a1, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(a1, a1, 8, 9, 10, 11, 12, 13, 14, 15);
        gen_f32x8 h2 = __builtin_shufflevector(a2, a2, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(a2, a2, 8, 9, 10, 11, 12, 13, 14, 15);
        gen_f32x8 h3 = __builtin_shufflevector(a3, a3, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(a3, a3, 8, 9, 10, 11, 12, 13, 14, 15);
        if (k < bytes) {   // 32 values after the whole blocks
            if (prefetch) { gen_prefetch(ahead + 4 * k, 1); gen_prefetch(ahead + 4 * k + 64, 1); }
            gen_int32x8 xv, v0, v1, v2, v3, zero = {0};
            __builtin_memcpy(&xv, x + k, 32);
            __builtin_memcpy(&v0, w0 + k, 32); __builtin_memcpy(&v1, w1 + k, 32);
            __builtin_memcpy(&v2, w2 + k, 32); __builtin_memcpy(&v3, w3 + k, 32);
            h0 += __builtin_convertvector(__builtin_ia32_vpdpbusd256(zero, v0, xv), gen_f32x8) * (s0[b] * sx[b]);
            h1 += __builtin_convertvector(__builtin_ia32_vpdpbusd256(zero, v1, xv), gen_f32x8) * (s1[b] * sx[b]);
            h2 += __builtin_convertvector(__builtin_ia32_vpdpbusd256(zero, v2, xv), gen_f32x8) * (s2[b] * sx[b]);
            h3 += __builtin_convertvector(__builtin_ia32_vpdpbusd256(zero, v3, xv), gen_f32x8) * (s3[b] * sx[b]);
        }
        gen_screen_finish4(h0, h1, h2, h3, sw, as, xterm, qterm, off, nb, n, y, bound);
    }
#elif defined(__AVX2__)
    // x's chunks on the stack, for rows of up to GEN_SCREEN_CHUNKS · 32 values (24 KB): wider
    // rows (no output layer gen screens) take one value at a time below.
    if (bytes / 32 <= GEN_SCREEN_CHUNKS) {
        // x's 32-byte chunks prepared once for every row (gen_screen_dot32). With prefetch, four
        // rows at a time and the rows two groups ahead fetched, as with VNNI; without, one row
        // after another, a single stream.
        gen_screen_x32 xs[bytes / 32];
        for (long c = 0; c < bytes / 32; c++) xs[c] = gen_screen_x(x + 32 * c);
        for (; prefetch && n + 4 <= n1; n += 4) {
            const unsigned char *w0 = w + n * bytes, *w1 = w0 + bytes, *w2 = w1 + bytes, *w3 = w2 + bytes;
            const float *s0 = sw + n * nb, *s1 = s0 + nb, *s2 = s1 + nb, *s3 = s2 + nb;
            const char *ahead = (const char *)(w0 + 8 * bytes);
            gen_f32x8 h0 = {0}, h1 = {0}, h2 = {0}, h3 = {0};
            for (long k = 0, b = 0; k < bytes; k += 64, b++) {
                gen_prefetch(ahead + 4 * k, 1); gen_prefetch(ahead + 4 * k + 64, 1);
                if (k + 64 <= bytes) { gen_prefetch(ahead + 4 * k + 128, 1); gen_prefetch(ahead + 4 * k + 192, 1); }
                gen_screen_x32 xa = xs[k / 32];
                gen_int32x8 d0 = gen_screen_dot32(w0 + k, xa), d1 = gen_screen_dot32(w1 + k, xa);
                gen_int32x8 d2 = gen_screen_dot32(w2 + k, xa), d3 = gen_screen_dot32(w3 + k, xa);
                if (k + 64 <= bytes) {
                    gen_screen_x32 xb = xs[k / 32 + 1];
                    d0 += gen_screen_dot32(w0 + k + 32, xb); d1 += gen_screen_dot32(w1 + k + 32, xb);
                    d2 += gen_screen_dot32(w2 + k + 32, xb); d3 += gen_screen_dot32(w3 + k + 32, xb);
                }
                h0 += __builtin_convertvector(d0, gen_f32x8) * (s0[b] * sx[b]);
                h1 += __builtin_convertvector(d1, gen_f32x8) * (s1[b] * sx[b]);
                h2 += __builtin_convertvector(d2, gen_f32x8) * (s2[b] * sx[b]);
                h3 += __builtin_convertvector(d3, gen_f32x8) * (s3[b] * sx[b]);
            }
            gen_screen_finish4(h0, h1, h2, h3, sw, as, xterm, qterm, off, nb, n, y, bound);
        }
        for (; n < n1; n++) gen_screen_finish(gen_screen_row_avx2(w + n * bytes, xs, sw + n * nb, sx, bytes), sw, as, xterm, qterm, off, nb, n, y, bound);
        return;
    }
#endif
    for (; n < n1; n++) gen_screen_finish(gen_screen_row(w + n * bytes, x, sw + n * nb, sx, bytes), sw, as, xterm, qterm, off, nb, n, y, bound);
}

// Whether the build's vector unit has 512-bit registers (a Float32x16 is then one register).
#if defined(__AVX512F__)
#define GEN_VECTORS_512 1
#else
#define GEN_VECTORS_512 0
#endif

// The first n (1 ≤ n ≤ 16) floats at p in the low lanes of a vector and `fill` in the others,
// and v's first n lanes to p: nothing past p[n-1] is read or written (masked moves with
// 512-bit vectors, two of AVX's 8-lane ones with AVX2, lane by lane without).
#if !defined(__AVX512F__) && defined(__AVX__)
// AVX's masked moves (vmaskmovps) take 8 lanes: lanes i of the two halves where i < n and
// i + 8 < n. Masked-out lanes are neither read nor written (and do not fault).
static inline gen_int32x8 gen_first8_mask(long n) {
    const gen_int32x8 lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    return lanes < (gen_int32x8){0} + (int)n;
}
#endif
static inline gen_float16 gen_load_first16(const float *p, long n, float fill) {
#if defined(__AVX512F__)
    return __builtin_ia32_loadups512_mask(p, (gen_float16)(fill), (unsigned short)((1u << n) - 1));
#elif defined(__AVX__)
    gen_int32x8 m0 = gen_first8_mask(n), m1 = gen_first8_mask(n - 8);
    gen_f32x8 f = (gen_f32x8){0} + fill;
    gen_f32x8 lo = __builtin_ia32_maskloadps256((const gen_f32x8 *)p, m0);
    gen_f32x8 hi = n > 8 ? __builtin_ia32_maskloadps256((const gen_f32x8 *)(p + 8), m1) : f;
    lo = __builtin_ia32_blendvps256(f, lo, (gen_f32x8)m0);
    hi = __builtin_ia32_blendvps256(f, hi, (gen_f32x8)m1);
    return (gen_float16)__builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
    gen_float16 v = fill;
    for (long i = 0; i < n; i++) v[i] = p[i];
    return v;
#endif
}
static inline void gen_store_first16(float *p, gen_float16 v, long n) {
#if defined(__AVX512F__)
    __builtin_ia32_storeups512_mask(p, v, (unsigned short)((1u << n) - 1));
#elif defined(__AVX__)
    gen_f32x8 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    gen_f32x8 hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    __builtin_ia32_maskstoreps256((gen_f32x8 *)p, gen_first8_mask(n), lo);
    if (n > 8) __builtin_ia32_maskstoreps256((gen_f32x8 *)(p + 8), gen_first8_mask(n - 8), hi);
#else
    for (long i = 0; i < n; i++) p[i] = v[i];
#endif
}

// A band of 16 source rows transposed: dst[n*ldd + i] = src[i*lds + n] for i in 0..<16 and n in
// 0..<n1 (a multiple of 16), each destination row getting its 16 values as one 64-byte run.
// With 512-bit vectors by 16x16 tiles in registers: four perfect unshuffles, each rotating an
// element's 8-bit address (row, column) right by one bit, so that four swap row and column.
// Without, by 8x8 tiles (unpack, shuffle, swap 128-bit halves).
#if defined(__AVX512F__)
static inline void gen_transpose_band16(const float *src, long lds, float *dst, long ldd, long n1) {
    for (long n0 = 0; n0 < n1; n0 += 16) {
        gen_f32x16 a[16], b[16];
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; i++) __builtin_memcpy(&a[i], src + i * lds + n0, 64);
#pragma clang loop unroll(full)
        for (int round = 0; round < 2; round++) {
#pragma clang loop unroll(full)
            for (int i = 0; i < 8; i++) {
                b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                b[i + 8] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            }
#pragma clang loop unroll(full)
            for (int i = 0; i < 8; i++) {
                a[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                a[i + 8] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            }
        }
#pragma clang loop unroll(full)
        for (int j = 0; j < 16; j++) __builtin_memcpy(dst + (n0 + j) * ldd, &a[j], 64);
    }
}
#else
static inline void gen_transpose_band16(const float *src, long lds, float *dst, long ldd, long n1) {
    for (long n0 = 0; n0 < n1; n0 += 8) {
        for (int h = 0; h < 16; h += 8) {
            gen_f32x8 r0, r1, r2, r3, r4, r5, r6, r7;
            const float *s = src + h * lds + n0;
            __builtin_memcpy(&r0, s, 32); __builtin_memcpy(&r1, s + lds, 32);
            __builtin_memcpy(&r2, s + 2 * lds, 32); __builtin_memcpy(&r3, s + 3 * lds, 32);
            __builtin_memcpy(&r4, s + 4 * lds, 32); __builtin_memcpy(&r5, s + 5 * lds, 32);
            __builtin_memcpy(&r6, s + 6 * lds, 32); __builtin_memcpy(&r7, s + 7 * lds, 32);
            gen_f32x8 t0 = __builtin_shufflevector(r0, r1, 0, 8, 1, 9, 4, 12, 5, 13);
            gen_f32x8 t1 = __builtin_shufflevector(r0, r1, 2, 10, 3, 11, 6, 14, 7, 15);
            gen_f32x8 t2 = __builtin_shufflevector(r2, r3, 0, 8, 1, 9, 4, 12, 5, 13);
            gen_f32x8 t3 = __builtin_shufflevector(r2, r3, 2, 10, 3, 11, 6, 14, 7, 15);
            gen_f32x8 t4 = __builtin_shufflevector(r4, r5, 0, 8, 1, 9, 4, 12, 5, 13);
            gen_f32x8 t5 = __builtin_shufflevector(r4, r5, 2, 10, 3, 11, 6, 14, 7, 15);
            gen_f32x8 t6 = __builtin_shufflevector(r6, r7, 0, 8, 1, 9, 4, 12, 5, 13);
            gen_f32x8 t7 = __builtin_shufflevector(r6, r7, 2, 10, 3, 11, 6, 14, 7, 15);
            gen_f32x8 u0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
            gen_f32x8 u1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
            gen_f32x8 u2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
            gen_f32x8 u3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
            gen_f32x8 u4 = __builtin_shufflevector(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
            gen_f32x8 u5 = __builtin_shufflevector(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
            gen_f32x8 u6 = __builtin_shufflevector(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
            gen_f32x8 u7 = __builtin_shufflevector(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
            gen_f32x8 o[8] = {
                __builtin_shufflevector(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11),
                __builtin_shufflevector(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11),
                __builtin_shufflevector(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11),
                __builtin_shufflevector(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11),
                __builtin_shufflevector(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15),
                __builtin_shufflevector(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15),
                __builtin_shufflevector(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15),
                __builtin_shufflevector(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15),
            };
            for (int j = 0; j < 8; j++) __builtin_memcpy(dst + (n0 + j) * ldd + h, &o[j], 32);
        }
    }
}
#endif

// gen's own matrix product for the training step's projections, with 512-bit vectors or with
// AVX2 and FMA: C (M,N) = alpha · op(A) (M,K) · op(B) (K,N), or C += op(A)·op(B) (accumulate,
// alpha 1), row-major, N a multiple of 32; or C = bias + op(A)·op(B) (bias (N) not nil: alpha 1,
// no accumulate). Each output is one chain of FMAs over k in order (from zero, from C's value, or
// from its column's bias), then times alpha (exact when alpha is 1), so its bits depend on
// neither the block of rows or columns a thread takes, nor the number of threads, nor the
// vector width (and are those of C filled with the bias and accumulated: the bias is a starting
// sum, not a pass of its own).
// B is copied in panels of GEN_GEMM_PANEL columns (k-major: a panel's row k is two vectors,
// 32 floats with 512-bit vectors, 16 with AVX2) into `pack`, the calling thread's own buffer of
// GEN_GEMM_KC·GEN_GEMM_NC floats (aligned to 64 bytes; `Matmul.panels` in GenKernels keeps one
// per thread); A is read where it lies: a tile of GEN_GEMM_MAIN rows (12, or 6 with AVX2's 16
// registers) by one panel holds its sums in registers, and each k broadcasts one value of each
// row against the panel's two vectors (2·GEN_GEMM_MAIN FMAs for 2 loads). With AVX2 a
// transposed A's tile is first copied k-major after the sums (GEN_GEMM_APACK floats): its rows
// lie across A's lines, one line a k, at strides that fall into few of the L1 cache's sets.
// With `sums` (not nil; B not transposed, N at most GEN_GEMM_SUMS), B's column sums over k are
// added into sums (N) as the panels are copied: each column's sum one chain over k in order from
// zero, then added (`Matmul.columnSums`'s bits), its running value kept between runs of K in
// `pack` after the panels. A projection's bias gradient is so made in its weight gradient's
// product, which reads the same rows.
// gen_gemm32 returns 0 (nothing done) without either: the caller then uses OpenBLAS.
#define GEN_GEMM_KC 512
#define GEN_GEMM_NC 256
#define GEN_GEMM_SUMS 4096
#if defined(__AVX512F__)
#define GEN_GEMM_OWN 1
typedef gen_float16 gen_gemm_vector;   // one register
#define GEN_GEMM_SPLAT(v) ((gen_gemm_vector)(v))
#define GEN_GEMM_MAIN 12
#define GEN_GEMM_PANEL 32
#define GEN_GEMM_APACK 0
#define GEN_GEMM_UNROLL
// Runs of K at most this long: a block of panels (512 × 256 floats, 512 KB) half of a Zen 4's L2.
#define GEN_GEMM_KRUN 512
#elif defined(__AVX2__) && defined(__FMA__)
#define GEN_GEMM_OWN 1
typedef gen_f32x8 gen_gemm_vector;     // AVX2's 16 registers of 8 floats
#define GEN_GEMM_SPLAT(v) ((gen_gemm_vector){v, v, v, v, v, v, v, v})
#define GEN_GEMM_MAIN 6
#define GEN_GEMM_PANEL 16
// op(A)'s tile copied when A is transposed (room for GEN_GEMM_MAIN · GEN_GEMM_KC floats; a tile
// takes GEN_GEMM_MAIN · GEN_GEMM_KRUN / 2, the run of K being halved there).
#define GEN_GEMM_APACK 3072
#define GEN_GEMM_UNROLL _Pragma("clang loop unroll_count(4)")
// Runs of K at most 256: a block of panels (256 × 256 floats, 256 KB) half of the 512 KB L2 of a
// Zen 3, which runs this code; 512 × 256 would fill it. (On a Zen 4 the two ran alike.)
#define GEN_GEMM_KRUN 256
#else
#define GEN_GEMM_OWN 0
#define GEN_GEMM_APACK 0
#endif

#if GEN_GEMM_OWN
// A tile of ROWS rows (a(r,k) = a[r·ars + k·aks]) by one panel bp (kc rows of GEN_GEMM_PANEL,
// two vectors): c (+)= a·bp.
#define GEN_GEMM_W (GEN_GEMM_PANEL / 2)
#define GEN_GEMM_DECL(r) gen_gemm_vector s##r##a, s##r##b;
#define GEN_GEMM_LOAD(r) __builtin_memcpy(&s##r##a, c + r * ldc, sizeof b0); \
    __builtin_memcpy(&s##r##b, c + r * ldc + GEN_GEMM_W, sizeof b0);
#define GEN_GEMM_ZERO(r) s##r##a = GEN_GEMM_SPLAT(0.0f); s##r##b = GEN_GEMM_SPLAT(0.0f);
#define GEN_GEMM_BIAS(r) s##r##a = b0; s##r##b = b1;
#define GEN_GEMM_FMA(r) x = GEN_GEMM_SPLAT(ak[r * ars]); s##r##a = __builtin_elementwise_fma(x, b0, s##r##a); \
    s##r##b = __builtin_elementwise_fma(x, b1, s##r##b);
#define GEN_GEMM_STORE(r) s##r##a *= scale; s##r##b *= scale; \
    __builtin_memcpy(c + r * ldc, &s##r##a, sizeof b0); __builtin_memcpy(c + r * ldc + GEN_GEMM_W, &s##r##b, sizeof b0);
#define GEN_GEMM_TILE(name, ROWS) \
static inline void name(const float *a, long ars, long aks, const float *bp, long kc, float *c, long ldc, int acc, \
                        float scale, const float *bias) { \
    gen_gemm_vector b0, b1, x; \
    ROWS(GEN_GEMM_DECL) \
    if (acc) { ROWS(GEN_GEMM_LOAD) } \
    else if (bias) { __builtin_memcpy(&b0, bias, sizeof b0); __builtin_memcpy(&b1, bias + GEN_GEMM_W, sizeof b0); ROWS(GEN_GEMM_BIAS) } \
    else { ROWS(GEN_GEMM_ZERO) } \
    GEN_GEMM_UNROLL for (long k = 0; k < kc; k++) { \
        __builtin_memcpy(&b0, bp + k * GEN_GEMM_PANEL, sizeof b0); __builtin_memcpy(&b1, bp + k * GEN_GEMM_PANEL + GEN_GEMM_W, sizeof b0); \
        const float *ak = a + k * aks; \
        ROWS(GEN_GEMM_FMA) \
    } \
    ROWS(GEN_GEMM_STORE) \
}
#define GEN_ROWS1(X) X(0)
#define GEN_ROWS2(X) GEN_ROWS1(X) X(1)
#define GEN_ROWS4(X) GEN_ROWS2(X) X(2) X(3)
#define GEN_ROWS6(X) GEN_ROWS4(X) X(4) X(5)
#define GEN_ROWS8(X) GEN_ROWS4(X) X(4) X(5) X(6) X(7)
#define GEN_ROWS12(X) GEN_ROWS8(X) X(8) X(9) X(10) X(11)
#if GEN_GEMM_MAIN == 12
GEN_GEMM_TILE(gen_gemm_tile12, GEN_ROWS12)
GEN_GEMM_TILE(gen_gemm_tile8, GEN_ROWS8)
#define GEN_GEMM_TILE_MAIN gen_gemm_tile12
#else
GEN_GEMM_TILE(gen_gemm_tile6, GEN_ROWS6)
#define GEN_GEMM_TILE_MAIN gen_gemm_tile6
#endif
GEN_GEMM_TILE(gen_gemm_tile4, GEN_ROWS4)
GEN_GEMM_TILE(gen_gemm_tile2, GEN_ROWS2)
GEN_GEMM_TILE(gen_gemm_tile1, GEN_ROWS1)
_Static_assert(GEN_GEMM_APACK == 0 || GEN_GEMM_APACK >= GEN_GEMM_MAIN * GEN_GEMM_KRUN, "room for a tile of A");
_Static_assert(GEN_GEMM_KRUN <= GEN_GEMM_KC, "a block of panels fits the buffer");

static inline int gen_gemm32(long M, long N, long K, const float *A, long lda, int transA,
                             const float *B, long ldb, int transB, float *C, long ldc, float alpha,
                             int accumulate, const float *bias, float *sums, float *pack) {
    if (sums && (transB || N > GEN_GEMM_SUMS)) return 0;
    float *running = pack + GEN_GEMM_KC * GEN_GEMM_NC;
    long ars = transA ? 1 : lda, aks = transA ? lda : 1;
    const long P = GEN_GEMM_PANEL;
    // K in near-equal runs of at most kmax (each output's chain of FMAs goes on from C's value
    // in the next run, so the runs leave its bits as they are), the columns in blocks of nmax.
    // A transposed A's tiles, copied (GEN_GEMM_APACK), are copied once a block of columns:
    // with half the run of K and twice the columns, half as often, in the same panel buffer.
    long kmax = GEN_GEMM_KRUN, nmax = GEN_GEMM_NC;
    if (GEN_GEMM_APACK && transA) { kmax /= 2; nmax *= 2; }
    long runs = (K + kmax - 1) / kmax;
    for (long run = 0; run < runs; run++) {
        long k0 = K * run / runs, kc = K * (run + 1) / runs - k0;
        int acc = accumulate || run > 0;
        float scale = run == runs - 1 ? alpha : 1;
        const float *start = acc ? 0 : bias;
        for (long j0 = 0; j0 < N; j0 += nmax) {
            long panels = (N - j0 < nmax ? N - j0 : nmax) / P;
            for (long p = 0; p < panels; p++) {
                float *bp = pack + p * kc * P;
                if (!transB && sums) {
                    for (long h = 0; h < P; h += 16) {
                        const float *src = B + k0 * ldb + j0 + p * P + h;
                        float *r = running + j0 + p * P + h;
                        gen_float16 s0 = 0, x0;
                        if (run > 0) __builtin_memcpy(&s0, r, 64);
                        for (long k = 0; k < kc; k++) {
                            __builtin_memcpy(&x0, src + k * ldb, 64);
                            __builtin_memcpy(bp + k * P + h, &x0, 64);
                            s0 += x0;
                        }
                        __builtin_memcpy(r, &s0, 64);
                    }
                } else if (!transB) {
                    for (long k = 0; k < kc; k++) __builtin_memcpy(bp + k * P, B + (k0 + k) * ldb + j0 + p * P, P * 4);
                } else if (kc % 16 == 0) {
                    for (long h = 0; h < P; h += 16)
                        gen_transpose_band16(B + (j0 + p * P + h) * ldb + k0, ldb, bp + h, P, kc);
                } else {
                    for (long j = 0; j < P; j++) {
                        const float *s = B + (j0 + p * P + j) * ldb + k0;
                        for (long k = 0; k < kc; k++) bp[k * P + j] = s[k];
                    }
                }
            }
            // Tiles of GEN_GEMM_MAIN rows by a panel, then of fewer rows for the last ones.
            long i = 0;
            for (; i + GEN_GEMM_MAIN <= M; i += GEN_GEMM_MAIN) {
                const float *a = A + i * ars + k0 * aks;
                long as = ars, ak = aks;
#if GEN_GEMM_APACK
                // op(A) transposed: its tile copied k-major first (see above).
                if (transA) {
                    float *ap = running + GEN_GEMM_SUMS;
                    for (long k = 0; k < kc; k++) __builtin_memcpy(ap + k * GEN_GEMM_MAIN, a + k * aks, GEN_GEMM_MAIN * 4);
                    a = ap; as = 1; ak = GEN_GEMM_MAIN;
                }
#endif
                for (long p = 0; p < panels; p++)
                    GEN_GEMM_TILE_MAIN(a, as, ak, pack + p * kc * P, kc, C + i * ldc + j0 + p * P, ldc,
                                       acc, scale, start ? start + j0 + p * P : 0);
            }
            for (long rows = 8; rows >= 1; rows /= 2) {
                if (M - i < rows) continue;
                for (long p = 0; p < panels; p++) {
                    const float *a = A + i * ars + k0 * aks, *bp = pack + p * kc * P;
                    float *c = C + i * ldc + j0 + p * P;
                    const float *bc = start ? start + j0 + p * P : 0;
#if GEN_GEMM_MAIN > 8
                    if (rows == 8) gen_gemm_tile8(a, ars, aks, bp, kc, c, ldc, acc, scale, bc); else
#endif
                    if (rows == 4) gen_gemm_tile4(a, ars, aks, bp, kc, c, ldc, acc, scale, bc);
                    else if (rows == 2) gen_gemm_tile2(a, ars, aks, bp, kc, c, ldc, acc, scale, bc);
                    else gen_gemm_tile1(a, ars, aks, bp, kc, c, ldc, acc, scale, bc);
                }
                i += rows;
            }
        }
    }
    if (sums) for (long j = 0; j < N; j++) sums[j] += running[j];
    return 1;
}
#else
static inline int gen_gemm32(long M, long N, long K, const float *A, long lda, int transA,
                             const float *B, long ldb, int transB, float *C, long ldc, float alpha,
                             int accumulate, const float *bias, float *sums, float *pack) {
    return 0;
}
#endif

// Linux's PAGEMAP_SCAN (6.7; its structures as in <linux/fs.h>, which older headers lack): the
// runs of [start, end) that a process maps with huge pages (PAGE_IS_HUGE), up to `capacity` of
// them into `runs` as (start, end) pairs; returns how many, with *walked where the scan stopped,
// or -1 when the kernel cannot say (errno). ioctl is variadic, which Swift does not call.
#include <stdint.h>
#include <sys/ioctl.h>
struct gen_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct gen_page_region { uint64_t start, end, categories; };
static inline long gen_huge_runs(int pagemap, uint64_t start, uint64_t end, uint64_t *runs, long capacity,
                                 uint64_t *walked) {
    struct gen_page_region regions[64];
    if (capacity > 64) capacity = 64;
    struct gen_pm_scan_arg a = { sizeof a, 0, start, end, 0, (uint64_t)(uintptr_t)regions, (uint64_t)capacity,
                                 0, 0, 1 << 6, 0, 1 << 6 };
    long n = ioctl(pagemap, _IOWR('f', 16, struct gen_pm_scan_arg), &a);
    if (n < 0) return -1;
    for (long i = 0; i < n; i++) { runs[2 * i] = regions[i].start; runs[2 * i + 1] = regions[i].end; }
    *walked = a.walk_end;
    return n;
}
#endif

