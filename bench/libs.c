/* libs: `make bench-libs`. Side by side in one process, alternating engines within each round,
 * the matrix products of the three model sizes' linear layers at batch 32 x context 128 (4096
 * rows): the forward X W^T, the input gradient dY W and the weight gradient dW += dY^T X of the
 * qkv, attention projection, MLP and LM-head layers, in qcorr's kernels (each path this CPU runs),
 * OpenBLAS, BLIS, libxsmm (JIT kernels over row blocks) and oneDNN (matmul primitives made once
 * per shape, outside the timing); then the element-wise work (exp, GELU, LayerNorm, softmax) in
 * qcorr's kernels, SLEEF and oneDNN, with each one's error against double precision. Prints the
 * median GFLOP/s (or ns per element) over rounds and, per model size, the time of one training
 * step's linear-layer products in each engine. The README's Dependencies section quotes it.
 * Usage: libs [--rounds N] [--threads N] [--sizes 64,128,256] [--clock wall|cpu]
 * --clock cpu times with the process's CPU time instead of the wall clock: on a machine shared
 * with other work, one thread's CPU time is the steadier measure of each engine's own speed. */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxsmm.h>
#include <oneapi/dnnl/dnnl.h>
#include <x86_64-linux-gnu/blis-openmp/blis.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/util.h"
#include "kernels/kernels.h"

/* SLEEF 3.5's vector functions (sleef.h declares them only when the file itself is compiled for
 * AVX-512, which this one is not: it runs on any x86-64 and calls them only where the CPU has it) */
__m512 Sleef_expf16_u10avx512f(__m512);
__m512 Sleef_tanhf16_u10avx512f(__m512);
__m256 Sleef_expf8_u10avx2(__m256);
__m256 Sleef_tanhf8_u10avx2(__m256);

enum { ROWS = 4096, MAX_ENGINES = 8, MAX_ROUNDS = 64 };
typedef enum { FORWARD, INPUT_GRADIENT, WEIGHT_GRADIENT } Kind;
static const char *const KIND_NAME[] = {"X W^T", "dY W", "dY^T X"};

/* One product: C = A op(B) in row-major terms, with its operands. */
typedef struct {
    Kind kind;
    int IC, OC;
    int M, N, K;           /* C is M x N, depth K */
    float *x, *w, *dy, *c; /* x (ROWS, IC), w (OC, IC), dy (ROWS, OC), c (M, N) */
    float *scratch;        /* libxsmm: a transposed operand */
    dnnl_primitive_t dnnl;
    dnnl_memory_t dnnl_mem[3];
    libxsmm_smmfunction xsmm;
    int xsmm_mb, xsmm_nb;  /* libxsmm's block: columns of C (m) and rows of C (n) per kernel call */
} Product;

typedef struct {
    const char *name;
    int (*setup)(Product *p); /* 0, or -1: this engine cannot run this product */
    void (*run)(Product *p);
    int path; /* qcorr's kernel path, for the qcorr engines */
} Engine;

static dnnl_engine_t dnnl_cpu_engine;

static int cpu_clock; /* --clock cpu */
static double clock_seconds(void) {
    if (!cpu_clock) return now_seconds();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static dnnl_stream_t dnnl_stream;

static int path_of(const char *name) {
    for (int i = 0; i < KERNEL_PATH_COUNT; i++)
        if (strcmp(kernels_path(i)->name, name) == 0) return i;
    return -1;
}

/* ---- qcorr ---- */
static int qcorr_setup(Product *p) { (void)p; return 0; }
static void qcorr_run_path(Product *p, int path) {
    const KernelTable *t = kernels_path(path);
    switch (p->kind) {
    case FORWARD: t->gemm(ROWS, p->OC, p->IC, p->x, p->IC, p->w, p->IC, 1, NULL, p->c, p->OC, 0); break;
    case INPUT_GRADIENT: t->gemm(ROWS, p->IC, p->OC, p->dy, p->OC, p->w, p->IC, 0, NULL, p->c, p->IC, 0); break;
    case WEIGHT_GRADIENT: t->gemm_at_b(p->OC, p->IC, ROWS, p->dy, p->OC, p->x, p->IC, p->c, p->IC); break;
    }
}
static void qcorr_avx2(Product *p) { qcorr_run_path(p, path_of("avx2")); }
static void qcorr_avx512(Product *p) { qcorr_run_path(p, path_of("avx512")); }

/* ---- OpenBLAS ---- */
static int openblas_setup(Product *p) { (void)p; return 0; }
static void openblas_run(Product *p) {
    switch (p->kind) {
    case FORWARD:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ROWS, p->OC, p->IC, 1.0f, p->x, p->IC, p->w, p->IC, 0.0f,
                    p->c, p->OC);
        break;
    case INPUT_GRADIENT:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ROWS, p->IC, p->OC, 1.0f, p->dy, p->OC, p->w, p->IC, 0.0f,
                    p->c, p->IC);
        break;
    case WEIGHT_GRADIENT:
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->OC, p->IC, ROWS, 1.0f, p->dy, p->OC, p->x, p->IC, 1.0f,
                    p->c, p->IC);
        break;
    }
}

