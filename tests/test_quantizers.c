/* test_quantizers: the quantizers of issue 14 beside rtn — the mse clip search (its grid, hand
 * cases, exact levels, never a larger error than rtn on random and trained weights, the column
 * weighting) and GPTQ (lazy batches against the column-by-column specification, exact levels,
 * dead inputs, act-order, a diagonal Hessian gives rtn, a lower layer output error than rtn), the
 * calibration walk against a plain forward, and quantize_model_calibrated on a trained model. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/experiment.h"
#include "io/model_file.h"
#include "nn/data.h"
#include "nn/train.h"
#include "quant/calib.h"
#include "quant/gptq.h"
#include "quant/quant.h"

static QuantScheme scheme_of(QuantizerId q, int bits, const char *granularity, int asymmetric, ScaleDtype dtype) {
    QuantScheme s;
    quant_scheme_default(&s, bits);
    if (parse_granularity(granularity, &s) != 0) fail_msg("%s", qc_last_error());
    s.asymmetric = asymmetric;
    s.scale_dtype = dtype;
    s.quantizer = q;
    return s;
}

/* sum_i weight_i (a_i - b_i)^2 in double (weight NULL: 1) */
static double weighted_sq(const float *a, const float *b, int n, const double *weight) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        sum += (weight ? weight[i] : 1.0) * d * d;
    }
    return sum;
}

/* Spans with the shapes weights have: normal, heavy-tailed (a few outliers), uniform, constant. */
static void random_span(float *x, int n, int kind, Rng *rng) {
    for (int i = 0; i < n; i++) {
        float v = rng_normal(rng);
        if (kind == 1 && rng_below(rng, 16) == 0) v *= 8.0f;
        if (kind == 2) v = 2.0f * rng_uniform(rng) - 1.0f;
        if (kind == 3) v = 0.37f;
        if (kind == 4) v = fabsf(v) + 0.5f; /* all positive: the asymmetric minimum clips upward */
        x[i] = 0.05f * v;
    }
}

static const ScaleDtype all_dtypes[] = {SCALE_F16, SCALE_BF16, SCALE_F32, SCALE_EXACT};

/* ============================ mse ============================ */

static void test_mse_grid(void **state) {
    (void)state;
    assert_true(mse_clip_ratio(0) == 1.0);
    assert_true(mse_clip_ratio(MSE_CLIP_CANDIDATES - 1) == 0.5);
    assert_close(mse_clip_ratio(33), 1.0 - 16.5 / 99.0, 1e-15);
    for (int k = 1; k < MSE_CLIP_CANDIDATES; k++) assert_true(mse_clip_ratio(k) < mse_clip_ratio(k - 1));
}

/* Worked by hand, 2 bits symmetric (codes -1, 0, 1). Span {1, 0.3 x 7}: round-to-nearest (scale 1)
 * sends the seven 0.3 to 0, error 7 * 0.09 = 0.63. A scale r < 0.6 sends them to r and clamps 1 to
 * r: error (1 - r)^2 + 7 (r - 0.3)^2, increasing on [0.5, 0.6), 0.25 + 0.28 = 0.53 at r = 0.5; a
 * scale r in [0.6, 1) keeps them at 0 and costs 0.63 + (1 - r)^2. So the last ratio, 0.5, wins,
 * and every value becomes 0.5 (exact in f16 and in double). */
