/* test_actquant: activation quantization (README: Activation quantization) on exact hand-made
 * values — the symmetric and asymmetric (zero point) grids, per row / per block / fixed with strides,
 * the fast kernels against the specification, the static range rules (minmax, percentile, mse) and
 * the calibration subsample; the probabilities' straight-through backward against a naive one; the
 * points in the model: the inference path bit for bit the training forward at every granularity
 * whatever the chunking, the sampler's KV cache the batched forward's; the scheme's text forms. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "nn/actquant.h"
#include "nn/infer.h"
#include "nn/sample.h"
#include "quant/actcalib.h"
#include "quant/fakequant.h"

static void assert_floats_equal(const char *what, const float *got, const float *want, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("%s: [%d] = %.9g, expected %.9g", what, i, got[i], want[i]);
}

/* ============================ grids ============================ */

static void test_act_grid_hand(void **state) {
    (void)state;
    /* symmetric 4 bits on [-1, 0.5]: absmax 1, scale 1/7, codes -7..7 */
    ActGrid g = act_grid(-1.0f, 0.5f, 4, 0);
    assert_true(g.scale == 1.0f / 7.0f && g.zero == 0.0f && g.qmin == -7.0f && g.qmax == 7.0f);
    float x[6] = {1.0f, -2.0f, 0.5f / 7.0f, 1.5f / 7.0f, 0.0f, -0.3f}, y[6];
    act_grid_apply(y, x, 6, g);
    /* 0.5 step -> 0 and 1.5 steps -> 2 (ties to even); -2 clamps to -7 steps; -0.3 = -2.1 steps -> -2 */
    assert_floats_equal("sym", y, (const float[]){7 * g.scale, -7 * g.scale, 0, 2 * g.scale, 0, -2 * g.scale}, 6);
    /* asymmetric 2 bits on [-1, 2]: scale (2 - -1)/3 = 1, zero point rint(1/1) = 1, values -1, 0, 1, 2 */
    g = act_grid(-1.0f, 2.0f, 2, 1);
    assert_true(g.scale == 1.0f && g.zero == 1.0f && g.qmin == 0.0f && g.qmax == 3.0f);
    float a[7] = {0.4f, 2.6f, -1.7f, 1.5f, 0.5f, 0.0f, -0.5f}, b[7];
    act_grid_apply(b, a, 7, g);
    assert_floats_equal("asym", b, (const float[]){0, 2, -1, 2, 0, 0, 0}, 7); /* 1.5 -> 2 (even), 0.5 -> 0, -0.5 -> -0 -> 0 */
    /* a range that misses 0 is widened to hold it: [0.5, 2] -> [0, 2], scale 2/3, zero 0: 0 stays exact */
    g = act_grid(0.5f, 2.0f, 2, 1);
    assert_true(g.scale == 2.0f / 3.0f && g.zero == 0.0f);
    assert_true(act_grid_value(0.0f, g) == 0.0f && act_grid_value(0.9f, g) == 2.0f / 3.0f);
    /* [-3, -1] -> [-3, 0]: zero point at the top code, 2 bits: scale 1, z = 3 */
    g = act_grid(-3.0f, -1.0f, 2, 1);
    assert_true(g.scale == 1.0f && g.zero == 3.0f && act_grid_value(0.2f, g) == 0.0f && act_grid_value(-2.6f, g) == -3.0f);
    /* probabilities on [0, 0.875] at 3 bits asymmetric: scale 1/8 exactly, zero point 0 */
    g = act_grid(0.0f, 0.875f, 3, 1);
    assert_true(g.scale == 0.125f && g.zero == 0.0f);
    float p[4] = {0.5f, 0.3f, 0.9f, 0.0625f}, pq[4];
    act_grid_apply(pq, p, 4, g);
    assert_floats_equal("probs", pq, (const float[]){0.5f, 0.25f, 0.875f, 0.0f}, 4); /* 0.0625 = half a step: to 0 */
    /* an all-zero range: every value 0 (no division by zero) */
    g = act_grid(0.0f, 0.0f, 4, 1);
    assert_true(act_grid_value(3.0f, g) == 0.0f);
    act_grid_apply(y, x, 6, act_grid(0.0f, 0.0f, 4, 0));
    for (int i = 0; i < 6; i++) assert_true(y[i] == 0.0f);
}