/* ---- BLIS (its typed API with general strides) ---- */
static int blis_setup(Product *p) { (void)p; return 0; }
static void blis_run(Product *p) {
    float one = 1.0f, zero = 0.0f;
    switch (p->kind) {
    case FORWARD: /* B = W^T: (IC, OC) with row stride 1, column stride IC */
        bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, ROWS, p->OC, p->IC, &one, p->x, p->IC, 1, p->w, 1, p->IC, &zero,
                  p->c, p->OC, 1);
        break;
    case INPUT_GRADIENT:
        bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, ROWS, p->IC, p->OC, &one, p->dy, p->OC, 1, p->w, p->IC, 1, &zero,
                  p->c, p->IC, 1);
        break;
    case WEIGHT_GRADIENT: /* A = dY^T: (OC, ROWS) with row stride 1, column stride OC */
        bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, p->OC, p->IC, ROWS, &one, p->dy, 1, p->OC, p->x, p->IC, 1, &one,
                  p->c, p->IC, 1);
        break;
    }
}

/* ---- libxsmm: column-major JIT kernels. A row-major C (M, N) = A B is the column-major
 * C' (N, M) = B' A', so the kernel's m is our N and its n our M; it runs on blocks of xsmm_nb
 * rows of C (and xsmm_mb columns), in an OpenMP loop over the blocks. The forward's W^T and the
 * weight gradient's dY^T are formed by a transposed copy inside the timed call. ---- */
static int xsmm_setup(Product *p) {
    float one = 1.0f, beta = p->kind == WEIGHT_GRADIENT ? 1.0f : 0.0f;
    int flags = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_PREFETCH_AUTO;
    p->xsmm_mb = p->N % 64 ? p->N : 64;
    p->xsmm_nb = p->kind == WEIGHT_GRADIENT ? (p->M % 16 ? 1 : 16) : 64;
    libxsmm_blasint m = p->xsmm_mb, n = p->xsmm_nb, k = p->K, lda = p->N, ldb = p->K, ldc = p->N;
    p->xsmm = libxsmm_smmdispatch(m, n, k, &lda, &ldb, &ldc, &one, &beta, &flags, &prefetch);
    return p->xsmm ? 0 : -1;
}
static void transpose(float *dst, const float *src, int rows, int cols) { /* dst (cols, rows) = src^T */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) dst[(long)c * rows + r] = src[(long)r * cols + c];
}
static void xsmm_run(Product *p) {
    const float *a, *b; /* row-major A (M, K) and B (K, N) */
    switch (p->kind) {
    case FORWARD: transpose(p->scratch, p->w, p->OC, p->IC); a = p->x; b = p->scratch; break;
    case INPUT_GRADIENT: a = p->dy; b = p->w; break;
    default: transpose(p->scratch, p->dy, ROWS, p->OC); a = p->scratch; b = p->x; break;
    }
    int mblocks = p->N / p->xsmm_mb, nblocks = p->M / p->xsmm_nb;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < mblocks * nblocks; blk++) {
        int i = blk % mblocks, j = blk / mblocks;
        p->xsmm(b + (long)i * p->xsmm_mb, a + (long)j * p->xsmm_nb * p->K, p->c + (long)j * p->xsmm_nb * p->N + i * p->xsmm_mb);
    }
}