static void test_mse_hand_computed(void **state) {
    (void)state;
    float span[8] = {1.0f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f}, out[8];
    for (int d = 0; d < 2; d++) {
        ScaleDtype dtype = d ? SCALE_F16 : SCALE_EXACT;
        assert_int_equal(quantize_span_mse_ref(out, span, 8, 2, 0, dtype, NULL), MSE_CLIP_CANDIDATES - 1);
        for (int i = 0; i < 8; i++) assert_true(out[i] == 0.5f);
        quantize_span_ref(out, span, 8, 2, 0, dtype);
        assert_true(out[0] == 1.0f && out[1] == 0.0f);
    }
    /* a span RTN reproduces exactly: every other ratio is worse, ratio 1 stays */
    float exact[4] = {1.0f, -1.0f, 0.0f, 1.0f};
    assert_int_equal(quantize_span_mse_ref(out, exact, 4, 2, 0, SCALE_F16, NULL), 0);
    assert_memory_equal(out, exact, sizeof exact);
    /* all zero: every candidate ties at error 0, the tie keeps ratio 1 */
    float zero[4] = {0};
    assert_int_equal(quantize_span_mse_ref(out, zero, 4, 3, 1, SCALE_F16, NULL), 0);
    /* weighted: with the 0.3 columns weighted 0 only the clamp of 1 counts: ratio 1 (error 0) wins */
    double weight[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(quantize_span_mse_ref(out, span, 8, 2, 0, SCALE_EXACT, weight), 0);
    assert_true(out[0] == 1.0f);
}

/* Every output value lies on the grid of the ratio the search returns: code * scale (+ minimum)
 * with an integer code in range, as span_grid_fit gives it; and the fast matrix form equals the
 * per-span reference for every granularity. */
static void test_mse_exact_levels(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 7101);
    float x[64], out[64];
    for (int bits = 2; bits <= 8; bits++)
        for (int asym = 0; asym <= 1; asym++)
            for (size_t d = 0; d < 4; d++)
                for (int kind = 0; kind < 5; kind++) {
                    random_span(x, 64, kind, &rng);
                    int k = quantize_span_mse_ref(out, x, 64, bits, asym, all_dtypes[d], NULL);
                    SpanGrid g = span_grid_fit(x, 64, bits, asym, all_dtypes[d], mse_clip_ratio(k));
                    for (int i = 0; i < 64; i++) {
                        if (out[i] != span_grid_apply(x[i], g, bits, asym)) fail_msg("bits %d asym %d: value %d off its grid", bits, asym, i);
                        if (g.scale == 0.0) continue;
                        double code = ((double)out[i] - g.minimum) / g.scale, top = asym ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
                        if (fabs(code - nearbyint(code)) > 1e-3 || code > top + 1e-3 || code < (asym ? 0 : -top) - 1e-3)
                            fail_msg("bits %d asym %d dtype %zu: value %d is code %.6f", bits, asym, d, i, code);
                    }
                }
    /* quantize_matrix (mse) = the reference span by span, for each granularity, on 1 and 2 threads */
    int rows = 6, cols = 32;
    float w[6 * 32], got[6 * 32], want[6 * 32];
    fill_normal(w, sizeof w / sizeof *w, &rng, 0.1f);
    const char *grans[] = {"tensor", "channel", "group:8"};
    for (int g = 0; g < 3; g++)
        for (int threads = 1; threads <= 2; threads++) {
            use_threads(threads);
            QuantScheme s = scheme_of(QUANTIZER_MSE, 3, grans[g], 0, SCALE_F16);
            assert_int_equal(quantize_matrix(got, w, rows, cols, &s), 0);
            int span = quant_span(&s, rows, cols);
            for (int off = 0; off < rows * cols; off += span) quantize_span_mse_ref(want + off, w + off, span, 3, 0, SCALE_F16, NULL);
            assert_memory_equal(got, want, sizeof got);
        }
    use_threads(1);
}

/* The promise of the search: ratio 1 is round-to-nearest and is kept unless another is strictly
 * better, so no span's (weighted) error exceeds rtn's; on random spans of every shape, bits, dtype,
 * symmetric or not, weighted or not. It must also win somewhere, or the search does nothing. */
static void test_mse_never_worse_than_rtn_random(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 7102);
    float x[48], mse[48], rtn[48];
    double weight[48];
    int spans = 0, better = 0;
    for (int bits = 2; bits <= 8; bits++)
        for (int asym = 0; asym <= 1; asym++)
            for (size_t d = 0; d < 4; d++)
                for (int kind = 0; kind < 5; kind++)
                    for (int weighted = 0; weighted <= 1; weighted++)
                        for (int rep = 0; rep < 4; rep++) {
                            random_span(x, 48, kind, &rng);
                            for (int i = 0; i < 48; i++) weight[i] = 0.01 + rng_uniform(&rng);
                            const double *wt = weighted ? weight : NULL;
                            quantize_span_mse_ref(mse, x, 48, bits, asym, all_dtypes[d], wt);
                            quantize_span_ref(rtn, x, 48, bits, asym, all_dtypes[d]);
                            double e_mse = weighted_sq(x, mse, 48, wt), e_rtn = weighted_sq(x, rtn, 48, wt);
                            if (e_mse > e_rtn)
                                fail_msg("bits %d asym %d dtype %zu kind %d weighted %d: mse error %.9g > rtn %.9g", bits, asym, d, kind,
                                         weighted, e_mse, e_rtn);
                            spans++;
                            better += e_mse < e_rtn;
                        }
    print_message("  mse vs rtn, random spans: %d of %d strictly better, none worse\n", better, spans);
    assert_true(better > spans / 4);
}

/* The weighted search minimises the weighted error over the grid: its weighted error is at most
 * the plain choice's, and the plain choice's plain error at most the weighted choice's. On a span
 * built for it, the two choices differ. */
