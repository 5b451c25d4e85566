/* test_ops: every layer of src/kernels/ops.h against a double-precision forward written here from the
 * math (not from ops.c): forwards match it, backwards match central finite differences of it, the
 * fast kernels match their _ref versions on odd shapes, and each backward keeps the add-into or
 * overwrite contract that ops.h documents. Every test runs once per kernel path this CPU
 * supports (src/kernels/kernels.h), named "test [path]". */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/gemm.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"

/* ---- tolerances ----
 * Finite differences run on the double forward with step 1e-5 on inputs of size ~1: truncation
 * (h^2 f'''/6 ~ 1e-11) and rounding (1e-16 |L| / h ~ 1e-10) leave them exact to ~1e-9, so the
 * comparison measures only the float backward. Its own rounding is a few 2^-24 per accumulated
 * term: ~1e-6 of the tensor's largest gradient for these shapes. GRAD_RTOL 1e-3 relative, with
 * values below GRAD_FLOOR of the tensor's largest gradient judged against that floor (an element
 * that cancels to ~0 cannot be held to a relative bound), leaves a wide margin over float
 * rounding (measured: the worst element of any check uses 7e-3 of its bound), and room for
 * kernels with less exact exp/tanh; a dropped term, a wrong sign or a wrong index changes
 * gradients by O(100%) of their size, >= 100x over the bound. */
#define FD_STEP 1e-5
#define GRAD_RTOL 1e-3
#define GRAD_FLOOR 1e-2
/* Float forwards against the double forward: a handful of roundings of 2^-24 each. */
#define FORWARD_RTOL 1e-5
/* Fast kernel against its _ref (double-accumulated) version: float sums of up to ~40 terms. */
#define REF_RTOL 1e-5
/* The value gradient buffers are pre-filled with to see whether a backward adds or overwrites. */
#define PREFILL 3.0f

/* One struct carries every shape a double forward may need. */
typedef struct {
    int B, T, C, NH, V, P;  /* batch, time, channels, heads, vocabulary, positions */
    int N, IC, OC;          /* rows and matmul channels */
    const int32_t *tokens;  /* embedding inputs (B*T) */
    const int32_t *targets; /* cross-entropy targets (N) */
    int has_bias;
} Shape;

/* A double forward: out from in[0..k). */
typedef void (*ForwardD)(const Shape *s, double *const *in, double *out);

/* ---- small helpers ---- */

static float *floats(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

static double *doubles_of(const float *x, size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = x[i];
    return p;
}

static void fill_value(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* dL/d in[which][i] for L = sum_k out_k R_k, by central differences of the double forward. */
static void finite_difference(ForwardD f, const Shape *s, double *const *in, int which, size_t n_in, const double *R,
                              size_t n_out, double *grad) {
    double *out = calloc(n_out, sizeof(double));
    double *x = in[which];
    for (size_t i = 0; i < n_in; i++) {
        double saved = x[i];
        x[i] = saved + FD_STEP;
        f(s, in, out);
        double plus = dot_d(out, R, n_out);
        x[i] = saved - FD_STEP;
        f(s, in, out);
        double minus = dot_d(out, R, n_out);
        x[i] = saved;
        grad[i] = (plus - minus) / (2.0 * FD_STEP);
    }
    free(out);
}

/* The comparison of the tolerance note above; also refuses an all-zero reference, against which
 * any backward that writes nothing would pass. */
static void assert_grad_matches(const char *what, const float *analytic, const double *fd, size_t n) {
    double scale = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(fd[i]));
    if (!(scale > 1e-3)) fail_msg("%s: reference gradient is ~0 (max %g): the check would prove nothing", what, scale);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)analytic[i] - fd[i]);
        double bound = GRAD_RTOL * fmax(fabs(fd[i]), GRAD_FLOOR * scale);
        worst = fmax(worst, err / bound);
        if (!(err <= bound))
            fail_msg("%s[%zu]: backward %.9g, finite difference %.9g (error %.3g > %.3g)", what, i, analytic[i], fd[i],
                     err, bound);
    }
    /* build with EXTRA_CFLAGS=-DTEST_VERBOSE to see how much of the tolerance each check uses */
#ifdef TEST_VERBOSE
    print_message("  %-28s worst error / bound %.2e\n", what, worst);
#else
    (void)worst;
#endif
}

/* Float output against the double forward, relative with a floor at 1e-2 of the largest value. */
static void assert_forward_matches(const char *what, const float *got, const double *want, size_t n, double rtol) {
    double scale = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        double bound = rtol * fmax(fabs(want[i]), 1e-2 * scale);
        if (!(err <= bound)) fail_msg("%s[%zu]: float %.9g, double %.9g (error %.3g > %.3g)", what, i, got[i], want[i], err, bound);
    }
}

/* Contract checks. `base` is the result from a zero-filled buffer, `got` from a PREFILL-filled one.
 * Adding: got == PREFILL + base up to the rounding of that one addition (and of BLAS's beta=1
 * update, which may fuse it differently): 1e-6 relative. A backward that overwrites misses by
 * PREFILL = 3. */
static void assert_added_into(const char *what, const float *got, const float *base, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double want = (double)PREFILL + base[i];
        if (!(fabs(got[i] - want) <= 1e-6 * (fabs(want) + 1.0)))
            fail_msg("%s[%zu] = %.9g from a buffer pre-filled with %g, want %g + %.9g: not added into", what, i, got[i],
                     (double)PREFILL, (double)PREFILL, base[i]);
    }
}

/* Overwriting: the pre-filled value must be gone entirely. */
static void assert_overwritten(const char *what, const float *got, const float *base, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - base[i]) <= 1e-6 * (fabs(base[i]) + 1.0)))
            fail_msg("%s[%zu] = %.9g from a buffer pre-filled with %g, want %.9g: not overwritten", what, i, got[i],
                     (double)PREFILL, base[i]);
}

static double *random_weights_d(size_t n, Rng *rng) {
    double *r = calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) r[i] = 2.0 * rng_uniform(rng) - 1.0;
    return r;
}

static float *float_copy_of(const double *x, size_t n) {
    float *p = floats(n);
    for (size_t i = 0; i < n; i++) p[i] = (float)x[i];
    return p;
}

/* ================================= embedding ================================= */

/* out[b,t,:] = wte[token[b,t],:] + wpe[t,:] */
static void embedding_d(const Shape *s, double *const *in, double *out) {
    const double *wte = in[0], *wpe = in[1];
    for (int b = 0; b < s->B; b++)
        for (int t = 0; t < s->T; t++)
            for (int c = 0; c < s->C; c++)
                out[((size_t)b * s->T + t) * s->C + c] = wte[(size_t)s->tokens[b * s->T + t] * s->C + c] + wpe[(size_t)t * s->C + c];
}

static void test_embedding(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 101);
    Shape s = {.B = 2, .T = 5, .C = 8, .V = 7, .P = 6};
    int32_t tokens[10];
    /* tokens from [0, V-1): row V-1 never appears (its gradient must stay exactly zero) and with
     * 10 draws from 6 values some token repeats (the scatter must add, not overwrite). P > T: row
     * P-1 of wpe is never read either. */
    for (int i = 0; i < 10; i++) tokens[i] = (int32_t)rng_below(&rng, (uint64_t)s.V - 1);
    tokens[7] = tokens[1];
    s.tokens = tokens;
    size_t nte = (size_t)s.V * s.C, npe = (size_t)s.P * s.C, nout = (size_t)s.B * s.T * s.C;
    float *wte = floats(nte), *wpe = floats(npe), *out = floats(nout);
    fill_uniform(wte, nte, &rng, -1, 1);
    fill_uniform(wpe, npe, &rng, -1, 1);
    double *in[2] = {doubles_of(wte, nte), doubles_of(wpe, npe)};
    double *want = calloc(nout, sizeof(double));

    embedding_forward(out, tokens, wte, wpe, s.B, s.T, s.C);
    embedding_d(&s, in, want);
    assert_forward_matches("embedding out", out, want, nout, FORWARD_RTOL);

    double *R = random_weights_d(nout, &rng), *fd = calloc(npe > nte ? npe : nte, sizeof(double));
    float *dout = float_copy_of(R, nout);
    float *dwte = floats(nte), *dwpe = floats(npe);
    embedding_backward(dwte, dwpe, dout, tokens, s.B, s.T, s.C);
    finite_difference(embedding_d, &s, in, 0, nte, R, nout, fd);
    assert_grad_matches("embedding dwte", dwte, fd, nte);
    for (int c = 0; c < s.C; c++) assert_true(dwte[(size_t)(s.V - 1) * s.C + c] == 0.0f);
    finite_difference(embedding_d, &s, in, 1, npe, R, nout, fd);
    assert_grad_matches("embedding dwpe", dwpe, fd, npe);
    for (int c = 0; c < s.C; c++) assert_true(dwpe[(size_t)(s.P - 1) * s.C + c] == 0.0f);

    /* contract: dwte and dwpe are added into */
    float *dwte2 = floats(nte), *dwpe2 = floats(npe);
    fill_value(dwte2, nte, PREFILL);
    fill_value(dwpe2, npe, PREFILL);
    embedding_backward(dwte2, dwpe2, dout, tokens, s.B, s.T, s.C);
    assert_added_into("embedding dwte", dwte2, dwte, nte);
    assert_added_into("embedding dwpe", dwpe2, dwpe, npe);

    free(wte); free(wpe); free(out); free(in[0]); free(in[1]); free(want); free(R); free(fd);
    free(dout); free(dwte); free(dwpe); free(dwte2); free(dwpe2);
}

