/* test_adaround: learned rounding (correct/adaround.h) — the objective's gradient in V against
 * finite differences (reconstruction and regulariser, symmetric and asymmetric, per row and per
 * group), one matrix rounded onto its grid and never worse than rounding to nearest (strictly
 * better on correlated inputs), and the whole-model method: every weight it rounds a code of the
 * grid its float weights refit to, nothing else changed, no bits added, the validation split never
 * read. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "correct/adaround.h"
#include "correct/budget.h"
#include "correct/experiment.h"
#include "correct/tune.h"
#include "quant/quant.h"

/* X (n x cols) with a shared factor, so its second moment is far from diagonal; G = X^T X / n. */
static void correlated_moment(double *G, int cols, int n, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    float *x = malloc((size_t)n * cols * sizeof(float));
    assert_non_null(x);
    fill_normal(x, (size_t)n * cols, &rng, 1.0f);
    for (int i = 0; i < n; i++) {
        float common = x[(size_t)i * cols];
        for (int j = 1; j < cols; j++) x[(size_t)i * cols + j] += 1.5f * common;
    }
    for (int a = 0; a < cols; a++)
        for (int b = 0; b < cols; b++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += (double)x[(size_t)i * cols + a] * x[(size_t)i * cols + b];
            G[(size_t)a * cols + b] = s / n;
        }
    free(x);
}

static void grids_for(const float *w, int n, int span, const QuantScheme *s, SpanGrid *grids) {
    for (int j = 0; j < n / span; j++) grids[j] = tune_refit_grid(w + (size_t)j * span, span, s);
}

enum { ROWS = 6, COLS = 16 };

/* Every V of a 6 x 16 matrix, at 3 bits, per row and per group of 8, symmetric and asymmetric, in
 * the regularised phase (beta 4, lambda 2: the regulariser as large as the reconstruction) and
 * without it: the gradient equals the central difference of the objective (Richardson over h and
 * h/2). V is drawn where h(V) is inside (0, 1) and away from h = 1/2, where the objective is smooth. */
static void test_gradient(void **state) {
    (void)state;
    for (int k = 0; k < 8; k++) {
        int asym = k & 1, span = k & 2 ? 8 : COLS;
        double lambda = k & 4 ? 2.0 : 0.0;
        QuantScheme s;
        quant_scheme_default(&s, 3);
        s.asymmetric = asym;
        s.scale_dtype = SCALE_EXACT;
        Rng rng;
        rng_seed(&rng, 300 + k);
        float w[ROWS * COLS], V[ROWS * COLS], below[ROWS * COLS], grad[ROWS * COLS], e[ROWS * COLS], r[ROWS * COLS], G[COLS * COLS];
        double Gd[COLS * COLS];
        SpanGrid grids[ROWS * COLS];
        fill_normal(w, ROWS * COLS, &rng, 1.0f);
        grids_for(w, ROWS * COLS, span, &s, grids);
        correlated_moment(Gd, COLS, 64, 400 + k);
        for (int i = 0; i < COLS * COLS; i++) G[i] = (float)Gd[i];
        adaround_start(w, ROWS * COLS, grids, span, asym, below, V);
        for (int i = 0; i < ROWS * COLS; i++) { /* |V| in [0.3, 1.8]: h in (0.19, 0.81) less a margin at 1/2 */
            float u = 0.3f + 1.5f * (float)rng_uniform(&rng);
            V[i] = rng_uniform(&rng) < 0.5 ? -u : u;
        }
        AdaRoundMatrix a = {w, ROWS, COLS, grids, span, 3, asym, G, below};
        double beta = 4.0;
        adaround_objective(&a, V, beta, lambda, grad, e, r);
        float dummy[ROWS * COLS];
        double ref2 = 0;
        for (int i = 0; i < ROWS * COLS; i++) {
            double d[2];
            float saved = V[i];
            for (int h = 0; h < 2; h++) {
                float step = 1e-2f / (float)(h + 1);
                V[i] = saved + step;
                double up = adaround_objective(&a, V, beta, lambda, dummy, e, r);
                V[i] = saved - step;
                double down = adaround_objective(&a, V, beta, lambda, dummy, e, r);
                d[h] = (up - down) / (2.0 * step);
            }
            V[i] = saved;
            double fd = (4.0 * d[1] - d[0]) / 3.0, err = fabs(grad[i] - fd);
            ref2 += fd * fd;
            if (!(err <= 2e-4 + 3e-3 * fabs(fd)))
                fail_msg("case %d (%s, span %d, lambda %g): V[%d]: gradient %.7g, finite difference %.7g", k, asym ? "asymmetric" : "symmetric",
                         span, lambda, i, grad[i], fd);
        }
        if (!(sqrt(ref2) > 1e-3)) fail_msg("case %d: reference gradient norm %.3g too small to test", k, sqrt(ref2));
    }
}

/* One 16 x 32 matrix at 2..4 bits, symmetric and asymmetric: every rounded weight is a code of its
 * row's grid (code * scale (+ minimum), codes within range); the reconstruction of the learned
 * rounding is under 0.7 of rounding to nearest's on correlated inputs; some weights round the
 * other way. */