static void test_mse_weighting(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 7103);
    float x[32], plain[32], weighted[32];
    double weight[32];
    for (int rep = 0; rep < 200; rep++) {
        int bits = 2 + rep % 4, asym = rep % 3 == 0;
        random_span(x, 32, rep % 5, &rng);
        for (int i = 0; i < 32; i++) weight[i] = exp(3.0 * rng_normal(&rng));
        quantize_span_mse_ref(plain, x, 32, bits, asym, SCALE_F16, NULL);
        quantize_span_mse_ref(weighted, x, 32, bits, asym, SCALE_F16, weight);
        assert_true(weighted_sq(x, weighted, 32, weight) <= weighted_sq(x, plain, 32, weight));
        assert_true(weighted_sq(x, plain, 32, NULL) <= weighted_sq(x, weighted, 32, NULL));
    }
    /* the hand case of test_mse_hand_computed with the outlier's column dominant: ratio 1 */
    float span[8] = {1.0f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
    double heavy[8] = {100, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(quantize_span_mse_ref(plain, span, 8, 2, 0, SCALE_EXACT, NULL), MSE_CLIP_CANDIDATES - 1);
    assert_int_equal(quantize_span_mse_ref(weighted, span, 8, 2, 0, SCALE_EXACT, heavy), 0);
}

/* A d=32, 2-layer model trained 150 steps here (the real corpus when found). */
static void trained_model(GPT *m, Corpus *corpus, int max_batch) {
    assert_int_equal(corpus_load(corpus, learnable_corpus_path(), NULL), 0);
    GPTConfig cfg = {.vocab_size = corpus->vocab.size, .ctx = 32, .d_model = 32, .n_layer = 2, .n_head = 4};
    assert_int_equal(gpt_init(m, &cfg, max_batch), 0);
    gpt_init_weights(m, 7201);
    train_briefly(m, corpus, 150, 7202);
}

static void test_mse_never_worse_than_rtn_trained(void **state) {
    (void)state;
    GPT m;
    Corpus corpus;
    trained_model(&m, &corpus, 16);
    const char *grans[] = {"channel", "group:16"};
    for (int i = 0; i < gpt_linear_count(&m.config); i++) {
        Linear lin = gpt_linear(&m, i);
        size_t n = (size_t)lin.in * lin.out;
        float *mse = malloc(n * sizeof(float)), *rtn = malloc(n * sizeof(float));
        for (int bits = 2; bits <= 4; bits++)
            for (int g = 0; g < 2; g++)
                for (int asym = 0; asym <= 1; asym++) {
                    QuantScheme sm = scheme_of(QUANTIZER_MSE, bits, grans[g], asym, SCALE_F16), sr = sm;
                    sr.quantizer = QUANTIZER_RTN;
                    assert_int_equal(quantize_matrix(mse, lin.weight, lin.out, lin.in, &sm), 0);
                    assert_int_equal(quantize_matrix(rtn, lin.weight, lin.out, lin.in, &sr), 0);
                    int span = quant_span(&sm, lin.out, lin.in);
                    double total_mse = 0, total_rtn = 0;
                    for (size_t off = 0; off < n; off += span) {
                        double a = weighted_sq(lin.weight + off, mse + off, span, NULL), b = weighted_sq(lin.weight + off, rtn + off, span, NULL);
                        if (a > b) fail_msg("linear %d, %d bits %s asym %d: a span's mse error %.9g > rtn's %.9g", i, bits, grans[g], asym, a, b);
                        total_mse += a;
                        total_rtn += b;
                    }
                    if (i == 0 && asym == 0)
                        print_message("  trained %s, %d bits %s: mse error %.3f of rtn's\n", gpt_linear_shape(&m.config, i).name, bits,
                                      grans[g], total_mse / total_rtn);
                    if (bits == 2 && !(total_mse < 0.98 * total_rtn))
                        fail_msg("linear %d, 2 bits %s: mse error %.4f of rtn's: the search does nothing", i, grans[g], total_mse / total_rtn);
                }
        free(mse);
        free(rtn);
    }
    gpt_free(&m);
    corpus_free(&corpus);
}

/* ============================ GPTQ ============================ */

/* Calibration inputs (n, cols) with correlated columns of spread scales, an offset, and the given
 * dead columns all zero. */
static float *correlated_inputs(int n, int cols, const int *dead, int n_dead, Rng *rng) {
    float *mix = malloc((size_t)cols * cols * sizeof(float)), *x = malloc((size_t)n * cols * sizeof(float));
    float *z = malloc((size_t)cols * sizeof(float)), *scale = malloc((size_t)cols * sizeof(float));
    for (int a = 0; a < cols; a++) {
        scale[a] = expf(1.5f * (2.0f * rng_uniform(rng) - 1.0f));
        for (int b = 0; b < cols; b++) mix[(size_t)a * cols + b] = (a == b) + 0.5f * rng_normal(rng) / sqrtf((float)cols);
    }
    for (int r = 0; r < n; r++) {
        for (int a = 0; a < cols; a++) z[a] = rng_normal(rng);
        for (int b = 0; b < cols; b++) {
            float v = 0.0f;
            for (int a = 0; a < cols; a++) v += z[a] * mix[(size_t)a * cols + b];
            x[(size_t)r * cols + b] = v * scale[b] + 0.3f;
        }
    }
    for (int k = 0; k < n_dead; k++)
        for (int r = 0; r < n; r++) x[(size_t)r * cols + dead[k]] = 0.0f;
    free(mix);
    free(z);
    free(scale);
    return x;
}

/* ||X W^T - X Q^T||_F from the Gram matrix: sqrt(sum_r (w_r - q_r)^T G (w_r - q_r)). */
static double output_error(const double *gram, const float *w, const float *q, int rows, int cols) {
    double total = 0.0;
    double *d = malloc((size_t)cols * sizeof(double));
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) d[c] = (double)w[(size_t)r * cols + c] - q[(size_t)r * cols + c];
        for (int a = 0; a < cols; a++) {
            double s = 0.0;
            for (int b = 0; b < cols; b++) s += gram[(size_t)a * cols + b] * d[b];
            total += d[a] * s;
        }
    }
    free(d);
    return sqrt(fmax(total, 0.0));
}