/* ================================= layernorm ================================= */

#define LAYERNORM_EPS 1e-5 /* PyTorch's default, which the float model must share to load its weights */

/* per row: mean, biased variance, out = (x - mean) / sqrt(var + eps) * w + b; stats optional */
static void layernorm_full_d(const Shape *s, double *const *in, double *out, double *mean, double *rstd) {
    const double *x = in[0], *w = in[1], *bias = in[2];
    int C = s->C;
    for (int n = 0; n < s->N; n++) {
        const double *row = x + (size_t)n * C;
        double mu = 0.0, var = 0.0;
        for (int c = 0; c < C; c++) mu += row[c];
        mu /= C;
        for (int c = 0; c < C; c++) var += (row[c] - mu) * (row[c] - mu);
        var /= C;
        double r = 1.0 / sqrt(var + LAYERNORM_EPS);
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = (row[c] - mu) * r * w[c] + bias[c];
        if (mean) mean[n] = mu;
        if (rstd) rstd[n] = r;
    }
}

static void layernorm_d(const Shape *s, double *const *in, double *out) { layernorm_full_d(s, in, out, NULL, NULL); }

static void check_layernorm(int N, int C, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    Shape s = {.N = N, .C = C};
    size_t nx = (size_t)N * C;
    float *x = floats(nx), *w = floats(C), *b = floats(C), *out = floats(nx), *mean = floats(N), *rstd = floats(N);
    fill_uniform(x, nx, &rng, -1, 1);
    /* rows with their own offset and spread: the mean and the variance terms both matter */
    for (int n = 0; n < N; n++) {
        float offset = 4.0f * rng_uniform(&rng) - 2.0f, spread = 0.3f + 2.0f * rng_uniform(&rng);
        for (int c = 0; c < C; c++) x[(size_t)n * C + c] = offset + spread * x[(size_t)n * C + c];
    }
    fill_uniform(w, C, &rng, -1.5f, 1.5f);
    fill_uniform(b, C, &rng, -1, 1);
    double *in[3] = {doubles_of(x, nx), doubles_of(w, C), doubles_of(b, C)};
    double *want = calloc(nx, sizeof(double)), *want_mean = calloc(N, sizeof(double)), *want_rstd = calloc(N, sizeof(double));

    layernorm_forward(out, mean, rstd, x, w, b, N, C);
    layernorm_full_d(&s, in, want, want_mean, want_rstd);
    assert_forward_matches("layernorm out", out, want, nx, FORWARD_RTOL);
    assert_forward_matches("layernorm mean", mean, want_mean, N, FORWARD_RTOL);
    assert_forward_matches("layernorm rstd", rstd, want_rstd, N, FORWARD_RTOL);

    double *R = random_weights_d(nx, &rng), *fd = calloc(nx, sizeof(double));
    float *dout = float_copy_of(R, nx);
    float *dx = floats(nx), *dw = floats(C), *db = floats(C);
    layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    finite_difference(layernorm_d, &s, in, 0, nx, R, nx, fd);
    assert_grad_matches("layernorm dinp", dx, fd, nx);
    finite_difference(layernorm_d, &s, in, 1, C, R, nx, fd);
    assert_grad_matches("layernorm dweight", dw, fd, C);
    finite_difference(layernorm_d, &s, in, 2, C, R, nx, fd);
    assert_grad_matches("layernorm dbias", db, fd, C);

    /* contract: all three are added into */
    float *dx2 = floats(nx), *dw2 = floats(C), *db2 = floats(C);
    fill_value(dx2, nx, PREFILL);
    fill_value(dw2, C, PREFILL);
    fill_value(db2, C, PREFILL);
    layernorm_backward(dx2, dw2, db2, dout, x, w, mean, rstd, N, C);
    assert_added_into("layernorm dinp", dx2, dx, nx);
    assert_added_into("layernorm dweight", dw2, dw, C);
    assert_added_into("layernorm dbias", db2, db, C);

    /* frozen parameters (NULL): the input gradient and the other parameter are unchanged */
    memset(dx2, 0, nx * sizeof(float));
    memset(db2, 0, C * sizeof(float));
    layernorm_backward(dx2, NULL, db2, dout, x, w, mean, rstd, N, C);
    assert_memory_equal(dx2, dx, nx * sizeof(float));
    assert_memory_equal(db2, db, C * sizeof(float));
    memset(dx2, 0, nx * sizeof(float));
    memset(dw2, 0, C * sizeof(float));
    layernorm_backward(dx2, dw2, NULL, dout, x, w, mean, rstd, N, C);
    assert_memory_equal(dx2, dx, nx * sizeof(float));
    assert_memory_equal(dw2, dw, C * sizeof(float));
    memset(dx2, 0, nx * sizeof(float));
    layernorm_backward(dx2, NULL, NULL, dout, x, w, mean, rstd, N, C);
    assert_memory_equal(dx2, dx, nx * sizeof(float));

    free(x); free(w); free(b); free(out); free(mean); free(rstd);
    for (int i = 0; i < 3; i++) free(in[i]);
    free(want); free(want_mean); free(want_rstd); free(R); free(fd); free(dout);
    free(dx); free(dw); free(db); free(dx2); free(dw2); free(db2);
}

/* Over many rows the parameter gradients are sums by chunks of rows (ops.c's SUM_ROWS): against
 * double sums formed from the op's own mean and rstd (so only the reduction is under test; over
 * hundreds of rows the forward's float rounding, amplified by rstd, exceeds FORWARD_RTOL at a few
 * outputs) and bit for bit the same at 1 and 2 threads. */
static void check_layernorm_param_sums(int N, int C, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nx = (size_t)N * C;
    float *x = floats(nx), *w = floats(C), *b = floats(C), *out = floats(nx), *mean = floats(N), *rstd = floats(N);
    float *dout = floats(nx), *dx = floats(nx), *dw = floats(C), *db = floats(C);
    fill_uniform(x, nx, &rng, -2, 2);
    fill_uniform(w, C, &rng, -1.5f, 1.5f);
    fill_uniform(b, C, &rng, -1, 1);
    fill_uniform(dout, nx, &rng, -1, 1);
    layernorm_forward(out, mean, rstd, x, w, b, N, C);
    double *want_w = calloc(C, sizeof(double)), *want_b = calloc(C, sizeof(double));
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)n * C + c;
            want_w[c] += ((double)x[i] - mean[n]) * rstd[n] * dout[i];
            want_b[c] += dout[i];
        }
    layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    assert_forward_matches("layernorm dweight sums", dw, want_w, C, FORWARD_RTOL);
    assert_forward_matches("layernorm dbias sums", db, want_b, C, FORWARD_RTOL);
#ifdef _OPENMP
    float *dx2 = floats(nx), *dw2 = floats(C), *db2 = floats(C);
    int threads = omp_get_max_threads();
    for (int t = 1; t <= 2; t++) {
        omp_set_num_threads(t);
        float *gx = t == 1 ? dx2 : dx, *gw = t == 1 ? dw2 : dw, *gb = t == 1 ? db2 : db;
        memset(gx, 0, nx * sizeof(float));
        memset(gw, 0, C * sizeof(float));
        memset(gb, 0, C * sizeof(float));
        layernorm_backward(gx, gw, gb, dout, x, w, mean, rstd, N, C);
    }
    omp_set_num_threads(threads);
    assert_memory_equal(dx2, dx, nx * sizeof(float));
    assert_memory_equal(dw2, dw, C * sizeof(float));
    assert_memory_equal(db2, db, C * sizeof(float));
    free(dx2); free(dw2); free(db2);
#endif
    free(x); free(w); free(b); free(out); free(mean); free(rstd); free(dout); free(dx); free(dw); free(db);
    free(want_w); free(want_b);
}

static void test_layernorm(void **state) {
    (void)state;
    check_layernorm(10, 8, 201);  /* B*T = 2*5 rows of C = 8 */
    check_layernorm(6, 37, 202);  /* C = 37: not a whole number of vectors */
    check_layernorm_param_sums(600, 19, 203); /* row chunks: two of 256 rows and a tail of 88 */
}

/* ================================= matmul ================================= */

/* out[n,o] = bias[o] + sum_i inp[n,i] * weight[o,i] */
static void matmul_d(const Shape *s, double *const *in, double *out) {
    const double *x = in[0], *w = in[1], *bias = s->has_bias ? in[2] : NULL;
    for (int n = 0; n < s->N; n++)
        for (int o = 0; o < s->OC; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < s->IC; i++) acc += x[(size_t)n * s->IC + i] * w[(size_t)o * s->IC + i];
            out[(size_t)n * s->OC + o] = acc;
        }
}

typedef void (*MatmulForward)(float *, const float *, const float *, const float *, int, int, int, int);
typedef void (*MatmulBackward)(float *, float *, float *, const float *, const float *, const float *, int, int, int);

/* Forward (with and without bias, overwrite and accumulate), finite-difference backward and the
 * contract, for one implementation. */