static void test_matrix_on_grid_and_better(void **state) {
    (void)state;
    enum { R = 16, C = 32 };
    for (int k = 0; k < 4; k++) {
        int bits = 2 + k % 3, asym = k == 3;
        QuantScheme s;
        quant_scheme_default(&s, bits);
        s.asymmetric = asym;
        Rng rng;
        rng_seed(&rng, 500 + k);
        float w[R * C], out[R * C];
        double G[C * C];
        SpanGrid grids[R];
        fill_normal(w, R * C, &rng, 0.1f);
        grids_for(w, R * C, C, &s, grids);
        correlated_moment(G, C, 256, 600 + k);
        AdaRoundOptions o;
        adaround_default(&o);
        o.iters = 1000;
        AdaRoundStats st;
        assert_int_equal(adaround_matrix(w, R, C, grids, C, bits, asym, G, &o, out, &st), 0);
        double lo = asym ? 0 : -((1 << (bits - 1)) - 1), hi = asym ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
        for (int i = 0; i < R * C; i++) {
            SpanGrid g = grids[i / C];
            double code = nearbyint((out[i] - g.minimum) / g.scale);
            if (!(code >= lo && code <= hi && (float)(g.minimum + code * g.scale) == out[i]))
                fail_msg("bits %d: weight %d = %.9g is no code of its grid (scale %.9g)", bits, i, out[i], g.scale);
        }
        assert_false(st.kept_nearest);
        if (!(st.learned < 0.7 * st.nearest && st.flipped > 0)) /* measured: 0.37-0.60 of the nearest */
            fail_msg("bits %d: reconstruction %.6g (nearest %.6g), %.1f%% flipped", bits, st.learned, st.nearest, 100 * st.flipped);
        assert_close(st.learned, adaround_reconstruction(out, w, R, C, G), 1e-9 * st.nearest);
    }
}

/* The method on a 2-block model, per row and per group, symmetric and asymmetric: every weight of
 * every matrix in scope is a code of the grid its float weights refit to (at most 2^b values a
 * span); the other tensors are the quantized model's bit for bit; no correction stored; the
 * validation split unreadable all along. */
static void test_method(void **state) {
    (void)state;
    Corpus corpus;
    const char *path = write_test_corpus("adaround.txt", 6000, "abcdefgh ,.\n", 701);
    assert_int_equal(corpus_load(&corpus, path, NULL), 0);
    struct { int bits, asym; Granularity g; } cases[] = {{2, 0, GRAN_CHANNEL}, {3, 1, GRAN_GROUP}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        QuantScheme s;
        quant_scheme_default(&s, cases[k].bits);
        s.asymmetric = cases[k].asym;
        s.granularity = cases[k].g;
        s.group = 8;
        GPT f, q;
        corpus_model(&f, &corpus, 2, 8, 80 + k);
        assert_int_equal(gpt_clone(&q, &f, 8), 0);
        assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
        float *start = copy_floats(q.params, q.num_params);
        CorrectOptions o;
        correct_options_default(&o);
        o.method = METHOD_ADAROUND;
        o.scheme = &s;
        o.steps = 0;
        o.batch = 4;
        o.calib_tokens = 2048;
        o.quiet = 1;
        Corrections c;
        CorrectionResult res;
        GuardedSplit guard;
        unreadable_validation(&corpus, &guard);
        TrainSummary sum;
        CorrectionLayout none = {.kind = KIND_NONE, .every = 1};
        assert_int_equal(corrections_init(&c, &q.config, &none, 8 * 16, 1), 0);
        if (tune_fit(&q, &f, &c, &corpus, &o, &sum) != 0) fail_msg("%s", qc_last_error());
        readable_validation(&corpus, &guard);
        corrections_free(&c);
        size_t flipped = 0;
        for (int i = 0; i < q.n_specs; i++) {
            const TensorSpec *t = &q.specs[i];
            size_t n = tensor_numel(t);
            if (!(s.scope & SCOPE_OF(t->role))) {
                assert_memory_equal(q.params + t->offset, start + t->offset, n * sizeof(float));
                continue;
            }
            int span = quant_span(&s, t->rows, t->cols);
            for (size_t j0 = 0; j0 < n; j0 += (size_t)span) {
                SpanGrid g = tune_refit_grid(f.params + t->offset + j0, span, &s);
                float seen[256];
                int n_seen = 0;
                for (int j = 0; j < span; j++) {
                    float v = q.params[t->offset + j0 + j];
                    if (span_grid_apply(v, g, s.bits, s.asymmetric) != v) fail_msg("case %zu: %s[%zu] = %.9g is off its grid", k, t->name, j0 + j, v);
                    int found = 0;
                    for (int u = 0; u < n_seen; u++) found |= seen[u] == v;
                    if (!found) seen[n_seen++] = v;
                    flipped += v != start[t->offset + j0 + j];
                }
                assert_true(n_seen <= 1 << s.bits);
            }
        }
        if (!(flipped > 0)) fail_msg("case %zu: no weight rounded otherwise than rtn", k);
        /* as correct and the sweep run it: the same weights, nothing stored beside them */
        GPT q2;
        assert_int_equal(gpt_clone(&q2, &f, 8), 0);
        assert_int_equal(quantize_model(&q2, &s, NULL, NULL), 0);
        if (run_correction(&q2, &f, &corpus, &o, NULL, NULL, &c, &res) != 0) fail_msg("%s", qc_last_error());
        assert_memory_equal(q2.params, q.params, q.num_params * sizeof(float));
        assert_true(corrections_storage_bits(&c) == 0.0 && c.n_sites == 0 && isfinite(res.eval.loss));
        evaluation_free(&res.eval);
        corrections_free(&c);
        gpt_free(&q2);
        free(start);
        gpt_free(&q);
        gpt_free(&f);
    }
    corpus_free(&corpus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient),
        cmocka_unit_test(test_matrix_on_grid_and_better),
        cmocka_unit_test(test_method),
    };
    return cmocka_run_group_tests(tests, setup_one_thread, restore_threads);
}