typedef struct {
    const char *granularity;
    int bits, asymmetric, act_order, fit_mse, current, block;
} GptqCase;

static QuantScheme gptq_scheme(const GptqCase *c) {
    QuantScheme s = scheme_of(QUANTIZER_GPTQ, c->bits, c->granularity, c->asymmetric, SCALE_F16);
    s.options.act_order = c->act_order;
    s.options.fit = c->fit_mse ? QUANTIZER_MSE : QUANTIZER_RTN;
    s.options.groups = c->current ? GPTQ_GROUPS_CURRENT : GPTQ_GROUPS_STATIC;
    if (c->block) s.options.block = c->block;
    return s;
}

/* The lazy batch updates are the column-by-column specification in another order: the same
 * values, for every option and block size (1, odd, the default 128, wider than the matrix). */
static void test_gptq_lazy_batches_match_reference(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 7301);
    static const GptqCase cases[] = {
        {"channel", 4, 0, 0, 0, 0, 0}, {"channel", 3, 0, 1, 0, 0, 7},  {"group:20", 2, 0, 0, 0, 0, 1},
        {"group:20", 3, 0, 1, 0, 0, 0}, {"group:20", 3, 0, 0, 0, 1, 7}, {"group:20", 4, 0, 0, 0, 1, 0},
        {"tensor", 3, 0, 0, 0, 0, 0},   {"channel", 4, 1, 1, 0, 0, 9},  {"group:10", 3, 1, 0, 1, 0, 0},
        {"channel", 2, 0, 0, 1, 0, 1000}, {"group:20", 2, 1, 0, 1, 1, 13}, {"channel", 8, 0, 1, 0, 0, 0},
    };
    int dead[] = {3, 71};
    for (int shape = 0; shape < 2; shape++) {
        int rows = 12, cols = shape ? 160 : 300, n = 2 * cols;
        float *x = correlated_inputs(n, cols, dead, 2, &rng), *w = malloc((size_t)rows * cols * sizeof(float));
        fill_normal(w, (size_t)rows * cols, &rng, 0.05f);
        CalibStats st;
        assert_int_equal(calib_stats_from_rows(&st, x, n, cols, 1), 0);
        float *fast = malloc((size_t)rows * cols * sizeof(float)), *ref = malloc((size_t)rows * cols * sizeof(float));
        for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
            QuantScheme s = gptq_scheme(&cases[k]);
            assert_int_equal(quant_scheme_check(&s), 0);
            GptqParams p = quant_scheme_gptq_params(&s, cols);
            assert_int_equal(gptq_quantize(fast, w, rows, cols, st.gram, &p, cases[k].fit_mse ? st.mean_square : NULL), 0);
            assert_int_equal(gptq_quantize_ref(ref, w, rows, cols, st.gram, &p, cases[k].fit_mse ? st.mean_square : NULL), 0);
            size_t differ = 0;
            for (size_t i = 0; i < (size_t)rows * cols; i++) differ += fast[i] != ref[i];
            if (differ) fail_msg("case %zu (%s, %d bits, block %d), %d columns: %zu values differ", k, cases[k].granularity, cases[k].bits,
                                 cases[k].block, cols, differ);
        }
        calib_stats_free(&st);
        free(x);
        free(w);
        free(fast);
        free(ref);
    }
}

/* With uncorrelated inputs H is diagonal, so is U: no error is fed to another column and GPTQ is
 * rtn (or the mse quantizer, when it fits by mse) exactly, at every bit width. */
static void test_gptq_diagonal_hessian_is_rtn(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 7302);
    int rows = 8, cols = 48;
    float *x = calloc((size_t)cols * cols, sizeof(float)), *w = malloc((size_t)rows * cols * sizeof(float));
    for (int c = 0; c < cols; c++) x[(size_t)c * cols + c] = 0.5f + rng_uniform(&rng); /* one row per column */
    fill_normal(w, (size_t)rows * cols, &rng, 0.05f);
    CalibStats st;
    assert_int_equal(calib_stats_from_rows(&st, x, cols, cols, 1), 0);
    float *gq = malloc((size_t)rows * cols * sizeof(float)), *plain = malloc((size_t)rows * cols * sizeof(float));
    for (int bits = 2; bits <= 8; bits++)
        for (int fit = 0; fit <= 1; fit++)
            for (int act = 0; act <= 1; act++) {
                GptqCase c = {"group:16", bits, 0, act, fit, 0, 0};
                QuantScheme s = gptq_scheme(&c), p = s;
                p.quantizer = fit ? QUANTIZER_MSE : QUANTIZER_RTN;
                GptqParams gp = quant_scheme_gptq_params(&s, cols);
                assert_int_equal(gptq_quantize(gq, w, rows, cols, st.gram, &gp, NULL), 0);
                assert_int_equal(quantize_matrix(plain, w, rows, cols, &p), 0);
                assert_memory_equal(gq, plain, (size_t)rows * cols * sizeof(float));
            }
    calib_stats_free(&st);
    free(x);
    free(w);
    free(gq);
    free(plain);
}

