// A stand-in OpenBLAS for timing gen's matrix products (built and used by scripts/sgemm-calls):
// gen loads it through GEN_BLAS_LIBRARY; it loads the real libopenblas.so.0, forwards the three
// functions gen calls, and times every cblas_sgemm call. At exit it prints, to stderr, one line a
// shape (M N K, the transpose flags, calls, seconds summed over threads, GFLOP/s a call) and the
// total.
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE,
                         const blasint, const blasint, const blasint, const float, const float *, const blasint,
                         const float *, const blasint, const float, float *, const blasint);
static void *lib;
static sgemm_fn real_sgemm;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct { int m, n, k, ta, tb; long calls; double seconds; } shapes[512];
static int count;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((constructor)) static void start(void) {
    lib = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "sgemm-calls: %s\n", dlerror()); exit(1); }
    real_sgemm = (sgemm_fn)dlsym(lib, "cblas_sgemm");
}

char *openblas_get_corename(void) { return ((char *(*)(void))dlsym(lib, "openblas_get_corename"))(); }
void openblas_set_num_threads(int n) { ((void (*)(int))dlsym(lib, "openblas_set_num_threads"))(n); }

void cblas_sgemm(const enum CBLAS_ORDER o, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C, const blasint ldc) {
    double t = now();
    real_sgemm(o, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    t = now() - t;
    pthread_mutex_lock(&lock);
    int i = 0;
    while (i < count && !(shapes[i].m == M && shapes[i].n == N && shapes[i].k == K && shapes[i].ta == ta && shapes[i].tb == tb)) i++;
    if (i == count && count < 512) { shapes[i].m = M; shapes[i].n = N; shapes[i].k = K; shapes[i].ta = ta; shapes[i].tb = tb; count++; }
    if (i < 512) { shapes[i].calls++; shapes[i].seconds += t; }
    pthread_mutex_unlock(&lock);
}

__attribute__((destructor)) static void report(void) {
    double total = 0;
    for (int i = 0; i < count; i++) {
        total += shapes[i].seconds;
        fprintf(stderr, "sgemm %6d %6d %6d %c%c calls %7ld %9.3f s %6.1f GFLOP/s\n", shapes[i].m, shapes[i].n, shapes[i].k,
                shapes[i].ta == CblasTrans ? 'T' : 'N', shapes[i].tb == CblasTrans ? 'T' : 'N', shapes[i].calls,
                shapes[i].seconds, 2.0 * shapes[i].m * shapes[i].n * shapes[i].k * shapes[i].calls / shapes[i].seconds / 1e9);
    }
    fprintf(stderr, "sgemm total %.3f s (summed over threads)\n", total);
}