static void check_matmul(const char *name, MatmulForward fwd, MatmulBackward bwd, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    Shape s = {.N = 10, .IC = 8, .OC = 12, .has_bias = 1};
    size_t nx = (size_t)s.N * s.IC, nw = (size_t)s.OC * s.IC, no = (size_t)s.N * s.OC;
    float *x = floats(nx), *w = floats(nw), *b = floats(s.OC), *out = floats(no), *prior = floats(no);
    fill_uniform(x, nx, &rng, -1, 1);
    fill_uniform(w, nw, &rng, -1, 1);
    fill_uniform(b, s.OC, &rng, -1, 1);
    fill_uniform(prior, no, &rng, -1, 1);
    double *in[3] = {doubles_of(x, nx), doubles_of(w, nw), doubles_of(b, s.OC)};
    double *want = calloc(no, sizeof(double));
    char what[96];

    for (int has_bias = 0; has_bias <= 1; has_bias++)
        for (int accumulate = 0; accumulate <= 1; accumulate++) {
            s.has_bias = has_bias;
            matmul_d(&s, in, want);
            if (accumulate)
                for (size_t i = 0; i < no; i++) want[i] += prior[i];
            memcpy(out, prior, no * sizeof(float)); /* overwrite mode must ignore it */
            fwd(out, x, w, has_bias ? b : NULL, s.N, s.IC, s.OC, accumulate);
            snprintf(what, sizeof what, "%s out (bias %d, accumulate %d)", name, has_bias, accumulate);
            assert_forward_matches(what, out, want, no, FORWARD_RTOL);
        }
    s.has_bias = 1;

    double *R = random_weights_d(no, &rng), *fd = calloc(nw, sizeof(double));
    float *dout = float_copy_of(R, no);
    float *dx = floats(nx), *dw = floats(nw), *db = floats(s.OC);
    bwd(dx, dw, db, dout, x, w, s.N, s.IC, s.OC);
    finite_difference(matmul_d, &s, in, 0, nx, R, no, fd);
    snprintf(what, sizeof what, "%s dinp", name);
    assert_grad_matches(what, dx, fd, nx);
    finite_difference(matmul_d, &s, in, 1, nw, R, no, fd);
    snprintf(what, sizeof what, "%s dweight", name);
    assert_grad_matches(what, dw, fd, nw);
    finite_difference(matmul_d, &s, in, 2, s.OC, R, no, fd);
    snprintf(what, sizeof what, "%s dbias", name);
    assert_grad_matches(what, db, fd, s.OC);

    /* contract: dinp overwritten, dweight and dbias added into */
    float *dx2 = floats(nx), *dw2 = floats(nw), *db2 = floats(s.OC);
    fill_value(dx2, nx, PREFILL);
    fill_value(dw2, nw, PREFILL);
    fill_value(db2, s.OC, PREFILL);
    bwd(dx2, dw2, db2, dout, x, w, s.N, s.IC, s.OC);
    snprintf(what, sizeof what, "%s dinp", name);
    assert_overwritten(what, dx2, dx, nx);
    snprintf(what, sizeof what, "%s dweight", name);
    assert_added_into(what, dw2, dw, nw);
    snprintf(what, sizeof what, "%s dbias", name);
    assert_added_into(what, db2, db, s.OC);

    free(x); free(w); free(b); free(out); free(prior);
    for (int i = 0; i < 3; i++) free(in[i]);
    free(want); free(R); free(fd); free(dout); free(dx); free(dw); free(db); free(dx2); free(dw2); free(db2);
}

static void test_matmul(void **state) {
    (void)state;
    check_matmul("matmul (BLAS)", matmul_forward, matmul_backward, 301);
    check_matmul("matmul_ref", matmul_forward_ref, matmul_backward_ref, 302);
}

/* The fast kernels against the loops on shapes no SIMD width divides, every bias/accumulate mode
 * and every combination of NULL (frozen) gradient pointers. */
static void check_matmul_fast_vs_ref(int N, int IC, int OC, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nx = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *x = floats(nx), *w = floats(nw), *b = floats(OC), *prior = floats(no), *dout = floats(no);
    float *fast = floats(no), *ref = floats(no);
    fill_uniform(x, nx, &rng, -1, 1);
    fill_uniform(w, nw, &rng, -1, 1);
    fill_uniform(b, OC, &rng, -1, 1);
    fill_uniform(prior, no, &rng, -1, 1);
    fill_uniform(dout, no, &rng, -1, 1);
    for (int has_bias = 0; has_bias <= 1; has_bias++)
        for (int accumulate = 0; accumulate <= 1; accumulate++) {
            memcpy(fast, prior, no * sizeof(float));
            memcpy(ref, prior, no * sizeof(float));
            matmul_forward(fast, x, w, has_bias ? b : NULL, N, IC, OC, accumulate);
            matmul_forward_ref(ref, x, w, has_bias ? b : NULL, N, IC, OC, accumulate);
            double d = max_rel_diff(fast, ref, no, 1.0);
            if (!(d <= REF_RTOL)) fail_msg("matmul_forward vs ref (bias %d, accumulate %d): %g", has_bias, accumulate, d);
        }

    float *dx[2] = {floats(nx), floats(nx)}, *dw[2] = {floats(nw), floats(nw)}, *db[2] = {floats(OC), floats(OC)};
    size_t nmax = nx > nw ? nx : nw; /* OC <= nw */
    float *grad_prior = floats(nmax);
    fill_uniform(grad_prior, nmax, &rng, -1, 1);
    for (int mask = 0; mask < 8; mask++) {
        int want_dx = mask & 1, want_dw = mask & 2, want_db = mask & 4;
        for (int k = 0; k < 2; k++) {
            /* the same non-zero prior in both: the adds must agree too, and dinp must overwrite it */
            memcpy(dx[k], grad_prior, nx * sizeof(float));
            memcpy(dw[k], grad_prior, nw * sizeof(float));
            memcpy(db[k], grad_prior, OC * sizeof(float));
        }
        matmul_backward(want_dx ? dx[0] : NULL, want_dw ? dw[0] : NULL, want_db ? db[0] : NULL, dout, x, w, N, IC, OC);
        matmul_backward_ref(want_dx ? dx[1] : NULL, want_dw ? dw[1] : NULL, want_db ? db[1] : NULL, dout, x, w, N, IC, OC);
        double ddx = max_rel_diff(dx[0], dx[1], nx, 1.0), ddw = max_rel_diff(dw[0], dw[1], nw, 1.0);
        double ddb = max_rel_diff(db[0], db[1], OC, 1.0);
        if (!(ddx <= REF_RTOL && ddw <= REF_RTOL && ddb <= REF_RTOL))
            fail_msg("matmul_backward vs ref (dinp %d, dweight %d, dbias %d): %g %g %g", !!want_dx, !!want_dw, !!want_db,
                     ddx, ddw, ddb);
        /* a NULL pointer means the buffer is not touched at all */
        if (!want_dw) assert_memory_equal(dw[0], grad_prior, nw * sizeof(float));
        if (!want_db) assert_memory_equal(db[0], grad_prior, OC * sizeof(float));
        if (!want_dx) assert_memory_equal(dx[0], grad_prior, nx * sizeof(float));
    }
    free(x); free(w); free(b); free(prior); free(dout); free(fast); free(ref); free(grad_prior);
    for (int k = 0; k < 2; k++) { free(dx[k]); free(dw[k]); free(db[k]); }
}

static void test_matmul_fast_vs_ref(void **state) {
    (void)state;
    check_matmul_fast_vs_ref(7, 19, 23, 303);   /* fewer than GEMM_MIN_ROWS: the CBLAS path */
    check_matmul_fast_vs_ref(37, 19, 23, 304);  /* gemm: a last row block of 1, one narrow panel */
    check_matmul_fast_vs_ref(70, 40, 37, 305);  /* gemm: rows 4k+2, two whole panels and 5 columns */
    check_matmul_fast_vs_ref(64, 64, 192, 306); /* the 64x2 model's qkv layer shape, whole tiles */
    check_matmul_fast_vs_ref(20, 300, 300, 307); /* a weight bigger than a panel group: several groups */
}

/* gemm against a double-accumulated loop: both layouts of B, leading dimensions wider than the
 * rows, every bias/accumulate mode, M % 4 and N % 16 of every kind, and a depth of 0. */
static void check_gemm(int M, int N, int K, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    int lda = K + 3, ldb_n = N + 5, ldb_t = K + 2, ldc = N + 1;
    float *a = floats((size_t)M * lda), *bn = floats((size_t)K * ldb_n + 1), *bt = floats((size_t)N * ldb_t + 1);
    float *bias = floats(N), *prior = floats((size_t)M * ldc), *got = floats((size_t)M * ldc), *want = floats((size_t)M * ldc);
    fill_uniform(a, (size_t)M * lda, &rng, -1, 1);
    fill_uniform(bn, (size_t)K * ldb_n, &rng, -1, 1);
    fill_uniform(bias, N, &rng, -1, 1);
    fill_uniform(prior, (size_t)M * ldc, &rng, -1, 1);
    for (int n = 0; n < N; n++) /* the same op(B) stored transposed */
        for (int k = 0; k < K; k++) bt[(size_t)n * ldb_t + k] = bn[(size_t)k * ldb_n + n];
    for (int transposed = 0; transposed <= 1; transposed++)
        for (int has_bias = 0; has_bias <= 1; has_bias++)
            for (int accumulate = 0; accumulate <= 1; accumulate++) {
                memcpy(got, prior, (size_t)M * ldc * sizeof(float));
                memcpy(want, prior, (size_t)M * ldc * sizeof(float));
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) {
                        double s = accumulate ? prior[(size_t)m * ldc + n] : 0.0;
                        if (has_bias) s += bias[n];
                        for (int k = 0; k < K; k++) s += (double)a[(size_t)m * lda + k] * bn[(size_t)k * ldb_n + n];
                        want[(size_t)m * ldc + n] = (float)s;
                    }
                assert_int_equal(gemm(M, N, K, a, lda, transposed ? bt : bn, transposed ? ldb_t : ldb_n, transposed,
                                      has_bias ? bias : NULL, got, ldc, accumulate),
                                 0);
                double d = max_rel_diff(got, want, (size_t)M * ldc, 1.0);
                /* REF_RTOL covers ~40 float terms; rounding errors of a K-term sum grow like sqrt(K) */
                if (!(d <= REF_RTOL * fmax(1.0, sqrt(K / 40.0))))
                    fail_msg("gemm M %d N %d K %d (transposed %d, bias %d, accumulate %d): %g", M, N, K, transposed,
                             has_bias, accumulate, d);
                /* the padding columns of C (ldc > N) are never written */
                for (int m = 0; m < M; m++) assert_true(got[(size_t)m * ldc + N] == prior[(size_t)m * ldc + N]);
            }
    free(a); free(bn); free(bt); free(bias); free(prior); free(got); free(want);
}