/* Exact levels: with static grids every value is a code of its row's or group's rtn grid (W with
 * the dead columns zeroed), in range; dead columns come out zero; the layer output error is
 * below rtn's at 2..4 bits, and at 8 bits no larger. */
static void test_gptq_levels_dead_inputs_and_output_error(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 7303);
    int rows = 16, cols = 96, n = 256, dead[] = {5, 50};
    float *x = correlated_inputs(n, cols, dead, 2, &rng), *w = malloc((size_t)rows * cols * sizeof(float));
    fill_normal(w, (size_t)rows * cols, &rng, 0.05f);
    CalibStats st;
    assert_int_equal(calib_stats_from_rows(&st, x, n, cols, 1), 0);
    float *wz = copy_floats(w, (size_t)rows * cols), *q = malloc((size_t)rows * cols * sizeof(float));
    float *rtn = malloc((size_t)rows * cols * sizeof(float));
    for (int r = 0; r < rows; r++) wz[(size_t)r * cols + 5] = wz[(size_t)r * cols + 50] = 0.0f;
    const char *grans[] = {"channel", "group:32"};
    for (int bits = 2; bits <= 8; bits++)
        for (int g = 0; g < 2; g++)
            for (int act = 0; act <= 1; act++) {
                GptqCase c = {grans[g], bits, 0, act, 0, 0, 0};
                QuantScheme s = gptq_scheme(&c), r = s;
                r.quantizer = QUANTIZER_RTN;
                GptqParams gp = quant_scheme_gptq_params(&s, cols);
                assert_int_equal(gptq_quantize(q, w, rows, cols, st.gram, &gp, NULL), 0);
                assert_int_equal(quantize_matrix(rtn, wz, rows, cols, &r), 0);
                int span = quant_span(&s, rows, cols), top = (1 << (bits - 1)) - 1;
                for (int off = 0; off < rows * cols; off += span) {
                    SpanGrid grid = span_grid_fit(wz + off, span, bits, 0, SCALE_F16, 1.0);
                    for (int i = off; i < off + span; i++) {
                        double code = q[i] / grid.scale;
                        if (fabs(code - nearbyint(code)) > 1e-6 || fabs(code) > top + 1e-6)
                            fail_msg("%d bits %s act %d: value %d is code %.6f of its grid", bits, grans[g], act, i, code);
                    }
                }
                for (int rr = 0; rr < rows; rr++) assert_true(q[(size_t)rr * cols + 5] == 0.0f && q[(size_t)rr * cols + 50] == 0.0f);
                double e_gptq = output_error(st.gram, w, q, rows, cols), e_rtn = output_error(st.gram, w, rtn, rows, cols);
                if (g == 0 && act == 0) print_message("  %d bits channel: GPTQ output error %.4f of rtn's\n", bits, e_gptq / e_rtn);
                if (bits <= 4 && !(e_gptq < e_rtn)) fail_msg("%d bits %s act %d: GPTQ output error %.6g not below rtn's %.6g", bits, grans[g], act, e_gptq, e_rtn);
                if (bits == 8 && !(e_gptq <= e_rtn * (1 + 1e-9)))
                    fail_msg("8 bits %s act %d: GPTQ output error %.6g above rtn's %.6g", grans[g], act, e_gptq, e_rtn);
            }
    calib_stats_free(&st);
    free(x);
    free(w);
    free(wz);
    free(q);
    free(rtn);
}

/* act-order: descending diag(H), ties in column order, dead columns (diag 0) counted as H_jj = 1. */
static void test_gptq_act_order(void **state) {
    (void)state;
    double gram[5 * 5] = {0};
    double diag[5] = {2.0, 0.0, 5.0, 2.0, 0.25}; /* H = 2 gram: 4, dead -> 1, 10, 4, 0.5 */
    for (int j = 0; j < 5; j++) gram[j * 5 + j] = diag[j];
    int perm[5], want[5] = {2, 0, 3, 1, 4};
    assert_int_equal(gptq_act_order(perm, gram, 5), 0);
    assert_memory_equal(perm, want, sizeof want);
}