/* Every kernel against the scalar specification, with strides, ties, zero rows, 1 and 2 threads. */
static void test_act_kernels_match_spec(void **state) {
    (void)state;
    enum { R = 97, C = 431, LD = 450 }; /* R * C above the threading threshold */
    float *in = calloc((size_t)R * LD, sizeof(float)), *out = malloc((size_t)R * LD * sizeof(float));
    float *want = malloc((size_t)R * LD * sizeof(float));
    Rng rng;
    rng_seed(&rng, 71);
    for (int r = 0; r < R; r++) {
        float step = ldexpf(1.0f, r % 5 - 2);
        for (int c = 0; c < C; c++) in[(long)r * LD + c] = step * (float)(rng_uniform(&rng) * 20 - 7);
        for (int c = 1; c < C; c += 4) in[(long)r * LD + c] = step * ((int)rng_below(&rng, 14) - 7 + 0.5f); /* ties */
        if (r == 9) memset(in + (long)r * LD, 0, C * sizeof(float));
    }
    for (int bits = 2; bits <= 8; bits += 3)
        for (int asym = 0; asym <= 1; asym++)
            for (int threads = 1; threads <= 2; threads++) {
                use_threads(threads);
                /* per row */
                for (int r = 0; r < R; r++) {
                    const float *x = in + (long)r * LD;
                    float lo = x[0], hi = x[0];
                    for (int c = 1; c < C; c++) lo = fminf(lo, x[c]), hi = fmaxf(hi, x[c]);
                    ActGrid g = act_grid(lo, hi, bits, asym);
                    for (int c = 0; c < C; c++) want[(long)r * LD + c] = act_grid_value(x[c], g);
                }
                memset(out, 0xff, (size_t)R * LD * sizeof(float));
                act_quantize_rows(out, LD, in, LD, R, C, bits, asym);
                for (int r = 0; r < R; r++)
                    if (memcmp(out + (long)r * LD, want + (long)r * LD, C * sizeof(float)) != 0)
                        fail_msg("rows: %d bits asym %d threads %d: row %d differs from the specification", bits, asym, threads, r);
                /* one grid over the block */
                float lo = in[0], hi = in[0];
                for (int r = 0; r < R; r++)
                    for (int c = 0; c < C; c++) lo = fminf(lo, in[(long)r * LD + c]), hi = fmaxf(hi, in[(long)r * LD + c]);
                ActGrid g = act_grid(lo, hi, bits, asym);
                act_quantize_block(out, LD, in, LD, R, C, bits, asym);
                for (int r = 0; r < R; r++)
                    for (int c = 0; c < C; c++)
                        if (out[(long)r * LD + c] != act_grid_value(in[(long)r * LD + c], g))
                            fail_msg("block: %d bits asym %d: [%d,%d] differs from the specification", bits, asym, r, c);
                /* in place, fixed grid */
                float *copy = copy_floats(in, (size_t)R * LD);
                g = act_grid(-1.0f, 3.0f, bits, asym);
                act_quantize_fixed(copy, LD, copy, LD, R, C, g);
                for (int r = 0; r < R; r++)
                    for (int c = 0; c < C; c++)
                        if (copy[(long)r * LD + c] != act_grid_value(in[(long)r * LD + c], g)) fail_msg("fixed: [%d,%d]", r, c);
                free(copy);
            }
    use_threads(1);
    /* the old per-token quantizer is the symmetric per-row one, bit for bit (signed zeros too) */
    quantize_activations_ref(want, in, R, LD, 4);
    act_quantize_rows(out, LD, in, LD, R, LD, 4, 0);
    assert_memory_equal(out, want, (size_t)R * LD * sizeof(float));
    free(in);
    free(out);
    free(want);
}