/* ---- oneDNN matmul ---- */
static int dnnl_md(dnnl_memory_desc_t *md, long rows, long cols, long rs, long cs) {
    dnnl_dims_t dims = {rows, cols}, strides = {rs, cs};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides) == dnnl_success ? 0 : -1;
}
static int dnnl_setup(Product *p) {
    dnnl_memory_desc_t a, b, c;
    const float *pa, *pb;
    int ok = 0;
    switch (p->kind) {
    case FORWARD:
        ok = dnnl_md(&a, ROWS, p->IC, p->IC, 1) | dnnl_md(&b, p->IC, p->OC, 1, p->IC) | dnnl_md(&c, ROWS, p->OC, p->OC, 1);
        pa = p->x; pb = p->w;
        break;
    case INPUT_GRADIENT:
        ok = dnnl_md(&a, ROWS, p->OC, p->OC, 1) | dnnl_md(&b, p->OC, p->IC, p->IC, 1) | dnnl_md(&c, ROWS, p->IC, p->IC, 1);
        pa = p->dy; pb = p->w;
        break;
    default:
        ok = dnnl_md(&a, p->OC, ROWS, 1, p->OC) | dnnl_md(&b, ROWS, p->IC, p->IC, 1) | dnnl_md(&c, p->OC, p->IC, p->IC, 1);
        pa = p->dy; pb = p->x;
        break;
    }
    if (ok != 0) return -1;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    if (dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c) != dnnl_success) return -1;
    if (p->kind == WEIGHT_GRADIENT) { /* accumulate, as a weight gradient does */
        dnnl_primitive_attr_create(&attr);
        dnnl_post_ops_create(&post);
        dnnl_post_ops_append_sum(post, 1.0f);
        dnnl_primitive_attr_set_post_ops(attr, post);
    }
    dnnl_primitive_desc_t pd;
    int rc = dnnl_primitive_desc_create(&pd, &desc, attr, dnnl_cpu_engine, NULL) == dnnl_success ? 0 : -1;
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (post) dnnl_post_ops_destroy(post);
    if (rc != 0) return -1;
    rc = dnnl_primitive_create(&p->dnnl, pd) == dnnl_success ? 0 : -1;
    dnnl_primitive_desc_destroy(pd);
    if (rc != 0) return -1;
    dnnl_memory_create(&p->dnnl_mem[0], &a, dnnl_cpu_engine, (void *)pa);
    dnnl_memory_create(&p->dnnl_mem[1], &b, dnnl_cpu_engine, (void *)pb);
    dnnl_memory_create(&p->dnnl_mem[2], &c, dnnl_cpu_engine, p->c);
    return 0;
}
static void dnnl_run(Product *p) {
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, p->dnnl_mem[0]}, {DNNL_ARG_WEIGHTS, p->dnnl_mem[1]}, {DNNL_ARG_DST, p->dnnl_mem[2]}};
    dnnl_primitive_execute(p->dnnl, dnnl_stream, 3, args);
    dnnl_stream_wait(dnnl_stream);
}
static void dnnl_release(Product *p) {
    if (!p->dnnl) return;
    dnnl_primitive_destroy(p->dnnl);
    for (int i = 0; i < 3; i++) dnnl_memory_destroy(p->dnnl_mem[i]);
    p->dnnl = NULL;
}

static Engine engines[MAX_ENGINES];
static int n_engines;