static void test_gptq_refusals(void **state) {
    (void)state;
    QuantScheme s = scheme_of(QUANTIZER_GPTQ, 4, "channel", 0, SCALE_F16);
    for (int k = 0; k < 3; k++) {
        s.options.damp = k == 0 ? 0.0 : k == 1 ? -0.01 : NAN;
        assert_int_equal(quant_scheme_check(&s), -1);
        assert_non_null(strstr(qc_last_error(), "dampening"));
    }
    s.options.damp = 0.01;
    s.options.act_order = 1;
    s.options.groups = GPTQ_GROUPS_CURRENT;
    s.granularity = GRAN_GROUP;
    s.group = 8;
    assert_int_equal(quant_scheme_check(&s), -1);
    assert_non_null(strstr(qc_last_error(), "act-order"));
    s = scheme_of(QUANTIZER_GPTQ, 4, "channel", 0, SCALE_F16);
    float w[4 * 8] = {0}, out[4 * 8];
    assert_int_equal(quantize_matrix(out, w, 4, 8, &s), -1);
    assert_non_null(strstr(qc_last_error(), "needs calibration data"));
    /* a Hessian that no dampening makes positive definite (a NaN): refused, not a silent result */
    double gram[8 * 8] = {0};
    for (int j = 0; j < 8; j++) gram[j * 8 + j] = 1.0;
    gram[3 * 8 + 3] = NAN;
    GptqParams gp = quant_scheme_gptq_params(&s, 8);
    assert_int_equal(gptq_quantize(out, w, 4, 8, gram, &gp, NULL), -1);
    assert_non_null(strstr(qc_last_error(), "not positive definite"));
    /* grids that do not tile the rows (a group that does not divide them) */
    gram[3 * 8 + 3] = 1.0;
    gp.span_cols = 3;
    assert_int_equal(gptq_quantize(out, w, 4, 8, gram, &gp, NULL), -1);
    assert_non_null(strstr(qc_last_error(), "does not tile"));
    /* the description names the quantizer and its options */
    char desc[256];
    s.options.act_order = 1;
    s.options.fit = QUANTIZER_MSE;
    quant_scheme_describe(&s, desc, sizeof desc);
    assert_string_equal(desc, "int4 sym-absmax channel gptq:damp=0.01:act-order:fit=mse scale=f16 scope=linear,head act=none");
    s = scheme_of(QUANTIZER_MSE, 3, "group:8", 0, SCALE_EXACT);
    s.options.mse_weighted = 1;
    quant_scheme_describe(&s, desc, sizeof desc);
    assert_string_equal(desc, "int3 sym-absmax group:8 mse:weighted scope=linear,head act=none");
    assert_int_equal(quant_scheme_needs_calibration(&s), 1);
    s.options.mse_weighted = 0;
    assert_int_equal(quant_scheme_needs_calibration(&s), 0);
}

/* ============================ calibration on a model ============================ */

/* Captures what one linear layer reads in a plain forward. */
typedef struct {
    int target, in;
    float *x;
    long n;
} Capture;

static void capture_input(void *ctx, int linear, float *out, const float *in, int rows) {
    Capture *c = ctx;
    (void)out;
    if (linear != c->target) return;
    memcpy(c->x + (size_t)c->n * c->in, in, (size_t)rows * c->in * sizeof(float));
    c->n += rows;
}

static void copy_stats(CalibStats *dst, const CalibStats *src) {
    *dst = *src;
    size_t in = (size_t)src->in;
    dst->mean = malloc(in * sizeof(double));
    dst->mean_square = malloc(in * sizeof(double));
    dst->mean_abs = malloc(in * sizeof(double));
    dst->absmax = malloc(in * sizeof(double));
    memcpy(dst->absmax, src->absmax, in * sizeof(double));
    memcpy(dst->mean, src->mean, in * sizeof(double));
    memcpy(dst->mean_square, src->mean_square, in * sizeof(double));
    memcpy(dst->mean_abs, src->mean_abs, in * sizeof(double));
    dst->gram = NULL;
    if (src->gram) {
        dst->gram = malloc(in * in * sizeof(double));
        memcpy(dst->gram, src->gram, in * in * sizeof(double));
    }
}

static void quantize_layer_rtn2(GPT *m, int linear) {
    Linear lin = gpt_linear(m, linear);
    QuantScheme s = scheme_of(QUANTIZER_RTN, 2, "channel", 0, SCALE_F16);
    assert_int_equal(quantize_matrix(lin.weight, lin.weight, lin.out, lin.in, &s), 0);
}

/* What a walk saw per layer; it quantizes each visited layer (rtn, 2 bits), so later layers'
 * inputs change with the prefix. */
typedef struct {
    GPT *m;
    CalibStats seen[16];
} WalkLog;

static int log_visit(void *ctx, int linear, const CalibStats *st) {
    WalkLog *log = ctx;
    copy_stats(&log->seen[linear], st);
    quantize_layer_rtn2(log->m, linear);
    return 0;
}

static void assert_vectors_close(const char *what, int layer, const double *got, const double *want, size_t n) {
    double scale = 0.0;
    for (size_t k = 0; k < n; k++) scale = fmax(scale, fabs(want[k]));
    for (size_t k = 0; k < n; k++)
        if (!(fabs(got[k] - want[k]) <= 1e-12 * fmax(scale, 1e-30)))
            fail_msg("layer %d %s[%zu]: walk %.12g, forward %.12g", layer, what, k, got[k], want[k]);
}

/* The walk's statistics of every selected layer equal those of a plain forward (in the walk's
 * batches, so the rows are the same floats; the sums within 1e-12) of the model as the walk had left it when it reached the layer (the layers visited before it quantized), with
 * activation quantization off and on (then the statistics are of what the matrix reads). A
 * skipped layer stays as it was. */