/* ============================ static ranges ============================ */

static void test_act_range_rules(void **state) {
    (void)state;
    ActScheme a;
    act_scheme_default(&a);
    float lo, hi, v[7];
    const float x[7] = {3, -4, 0, 10, -1, 2, 1};
    /* minmax: [min, max] (asymmetric), [-absmax, absmax] (symmetric) */
    a.calib = ACT_CALIB_MINMAX;
    a.asymmetric = 1;
    memcpy(v, x, sizeof v);
    act_range_calibrate(&a, 4, v, 7, -4, 10, &lo, &hi);
    assert_true(lo == -4 && hi == 10);
    a.asymmetric = 0;
    act_range_calibrate(&a, 4, v, 7, -4, 10, &lo, &hi);
    assert_true(lo == -10 && hi == 10);
    /* percentile 80 by nearest rank over 7 values: rank ceil(5.6) = 6; |x| sorted 0 1 1 2 3 4 10 -> 4;
     * asymmetric: x sorted -4 -1 0 1 2 3 10 -> hi the 6th (3), lo the rank ceil(1.4) = 2nd (-1) */
    a.calib = ACT_CALIB_PERCENTILE;
    a.percentile = 80;
    memcpy(v, x, sizeof v);
    act_range_calibrate(&a, 4, v, 7, -4, 10, &lo, &hi);
    assert_true(lo == -4 && hi == 4);
    a.asymmetric = 1;
    memcpy(v, x, sizeof v);
    act_range_calibrate(&a, 4, v, 7, -4, 10, &lo, &hi);
    assert_true(lo == -1 && hi == 3);
    a.percentile = 100; /* the extremes */
    memcpy(v, x, sizeof v);
    act_range_calibrate(&a, 4, v, 7, -4, 10, &lo, &hi);
    assert_true(lo == -4 && hi == 10);
    /* mse: many values in [-1, 1] and one outlier at 8: at 3 bits the clipped range wins; the chosen
     * one is the least squared error of the 100 candidates (ties to the larger), never worse than minmax */
    enum { N = 401 };
    float w[N];
    for (int i = 0; i < N - 1; i++) w[i] = -1.0f + 2.0f * i / (N - 2);
    w[N - 1] = 8.0f;
    for (int asym = 0; asym <= 1; asym++) {
        a.calib = ACT_CALIB_MSE;
        a.asymmetric = asym;
        act_range_calibrate(&a, 3, w, N, -1, 8, &lo, &hi);
        double best = INFINITY, at_minmax = 0;
        float blo = 0, bhi = 0;
        for (int k = 0; k < MSE_CLIP_CANDIDATES; k++) {
            double r = mse_clip_ratio(k);
            float l = asym ? (float)(r * -1.0) : -(float)(r * 8.0), h = (float)(r * 8.0);
            ActGrid g = act_grid(l, h, 3, asym);
            double e = 0;
            for (int i = 0; i < N; i++) e += ((double)w[i] - act_grid_value(w[i], g)) * ((double)w[i] - act_grid_value(w[i], g));
            if (k == 0) at_minmax = e;
            if (e < best) best = e, blo = l, bhi = h;
        }
        assert_true(lo == blo && hi == bhi);
        assert_true(hi < 8.0f && best < at_minmax);
    }
}

static void test_act_calib_subsample(void **state) {
    (void)state;
    /* up to the cap every value is read */
    for (uint64_t v = 0; v < 1000; v++) assert_true(act_calib_keep(v * 997, ACT_CALIB_VALUES));
    /* beyond it about the cap's share, by a fixed rule (the same indices every time) */
    uint64_t total = 8 * (uint64_t)ACT_CALIB_VALUES, kept = 0, n = 200000;
    for (uint64_t v = 0; v < n; v++) kept += (uint64_t)act_calib_keep(v, total);
    double share = (double)kept / (double)n;
    if (!(fabs(share - 0.125) < 0.005)) fail_msg("kept a share %g of the values, expected 1/8", share);
    assert_int_equal(act_calib_keep(12345, total), act_calib_keep(12345, total));
}

