// The machine's matrix-product ceiling as gen meets it (built and run by scripts/bench-sgemm):
//   fma       one core's fp32 FMA peak: ten independent FMA chains (512-bit with AVX-512, else
//             256-bit), GFLOP/s
//   fma-all   the same on THREADS threads at once, GFLOP/s per thread (the mean): what each of
//             gen's threads can reach when all multiply together (a CPU may clock lower then)
//   M K N AB  OpenBLAS's sgemm (one thread, as each of gen's threads calls it; with 2 threads the
//             rows, or the columns when they are more, split in halves, one sgemm per thread, as
//             Matmul.gemm does), GFLOP/s, the best
//             of 7 calls; AB says which operand is transposed (N/T), as in gen's forward (NN)
//             and backward (NT: the input gradient, TN: the weight gradient) products.
// Usage: sgemm_ceiling THREADS M K N TA TB [M K N TA TB ...]
//        (prints "fma X", "fma-all Y", then one line a shape)
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Ten independent FMA chains in the widest registers the build has (zmm with AVX-512: a CPU
// that runs them as two 256-bit halves shows the same rate as with ymm).
#if defined(__AVX512F__)
#define R(i) "%%zmm" #i
#define LANES 16
#else
#define R(i) "%%ymm" #i
#define LANES 8
#endif
static double fma_peak(void) {
    long n = 100000000;
    double t = now();
    __asm__ volatile(
        "vxorps " R(0) "," R(0) "," R(0) "\n vxorps " R(1) "," R(1) "," R(1) "\n vxorps " R(2) "," R(2) "," R(2) "\n"
        "vxorps " R(3) "," R(3) "," R(3) "\n vxorps " R(4) "," R(4) "," R(4) "\n vxorps " R(5) "," R(5) "," R(5) "\n"
        "vxorps " R(6) "," R(6) "," R(6) "\n vxorps " R(7) "," R(7) "," R(7) "\n vxorps " R(8) "," R(8) "," R(8) "\n"
        "vxorps " R(9) "," R(9) "," R(9) "\n"
        "1:\n"
        "vfmadd231ps " R(14) "," R(15) "," R(0) "\n vfmadd231ps " R(14) "," R(15) "," R(1) "\n"
        "vfmadd231ps " R(14) "," R(15) "," R(2) "\n vfmadd231ps " R(14) "," R(15) "," R(3) "\n"
        "vfmadd231ps " R(14) "," R(15) "," R(4) "\n vfmadd231ps " R(14) "," R(15) "," R(5) "\n"
        "vfmadd231ps " R(14) "," R(15) "," R(6) "\n vfmadd231ps " R(14) "," R(15) "," R(7) "\n"
        "vfmadd231ps " R(14) "," R(15) "," R(8) "\n vfmadd231ps " R(14) "," R(15) "," R(9) "\n"
        "dec %0\n jnz 1b\n"
        : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "cc");
    return 100000000.0 * 10 * 2 * LANES / (now() - t) / 1e9;
}

static void *fma_thread(void *out) {
    *(double *)out = fma_peak();
    return NULL;
}

// Rows r0..<r1 of C, or (byColumns) its columns r0..<r1.
struct part { int ta, tb, M, N, K, byColumns, r0, r1; const float *A, *B; float *C; };

static void *run_part(void *p) {
    struct part *q = p;
    int n = q->r1 - q->r0, lda = q->ta ? q->M : q->K, ldb = q->tb ? q->K : q->N;
    CBLAS_TRANSPOSE ta = q->ta ? CblasTrans : CblasNoTrans, tb = q->tb ? CblasTrans : CblasNoTrans;
    if (q->byColumns) {
        const float *b = q->tb ? q->B + (long)q->r0 * ldb : q->B + q->r0;
        cblas_sgemm(CblasRowMajor, ta, tb, q->M, n, q->K, 1, q->A, lda, b, ldb, 0, q->C + q->r0, q->N);
    } else {
        const float *a = q->ta ? q->A + q->r0 : q->A + (long)q->r0 * lda;
        cblas_sgemm(CblasRowMajor, ta, tb, n, q->N, q->K, 1, a, lda, q->B, ldb, 0, q->C + (long)q->r0 * q->N, q->N);
    }
    return NULL;
}

int main(int argc, char **argv) {
    openblas_set_num_threads(1);
    if (argc < 2) {
        fprintf(stderr, "usage: sgemm_ceiling THREADS M K N TA TB [M K N TA TB ...]\n");
        return 64;
    }
    int threads = atoi(argv[1]);
    if (threads < 1) threads = 1;
    if (threads > 8) threads = 8;   // the parts below

    printf("fma %.1f\n", fma_peak());
    double rates[8], sum = 0;
    pthread_t fids[8];
    for (int p = 1; p < threads; p++) pthread_create(&fids[p], NULL, fma_thread, &rates[p]);
    fma_thread(&rates[0]);
    for (int p = 1; p < threads; p++) pthread_join(fids[p], NULL);
    for (int p = 0; p < threads; p++) sum += rates[p];
    printf("fma-all %.1f\n", sum / threads);
    for (int s = 2; s + 4 < argc; s += 5) {
        int M = atoi(argv[s]), K = atoi(argv[s + 1]), N = atoi(argv[s + 2]);
        int ta = argv[s + 3][0] == 'T', tb = argv[s + 4][0] == 'T';
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C = malloc(sizeof(float) * M * N);
        for (long i = 0; i < (long)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
        for (long i = 0; i < (long)K * N; i++) B[i] = (float)(i % 5) * 0.1f;
        double best = 1e9;
        for (int r = 0; r < 7; r++) {
            struct part parts[8];
            pthread_t ids[8];
            double t = now();
            int byColumns = M < N, blocks = byColumns ? (N + 15) / 16 : M, unit = byColumns ? 16 : 1;
            for (int p = 0; p < threads; p++) {
                int r0 = blocks * p / threads * unit, r1 = blocks * (p + 1) / threads * unit;
                if (r1 > (byColumns ? N : M)) r1 = byColumns ? N : M;
                parts[p] = (struct part){ta, tb, M, N, K, byColumns, r0, r1, A, B, C};
                if (p > 0) pthread_create(&ids[p], NULL, run_part, &parts[p]);
            }
            run_part(&parts[0]);
            for (int p = 1; p < threads; p++) pthread_join(ids[p], NULL);
            t = now() - t;
            if (t < best) best = t;
        }
        printf("%d %d %d %c%c %.1f\n", M, K, N, ta ? 'T' : 'N', tb ? 'T' : 'N', 2.0 * M * N * K / best / 1e9);
        free(A); free(B); free(C);
    }
    return 0;
}