static void add_engine(const char *name, int (*setup)(Product *), void (*run)(Product *)) {
    engines[n_engines++] = (Engine){name, setup, run, 0};
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static float *random_floats(size_t n, Rng *rng) {
    float *p = qc_aligned_alloc(n * sizeof(float), "operand");
    if (!p) { fprintf(stderr, "libs: %s\n", qc_last_error()); exit(1); }
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform(rng) - 0.5f;
    return p;
}

/* median seconds per call of each engine over `rounds` rounds (engine order rotated each round);
 * NAN where the engine cannot run the product; max difference from OpenBLAS's result relative
 * to its largest element. Each engine's setup (oneDNN's primitive, libxsmm's JIT kernel) runs
 * once, untimed. */
static void time_product(Product *p, int rounds, double *seconds, double *error) {
    size_t nc = (size_t)p->M * p->N;
    float *want = qc_aligned_alloc(nc * sizeof(float), "reference");
    int usable[MAX_ENGINES];
    for (int e = 0; e < n_engines; e++) {
        usable[e] = engines[e].setup(p) == 0;
        error[e] = NAN;
        if (!usable[e]) continue;
        memset(p->c, 0, nc * sizeof(float));
        engines[e].run(p);
        if (e == 0) memcpy(want, p->c, nc * sizeof(float)); /* engine 0 is OpenBLAS */
        double worst = 0.0, scale = 0.0;
        for (size_t i = 0; i < nc; i++) scale = fmax(scale, fabs(want[i]));
        for (size_t i = 0; i < nc; i++) worst = fmax(worst, fabs(p->c[i] - want[i]) / scale);
        error[e] = worst;
    }
    double flops = 2.0 * p->M * p->N * (double)p->K;
    int reps = (int)(2e8 / flops) + 1;
    double t[MAX_ENGINES][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n_engines; i++) {
            int e = (i + r) % n_engines;
            if (!usable[e]) continue;
            double t0 = clock_seconds();
            for (int k = 0; k < reps; k++) engines[e].run(p);
            t[e][r] = (clock_seconds() - t0) / reps;
        }
    for (int e = 0; e < n_engines; e++) seconds[e] = usable[e] ? median(t[e], rounds) : NAN;
    dnnl_release(p);
    free(want);
}

/* ---- the products of one training step ---- */
typedef struct { const char *name; int oc_per_c, ic_per_c; } Layer; /* OC = oc_per_c * C (0: vocab) */
static const Layer LAYERS[] = {{"qkv", 3, 1}, {"attn proj", 1, 1}, {"fc", 4, 1}, {"mlp proj", 1, 4}, {"lm head", 0, 1}};
enum { N_LAYERS = sizeof LAYERS / sizeof *LAYERS, VOCAB = 65 };

static void products(int C, int L, int rounds, Rng *rng) {
    double step[MAX_ENGINES] = {0};
    printf("\nd_model %d (%d layers): GFLOP/s, median of %d rounds; max relative difference from OpenBLAS in ()\n", C, L,
           rounds);
    printf("%-10s %-7s %5s %5s %5s", "layer", "product", "M", "N", "K");
    for (int e = 0; e < n_engines; e++) printf(" | %17s", engines[e].name);
    printf("\n");
    for (int l = 0; l < N_LAYERS; l++) {
        int OC = LAYERS[l].oc_per_c ? LAYERS[l].oc_per_c * C : VOCAB, IC = LAYERS[l].ic_per_c * C;
        float *x = random_floats((size_t)ROWS * IC, rng), *w = random_floats((size_t)OC * IC, rng);
        float *dy = random_floats((size_t)ROWS * OC, rng);
        size_t big = (size_t)ROWS * (OC > IC ? OC : IC);
        float *c = random_floats(big, rng), *scratch = random_floats(big, rng);
        for (int kind = 0; kind < 3; kind++) {
            Product p = {.kind = kind, .IC = IC, .OC = OC, .x = x, .w = w, .dy = dy, .c = c, .scratch = scratch};
            if (kind == FORWARD) { p.M = ROWS; p.N = OC; p.K = IC; }
            else if (kind == INPUT_GRADIENT) { p.M = ROWS; p.N = IC; p.K = OC; }
            else { p.M = OC; p.N = IC; p.K = ROWS; }
            double sec[MAX_ENGINES], err[MAX_ENGINES];
            time_product(&p, rounds, sec, err);
            double flops = 2.0 * p.M * p.N * (double)p.K;
            printf("%-10s %-7s %5d %5d %5d", LAYERS[l].name, KIND_NAME[kind], p.M, p.N, p.K);
            for (int e = 0; e < n_engines; e++) {
                if (isnan(sec[e])) { printf(" | %17s", "n/a"); step[e] = NAN; continue; }
                printf(" | %6.1f (%7.1e)", flops / sec[e] / 1e9, err[e]);
                step[e] += (LAYERS[l].oc_per_c ? L : 1) * sec[e];
            }
            printf("\n");
        }
        free(x); free(w); free(dy); free(c); free(scratch);
    }
    printf("%-36s", "one step's products, ms");
    for (int e = 0; e < n_engines; e++) printf(" | %17.1f", 1e3 * step[e]);
    printf("\n%-36s", "  ratio to OpenBLAS");
    for (int e = 0; e < n_engines; e++) printf(" | %16.2fx", step[0] / step[e]);
    printf("\n");
}

/* ---- element-wise ---- */
typedef void (*ArrayFn)(float *out, const float *in, long n);

__attribute__((target("avx512f"))) static void sleef_exp512(float *out, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i += 16) _mm512_storeu_ps(out + i, Sleef_expf16_u10avx512f(_mm512_loadu_ps(in + i)));
}
__attribute__((target("avx2,fma"))) static void sleef_exp256(float *out, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i += 8) _mm256_storeu_ps(out + i, Sleef_expf8_u10avx2(_mm256_loadu_ps(in + i)));
}
#define GELU_C 0.7978845608028654f
__attribute__((target("avx512f"))) static void sleef_gelu512(float *out, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i += 16) {
        __m512 x = _mm512_loadu_ps(in + i);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(GELU_C),
                                 _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), x), _mm512_mul_ps(x, x), x));
        __m512 th = Sleef_tanhf16_u10avx512f(u);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), th)));
    }
}
__attribute__((target("avx2,fma"))) static void sleef_gelu256(float *out, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i += 8) {
        __m256 x = _mm256_loadu_ps(in + i);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(GELU_C),
                                 _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), x), _mm256_mul_ps(x, x), x));
        __m256 th = Sleef_tanhf8_u10avx2(u);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), th)));
    }
}