/* ============================ the points in the model ============================ */

/* The probabilities' backward: the softmax backward from the float probabilities (straight through
 * Q), the values' gradient from the quantized ones: dV = Q(P)^T dY, against naive double loops. */
static void test_probs_backward(void **state) {
    (void)state;
    GPT m;
    tiny_model(&m, 2, 81);
    const GPTConfig *c = &m.config;
    int B = 2, T = c->ctx, C = c->d_model, NH = c->n_head, hs = C / NH;
    ActScheme a;
    act_scheme_default(&a);
    a.bits = 3;
    a.points = ACT_POINT_PROBS;
    assert_int_equal(gpt_set_act_scheme(&m, &a), 0);
    Rng rng;
    rng_seed(&rng, 82);
    size_t nq = (size_t)B * T * 3 * C, na = (size_t)B * NH * T * T, ny = (size_t)B * T * C;
    float *qkv = malloc(nq * sizeof(float)), *att = malloc(na * sizeof(float)), *attq = malloc(na * sizeof(float));
    float *y = malloc(ny * sizeof(float)), *dy = malloc(ny * sizeof(float)), *got = malloc(nq * sizeof(float));
    float *want = malloc(nq * sizeof(float));
    fill_normal(qkv, nq, &rng, 1.0f);
    fill_normal(dy, ny, &rng, 1.0f);
    attention_forward(y, att, qkv, B, T, C, NH);
    act_probs_forward(&m, 0, y, attq, att, qkv, B, T);
    /* the forward's output is Q(P) V (naive) */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                for (int t2 = t + 1; t2 < T; t2++) assert_true(attq[(((long)b * NH + h) * T + t) * T + t2] == 0.0f);
                for (int i = 0; i < hs; i++) {
                    double s = 0;
                    for (int t2 = 0; t2 <= t; t2++)
                        s += (double)attq[(((long)b * NH + h) * T + t) * T + t2] * qkv[((long)b * T + t2) * 3 * C + 2 * C + h * hs + i];
                    assert_close(y[((long)b * T + t) * C + h * hs + i], s, 1e-5);
                }
            }
    attention_backward(got, dy, qkv, att, B, T, C, NH);
    act_probs_backward(&m, got, dy, attq, B, T);
    attention_backward_ref(want, dy, qkv, att, B, T, C, NH); /* float P: q, k parts */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t2 = 0; t2 < T; t2++)
                for (int i = 0; i < hs; i++) {
                    double s = 0;
                    for (int t = t2; t < T; t++)
                        s += (double)attq[(((long)b * NH + h) * T + t) * T + t2] * dy[((long)b * T + t) * C + h * hs + i];
                    want[((long)b * T + t2) * 3 * C + 2 * C + h * hs + i] = (float)s;
                }
    double d = max_rel_diff(got, want, nq, 1e-2);
    if (!(d <= 1e-4)) fail_msg("the probabilities' backward differs from the naive one by %g", d);
    /* the check can tell: dV from the float probabilities is far off at 3 bits */
    float *plain = malloc(nq * sizeof(float));
    attention_backward_ref(plain, dy, qkv, att, B, T, C, NH);
    assert_true(max_rel_diff(plain, want, nq, 1e-2) > 1e-2);
    free(plain);
    free(qkv); free(att); free(attq); free(y); free(dy); free(got); free(want);
    gpt_free(&m);
}

enum { MAX_B = 4, CTX = 16 };

static void set_scheme(GPT *m, int bits, int kv, unsigned points, ActGranularity g, int asym) {
    ActScheme a;
    act_scheme_default(&a);
    a.bits = bits;
    a.kv_bits = kv;
    a.points = points;
    a.granularity = g;
    a.asymmetric = asym;
    assert_int_equal(gpt_set_act_scheme(m, &a), 0);
    if (g == ACT_STATIC) { /* hand ranges: [-3, 3] everywhere, [0, 1] for the probabilities */
        int n = act_site_count(m->config.n_layer);
        float *r = malloc((size_t)n * 2 * sizeof(float));
        for (int s = 0; s < n; s++) {
            int probs = act_site_point(m->config.n_layer, s) == ACT_POINT_PROBS;
            r[2 * s] = probs ? 0.0f : -3.0f;
            r[2 * s + 1] = probs ? 1.0f : 3.0f;
        }
        assert_int_equal(gpt_set_act_ranges(m, r), 0);
        free(r);
    }
}