static void test_gemm(void **state) {
    (void)state;
    check_gemm(1, 1, 1, 310);
    check_gemm(3, 7, 5, 311);     /* fewer rows than a tile, narrower than a vector */
    check_gemm(9, 16, 33, 312);   /* one whole panel */
    check_gemm(18, 47, 64, 313);  /* two whole panels and 15 columns */
    check_gemm(37, 65, 70, 314);  /* the LM head's 65 columns */
    check_gemm(6, 20, 0, 315);    /* depth 0: C = prior and/or bias */
    check_gemm(41, 40, 1100, 316); /* a depth whose panels do not fit the cache group together */
    check_gemm(122, 40, 1100, 318); /* several row chunks per thread, the last partial */
#ifdef _OPENMP
    /* each element summed by one thread in one order: bitwise the same at 1 and 2 threads */
    int M = 67, N = 70, K = 90;
    Rng rng;
    rng_seed(&rng, 317);
    float *a = floats((size_t)M * K), *b = floats((size_t)N * K), *c1 = floats((size_t)M * N), *c2 = floats((size_t)M * N);
    fill_uniform(a, (size_t)M * K, &rng, -1, 1);
    fill_uniform(b, (size_t)N * K, &rng, -1, 1);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(gemm(M, N, K, a, K, b, K, 1, NULL, c1, N, 0), 0);
    omp_set_num_threads(2);
    assert_int_equal(gemm(M, N, K, a, K, b, K, 1, NULL, c2, N, 0), 0);
    omp_set_num_threads(threads);
    assert_memory_equal(c1, c2, (size_t)M * N * sizeof(float));
    free(a); free(b); free(c1); free(c2);
#endif
}

/* Every tile edge of every path: rows past each tile height (4, 12), columns past each panel
 * width (16, 32, 64) by less than a vector, by one and by several vectors. */
static void test_gemm_edges(void **state) {
    (void)state;
    static const int rows[] = {1, 5, 13, 25}, cols[] = {1, 9, 17, 33, 47, 57, 70, 100, 129};
    uint64_t seed = 330;
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        for (size_t j = 0; j < sizeof cols / sizeof *cols; j++) check_gemm(rows[i], cols[j], 19, seed++);
}

/* gemm_at_b: C (+)= A^T B against a double-accumulated loop, with leading dimensions wider than
 * the rows, a prior in C (added into) and the padding columns of C untouched. */
static void check_gemm_at_b(int M, int N, int K, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    int lda = M + 3, ldb = N + 2, ldc = N + 1;
    float *a = floats((size_t)K * lda), *b = floats((size_t)K * ldb), *got = floats((size_t)M * ldc);
    float *want = floats((size_t)M * ldc);
    fill_uniform(a, (size_t)K * lda, &rng, -1, 1);
    fill_uniform(b, (size_t)K * ldb, &rng, -1, 1);
    fill_uniform(got, (size_t)M * ldc, &rng, -1, 1);
    memcpy(want, got, (size_t)M * ldc * sizeof(float));
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = want[(size_t)m * ldc + n];
            for (int k = 0; k < K; k++) s += (double)a[(size_t)k * lda + m] * b[(size_t)k * ldb + n];
            want[(size_t)m * ldc + n] = (float)s;
        }
    float *pad = copy_floats(got, (size_t)M * ldc);
    assert_int_equal(gemm_at_b(M, N, K, a, lda, b, ldb, got, ldc), 0);
    double d = max_rel_diff(got, want, (size_t)M * ldc, 1.0);
    if (!(d <= REF_RTOL * fmax(1.0, sqrt(K / 40.0)))) fail_msg("gemm_at_b M %d N %d K %d: %g", M, N, K, d);
    for (int m = 0; m < M; m++) assert_true(got[(size_t)m * ldc + N] == pad[(size_t)m * ldc + N]);
    free(a); free(b); free(got); free(want); free(pad);
}

static void test_gemm_at_b(void **state) {
    (void)state;
    check_gemm_at_b(1, 1, 1, 340);
    check_gemm_at_b(7, 5, 3, 341);       /* narrower than a vector, fewer rows than a tile */
    check_gemm_at_b(13, 33, 200, 342);   /* past a tile and a panel; a depth block and a part */
    check_gemm_at_b(65, 64, 300, 343);   /* the LM head's weight gradient: 65 rows */
    check_gemm_at_b(48, 100, 129, 344);  /* whole tiles of 4 and 12 rows, a narrow last panel */
    check_gemm_at_b(24, 3, 1000, 345);   /* fewer panels than threads: the rows split instead */
#ifdef _OPENMP
    /* each element summed in one order by one thread: bitwise the same at 1 and 2 threads,
     * whether the threads split the panels (N 96) or the rows (N 16) */
    for (int N = 16; N <= 96; N += 80) {
        int M = 40, K = 333;
        Rng rng;
        rng_seed(&rng, 346);
        float *a = floats((size_t)M * K), *b = floats((size_t)N * K), *c1 = floats((size_t)M * N), *c2 = floats((size_t)M * N);
        fill_uniform(a, (size_t)M * K, &rng, -1, 1);
        fill_uniform(b, (size_t)N * K, &rng, -1, 1);
        int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        assert_int_equal(gemm_at_b(M, N, K, a, M, b, N, c1, N), 0);
        omp_set_num_threads(2);
        assert_int_equal(gemm_at_b(M, N, K, a, M, b, N, c2, N), 0);
        omp_set_num_threads(threads);
        assert_memory_equal(c1, c2, (size_t)M * N * sizeof(float));
        free(a); free(b); free(c1); free(c2);
    }
#endif
}

/* ================================= attention ================================= */

/* For each (b, h, t): scores q_t.k_u / sqrt(hs) for u <= t, softmax over u, y = sum_u p_u v_u. */
static void attention_full_d(const Shape *s, const double *qkv, double *out, double *att) {
    int T = s->T, C = s->C, NH = s->NH, hs = C / NH;
    double *p = calloc((size_t)T, sizeof(double));
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const double *q = qkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
                double top = -INFINITY, z = 0.0;
                for (int u = 0; u <= t; u++) {
                    const double *k = qkv + ((size_t)b * T + u) * 3 * C + C + (size_t)h * hs;
                    double sc = 0.0;
                    for (int i = 0; i < hs; i++) sc += q[i] * k[i];
                    p[u] = sc / sqrt((double)hs);
                    top = fmax(top, p[u]);
                }
                for (int u = 0; u <= t; u++) z += (p[u] = exp(p[u] - top));
                for (int u = 0; u < T; u++) {
                    double prob = u <= t ? p[u] / z : 0.0;
                    if (att) att[(((size_t)b * NH + h) * T + t) * T + u] = prob;
                }
                for (int i = 0; i < hs; i++) {
                    double y = 0.0;
                    for (int u = 0; u <= t; u++) y += p[u] / z * qkv[((size_t)b * T + u) * 3 * C + 2 * C + (size_t)h * hs + i];
                    out[((size_t)b * T + t) * C + (size_t)h * hs + i] = y;
                }
            }
    free(p);
}

static void attention_d(const Shape *s, double *const *in, double *out) { attention_full_d(s, in[0], out, NULL); }

typedef void (*AttentionForward)(float *, float *, const float *, int, int, int, int);
typedef void (*AttentionBackward)(float *, const float *, const float *, const float *, int, int, int, int);