static void test_calibration_walk_matches_forward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 7401);
    for (int act = 0; act <= 4; act += 4) {
        GPT m, ref;
        small_gpt(&m, 2, 8, 3, 7402);
        assert_int_equal(gpt_set_act_bits(&m, act), 0);
        int n_windows = 7, T = 8, n_linear = gpt_linear_count(&m.config);
        int32_t windows[7 * 8];
        random_tokens(windows, n_windows * T, m.config.vocab_size, &rng);
        assert_int_equal(gpt_clone(&ref, &m, 3), 0);
        unsigned char selected[9];
        for (int i = 0; i < n_linear; i++) selected[i] = i != 1 && i != 6;
        WalkLog log = {.m = &m};
        assert_int_equal(calib_walk(&m, NULL, windows, n_windows, T, selected, 1, log_visit, &log), 0);
        for (int i = 0; i < n_linear; i++) {
            if (!selected[i]) continue;
            Linear lin = gpt_linear(&ref, i);
            Capture cap = {i, lin.in, malloc((size_t)n_windows * T * lin.in * sizeof(float)), 0};
            ModelHook hook = {.ctx = &cap, .after_linear = capture_input};
            for (int w0 = 0; w0 < n_windows; w0 += 3) /* the walk's batches: the same float rows */
                assert_int_equal(gpt_forward(&ref, windows + w0 * T, n_windows - w0 < 3 ? n_windows - w0 : 3, T, &hook), 0);
            CalibStats want;
            assert_int_equal(calib_stats_from_rows(&want, cap.x, cap.n, lin.in, 1), 0);
            const CalibStats *got = &log.seen[i];
            assert_int_equal(got->n, (long)n_windows * T);
            assert_vectors_close("mean", i, got->mean, want.mean, (size_t)lin.in);
            assert_vectors_close("mean_square", i, got->mean_square, want.mean_square, (size_t)lin.in);
            assert_vectors_close("mean_abs", i, got->mean_abs, want.mean_abs, (size_t)lin.in);
            assert_memory_equal(got->absmax, want.absmax, (size_t)lin.in * sizeof(double)); /* a max: exact */
            assert_vectors_close("gram", i, got->gram, want.gram, (size_t)lin.in * lin.in);
            calib_stats_free(&want);
            free(cap.x);
            calib_stats_free(&log.seen[i]);
            quantize_layer_rtn2(&ref, i);
        }
        /* the walk changed exactly what its visits changed */
        assert_memory_equal(m.params, ref.params, m.num_params * sizeof(float));
        gpt_free(&m);
        gpt_free(&ref);
    }
}

/* ============================ quantize_model_calibrated ============================ */

typedef struct {
    GPT *m;
    const QuantScheme *s;
    double worst_ratio;
} LayerCheck;

/* Per layer, on the inputs the walk gives: GPTQ's output error below rtn's; then GPTQ goes in. */
static int check_layer(void *ctx, int linear, const CalibStats *st) {
    LayerCheck *c = ctx;
    Linear lin = gpt_linear(c->m, linear);
    size_t n = (size_t)lin.out * lin.in;
    float *gq = malloc(n * sizeof(float)), *rtn = malloc(n * sizeof(float));
    QuantScheme r = *c->s;
    r.quantizer = QUANTIZER_RTN;
    assert_int_equal(quantize_matrix_calibrated(gq, lin.weight, lin.out, lin.in, c->s, st), 0);
    assert_int_equal(quantize_matrix(rtn, lin.weight, lin.out, lin.in, &r), 0);
    double e_gptq = output_error(st->gram, lin.weight, gq, lin.out, lin.in), e_rtn = output_error(st->gram, lin.weight, rtn, lin.out, lin.in);
    if (!(e_gptq < e_rtn)) fail_msg("%s: GPTQ output error %.6g not below rtn's %.6g", gpt_linear_shape(&c->m->config, linear).name, e_gptq, e_rtn);
    c->worst_ratio = fmax(c->worst_ratio, e_gptq / e_rtn);
    memcpy(lin.weight, gq, n * sizeof(float));
    free(gq);
    free(rtn);
    return 0;
}

/* On a trained model: every layer's GPTQ output error on its calibration inputs (through the
 * GPTQ-quantized prefix) is below rtn's on the same inputs, and quantize_model_calibrated gives
 * that model bit for bit; it refuses to run without windows. */