/* distance in units in the last place between a float and the correctly rounded double */
static double ulps(float got, double want) {
    float w = (float)want;
    if (got == w) return 0.0;
    float step = nextafterf(fabsf(w), INFINITY) - fabsf(w);
    return fabs((double)got - want) / step;
}

/* one oneDNN primitive over n floats in place-free buffers, made outside the timing */
typedef struct { dnnl_primitive_t prim; dnnl_exec_arg_t args[6]; int nargs; } DnnlCall;
static void dnnl_call(DnnlCall *c) {
    dnnl_primitive_execute(c->prim, dnnl_stream, c->nargs, c->args);
    dnnl_stream_wait(dnnl_stream);
}
static int dnnl_make(DnnlCall *c, const void *desc) {
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, desc, NULL, dnnl_cpu_engine, NULL) != dnnl_success) return -1;
    int rc = dnnl_primitive_create(&c->prim, pd) == dnnl_success ? 0 : -1;
    dnnl_primitive_desc_destroy(pd);
    return rc;
}
static dnnl_memory_t dnnl_wrap(long rows, long cols, void *data) {
    dnnl_memory_desc_t md;
    dnnl_memory_t m = NULL;
    if (cols) dnnl_md(&md, rows, cols, cols, 1);
    else {
        dnnl_dims_t d = {rows}, s = {1};
        dnnl_memory_desc_init_by_strides(&md, 1, d, dnnl_f32, s);
    }
    dnnl_memory_create(&m, &md, dnnl_cpu_engine, data);
    return m;
}

/* median ns per element of f over rounds */
#define TIME_NS(result, n, rounds, call)                                   \
    do {                                                                   \
        double _t[MAX_ROUNDS];                                             \
        call;                                                              \
        for (int _r = 0; _r < (rounds); _r++) {                            \
            double _t0 = clock_seconds();                                  \
            for (int _k = 0; _k < 5; _k++) call;                           \
            _t[_r] = (clock_seconds() - _t0) / 5 / (double)(n) * 1e9;      \
        }                                                                  \
        result = median(_t, (rounds));                                     \
    } while (0)