static void check_attention(const char *name, AttentionForward fwd, AttentionBackward bwd, int B, int T, int C, int NH,
                            uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    Shape s = {.B = B, .T = T, .C = C, .NH = NH};
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
    float *qkv = floats(nqkv), *out = floats(no), *att = floats(natt);
    /* range +-2: scores of a few units, so the softmax is neither uniform nor one-hot */
    fill_uniform(qkv, nqkv, &rng, -2, 2);
    fill_value(att, natt, PREFILL); /* the zeros above the diagonal must be written */
    double *in[1] = {doubles_of(qkv, nqkv)};
    double *want = calloc(no, sizeof(double)), *want_att = calloc(natt, sizeof(double));
    char what[96];

    fwd(out, att, qkv, B, T, C, NH);
    attention_full_d(&s, in[0], want, want_att);
    snprintf(what, sizeof what, "%s out", name);
    assert_forward_matches(what, out, want, no, FORWARD_RTOL);
    snprintf(what, sizeof what, "%s att", name);
    assert_forward_matches(what, att, want_att, natt, FORWARD_RTOL);
    for (int bh = 0; bh < B * NH; bh++)
        for (int t = 0; t < T; t++)
            for (int u = t + 1; u < T; u++) assert_true(att[((size_t)bh * T + t) * T + u] == 0.0f);

    double *R = random_weights_d(no, &rng), *fd = calloc(nqkv, sizeof(double));
    float *dout = float_copy_of(R, no), *dqkv = floats(nqkv), *dqkv2 = floats(nqkv);
    bwd(dqkv, dout, qkv, att, B, T, C, NH);
    finite_difference(attention_d, &s, in, 0, nqkv, R, no, fd);
    snprintf(what, sizeof what, "%s dqkv", name);
    assert_grad_matches(what, dqkv, fd, nqkv);

    /* contract: dqkv is overwritten */
    fill_value(dqkv2, nqkv, PREFILL);
    bwd(dqkv2, dout, qkv, att, B, T, C, NH);
    assert_overwritten(what, dqkv2, dqkv, nqkv);

    free(qkv); free(out); free(att); free(in[0]); free(want); free(want_att); free(R); free(fd); free(dout);
    free(dqkv); free(dqkv2);
}

static void test_attention(void **state) {
    (void)state;
    check_attention("attention", attention_forward, attention_backward, 2, 5, 8, 2, 401);
    check_attention("attention_ref", attention_forward_ref, attention_backward_ref, 2, 5, 8, 2, 402);
    /* head size 3: nothing is a power of two */
    check_attention("attention", attention_forward, attention_backward, 2, 5, 12, 4, 403);
}

/* The fast kernels against the _ref ones, fed the same att and dout, on odd shapes. */
static void check_attention_fast_vs_ref(int B, int T, int C, int NH, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
    float *qkv = floats(nqkv), *dout = floats(no);
    float *out[2] = {floats(no), floats(no)}, *att[2] = {floats(natt), floats(natt)}, *dqkv[2] = {floats(nqkv), floats(nqkv)};
    fill_uniform(qkv, nqkv, &rng, -2, 2);
    fill_uniform(dout, no, &rng, -1, 1);
    attention_forward(out[0], att[0], qkv, B, T, C, NH);
    attention_forward_ref(out[1], att[1], qkv, B, T, C, NH);
    double dout_diff = max_rel_diff(out[0], out[1], no, 1.0), datt = max_rel_diff(att[0], att[1], natt, 1.0);
    if (!(dout_diff <= REF_RTOL && datt <= REF_RTOL))
        fail_msg("attention_forward vs ref (B %d T %d C %d NH %d): out %g att %g", B, T, C, NH, dout_diff, datt);
    for (int k = 0; k < 2; k++) fill_value(dqkv[k], nqkv, PREFILL);
    attention_backward(dqkv[0], dout, qkv, att[0], B, T, C, NH);
    attention_backward_ref(dqkv[1], dout, qkv, att[0], B, T, C, NH);
    double dd = max_rel_diff(dqkv[0], dqkv[1], nqkv, 1.0);
    if (!(dd <= REF_RTOL)) fail_msg("attention_backward vs ref (B %d T %d C %d NH %d): %g", B, T, C, NH, dd);
    free(qkv); free(dout);
    for (int k = 0; k < 2; k++) { free(out[k]); free(att[k]); free(dqkv[k]); }
}

static void test_attention_fast_vs_ref(void **state) {
    (void)state;
    check_attention_fast_vs_ref(2, 13, 21, 3, 404); /* hs 7 */
    check_attention_fast_vs_ref(3, 7, 10, 2, 405);  /* hs 5 */
    check_attention_fast_vs_ref(1, 1, 6, 2, 406);   /* a single position: softmax of one score */
    check_attention_fast_vs_ref(2, 37, 36, 2, 407); /* T past any 8/16/32-wide blocking, hs 18 */
    check_attention_fast_vs_ref(1, 100, 24, 2, 408); /* hs 12: an 8-wide tile and 4 columns by scalar loop */
    check_attention_fast_vs_ref(2, 128, 32, 4, 409); /* the sweep's context, blocks exactly whole */
    check_attention_fast_vs_ref(2, 128, 64, 4, 410); /* hs 16: one 16-wide register tile per row block */
    check_attention_fast_vs_ref(1, 50, 128, 2, 411); /* hs 64; T % 4 == 2: a last block of two rows */
    check_attention_fast_vs_ref(1, 23, 40, 1, 412);  /* hs 40: 16 + 16 + 8 columns; three-row last block */
}

/* ================================= gelu ================================= */

/* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the tanh approximation (README: Float model and
 * training) */
static void gelu_d(const Shape *s, double *const *in, double *out) {
    const double *x = in[0];
    for (int i = 0; i < s->N; i++)
        out[i] = 0.5 * x[i] * (1.0 + tanh(sqrt(2.0 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
}

static void test_gelu(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 501);
    enum { N = 48 };
    Shape s = {.N = N};
    float x[N], out[N], dx[N], dx2[N], alias[N];
    fill_uniform(x, N, &rng, -4, 4);
    /* the points where tanh saturates, the origin and both sides of it */
    const float special[] = {0.0f, 1e-3f, -1e-3f, 1.0f, -1.0f, 3.0f, -3.0f, 5.5f, -5.5f};
    memcpy(x, special, sizeof special);
    double *in[1] = {doubles_of(x, N)};
    double want[N], fd[N];
    gelu_forward(out, x, N);
    gelu_d(&s, in, want);
    assert_forward_matches("gelu out", out, want, N, FORWARD_RTOL);

    double *R = random_weights_d(N, &rng);
    float *dout = float_copy_of(R, N);
    gelu_backward(dx, x, dout, N);
    finite_difference(gelu_d, &s, in, 0, N, R, N, fd);
    assert_grad_matches("gelu dinp", dx, fd, N);

    /* contract: dinp is overwritten, and may alias dout (the model runs it in place) */
    fill_value(dx2, N, PREFILL);
    gelu_backward(dx2, x, dout, N);
    assert_overwritten("gelu dinp", dx2, dx, N);
    memcpy(alias, dout, sizeof alias);
    gelu_backward(alias, x, alias, N);
    assert_memory_equal(alias, dx, sizeof alias);

    /* the pair the model runs: the forward saves the tanh, the backward reads it; the same
     * values as recomputing (the same float expression), in place too */
    float out_saved[N], th[N], dx_saved[N];
    gelu_forward_saving(out_saved, th, x, N);
    assert_forward_matches("gelu_forward_saving out", out_saved, want, N, FORWARD_RTOL);
    for (int i = 0; i < N; i++)
        assert_true(fabs(th[i] - tanh(0.7978845608028654 * (x[i] + 0.044715 * x[i] * x[i] * x[i]))) <= 1e-6);
    gelu_backward_saved(dx_saved, x, th, dout, N);
    assert_grad_matches("gelu_backward_saved dinp", dx_saved, fd, N);
    double d = max_rel_diff(dx_saved, dx, N, 1e-6);
    if (!(d <= 1e-6)) fail_msg("gelu_backward_saved differs from gelu_backward: %g", d);
    memcpy(alias, dout, sizeof alias);
    gelu_backward_saved(alias, x, th, alias, N);
    assert_memory_equal(alias, dx_saved, sizeof alias);
    free(in[0]); free(R); free(dout);
}

/* ================================= exp ================================= */

/* The exponential of softmax, cross-entropy and GELU (exp_simd, through the path's exp_array):
 * within 2 ulp of the correctly rounded exp over its whole range [-87, 88] (measured: 1.02),
 * clamped below it (a tiny positive number, never 0 or a denormal), and NaN kept NaN, which the
 * training loop's anomaly check relies on. */
static void test_exp(void **state) {
    (void)state;
    enum { N = 200003 };
    float *x = floats(N + 4), *y = floats(N + 4);
    for (int i = 0; i < N; i++) x[i] = (float)(-87.0 + 175.0 * i / (N - 1)); /* the last exactly 88 */
    x[N] = -1000.0f;
    x[N + 1] = NAN;
    x[N + 2] = 0.0f;
    x[N + 3] = 1.0f;
    kernels()->exp_array(y, x, N + 4);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        double want = exp((double)x[i]);
        float w = (float)want, ulp = nextafterf(w, INFINITY) - w;
        double err = fabs((double)y[i] - want) / ulp;
        if (err > worst) worst = err;
        if (!(err <= 2.0)) fail_msg("exp(%.9g) = %.9g, want %.9g: %.2f ulp", x[i], y[i], want, err);
    }
    assert_true(y[N] > 0.0f && y[N] < 1e-37f);
    assert_true(isnan(y[N + 1]));
    assert_true(y[N + 2] == 1.0f);
    assert_true(fabs(y[N + 3] - 2.718281828) <= 2.5e-7);
    free(x); free(y);
}

/* ================================= residual ================================= */

/* residual_forward has no backward of its own: the gradient of a + b is the identity into both,
 * which gpt_backward passes by leaving the stream gradient in place (tests/test_model.c checks
 * that end to end). Here: the forward, and that out may be one of its inputs (x += f(x) in place). */
static void test_residual(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 601);
    enum { N = 83 };
    float a[N], b[N], out[N], inplace[N];
    fill_uniform(a, N, &rng, -1, 1);
    fill_uniform(b, N, &rng, -1, 1);
    residual_forward(out, a, b, N);
    /* one float addition is correctly rounded: the float result must equal the rounded exact sum */
    for (int i = 0; i < N; i++) assert_true(out[i] == (float)((double)a[i] + (double)b[i]));
    memcpy(inplace, a, sizeof inplace);
    residual_forward(inplace, inplace, b, N);
    assert_memory_equal(inplace, out, sizeof out);
}

