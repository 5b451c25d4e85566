/* test_compensate: the per-matrix corrections of issue 14 — lowrank (truncated SVD of W - Q, plain
 * and activation-aware: full rank gives W back, the truncation is the optimal one, the act scale
 * lowers the output error, signs are fixed; its backward against finite differences; PEFT's names
 * in a checkpoint) and bias correction (the mean output error removed, no parameter stored, folded
 * into the checkpoint's biases), the rank that matches a stream correction's budget, and both
 * methods end to end through run_correction on a trained model. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/compensate.h"
#include "correct/experiment.h"
#include "io/checkpoint.h"
#include "io/model_file.h"
#include "nn/train.h"
#include "quant/calib.h"
#include "quant/quant.h"

/* ============================ one matrix ============================ */

static float *rtn2(const float *w, int rows, int cols) {
    float *q = malloc((size_t)rows * cols * sizeof(float));
    QuantScheme s;
    quant_scheme_default(&s, 2);
    s.scale_dtype = SCALE_F16;
    assert_int_equal(quantize_matrix(q, w, rows, cols, &s), 0);
    return q;
}

/* max |(Q + B A) - W| over the matrix, in double */
static double reconstruction_error(const float *w, const float *q, const float *A, const float *B, int rows, int cols, int k) {
    double worst = 0.0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double ba = 0.0;
            for (int i = 0; i < k; i++) ba += (double)B[(size_t)r * k + i] * A[(size_t)i * cols + c];
            worst = fmax(worst, fabs((double)q[(size_t)r * cols + c] + ba - w[(size_t)r * cols + c]));
        }
    return worst;
}

/* ||E - B A||_F^2 and ||X (E - B A)^T||_F^2 (x: n rows) in double */
static void residuals(const float *w, const float *q, const float *A, const float *B, int rows, int cols, int k, const float *x, int n,
                      double *fro2, double *out2) {
    double *d = malloc((size_t)rows * cols * sizeof(double));
    *fro2 = 0.0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double ba = 0.0;
            for (int i = 0; i < k; i++) ba += (double)B[(size_t)r * k + i] * A[(size_t)i * cols + c];
            d[(size_t)r * cols + c] = (double)w[(size_t)r * cols + c] - q[(size_t)r * cols + c] - ba;
            *fro2 += d[(size_t)r * cols + c] * d[(size_t)r * cols + c];
        }
    *out2 = 0.0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double y = 0.0;
            for (int c = 0; c < cols; c++) y += (double)x[(size_t)t * cols + c] * d[(size_t)r * cols + c];
            *out2 += y * y;
        }
    free(d);
}

/* Inputs whose column magnitudes spread over e^-2..e^2 (what makes L2QER's scale matter), one dead column. */
static float *spread_inputs(int n, int cols, int dead, Rng *rng) {
    float *x = malloc((size_t)n * cols * sizeof(float)), *scale = malloc((size_t)cols * sizeof(float));
    for (int c = 0; c < cols; c++) scale[c] = expf(2.0f * (2.0f * rng_uniform(rng) - 1.0f));
    for (int t = 0; t < n; t++)
        for (int c = 0; c < cols; c++) x[(size_t)t * cols + c] = c == dead ? 0.0f : scale[c] * rng_normal(rng) + 0.2f;
    free(scale);
    return x;
}

/* At full rank with S = I the factors give W back from Q (to float rounding); with a positive S
 * too. The truncation keeps the leading singular values: ||E - B A||^2 = sum of the rest squared
 * (Eckart-Young), and sigma comes out descending. */