static void elementwise(int rounds, Rng *rng) {
    int avx512 = path_of("avx512") >= 0 && kernels_path_supported(path_of("avx512"));
    int avx2 = path_of("avx2") >= 0 && kernels_path_supported(path_of("avx2"));
    long n = (long)ROWS * 4 * 256; /* the 256x6 model's GELU input: 4096 x 1024 */
    float *in = qc_aligned_alloc(n * sizeof(float), "input"), *out = qc_aligned_alloc(n * sizeof(float), "output");
    if (!in || !out) { fprintf(stderr, "libs: %s\n", qc_last_error()); exit(1); }
    double ns;

    printf("\nexp over %ld floats in [-87, 88] (softmax, cross-entropy, GELU's tanh): median ns/float; max error in ulp\n", n);
    for (long i = 0; i < n; i++) in[i] = -87.0f + 175.0f * (float)i / (float)n;
    for (int p = 0; p < KERNEL_PATH_COUNT; p++) {
        if (!kernels_path_supported(p)) continue;
        ArrayFn f = kernels_path(p)->exp_array;
        TIME_NS(ns, n, rounds, f(out, in, n));
        double worst = 0.0;
        for (long i = 0; i < n; i++) worst = fmax(worst, ulps(out[i], exp((double)in[i])));
        printf("  qcorr %-8s %6.3f ns  %5.2f ulp\n", kernels_path(p)->name, ns, worst);
    }
    ArrayFn sleef[2] = {avx2 ? sleef_exp256 : NULL, avx512 ? sleef_exp512 : NULL};
    const char *sleef_name[2] = {"SLEEF expf8_u10 (avx2)", "SLEEF expf16_u10 (avx512)"};
    for (int k = 0; k < 2; k++) {
        if (!sleef[k]) continue;
        TIME_NS(ns, n, rounds, sleef[k](out, in, n));
        double worst = 0.0;
        for (long i = 0; i < n; i++) worst = fmax(worst, ulps(out[i], exp((double)in[i])));
        printf("  %-26s %6.3f ns  %5.2f ulp\n", sleef_name[k], ns, worst);
    }

    printf("\nGELU (tanh) forward over %ld floats in [-6, 6]: median ns/float; max absolute error\n", n);
    for (long i = 0; i < n; i++) in[i] = -6.0f + 12.0f * (float)i / (float)n;
#define GELU_ERROR(worst)                                                                              \
    do {                                                                                               \
        worst = 0.0;                                                                                   \
        for (long i = 0; i < n; i++) {                                                                 \
            double x = in[i], g = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); \
            worst = fmax(worst, fabs(out[i] - g));                                                     \
        }                                                                                              \
    } while (0)
    double worst;
    for (int p = 0; p < KERNEL_PATH_COUNT; p++) {
        if (!kernels_path_supported(p)) continue;
        const KernelTable *t = kernels_path(p);
        TIME_NS(ns, n, rounds, t->gelu_forward(out, in, n));
        GELU_ERROR(worst);
        printf("  qcorr %-8s %6.3f ns  %.2e\n", t->name, ns, worst);
    }
    ArrayFn sgelu[2] = {avx2 ? sleef_gelu256 : NULL, avx512 ? sleef_gelu512 : NULL};
    const char *sgelu_name[2] = {"SLEEF tanhf8_u10 (avx2)", "SLEEF tanhf16_u10 (avx512)"};
    for (int k = 0; k < 2; k++) {
        if (!sgelu[k]) continue;
        TIME_NS(ns, n, rounds, sgelu[k](out, in, n));
        GELU_ERROR(worst);
        printf("  %-26s %6.3f ns  %.2e\n", sgelu_name[k], ns, worst);
    }
    {
        dnnl_memory_desc_t md;
        dnnl_md(&md, ROWS, n / ROWS, n / ROWS, 1);
        dnnl_eltwise_desc_t d;
        DnnlCall c = {0};
        if (dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference, dnnl_eltwise_gelu_tanh, &md, 0.0f, 0.0f) ==
                dnnl_success && dnnl_make(&c, &d) == 0) {
            c.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, dnnl_wrap(ROWS, n / ROWS, in)};
            c.args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, dnnl_wrap(ROWS, n / ROWS, out)};
            c.nargs = 2;
            TIME_NS(ns, n, rounds, dnnl_call(&c));
            GELU_ERROR(worst);
            printf("  %-26s %6.3f ns  %.2e\n", "oneDNN eltwise_gelu_tanh", ns, worst);
            dnnl_primitive_destroy(c.prim);
            for (int i = 0; i < c.nargs; i++) dnnl_memory_destroy(c.args[i].memory);
        }
    }

    printf("\nLayerNorm forward (training: mean and 1/std or variance saved), 4096 rows: median ns/float;"
           " max relative error\n");
    for (int C = 64; C <= 256; C *= 2) {
        long m = (long)ROWS * C;
        float *x = random_floats(m, rng), *wt = random_floats(C, rng), *bs = random_floats(C, rng);
        float *mean = qc_aligned_alloc(ROWS * sizeof(float), "mean"), *rstd = qc_aligned_alloc(ROWS * sizeof(float), "rstd");
        double *want = malloc(m * sizeof(double));
        for (int r = 0; r < ROWS; r++) {
            double mu = 0, var = 0;
            for (int c = 0; c < C; c++) mu += x[(long)r * C + c];
            mu /= C;
            for (int c = 0; c < C; c++) var += (x[(long)r * C + c] - mu) * (x[(long)r * C + c] - mu);
            var /= C;
            for (int c = 0; c < C; c++)
                want[(long)r * C + c] = (x[(long)r * C + c] - mu) / sqrt(var + 1e-5) * wt[c] + bs[c];
        }
#define LN_ERROR(worst)                                                                     \
    do {                                                                                    \
        worst = 0.0;                                                                        \
        for (long i = 0; i < m; i++) worst = fmax(worst, fabs(out[i] - want[i]) / fmax(fabs(want[i]), 1.0)); \
    } while (0)
        for (int p = 0; p < KERNEL_PATH_COUNT; p++) {
            if (!kernels_path_supported(p)) continue;
            const KernelTable *t = kernels_path(p);
            TIME_NS(ns, m, rounds, t->layernorm_forward(out, mean, rstd, x, wt, bs, ROWS, C));
            LN_ERROR(worst);
            printf("  C %3d qcorr %-8s %6.3f ns  %.2e\n", C, t->name, ns, worst);
        }
        dnnl_memory_desc_t md, stat, ss;
        dnnl_md(&md, ROWS, C, C, 1);
        dnnl_dims_t sd = {ROWS}, s1 = {1}, cd = {C};
        dnnl_memory_desc_init_by_strides(&stat, 1, sd, dnnl_f32, s1);
        dnnl_memory_desc_init_by_strides(&ss, 1, cd, dnnl_f32, s1);
        dnnl_layer_normalization_desc_t d;
        DnnlCall c = {0};
        if (dnnl_layer_normalization_forward_desc_init(&d, dnnl_forward_training, &md, &stat, 1e-5f,
                                                       dnnl_use_scale | dnnl_use_shift) == dnnl_success &&
            dnnl_make(&c, &d) == 0) {
            c.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, dnnl_wrap(ROWS, C, x)};
            c.args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, dnnl_wrap(ROWS, C, out)};
            c.args[2] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, dnnl_wrap(ROWS, 0, mean)};
            c.args[3] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, dnnl_wrap(ROWS, 0, rstd)};
            c.args[4] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, dnnl_wrap(C, 0, wt)};
            c.args[5] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, dnnl_wrap(C, 0, bs)};
            c.nargs = 6;
            TIME_NS(ns, m, rounds, dnnl_call(&c));
            LN_ERROR(worst);
            printf("  C %3d %-15s %6.3f ns  %.2e\n", C, "oneDNN", ns, worst);
            dnnl_primitive_destroy(c.prim);
            for (int i = 0; i < c.nargs; i++) dnnl_memory_destroy(c.args[i].memory);
        } else {
            printf("  C %3d oneDNN layer normalization: not available\n", C);
        }
        free(x); free(wt); free(bs); free(mean); free(rstd); free(want);
    }

    printf("\nsoftmax over 4096 rows of %d logits: median ns/float (qcorr: its fused softmax + cross-entropy,"
           " the softmax's only caller over whole rows)\n", VOCAB);
    {
        long m = (long)ROWS * VOCAB;
        float *z = random_floats(m, rng);
        int32_t *targets = malloc(ROWS * sizeof(int32_t));
        for (int r = 0; r < ROWS; r++) targets[r] = (int32_t)rng_below(rng, VOCAB);
        for (int p = 0; p < KERNEL_PATH_COUNT; p++) {
            if (!kernels_path_supported(p)) continue;
            const KernelTable *t = kernels_path(p);
            TIME_NS(ns, m, rounds, t->crossentropy_forward_backward(out, z, targets, ROWS, VOCAB, 1.0f / ROWS));
            printf("  qcorr %-8s %6.3f ns\n", t->name, ns);
        }
        dnnl_memory_desc_t md;
        dnnl_md(&md, ROWS, VOCAB, VOCAB, 1);
        dnnl_softmax_desc_t d;
        DnnlCall c = {0};
        if (dnnl_softmax_forward_desc_init(&d, dnnl_forward_training, &md, 1) == dnnl_success && dnnl_make(&c, &d) == 0) {
            c.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, dnnl_wrap(ROWS, VOCAB, z)};
            c.args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, dnnl_wrap(ROWS, VOCAB, out)};
            c.nargs = 2;
            TIME_NS(ns, m, rounds, dnnl_call(&c));
            printf("  %-15s %6.3f ns\n", "oneDNN softmax", ns);
            dnnl_primitive_destroy(c.prim);
            for (int i = 0; i < c.nargs; i++) dnnl_memory_destroy(c.args[i].memory);
        }
        free(z); free(targets);
    }
    free(in); free(out);
}