/* ================================= cross-entropy ================================= */

/* per row: log sum_v exp(z_v) - z_target */
static void crossentropy_d(const Shape *s, double *const *in, double *out) {
    const double *z = in[0];
    for (int n = 0; n < s->N; n++) {
        const double *row = z + (size_t)n * s->V;
        double top = row[0], sum = 0.0;
        for (int v = 1; v < s->V; v++) top = fmax(top, row[v]);
        for (int v = 0; v < s->V; v++) sum += exp(row[v] - top);
        out[n] = top + log(sum) - row[s->targets[n]];
    }
}

static void check_crossentropy(float shift, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    enum { N = 10, V = 7 };
    int32_t targets[N];
    for (int n = 0; n < N; n++) targets[n] = (int32_t)rng_below(&rng, V);
    Shape s = {.N = N, .V = V, .targets = targets};
    float z[N * V], dz[N * V], dz2[N * V];
    fill_uniform(z, N * V, &rng, -3, 3);
    for (int i = 0; i < N * V; i++) z[i] += shift; /* a softmax that skips the max-shift overflows here */
    double *in[1] = {doubles_of(z, N * V)};
    double losses[N], fd[N * V];
    crossentropy_d(&s, in, losses);
    double want = 0.0;
    for (int n = 0; n < N; n++) want += losses[n];
    want /= N;

    /* dloss is not 1/N, so a backward that ignores it (or assumes the mean) fails */
    const float dloss = 0.37f;
    double loss = crossentropy_forward_backward(dz, z, targets, N, V, dloss);
    if (!(fabs(loss - want) <= 1e-6 * fabs(want) + 1e-7)) fail_msg("cross-entropy (shift %g): %.12g, double %.12g", shift, loss, want);
    double loss_only = crossentropy_forward_backward(NULL, z, targets, N, V, dloss);
    assert_true(loss_only == loss);

    double R[N];
    for (int n = 0; n < N; n++) R[n] = dloss; /* the backward is of dloss * (sum of the row losses) */
    finite_difference(crossentropy_d, &s, in, 0, N * V, R, N, fd);
    assert_grad_matches("cross-entropy dlogits", dz, fd, N * V);

    /* contract: dlogits is overwritten */
    fill_value(dz2, N * V, PREFILL);
    crossentropy_forward_backward(dz2, z, targets, N, V, dloss);
    assert_overwritten("cross-entropy dlogits", dz2, dz, N * V);
    free(in[0]);
}

static void test_crossentropy(void **state) {
    (void)state;
    check_crossentropy(0.0f, 701);
    check_crossentropy(100.0f, 702); /* exp(100) overflows float */
}

/* ================================= column_sum_add ================================= */

/* column_sum_add is the bias gradient: for out[n,c] = x[n,c] + bias[c] and L = sum(out * R),
 * dL/dbias = column sums of R, which column_sum_add(dbias, R) must add. */
static void bias_add_d(const Shape *s, double *const *in, double *out) {
    for (int n = 0; n < s->N; n++)
        for (int c = 0; c < s->C; c++) out[(size_t)n * s->C + c] = in[0][(size_t)n * s->C + c] + in[1][c];
}

static void check_column_sum_add(int N, int C, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    Shape s = {.N = N, .C = C};
    size_t n = (size_t)s.N * s.C;
    float *x = floats(n), *bias = floats(s.C), *got = floats(s.C), *got2 = floats(s.C);
    fill_uniform(x, n, &rng, -1, 1);
    fill_uniform(bias, s.C, &rng, -1, 1);
    double *in[2] = {doubles_of(x, n), doubles_of(bias, s.C)}, *R = random_weights_d(n, &rng), *fd = calloc(s.C, sizeof(double));
    float *dout = float_copy_of(R, n);

    /* forward: the column sums themselves, against the double sums */
    double *want = calloc(s.C, sizeof(double));
    for (size_t i = 0; i < n; i++) want[i % s.C] += R[i];
    column_sum_add(got, dout, s.N, s.C);
    assert_forward_matches("column sums", got, want, s.C, FORWARD_RTOL);
    /* as the bias gradient */
    finite_difference(bias_add_d, &s, in, 1, s.C, R, n, fd);
    assert_grad_matches("column_sum_add dbias", got, fd, s.C);

    /* contract: out is added into */
    fill_value(got2, s.C, PREFILL);
    column_sum_add(got2, dout, s.N, s.C);
    assert_added_into("column_sum_add out", got2, got, s.C);

#ifdef _OPENMP
    /* documented as independent of the thread count: bit for bit */
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    memset(got2, 0, s.C * sizeof(float));
    column_sum_add(got2, dout, s.N, s.C);
    omp_set_num_threads(threads > 1 ? threads : 2);
    memset(got, 0, s.C * sizeof(float));
    column_sum_add(got, dout, s.N, s.C);
    omp_set_num_threads(threads);
    assert_memory_equal(got, got2, s.C * sizeof(float));
#endif
    free(x); free(bias); free(got); free(got2); free(in[0]); free(in[1]); free(R); free(fd); free(dout); free(want);
}

static void test_column_sum_add(void **state) {
    (void)state;
    check_column_sum_add(41, 37, 801);  /* C = 37: not a whole number of vectors */
    check_column_sum_add(600, 21, 802); /* row chunks of 256: two whole and a tail of 88 */
}

/* ================================= fast path against _ref ================================= */

/* LayerNorm, GELU, cross-entropy and the column sums against their library _ref (double, the
 * textbook formula) on the path in use, like matmul's and attention's above: the same inputs,
 * the same prior in every buffer that is added into, every NULL (frozen) parameter gradient. */
static void check_layernorm_fast_vs_ref(int N, int C, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nx = (size_t)N * C;
    float *x = floats(nx), *w = floats(C), *b = floats(C), *dout = floats(nx);
    float *out[2] = {floats(nx), floats(nx)}, *mean[2] = {floats(N), floats(N)}, *rstd[2] = {floats(N), floats(N)};
    fill_uniform(x, nx, &rng, -1, 1);
    for (int n = 0; n < N; n++) { /* rows with their own offset and spread */
        float offset = 6.0f * rng_uniform(&rng) - 3.0f, spread = 0.2f + 2.0f * rng_uniform(&rng);
        for (int c = 0; c < C; c++) x[(size_t)n * C + c] = offset + spread * x[(size_t)n * C + c];
    }
    fill_uniform(w, C, &rng, -1.5f, 1.5f);
    fill_uniform(b, C, &rng, -1, 1);
    fill_uniform(dout, nx, &rng, -1, 1);
    layernorm_forward(out[0], mean[0], rstd[0], x, w, b, N, C);
    layernorm_forward_ref(out[1], mean[1], rstd[1], x, w, b, N, C);
    double d_out = max_rel_diff(out[0], out[1], nx, 1.0), d_mean = max_rel_diff(mean[0], mean[1], N, 1.0);
    double d_rstd = max_rel_diff(rstd[0], rstd[1], N, 0.0);
    if (!(d_out <= REF_RTOL && d_mean <= REF_RTOL && d_rstd <= REF_RTOL))
        fail_msg("layernorm_forward vs ref (N %d C %d): out %g mean %g rstd %g", N, C, d_out, d_mean, d_rstd);
    float *dx[2] = {floats(nx), floats(nx)}, *dw[2] = {floats(C), floats(C)}, *db[2] = {floats(C), floats(C)};
    for (int mask = 0; mask < 4; mask++) {
        int want_dw = mask & 1, want_db = mask & 2;
        for (int k = 0; k < 2; k++) {
            fill_value(dx[k], nx, PREFILL);
            fill_value(dw[k], C, PREFILL);
            fill_value(db[k], C, PREFILL);
        }
        /* both from the fast forward's statistics, as a training step reads them */
        layernorm_backward(dx[0], want_dw ? dw[0] : NULL, want_db ? db[0] : NULL, dout, x, w, mean[0], rstd[0], N, C);
        layernorm_backward_ref(dx[1], want_dw ? dw[1] : NULL, want_db ? db[1] : NULL, dout, x, w, mean[0], rstd[0], N, C);
        double ddx = max_rel_diff(dx[0], dx[1], nx, 1.0), ddw = max_rel_diff(dw[0], dw[1], C, 1.0), ddb = max_rel_diff(db[0], db[1], C, 1.0);
        if (!(ddx <= REF_RTOL && ddw <= REF_RTOL && ddb <= REF_RTOL))
            fail_msg("layernorm_backward vs ref (N %d C %d, dweight %d, dbias %d): %g %g %g", N, C, !!want_dw, !!want_db, ddx, ddw, ddb);
    }
    free(x); free(w); free(b); free(dout);
    for (int k = 0; k < 2; k++) { free(out[k]); free(mean[k]); free(rstd[k]); free(dx[k]); free(dw[k]); free(db[k]); }
}