static void test_gptq_on_trained_model(void **state) {
    (void)state;
    GPT f, q, check;
    Corpus corpus;
    trained_model(&f, &corpus, 16);
    int T = f.config.ctx, n_windows = 0;
    int64_t *starts = calibration_windows(&corpus, 4096, T, 7501, &n_windows);
    int32_t *windows = malloc((size_t)n_windows * T * sizeof(int32_t));
    for (int w = 0; w < n_windows; w++) memcpy(windows + (size_t)w * T, corpus.ids + starts[w], (size_t)T * sizeof(int32_t));
    for (int bits = 2; bits <= 4; bits++) {
        QuantScheme s = scheme_of(QUANTIZER_GPTQ, bits, "channel", 0, SCALE_F16);
        s.options.act_order = bits == 3;
        assert_int_equal(gpt_clone(&q, &f, 16), 0);
        assert_int_equal(gpt_clone(&check, &f, 16), 0);
        assert_int_equal(quantize_model(&q, &s, NULL, NULL), -1);
        assert_non_null(strstr(qc_last_error(), "needs calibration data"));
        TensorQuantError errors[32];
        int n_errors = 0;
        assert_int_equal(quantize_model_calibrated(&q, &s, windows, n_windows, T, errors, &n_errors), 0);
        assert_int_equal(n_errors, gpt_linear_count(&f.config));
        unsigned char selected[16];
        for (int i = 0; i < gpt_linear_count(&f.config); i++) selected[i] = 1;
        LayerCheck lc = {&check, &s, 0.0};
        assert_int_equal(calib_walk(&check, NULL, windows, n_windows, T, selected, 1, check_layer, &lc), 0);
        assert_memory_equal(q.params, check.params, q.num_params * sizeof(float));
        double lf = evaluate_loss(&f, corpus.ids + corpus.n_train, 8193, NULL);
        double lg = evaluate_loss(&q, corpus.ids + corpus.n_train, 8193, NULL);
        QuantScheme r = s;
        r.quantizer = QUANTIZER_RTN;
        gpt_free(&check);
        assert_int_equal(gpt_clone(&check, &f, 16), 0);
        assert_int_equal(quantize_model(&check, &r, NULL, NULL), 0);
        double lr = evaluate_loss(&check, corpus.ids + corpus.n_train, 8193, NULL);
        print_message("  trained model, %d bits%s: worst layer GPTQ/rtn output error %.3f; loss float %.4f, rtn %.4f, gptq %.4f\n", bits,
                      s.options.act_order ? " act-order" : "", lc.worst_ratio, lf, lr, lg);
        gpt_free(&q);
        gpt_free(&check);
    }
    free(starts);
    free(windows);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* The scheme, quantizer options included, survives a checkpoint; an rtn scheme writes no option key. */
static void test_scheme_metadata_round_trip(void **state) {
    (void)state;
    GPT m;
    tiny_model(&m, 1, 7601);
    Vocab vocab = {.size = m.config.vocab_size};
    for (int i = 0; i < vocab.size; i++) vocab.bytes[i] = (uint8_t)('a' + i);
    QuantScheme cases[3];
    cases[0] = scheme_of(QUANTIZER_GPTQ, 3, "group:8", 1, SCALE_F16);
    cases[0].options.damp = 0.037;
    cases[0].options.fit = QUANTIZER_MSE;
    cases[0].options.mse_weighted = 1;
    cases[0].options.groups = GPTQ_GROUPS_CURRENT;
    cases[1] = scheme_of(QUANTIZER_MSE, 2, "channel", 0, SCALE_BF16);
    cases[1].options.mse_weighted = 1;
    cases[2] = scheme_of(QUANTIZER_RTN, 4, "channel", 0, SCALE_F16);
    for (int k = 0; k < 3; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/scheme%d.safetensors", test_tmpdir(), k);
        assert_int_equal(save_model(path, &m, &vocab, &cases[k], NULL, NULL), 0);
        LoadedModel lm;
        assert_int_equal(load_checkpoint(&lm, path, 1), 0);
        const QuantScheme *a = &cases[k], *b = &lm.scheme;
        assert_int_equal(b->quantizer, a->quantizer);
        assert_true(b->options.damp == a->options.damp);
        assert_int_equal(b->options.fit, a->options.fit);
        assert_int_equal(b->options.mse_weighted, a->options.mse_weighted);
        assert_int_equal(b->options.groups, a->options.groups);
        assert_int_equal(b->options.act_order, a->options.act_order);
        char da[256], db[256];
        quant_scheme_describe(a, da, sizeof da);
        quant_scheme_describe(b, db, sizeof db);
        assert_string_equal(da, db);
        SafeTensors st;
        assert_int_equal(st_read(&st, path), 0);
        assert_true((st_meta(&st, "quant_gptq_damp") != NULL) == (k == 0));
        assert_true((st_meta(&st, "quant_mse_weighted") != NULL) == (k < 2));
        st_free(&st);
        loaded_model_free(&lm);
    }
    gpt_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mse_grid),
        cmocka_unit_test(test_mse_hand_computed),
        cmocka_unit_test(test_mse_exact_levels),
        cmocka_unit_test(test_mse_never_worse_than_rtn_random),
        cmocka_unit_test(test_mse_weighting),
        cmocka_unit_test(test_mse_never_worse_than_rtn_trained),
        cmocka_unit_test(test_gptq_lazy_batches_match_reference),
        cmocka_unit_test(test_gptq_diagonal_hessian_is_rtn),
        cmocka_unit_test(test_gptq_levels_dead_inputs_and_output_error),
        cmocka_unit_test(test_gptq_act_order),
        cmocka_unit_test(test_gptq_refusals),
        cmocka_unit_test(test_calibration_walk_matches_forward),
        cmocka_unit_test(test_gptq_on_trained_model),
        cmocka_unit_test(test_scheme_metadata_round_trip),
    };
    return cmocka_run_group_tests_name("quantizers", tests, setup_one_thread, restore_threads);
}