/* The inference path quantizes what the training forward does, bit for bit, however the windows
 * are chunked (a tensor's scale covers one window, never a chunk or a batch). */
static void test_points_infer_matches_forward(void **state) {
    (void)state;
    GPT m;
    small_gpt(&m, 3, CTX, MAX_B, 91);
    Rng rng;
    rng_seed(&rng, 92);
    fill_normal(m.params, m.num_params, &rng, 0.1f); /* away from the init: attention not uniform */
    int32_t tokens[MAX_B * CTX];
    random_tokens(tokens, MAX_B * CTX, m.config.vocab_size, &rng);
    size_t n = (size_t)MAX_B * CTX * m.config.vocab_size;
    assert_int_equal(gpt_forward(&m, tokens, MAX_B, CTX, NULL), 0);
    float *plain = copy_floats(m.logits, n);
    for (int g = ACT_TOKEN; g <= ACT_STATIC; g++)
        for (int asym = 0; asym <= 1; asym++) {
            set_scheme(&m, 4, 3, ACT_POINTS_ALL, (ActGranularity)g, asym);
            assert_int_equal(gpt_forward(&m, tokens, MAX_B, CTX, NULL), 0);
            float *want = copy_floats(m.logits, n);
            if (!(max_abs_diff(want, plain, n) > 1e-2)) fail_msg("granularity %d: the quantized forward is the float one", g);
            int chunks[] = {1, 3, MAX_B};
            for (int k = 0; k < 3; k++) {
                Inference inf;
                assert_int_equal(inference_init(&inf, &m, chunks[k]), 0);
                assert_int_equal(gpt_infer(&m, &inf, tokens, NULL, 0, MAX_B, CTX, NULL), 0);
                inference_free(&inf);
                if (memcmp(m.logits, want, n * sizeof(float)) != 0)
                    fail_msg("granularity %d asym %d, %d windows a chunk: inference differs by %g", g, asym, chunks[k], max_abs_diff(m.logits, want, n));
            }
            /* a window's result does not depend on the others of its batch */
            assert_int_equal(gpt_forward(&m, tokens + CTX, 1, CTX, NULL), 0);
            size_t per = (size_t)CTX * m.config.vocab_size;
            assert_memory_equal(m.logits, want + per, per * sizeof(float));
            free(want);
        }
    free(plain);
    gpt_free(&m);
}

/* The sampler's cache holds the keys and values as the batched forward quantizes them, and its
 * logits follow the forward's (per token and static; a tensor's scale in a step covers its token). */
static void test_points_sampler(void **state) {
    (void)state;
    for (int g = ACT_TOKEN; g <= ACT_STATIC; g += 2) {
        GPT m;
        tiny_model(&m, 1, 93 + g);
        int T = m.config.ctx, V = m.config.vocab_size, C = m.config.d_model;
        set_scheme(&m, 8, 6, ACT_POINTS_ALL, (ActGranularity)g, 1);
        int32_t tokens[64];
        Rng rng;
        rng_seed(&rng, 94);
        random_tokens(tokens, T, V, &rng);
        SampleState s;
        assert_int_equal(sample_state_init(&s, &m, NULL), 0);
        for (int t = 0; t < T; t++) {
            const float *cached = sample_step(&s, tokens[t]);
            float *row = copy_floats(cached, (size_t)V);
            assert_int_equal(gpt_forward(&m, tokens, 1, t + 1, NULL), 0);
            double d = max_rel_diff(row, m.logits + (size_t)t * V, V, 1e-2);
            if (!(d <= 1e-4)) fail_msg("granularity %d: sample_step at %d differs from gpt_forward by %g", g, t, d);
            free(row);
        }
        /* every cached key and value is the forward's quantized one */
        assert_int_equal(gpt_forward(&m, tokens, 1, T, NULL), 0);
        for (int l = 0; l < m.config.n_layer; l++)
            for (int t = 0; t < T; t++) {
                const float *k = s.key_cache + ((size_t)l * T + t) * C, *v = s.value_cache + ((size_t)l * T + t) * C;
                const float *qkv = m.layers[l].qkv + (size_t)t * 3 * C;
                if (max_abs_diff(k, qkv + C, C) > 1e-5 || max_abs_diff(v, qkv + 2 * C, C) > 1e-5)
                    fail_msg("granularity %d: cached key/value of block %d position %d is not the forward's", g, l, t);
            }
        sample_state_free(&s);
        gpt_free(&m);
    }
}