static void check_gelu_fast_vs_ref(long N, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    float *x = floats((size_t)N), *dout = floats((size_t)N), *th = floats((size_t)N);
    float *out[3] = {floats((size_t)N), floats((size_t)N), floats((size_t)N)}, *dx[3] = {floats((size_t)N), floats((size_t)N), floats((size_t)N)};
    fill_uniform(x, (size_t)N, &rng, -6, 6);
    fill_uniform(dout, (size_t)N, &rng, -1, 1);
    gelu_forward(out[0], x, N);
    gelu_forward_saving(out[2], th, x, N);
    gelu_forward_ref(out[1], x, N);
    gelu_backward(dx[0], x, dout, N);
    gelu_backward_saved(dx[2], x, th, dout, N);
    gelu_backward_ref(dx[1], x, dout, N);
    for (int k = 0; k < 3; k += 2) {
        double d_out = max_rel_diff(out[k], out[1], (size_t)N, 1.0), d_dx = max_rel_diff(dx[k], dx[1], (size_t)N, 1.0);
        if (!(d_out <= REF_RTOL && d_dx <= REF_RTOL))
            fail_msg("gelu%s vs ref (N %ld): out %g dinp %g", k ? " (saving the tanh)" : "", N, d_out, d_dx);
    }
    free(x); free(dout); free(th);
    for (int k = 0; k < 3; k++) { free(out[k]); free(dx[k]); }
}

static void check_crossentropy_fast_vs_ref(int N, int V, float shift, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nz = (size_t)N * V;
    float *z = floats(nz), *dz[2] = {floats(nz), floats(nz)};
    int32_t *targets = malloc((size_t)N * sizeof(int32_t));
    assert_non_null(targets);
    fill_uniform(z, nz, &rng, -4, 4);
    for (size_t i = 0; i < nz; i++) z[i] += shift;
    for (int n = 0; n < N; n++) targets[n] = (int32_t)rng_below(&rng, (uint64_t)V);
    float dloss = 1.0f / N;
    double loss = crossentropy_forward_backward(dz[0], z, targets, N, V, dloss);
    double loss_ref = crossentropy_forward_backward_ref(dz[1], z, targets, N, V, dloss);
    double loss_only = crossentropy_forward_backward(NULL, z, targets, N, V, dloss);
    double d_dz = max_rel_diff(dz[0], dz[1], nz, dloss); /* against the scale of the gradient, dloss */
    if (!(fabs(loss - loss_ref) <= REF_RTOL * fabs(loss_ref) && loss_only == loss && d_dz <= REF_RTOL))
        fail_msg("crossentropy vs ref (N %d V %d shift %g): loss %.9g vs %.9g (without dlogits %.9g), dlogits %g", N, V, shift, loss,
                 loss_ref, loss_only, d_dz);
    free(z); free(targets);
    for (int k = 0; k < 2; k++) free(dz[k]);
}

static void check_column_sum_add_fast_vs_ref(int N, int C, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    float *x = floats((size_t)N * C), *sum[2] = {floats(C), floats(C)};
    fill_uniform(x, (size_t)N * C, &rng, -1, 1);
    for (int k = 0; k < 2; k++) fill_value(sum[k], C, PREFILL);
    column_sum_add(sum[0], x, N, C);
    column_sum_add_ref(sum[1], x, N, C);
    double d = max_rel_diff(sum[0], sum[1], C, 1.0);
    if (!(d <= REF_RTOL)) fail_msg("column_sum_add vs ref (N %d C %d): %g", N, C, d);
    free(x);
    for (int k = 0; k < 2; k++) free(sum[k]);
}

/* The randomized Hadamard transform (README: Transforms) on this path: exact hand-made values;
 * fast against the explicit-matrix _ref for every order 1..2048; the same bits as the generic path
 * (butterflies are additions in a fixed order); in place; orthogonal (H H^T = I from the _ref's
 * columns, norms kept), symmetric and self-inverse (H H x = x); the backward its transpose
 * (<H D x, y> = <x, D H y>) and its inverse (backward(forward(x)) = x). */
static void test_hadamard(void **state) {
    (void)state;
    float x4[4] = {1, 2, 3, 4}, e4[4] = {1, 0, 0, 0}, y4[4], x2[2] = {1, 3}, y2[2];
    hadamard_forward(y4, x4, NULL, 1, 4); /* (1+2+3+4, 1-2+3-4, 1+2-3-4, 1-2-3+4) / 2 */
    assert_true(y4[0] == 5.0f && y4[1] == -1.0f && y4[2] == -2.0f && y4[3] == 0.0f);
    hadamard_forward(y4, e4, NULL, 1, 4);
    for (int j = 0; j < 4; j++) assert_true(y4[j] == 0.5f);
    float s2[2] = {1, -1};
    hadamard_forward(y2, x2, s2, 1, 2); /* H (1, -3) = (-2, 4) / sqrt 2 */
    assert_close(y2[0], -2.0 / sqrt(2.0), 1e-7);
    assert_close(y2[1], 4.0 / sqrt(2.0), 1e-7);
    Rng rng;
    rng_seed(&rng, 2101);
    const KernelTable *generic = kernels_path(0);
    for (int n = 1; n <= 2048; n *= 2) {
        int rows = 3;
        size_t count = (size_t)rows * n;
        float *x = malloc(count * sizeof(float)), *y = malloc(count * sizeof(float)), *fast = malloc(count * sizeof(float));
        float *ref = malloc(count * sizeof(float)), *gen = malloc(count * sizeof(float)), *back = malloc(count * sizeof(float));
        float *signs = malloc((size_t)n * sizeof(float));
        fill_uniform(x, count, &rng, -2, 2);
        fill_uniform(y, count, &rng, -2, 2);
        for (int j = 0; j < n; j++) signs[j] = rng_u32(&rng) & 1 ? 1.0f : -1.0f;
        hadamard_forward(fast, x, signs, rows, n);
        hadamard_forward_ref(ref, x, signs, rows, n);
        double largest = 0.0;
        for (size_t k = 0; k < count; k++) largest = fmax(largest, fabs(ref[k]));
        double err = max_abs_diff(fast, ref, count);
        if (!(err <= 1e-6 * largest * (1 + log2(n))))
            fail_msg("%s: n %d: fast vs _ref max abs %.3g (|max| %.3g)", kernels_name(), n, err, largest);
        generic->hadamard(gen, x, signs, rows, n);
        assert_memory_equal(gen, fast, count * sizeof(float));
        memcpy(gen, x, count * sizeof(float));
        hadamard_forward(gen, gen, signs, rows, n); /* in place */
        assert_memory_equal(gen, fast, count * sizeof(float));
        for (int r = 0; r < rows; r++) { /* norms kept */
            double nx = 0, nf = 0;
            for (int j = 0; j < n; j++) {
                nx += (double)x[r * n + j] * x[r * n + j];
                nf += (double)fast[r * n + j] * fast[r * n + j];
            }
            assert_close(nf, nx, 1e-5 * nx);
        }
        hadamard_backward(back, fast, signs, rows, n); /* D H (H D x) = x */
        assert_true(max_abs_diff(back, x, count) <= 1e-6 * 2 * (1 + log2(n)));
        hadamard_forward(back, x, NULL, rows, n); /* H H x = x */
        hadamard_forward(back, back, NULL, rows, n);
        assert_true(max_abs_diff(back, x, count) <= 1e-6 * 2 * (1 + log2(n)));
        hadamard_backward(back, y, signs, rows, n); /* <H D x, y> = <x, D H y> */
        for (int r = 0; r < rows; r++) {
            double a = 0, b = 0, scale = 0;
            for (int j = 0; j < n; j++) {
                a += (double)fast[r * n + j] * y[r * n + j];
                b += (double)x[r * n + j] * back[r * n + j];
                scale += fabs((double)x[r * n + j] * back[r * n + j]);
            }
            assert_close(a, b, 1e-6 * scale + 1e-12);
        }
        free(x); free(y); free(fast); free(ref); free(gen); free(back); free(signs);
    }
    /* the _ref's matrix: columns of H from unit vectors, symmetric and orthonormal */
    enum { N = 16 };
    float eye[N * N], h[N * N];
    memset(eye, 0, sizeof eye);
    for (int i = 0; i < N; i++) eye[i * N + i] = 1.0f;
    hadamard_forward_ref(h, eye, NULL, N, N); /* row i = H e_i = column i of H */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            assert_true(h[i * N + j] == h[j * N + i]);
            assert_true(fabsf(fabsf(h[i * N + j]) - 0.25f) == 0.0f);
            double dot = 0;
            for (int k = 0; k < N; k++) dot += (double)h[i * N + k] * h[j * N + k];
            assert_close(dot, i == j ? 1.0 : 0.0, 1e-7);
        }
    assert_true(is_power_of_two(1) && is_power_of_two(256) && !is_power_of_two(0) && !is_power_of_two(96));
}

static void test_other_ops_fast_vs_ref(void **state) {
    (void)state;
    check_layernorm_fast_vs_ref(10, 8, 901);
    check_layernorm_fast_vs_ref(37, 37, 902);   /* C not a whole number of vectors */
    check_layernorm_fast_vs_ref(600, 64, 903);  /* row chunks of 256 for the parameter sums: two and a tail */
    check_gelu_fast_vs_ref(1001, 904);          /* not a whole number of vectors; tanh saturated at both ends */
    check_crossentropy_fast_vs_ref(37, 65, 0.0f, 905);
    check_crossentropy_fast_vs_ref(5, 13, 100.0f, 906); /* exp(100) overflows float: the max shift must hold */
    check_column_sum_add_fast_vs_ref(600, 21, 907);
}

/* ================================= kernel paths ================================= */

/* One output element as every path's gemm and gemm_at_b sum it: a chain over k in order from 0,
 * of fused multiply-adds on a path compiled with FMA, else of a rounded product and a rounded sum
 * (volatile: this file is compiled with -ffp-contract=fast, which would fuse them). */