int main(int argc, char **argv) {
    int rounds = 7, threads = 2, sizes[3] = {64, 128, 256}, n_sizes = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rounds") == 0) rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--clock") == 0) cpu_clock = strcmp(argv[i + 1], "cpu") == 0;
        else if (strcmp(argv[i], "--sizes") == 0) {
            n_sizes = 0;
            for (char *s = strtok(argv[i + 1], ","); s && n_sizes < 3; s = strtok(NULL, ",")) sizes[n_sizes++] = atoi(s);
        } else {
            fprintf(stderr, "usage: libs [--rounds N] [--threads N] [--sizes 64,128,256] [--clock wall|cpu]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 7;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    openblas_set_num_threads(threads);
    bli_thread_set_num_threads(threads);
    libxsmm_init();
    if (dnnl_engine_create(&dnnl_cpu_engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&dnnl_stream, dnnl_cpu_engine, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "libs: oneDNN: no CPU engine\n");
        return 1;
    }
    add_engine("OpenBLAS", openblas_setup, openblas_run); /* first: the reference of the error column */
    if (kernels_path_supported(path_of("avx2"))) add_engine("qcorr avx2", qcorr_setup, qcorr_avx2);
    if (kernels_path_supported(path_of("avx512"))) add_engine("qcorr avx512", qcorr_setup, qcorr_avx512);
    add_engine("BLIS", blis_setup, blis_run);
    add_engine("libxsmm", xsmm_setup, xsmm_run);
    add_engine("oneDNN", dnnl_setup, dnnl_run);

    const dnnl_version_t *v = dnnl_version();
    printf("== libs: linear-layer products and element-wise kernels side by side, %d threads, %d rounds, %s time\n",
           threads, rounds, cpu_clock ? "CPU" : "wall-clock");
    printf("OpenBLAS %s (core %s), BLIS %s (%s), libxsmm (target %s), oneDNN %d.%d.%d, SLEEF 3.5; qcorr paths: %s\n",
           OPENBLAS_VERSION, openblas_get_corename(), bli_info_get_version_str(), bli_arch_string(bli_arch_query_id()),
           libxsmm_get_target_arch(), v->major, v->minor, v->patch, kernels_supported_list());
    printf("env: OPENBLAS_CORETYPE=%s DNNL_MAX_CPU_ISA=%s LIBXSMM_TARGET=%s\n", getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset",
           getenv("DNNL_MAX_CPU_ISA") ? getenv("DNNL_MAX_CPU_ISA") : "unset", getenv("LIBXSMM_TARGET") ? getenv("LIBXSMM_TARGET") : "unset");
    Rng rng;
    rng_seed(&rng, 42);
    static const int layers_of[] = {2, 4, 6}; /* 64x2, 128x4, 256x6 */
    for (int s = 0; s < n_sizes; s++) products(sizes[s], sizes[s] <= 64 ? layers_of[0] : sizes[s] <= 128 ? layers_of[1] : layers_of[2], rounds, &rng);
    elementwise(rounds, &rng);
    dnnl_stream_destroy(dnnl_stream);
    dnnl_engine_destroy(dnnl_cpu_engine);
    libxsmm_finalize();
    return 0;
}