static void test_lowrank_full_rank_and_truncation(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 8101);
    int rows = 24, cols = 64, m = 24;
    float *w = malloc((size_t)rows * cols * sizeof(float));
    fill_normal(w, (size_t)rows * cols, &rng, 0.05f);
    float *q = rtn2(w, rows, cols), *A = malloc((size_t)m * cols * sizeof(float)), *B = malloc((size_t)rows * m * sizeof(float));
    double sigma[24], scale[64];
    for (int c = 0; c < cols; c++) scale[c] = 0.2 + 3.0 * rng_uniform(&rng);
    assert_int_equal(lowrank_factors(A, B, sigma, w, q, rows, cols, m, NULL), 0);
    double err = reconstruction_error(w, q, A, B, rows, cols, m);
    print_message("  full rank, S = I: max |Q + BA - W| = %.2e\n", err);
    if (!(err < 1e-6)) fail_msg("full rank with S = I: max |Q + BA - W| = %.3g", err);
    for (int i = 1; i < m; i++) assert_true(sigma[i] <= sigma[i - 1]);
    assert_int_equal(lowrank_factors(A, B, NULL, w, q, rows, cols, m, scale), 0);
    err = reconstruction_error(w, q, A, B, rows, cols, m);
    if (!(err < 1e-6)) fail_msg("full rank with a positive S: max |Q + BA - W| = %.3g", err);
    for (int k = 1; k <= 8; k += 7) {
        double fro2, out2, tail = 0.0;
        assert_int_equal(lowrank_factors(A, B, NULL, w, q, rows, cols, k, NULL), 0);
        residuals(w, q, A, B, rows, cols, k, NULL, 0, &fro2, &out2);
        for (int i = k; i < m; i++) tail += sigma[i] * sigma[i];
        assert_close(fro2, tail, 1e-6 * tail);
    }
    /* refused: rank 0 or beyond min(out, in) */
    assert_int_equal(lowrank_factors(A, B, NULL, w, q, rows, cols, 25, NULL), -1);
    assert_non_null(strstr(qc_last_error(), "rank 25"));
    assert_int_equal(lowrank_factors(A, B, NULL, w, q, rows, cols, 0, NULL), -1);
    free(w);
    free(q);
    free(A);
    free(B);
}

/* L2QER's scale S = mean |x| per column trades the plain Frobenius error for the output error on
 * inputs with spread magnitudes; the dead column gets A[:, j] = 0; the sign rule holds. */
static void test_lowrank_activation_scale(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 8102);
    int rows = 24, cols = 64, n = 128, k = 4, dead = 11;
    float *w = malloc((size_t)rows * cols * sizeof(float));
    fill_normal(w, (size_t)rows * cols, &rng, 0.05f);
    float *q = rtn2(w, rows, cols), *x = spread_inputs(n, cols, dead, &rng);
    CalibStats st;
    assert_int_equal(calib_stats_from_rows(&st, x, n, cols, 0), 0);
    float A[4 * 64], B[24 * 4], Aa[4 * 64], Ba[24 * 4];
    assert_int_equal(lowrank_factors(A, B, NULL, w, q, rows, cols, k, NULL), 0);
    assert_int_equal(lowrank_factors(Aa, Ba, NULL, w, q, rows, cols, k, st.mean_abs), 0);
    double fro_plain, out_plain, fro_act, out_act;
    residuals(w, q, A, B, rows, cols, k, x, n, &fro_plain, &out_plain);
    residuals(w, q, Aa, Ba, rows, cols, k, x, n, &fro_act, &out_act);
    print_message("  rank 4: output error act/plain %.3f, Frobenius act/plain %.3f\n", sqrt(out_act / out_plain), sqrt(fro_act / fro_plain));
    assert_true(out_act < out_plain);
    assert_true(fro_plain < fro_act);
    for (int i = 0; i < k; i++) {
        assert_true(Aa[(size_t)i * cols + dead] == 0.0f);
        int top = 0;
        for (int r = 1; r < rows; r++)
            if (fabsf(Ba[(size_t)r * k + i]) > fabsf(Ba[(size_t)top * k + i])) top = r;
        assert_true(Ba[(size_t)top * k + i] > 0.0f);
    }
    calib_stats_free(&st);
    free(w);
    free(q);
    free(x);
}

/* The bias correction cancels the mean output error over the inputs it was computed from. */
static void test_bias_removes_mean_output_error(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 8103);
    int rows = 24, cols = 64, n = 128;
    float *w = malloc((size_t)rows * cols * sizeof(float)), delta[24];
    fill_normal(w, (size_t)rows * cols, &rng, 0.05f);
    float *q = rtn2(w, rows, cols), *x = spread_inputs(n, cols, 3, &rng);
    CalibStats st;
    assert_int_equal(calib_stats_from_rows(&st, x, n, cols, 0), 0);
    bias_correction_delta(delta, w, q, rows, cols, st.mean);
    double before = 0.0, after = 0.0;
    for (int r = 0; r < rows; r++) {
        double mean_error = 0.0;
        for (int t = 0; t < n; t++) {
            double y = 0.0;
            for (int c = 0; c < cols; c++) y += (double)x[(size_t)t * cols + c] * ((double)w[(size_t)r * cols + c] - q[(size_t)r * cols + c]);
            mean_error += y / n;
        }
        before = fmax(before, fabs(mean_error));
        after = fmax(after, fabs(mean_error - delta[r]));
    }
    print_message("  bias: largest mean output error %.3e before, %.3e after\n", before, after);
    assert_true(before > 1e-3);
    assert_true(after < 1e-6 * before);
    calib_stats_free(&st);
    free(w);
    free(q);
    free(x);
}