/* ============================ text forms ============================ */

static void test_scheme_text(void **state) {
    (void)state;
    ActScheme a;
    char d[128];
    act_scheme_inputs(&a, 4);
    act_scheme_describe(&a, d, sizeof d);
    assert_string_equal(d, "int4"); /* what records said before the other parts existed */
    act_scheme_inputs(&a, 0);
    act_scheme_describe(&a, d, sizeof d);
    assert_string_equal(d, "none");
    act_scheme_default(&a);
    a.kv_bits = 4;
    a.points = ACT_POINT_KV;
    assert_int_equal(act_scheme_check(&a), 0);
    act_scheme_describe(&a, d, sizeof d);
    assert_string_equal(d, "kv=int4");
    a.bits = 8;
    assert_int_equal(act_parse_points("probs,inputs,kv", &a.points), 0);
    a.granularity = ACT_STATIC;
    assert_int_equal(act_parse_calib("percentile:99.5", &a), 0);
    a.asymmetric = 1;
    act_scheme_describe(&a, d, sizeof d);
    assert_string_equal(d, "int8:static-p99.5:asym:inputs,kv,probs:kv=int4");
    assert_int_equal(act_parse_calib("mse", &a), 0);
    a.kv_bits = 8;
    act_scheme_describe(&a, d, sizeof d);
    assert_string_equal(d, "int8:static-mse:asym:inputs,kv,probs");
    /* refusals name the text */
    assert_int_equal(act_parse_points("inputs,keys", &a.points), -1);
    assert_non_null(strstr(qc_last_error(), "keys"));
    assert_int_equal(act_parse_calib("percentile:20", &a), -1);
    assert_int_equal(act_parse_granularity("channel", &a.granularity), -1);
    assert_non_null(strstr(qc_last_error(), "channel"));
    /* a scheme whose bits and points disagree */
    act_scheme_default(&a);
    a.points = ACT_POINT_STREAM;
    assert_int_equal(act_scheme_check(&a), -1);
    a.bits = 9;
    assert_int_equal(act_scheme_check(&a), -1);
    /* site names */
    act_site_name(2, 2 * ACT_SITES_PER_BLOCK, d, sizeof d);
    assert_string_equal(d, "lm_head.input_range");
    act_site_name(2, ACT_SITES_PER_BLOCK + ACT_SITE_KEY, d, sizeof d);
    assert_string_equal(d, "transformer.h.1.attn.key_range");
    act_site_name(2, 3, d, sizeof d);
    assert_string_equal(d, "transformer.h.0.mlp.c_proj.input_range");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_act_grid_hand),
        cmocka_unit_test(test_act_kernels_match_spec),
        cmocka_unit_test(test_act_range_rules),
        cmocka_unit_test(test_act_calib_subsample),
        cmocka_unit_test(test_probs_backward),
        cmocka_unit_test(test_points_infer_matches_forward),
        cmocka_unit_test(test_points_sampler),
        cmocka_unit_test(test_scheme_text),
    };
    return cmocka_run_group_tests_name("actquant", tests, setup_one_thread, restore_threads);
}