static float chain(const float *a, long sa, const float *b, long sb, int K, int fused) {
    float acc = 0.0f;
    for (int k = 0; k < K; k++) {
        if (fused) {
            acc = fmaf(a[k * sa], b[k * sb], acc);
        } else {
            volatile float p = a[k * sa] * b[k * sb];
            acc = acc + p;
        }
    }
    return acc;
}

/* The path in use against that chain, bit for bit: gemm (both weight layouts, with a bias, with
 * and without accumulating; rows and columns not whole tiles) and gemm_at_b (a depth of three
 * blocks of GEMM_AT_B_DEPTH, each block's chain added into C). Runs on every path the CPU has, so
 * the paths with FMA (avx2, avx512) give the same bits as each other wherever two of them exist,
 * and a fault in one path's tile (a dropped or repeated k, a wrong column) shows even where it
 * stays inside the tolerance of the checks against double precision. generic is built for the
 * x86-64 baseline, which has no FMA; elsewhere its compiler may fuse, so either chain passes. */
static void test_gemm_chains(void **state) {
    (void)state;
    int fma_path = strcmp(kernels_name(), "generic") != 0;
    const KernelTable *t = kernels();
    enum { M = 53, N = 83, K = 300, AM = 37 };
    Rng rng;
    rng_seed(&rng, 350);
    float *a = floats((size_t)M * K), *b = floats((size_t)N * K), *bias = floats(N), *c0 = floats((size_t)M * N);
    float *c = floats((size_t)M * N), *g0 = floats((size_t)AM * N), *g = floats((size_t)AM * N);
    fill_uniform(a, (size_t)M * K, &rng, -1, 1);
    fill_uniform(b, (size_t)N * K, &rng, -1, 1);
    fill_uniform(bias, N, &rng, -1, 1);
    fill_uniform(c0, (size_t)M * N, &rng, -1, 1);
    fill_uniform(g0, (size_t)AM * N, &rng, -1, 1);
    int chains_seen[2] = {0, 0}; /* fused, unfused: which chain the path matched */
    for (int fused = 0; fused <= 1; fused++) {
        int same = 1;
        for (int bt = 0; bt <= 1 && same; bt++)
            for (int acc = 0; acc <= 1 && same; acc++) {
                /* B is (N, K) read as B^T when bt, else the same floats as a (K, N) matrix */
                memcpy(c, c0, (size_t)M * N * sizeof(float));
                assert_int_equal(t->gemm(M, N, K, a, K, b, bt ? K : N, bt, bias, c, N, acc), 0);
                for (int i = 0; i < M && same; i++)
                    for (int j = 0; j < N && same; j++) {
                        float x = chain(a + (long)i * K, 1, bt ? b + (long)j * K : b + j, bt ? 1 : N, K, fused) + bias[j];
                        float want = acc ? c0[(size_t)i * N + j] + x : x;
                        same = memcmp(&want, &c[(size_t)i * N + j], sizeof want) == 0;
                    }
            }
        /* C (AM, N) += A^T B with A = a read as (K, AM) and B = b as (K, N) */
        memcpy(g, g0, (size_t)AM * N * sizeof(float));
        assert_int_equal(t->gemm_at_b(AM, N, K, a, AM, b, N, g, N), 0);
        for (int i = 0; i < AM && same; i++)
            for (int j = 0; j < N && same; j++) {
                float want = g0[(size_t)i * N + j];
                for (int k0 = 0; k0 < K; k0 += GEMM_AT_B_DEPTH) {
                    int kc = K - k0 < GEMM_AT_B_DEPTH ? K - k0 : GEMM_AT_B_DEPTH;
                    want += chain(a + (long)k0 * AM + i, AM, b + (long)k0 * N + j, N, kc, fused);
                }
                same = memcmp(&want, &g[(size_t)i * N + j], sizeof want) == 0;
            }
        chains_seen[fused] = same;
    }
#if defined(__x86_64__)
    if (!chains_seen[fma_path])
        fail_msg("%s: gemm or gemm_at_b is not the %s chain in k order", kernels_name(), fma_path ? "fused" : "unfused");
#else
    if (!chains_seen[0] && !chains_seen[1]) fail_msg("%s: gemm or gemm_at_b is no chain in k order", kernels_name());
    if (fma_path && !chains_seen[1]) fail_msg("%s: gemm or gemm_at_b is not the fused chain in k order", kernels_name());
#endif
    free(a); free(b); free(bias); free(c0); free(c); free(g0); free(g);
}

/* QCORR_KERNELS: an unknown or unsupported value is one error naming it and what the CPU runs. */
static void test_kernel_selection(void **state) {
    (void)state;
    const char *before = kernels_name();
    char *saved = getenv("QCORR_KERNELS") ? strdup(getenv("QCORR_KERNELS")) : NULL;
    setenv("QCORR_KERNELS", "avx9", 1);
    assert_int_equal(kernels_init_from_env(), -1);
    assert_non_null(strstr(qc_last_error(), "QCORR_KERNELS=avx9"));
    assert_non_null(strstr(qc_last_error(), kernels_supported_list()));
    assert_string_equal(kernels_name(), before); /* a refused value changes nothing */
    for (int i = 0; i < KERNEL_PATH_COUNT; i++) {
        setenv("QCORR_KERNELS", kernels_path(i)->name, 1);
        if (kernels_path_supported(i)) {
            assert_int_equal(kernels_init_from_env(), 0);
            assert_string_equal(kernels_name(), kernels_path(i)->name);
        } else {
            assert_int_equal(kernels_init_from_env(), -1);
            assert_non_null(strstr(qc_last_error(), "does not support"));
        }
    }
    unsetenv("QCORR_KERNELS"); /* unset: the best path the CPU runs, the last supported */
    assert_int_equal(kernels_init_from_env(), 0);
    int best = 0;
    for (int i = 0; i < KERNEL_PATH_COUNT; i++)
        if (kernels_path_supported(i)) best = i;
    assert_string_equal(kernels_name(), kernels_path(best)->name);
    assert_int_equal(kernels_select("generic"), 0); /* every x86-64 CPU runs it */
    assert_int_equal(kernels_select("sse9"), -1);
    /* a CPU without the best path: asking for it is refused, naming the value and what it runs */
    const char *top = kernels_path(KERNEL_PATH_COUNT - 1)->name;
    kernels_limit_paths(KERNEL_PATH_COUNT - 1);
    setenv("QCORR_KERNELS", top, 1);
    assert_int_equal(kernels_init_from_env(), -1);
    char want[128];
    snprintf(want, sizeof want, "QCORR_KERNELS=%s: this CPU does not support it (it supports %s)", top,
             kernels_supported_list());
    assert_string_equal(qc_last_error(), want);
    assert_null(strstr(kernels_supported_list(), top));
    unsetenv("QCORR_KERNELS");
    assert_int_equal(kernels_init_from_env(), 0);
    assert_string_not_equal(kernels_name(), top);
    kernels_limit_paths(KERNEL_PATH_COUNT);
    if (saved) setenv("QCORR_KERNELS", saved, 1);
    free(saved);
    assert_int_equal(kernels_select(before), 0);
}

/* cmocka setup: run the test on the path whose index is the initial state */
static int use_path(void **state) { return kernels_select(kernels_path((int)(intptr_t)*state)->name); }

/* what each test of a path this CPU lacks runs instead: a skip that names the path */
static void path_unsupported(void **state) {
    skip_reason("test_ops", "this CPU does not support the %s kernel path", kernels_path((int)(intptr_t)*state)->name);
    skip();
}

int main(void) {
    static const struct {
        const char *name;
        CMUnitTestFunction run;
    } ops_tests[] = {
#define OPS_TEST(f) {#f, f}
        OPS_TEST(test_embedding), OPS_TEST(test_layernorm), OPS_TEST(test_matmul), OPS_TEST(test_matmul_fast_vs_ref),
        OPS_TEST(test_gemm), OPS_TEST(test_gemm_edges), OPS_TEST(test_gemm_at_b), OPS_TEST(test_attention),
        OPS_TEST(test_attention_fast_vs_ref), OPS_TEST(test_gelu), OPS_TEST(test_exp), OPS_TEST(test_residual), OPS_TEST(test_crossentropy),
        OPS_TEST(test_column_sum_add), OPS_TEST(test_other_ops_fast_vs_ref), OPS_TEST(test_gemm_chains), OPS_TEST(test_hadamard),
#undef OPS_TEST
    };
    enum { PER_PATH = sizeof ops_tests / sizeof *ops_tests };
    static char names[KERNEL_PATH_COUNT][PER_PATH][64];
    struct CMUnitTest tests[KERNEL_PATH_COUNT * PER_PATH + 1];
    int n = 0;
    for (int p = 0; p < KERNEL_PATH_COUNT; p++) {
        int supported = kernels_path_supported(p);
        for (int i = 0; i < PER_PATH; i++) {
            snprintf(names[p][i], sizeof names[p][i], "%s [%s]", ops_tests[i].name, kernels_path(p)->name);
            tests[n++] = supported ? (struct CMUnitTest){names[p][i], ops_tests[i].run, use_path, NULL, (void *)(intptr_t)p}
                                   : (struct CMUnitTest){names[p][i], path_unsupported, NULL, NULL, (void *)(intptr_t)p};
        }
    }
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_kernel_selection);
    return _cmocka_run_group_tests("ops", tests, (size_t)n, NULL, NULL);
}