/* ============================ the rank that matches a budget ============================ */

/* 64x2, V 65: the block matrices take in + out = 256, 128, 320, 320 per rank, the head 129: 2,177
 * per rank in all. A linear stream correction every 1 has 2 (64^2 + 64) = 8,320 parameters: k =
 * floor(8320 / 2177) = 3 (6,531), then one more rank in forward order while it fits: qkv 0 (1,533
 * left), proj 0 (1,405), fc 0 (1,085), mlp proj 0 (765), qkv 1 (509), proj 1 (381), fc 1 (61);
 * mlp proj 1 (320) and the head (129) do not fit: 8,259 spent. Without the head: 2,048 per rank,
 * k = 4 (8,192), and 128 left buys attention proj 0 one more. */
static void test_rank_match(void **state) {
    (void)state;
    GPTConfig cfg = {.vocab_size = 65, .ctx = 128, .d_model = 64, .n_layer = 2, .n_head = 4};
    assert_int_equal(stream_linear_params(&cfg, 1), 8320);
    assert_int_equal(stream_linear_params(&cfg, 2), 4160);
    unsigned char all[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, no_head[9] = {1, 1, 1, 1, 1, 1, 1, 1, 0};
    int ranks[9], want[9] = {4, 4, 4, 4, 4, 4, 4, 3, 3}, want_no_head[9] = {4, 5, 4, 4, 4, 4, 4, 4, 0};
    assert_int_equal(lowrank_match_ranks(&cfg, all, 8320, ranks), 8259);
    assert_memory_equal(ranks, want, sizeof want);
    assert_int_equal(lowrank_match_ranks(&cfg, no_head, 8320, ranks), 8320);
    assert_memory_equal(ranks, want_no_head, sizeof want_no_head);
    /* through the options: scope, every and a fixed rank */
    CorrectOptions o;
    correct_options_default(&o);
    o.method = METHOD_LOWRANK;
    CorrectionLayout lay;
    int sizes[9];
    assert_int_equal(correction_layout_for(&o, &cfg, &lay, sizes), 0);
    assert_memory_equal(sizes, want, sizeof want);
    assert_int_equal(correction_layout_params(&cfg, &lay), 8259);
    o.rank = 64;
    assert_int_equal(correction_layout_for(&o, &cfg, &lay, sizes), 0);
    o.rank = 65; /* the head is 65 x 64, attn.c_proj 64 x 64 */
    assert_int_equal(correction_layout_for(&o, &cfg, &lay, sizes), -1);
    assert_non_null(strstr(qc_last_error(), "rank 65 exceeds min(in, out) = 64 of transformer.h.0.attn.c_attn"));
    /* a budget so large every matrix is capped at min(in, out) */
    GPTConfig tiny = {.vocab_size = 5, .ctx = 8, .d_model = 8, .n_layer = 1, .n_head = 2};
    unsigned char five[5] = {1, 1, 1, 1, 1};
    int capped[5], want_capped[5] = {8, 8, 8, 8, 5};
    lowrank_match_ranks(&tiny, five, 1000000, capped);
    assert_memory_equal(capped, want_capped, sizeof want_capped);
    /* bias: one site per quantized matrix, nothing stored */
    o.method = METHOD_BIAS;
    o.scope = SCOPE_OF(ROLE_LINEAR);
    assert_int_equal(correction_layout_for(&o, &cfg, &lay, sizes), 0);
    int want_bias[9] = {1, 1, 1, 1, 1, 1, 1, 1, 0};
    assert_memory_equal(sizes, want_bias, sizeof want_bias);
    assert_int_equal(correction_layout_params(&cfg, &lay), 0);
    CorrectionTensor names[16];
    assert_int_equal(correction_layout_tensors(&cfg, &lay, names, 16), 0);
}

/* ============================ gradients ============================ */

enum { BATCH = 2, SEQ = 8, ROWS = BATCH * SEQ };

/* Finite differences of the ce (and kl) objective in the per-matrix corrections' parameters, as
 * test_correct checks the stream kinds: Richardson over steps h and h/2 cancels the O(h^2) error,
 * float rounding sets the floor. */
#define FD_STEP 3e-2
#define FD_ATOL 5e-5
#define FD_RTOL 2e-3

typedef struct {
    GPT *q;
    Corrections *c;
    Objective objective;
    const int32_t *inputs, *targets;
    const float *target_logits;
} GradProblem;

static double objective_value(GradProblem *p, int analytic) {
    if (analytic) corrections_zero_grad(p->c);
    assert_int_equal(gpt_forward(p->q, p->inputs, BATCH, SEQ, &p->c->hook), 0);
    double value;
    if (p->objective == OBJECTIVE_CE) value = gpt_loss(p->q, p->targets);
    else value = kl_forward_backward(analytic ? p->q->dlogits : NULL, p->q->logits, p->target_logits, ROWS, p->q->config.vocab_size, 1.0f / ROWS);
    if (analytic) gpt_backward(p->q, &p->c->hook, 1, 0, 0);
    return value;
}

static double central_difference(GradProblem *p, size_t i, double h) {
    float *x = &p->c->params[i], saved = *x, up = saved + (float)h, down = saved - (float)h;
    *x = up;
    double f_up = objective_value(p, 0);
    *x = down;
    double f_down = objective_value(p, 0);
    *x = saved;
    return (f_up - f_down) / ((double)up - (double)down);
}

/* Every parameter of every site of a per-matrix kind on a 2-block model (rank 2 for lowrank, with
 * both factors random so both carry a gradient, and sites on the head and every block matrix). */
static void check_gradients(const char *what, CorrectionKindId kind, Objective objective, uint64_t seed) {
    GPT f, q;
    small_gpt(&f, 2, SEQ, BATCH, seed);
    assert_int_equal(gpt_clone(&q, &f, BATCH), 0);
    QuantScheme s;
    quant_scheme_default(&s, 3);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    assert_int_equal(gpt_enable_backward(&q), 0);
    Rng rng;
    rng_seed(&rng, seed + 1);
    int32_t inputs[ROWS], targets[ROWS];
    random_tokens(inputs, ROWS, q.config.vocab_size, &rng);
    random_tokens(targets, ROWS, q.config.vocab_size, &rng);
    int sizes[9];
    for (int i = 0; i < 9; i++) sizes[i] = kind == KIND_BIAS ? 1 : 2;
    CorrectionLayout lay = {.kind = kind, .linear_sizes = sizes};
    Corrections c;
    assert_int_equal(corrections_init(&c, &q.config, &lay, ROWS, seed + 2), 0);
    fill_normal(c.params, c.num_params, &rng, 0.2f);
    gpt_forward(&f, inputs, BATCH, SEQ, NULL);
    float *target_logits = copy_floats(f.logits, (size_t)ROWS * f.config.vocab_size);
    GradProblem p = {&q, &c, objective, inputs, targets, target_logits};
    float *q_params = copy_floats(q.params, q.num_params);
    objective_value(&p, 1);
    float *grads = copy_floats(c.grads, c.num_params);
    for (int j = 0; j < c.n_sites; j++) {
        CorrectionSite *site = &c.sites[j];
        size_t first = (size_t)(site->param[0] - c.params), count = 0;
        SiteTensor t[SITE_MAX_TENSORS];
        int nt = c.ops->tensors(site->in, site->out, site->size, t);
        for (int k = 0; k < nt; k++) count += (size_t)t[k].rows * (t[k].cols ? (size_t)t[k].cols : 1);
        double err2 = 0.0, ref2 = 0.0;
        for (size_t i = first; i < first + count; i++) {
            double fd = (4.0 * central_difference(&p, i, FD_STEP / 2) - central_difference(&p, i, FD_STEP)) / 3.0;
            double err = fabs(grads[i] - fd), bound = FD_ATOL + FD_RTOL * fabs(fd);
            err2 += err * err;
            ref2 += fd * fd;
            if (!(err <= bound))
                fail_msg("%s: site on %s, parameter %zu: backward %.7g, finite difference %.7g", what,
                         gpt_linear_shape(&q.config, site->where).name, i - first, grads[i], fd);
        }
        if (!(sqrt(ref2) > 1e-4)) fail_msg("%s: site %d: reference gradient norm %.3g is too small to test", what, j, sqrt(ref2));
    }
    assert_memory_equal(q.params, q_params, q.num_params * sizeof(float));
    free(q_params);
    free(grads);
    free(target_logits);
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
}

static void test_gradients(void **state) {
    (void)state;
    check_gradients("lowrank ce", KIND_LOWRANK, OBJECTIVE_CE, 8201);
    check_gradients("lowrank kl", KIND_LOWRANK, OBJECTIVE_KL, 8202);
    check_gradients("bias ce", KIND_BIAS, OBJECTIVE_CE, 8203);
}

/* ============================ on a trained model ============================ */

typedef struct {
    GPT f, q;
    Corpus corpus;
    double lf, lq;
} Trained;

static double val_loss(GPT *m, const Corpus *c, const ModelHook *hook) {
    size_t n = 8193 < c->n_val ? 8193 : c->n_val;
    return evaluate_loss(m, c->ids + c->n_train, n, hook);
}

static void trained_pair(Trained *t, int bits) {
    assert_int_equal(corpus_load(&t->corpus, learnable_corpus_path(), NULL), 0);
    GPTConfig cfg = {.vocab_size = t->corpus.vocab.size, .ctx = 32, .d_model = 32, .n_layer = 2, .n_head = 4};
    assert_int_equal(gpt_init(&t->f, &cfg, 16), 0);
    gpt_init_weights(&t->f, 8301);
    train_briefly(&t->f, &t->corpus, 150, 8302);
    assert_int_equal(gpt_clone(&t->q, &t->f, 16), 0);
    QuantScheme s;
    quant_scheme_default(&s, bits);
    s.scale_dtype = SCALE_F16;
    assert_int_equal(quantize_model(&t->q, &s, NULL, NULL), 0);
    t->lf = val_loss(&t->f, &t->corpus, NULL);
    t->lq = val_loss(&t->q, &t->corpus, NULL);
}

static void trained_free(Trained *t) {
    gpt_free(&t->q);
    gpt_free(&t->f);
    corpus_free(&t->corpus);
}

static void quick_options(CorrectOptions *o, CorrectMethod method) {
    correct_options_default(o);
    o->method = method;
    o->steps = 0;
    o->batch = 16;
    o->calib_tokens = 8192;
    o->lr = 1e-2f;
    o->quiet = 1;
}

/* Captures what one linear layer reads, with another hook (the corrections) still running. */
typedef struct {
    int target, in;
    float *x;
    long n, max;
    const ModelHook *inner;
} Capture;

static void capture_input(void *ctx, int linear, float *out, const float *in, int rows) {
    Capture *c = ctx;
    if (c->inner) c->inner->after_linear(c->inner->ctx, linear, out, in, rows);
    if (linear != c->target || c->n + rows > c->max) return;
    memcpy(c->x + (size_t)c->n * c->in, in, (size_t)rows * c->in * sizeof(float));
    c->n += rows;
}

/* The mean output error of linear layer i, float weights vs quantized + delta (delta NULL: none),
 * over the rows x it read in the quantized model: max over outputs of |mean(x (W - Q)^T) - delta|. */
static double mean_output_error(GPT *f, GPT *q, int linear, const float *x, long n, const float *delta) {
    Linear lf = gpt_linear(f, linear), lq = gpt_linear(q, linear);
    double worst = 0.0;
    for (int r = 0; r < lf.out; r++) {
        double mean = 0.0;
        for (long t = 0; t < n; t++) {
            double y = 0.0;
            for (int c = 0; c < lf.in; c++)
                y += (double)x[(size_t)t * lf.in + c] * ((double)lf.weight[(size_t)r * lf.in + c] - lq.weight[(size_t)r * lf.in + c]);
            mean += y;
        }
        mean /= (double)n;
        worst = fmax(worst, fabs(mean - (delta ? delta[r] : 0.0)));
    }
    return worst;
}

/* Bias correction on a trained model, 2 bits: the first matrix reads exact inputs (embeddings are
 * not quantized), and over the calibration windows its mean output error vanishes; so does every
 * later matrix's over the inputs it reads in the corrected model (the earlier deltas in place);
 * nothing is stored; the checkpoint folds the deltas into the biases and its loss is the
 * corrected loss. */
static void test_bias_on_trained_model(void **state) {
    (void)state;
    Trained t;
    trained_pair(&t, 2);
    CorrectOptions o;
    quick_options(&o, METHOD_BIAS);
    Corrections c;
    CorrectionResult r;
    assert_int_equal(run_correction(&t.q, &t.f, &t.corpus, &o, NULL, NULL, &c, &r), 0);
    assert_int_equal(c.n_sites, gpt_linear_count(&t.q.config));
    assert_int_equal(corrections_stored_params(&c), 0);
    /* the first matrix's inputs over the same calibration windows */
    int n_windows = 0, T = t.q.config.ctx;
    int32_t *tokens = calibration_tokens(&t.corpus, o.calib_tokens, T, o.seed, &n_windows);
    Linear l0 = gpt_linear(&t.q, 0);
    Capture cap = {0, l0.in, malloc((size_t)n_windows * T * 4 * l0.in * sizeof(float)), 0, (long)n_windows * T, NULL};
    ModelHook hook = {.ctx = &cap, .after_linear = capture_input, .max_rows = c.hook.max_rows};
    for (int w0 = 0; w0 < n_windows; w0 += 16)
        assert_int_equal(gpt_forward(&t.q, tokens + (size_t)w0 * T, n_windows - w0 < 16 ? n_windows - w0 : 16, T, &hook), 0);
    double before = mean_output_error(&t.f, &t.q, 0, cap.x, cap.n, NULL);
    double after = mean_output_error(&t.f, &t.q, 0, cap.x, cap.n, c.sites[0].param[0]);
    print_message("  bias, trained model: layer 0 mean output error %.3e -> %.3e; loss float %.4f, 2-bit %.4f, bias-corrected %.4f\n",
                  before, after, t.lf, t.lq, r.eval.loss);
    assert_true(before > 1e-3);
    assert_true(after < 1e-5 * before);
    cap.inner = &c.hook;
    for (int i = 1; i < gpt_linear_count(&t.q.config); i++) {
        cap.target = i;
        cap.in = gpt_linear(&t.q, i).in;
        cap.n = 0;
        for (int w0 = 0; w0 < n_windows; w0 += 16)
            assert_int_equal(gpt_forward(&t.q, tokens + (size_t)w0 * T, n_windows - w0 < 16 ? n_windows - w0 : 16, T, &hook), 0);
        double e = mean_output_error(&t.f, &t.q, i, cap.x, cap.n, c.sites[i].param[0]);
        double scale = mean_output_error(&t.f, &t.q, i, cap.x, cap.n, NULL);
        if (!(e < 1e-4 * scale)) fail_msg("layer %d: mean output error %.3g after the correction (%.3g without)", i, e, scale);
    }
    /* the checkpoint: no correction tensor, the model's tensors only, the deltas in the biases */
    char path[512];
    snprintf(path, sizeof path, "%s/bias.safetensors", test_tmpdir());
    Vocab vocab = t.corpus.vocab;
    QuantScheme s;
    quant_scheme_default(&s, 2);
    assert_int_equal(save_model(path, &t.q, &vocab, &s, &c, &(CorrectionProvenance){"bias", "bias"}), 0);
    SafeTensors st;
    assert_int_equal(st_read(&st, path), 0);
    assert_int_equal(st.n_tensors, t.q.n_specs);
    assert_string_equal(st_meta(&st, "correction_folded"), "bias");
    st_free(&st);
    LoadedModel lm;
    assert_int_equal(load_checkpoint(&lm, path, 16), 0);
    assert_false(lm.corrected);
    Linear back = gpt_linear(&lm.model, 0);
    for (int i = 0; i < l0.out; i++) assert_true(back.bias[i] == l0.bias[i] + c.sites[0].param[0][i]);
    double reloaded = val_loss(&lm.model, &t.corpus, NULL);
    /* y = x W^T + (b + delta) against (x W^T + b) + delta: the same to float rounding */
    assert_close(reloaded, val_loss(&t.q, &t.corpus, &c.hook), 1e-5);
    loaded_model_free(&lm);
    free(cap.x);
    free(tokens);
    corrections_free(&c);
    evaluation_free(&r.eval);
    trained_free(&t);
}

/* lowrank on a trained model, 2 bits: the SVD start lowers the loss (rank matched to a linear
 * correction every block), the activation-aware one too; fine-tuning from it changes the factors
 * and leaves the base alone; the checkpoint carries PEFT's names and shapes and reloads to the
 * same loss bit for bit. */
static void test_lowrank_on_trained_model(void **state) {
    (void)state;
    Trained t;
    trained_pair(&t, 2);
    CorrectOptions o;
    quick_options(&o, METHOD_LOWRANK);
    Corrections c, ca, ct;
    CorrectionResult r, ra, rt;
    float *base = copy_floats(t.q.params, t.q.num_params);
    assert_int_equal(run_correction(&t.q, &t.f, &t.corpus, &o, NULL, NULL, &c, &r), 0);
    o.lowrank_act_scale = 1;
    assert_int_equal(run_correction(&t.q, &t.f, &t.corpus, &o, NULL, NULL, &ca, &ra), 0);
    o.lowrank_act_scale = 0;
    o.steps = 60;
    assert_int_equal(run_correction(&t.q, &t.f, &t.corpus, &o, NULL, NULL, &ct, &rt), 0);
    assert_memory_equal(t.q.params, base, t.q.num_params * sizeof(float));
    print_message("  lowrank, trained model: %zu parameters (linear every 1: %ld); loss float %.4f, 2-bit %.4f, svd %.4f, svd act %.4f, "
                  "svd + 60 steps ce %.4f\n",
                  corrections_stored_params(&c), stream_linear_params(&t.q.config, 1), t.lf, t.lq, r.eval.loss, ra.eval.loss,
                  rt.eval.loss);
    assert_true(corrections_stored_params(&c) <= (size_t)stream_linear_params(&t.q.config, 1));
    assert_true(r.eval.loss < t.lq);
    assert_true(ra.eval.loss < t.lq);
    assert_true(isnan(r.objective) && isfinite(rt.objective));
    assert_true(memcmp(c.params, ct.params, c.num_params * sizeof(float)) != 0);
    /* the checkpoint */
    char path[512];
    snprintf(path, sizeof path, "%s/lowrank.safetensors", test_tmpdir());
    QuantScheme s;
    quant_scheme_default(&s, 2);
    assert_int_equal(save_model(path, &t.q, &t.corpus.vocab, &s, &c, &(CorrectionProvenance){"lowrank", "lowrank"}), 0);
    SafeTensors st;
    assert_int_equal(st_read(&st, path), 0);
    const StTensor *a = st_find(&st, "transformer.h.1.mlp.c_proj.lora_A.weight"), *b = st_find(&st, "transformer.h.1.mlp.c_proj.lora_B.weight");
    assert_non_null(a);
    assert_non_null(b);
    int k = c.sites[c.site_of[7]].size;
    assert_true(a->shape[0] == k && a->shape[1] == 4 * 32 && b->shape[0] == 32 && b->shape[1] == k);
    assert_non_null(st_find(&st, "lm_head.lora_A.weight"));
    assert_int_equal(st.n_tensors, t.q.n_specs + 2 * c.n_sites);
    st_free(&st);
    LoadedModel lm;
    assert_int_equal(load_checkpoint(&lm, path, 16), 0);
    assert_true(lm.corrected);
    assert_memory_equal(lm.corrections.params, c.params, c.num_params * sizeof(float));
    assert_true(evaluate_loss(&lm.model, t.corpus.ids + t.corpus.n_train, t.corpus.n_val, loaded_hook(&lm)) == r.eval.loss);
    loaded_model_free(&lm);
    free(base);
    corrections_free(&c);
    corrections_free(&ca);
    corrections_free(&ct);
    evaluation_free(&r.eval);
    evaluation_free(&ra.eval);
    evaluation_free(&rt.eval);
    trained_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lowrank_full_rank_and_truncation),
        cmocka_unit_test(test_lowrank_activation_scale),
        cmocka_unit_test(test_bias_removes_mean_output_error),
        cmocka_unit_test(test_rank_match),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_bias_on_trained_model),
        cmocka_unit_test(test_lowrank_on_trained_model),
    };
    return cmocka_run_group_tests_name("compensate", tests, setup_one_thread, restore_threads);
}
