/* test_actcorr: corrections under activation quantization (README: Correction layers under
 * activation quantization) — what a stream correction reads (quantized: Q(x) + f(Q(x)), the
 * default, unchanged; float: Q(x + f(x))) on exact values, equal modes where a block has no site,
 * the prefix cache in float mode; a narrow-stored correction's own products at the activation
 * bits on hand-made values (per token symmetric and asymmetric, per window), and their
 * straight-through backward against a naive reference. PyTorch parity: test_parity_actcorr.c. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/correct.h"
#include "correct/experiment.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "nn/actquant.h"
#include "nn/data.h"
#include "nn/evaluate.h"
#include "quant/fakequant.h"
#include "quant/quant.h"

static void small_corpus(Corpus *c) {
    const char *path = write_test_corpus("actcorr.txt", 6000, "abcdefgh ,.\n", 401);
    assert_int_equal(corpus_load(c, path, NULL), 0);
}

static ActScheme scheme(int bits, unsigned points, int asym, ActGranularity g, int reads_float) {
    ActScheme a;
    act_scheme_default(&a);
    a.bits = bits;
    a.points = points;
    a.asymmetric = asym;
    a.granularity = g;
    a.correction_float = reads_float;
    assert_int_equal(act_scheme_check(&a), 0);
    return a;
}

/* Equal values (a correction's x + f(x) turns a -0 into +0, so the bits may differ there alone). */
static void assert_same_values(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) fail_msg("value %zu: %.9g and %.9g", i, a[i], b[i]);
}

static void windows_of(const Corpus *c, int B, int T, int32_t *in, int32_t *target) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            in[b * T + t] = c->ids[(size_t)b * T + t];
            if (target) target[b * T + t] = c->ids[(size_t)b * T + t + 1];
        }
}

/* ---- the option's text forms and checks ---- */
static void test_reads_option(void **state) {
    (void)state;
    int v = -1;
    assert_int_equal(act_parse_correction_reads("float", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(act_parse_correction_reads("quantized", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(act_parse_correction_reads("int", &v), -1);
    assert_non_null(strstr(qc_last_error(), "'int'"));
    ActScheme a = scheme(4, ACT_POINT_INPUTS | ACT_POINT_STREAM, 0, ACT_TOKEN, 1);
    char d[128];
    act_scheme_describe(&a, d, sizeof d);
    assert_string_equal(d, "int4:inputs,stream:reads-float");
    a.correction_float = 0;
    act_scheme_describe(&a, d, sizeof d);
    assert_string_equal(d, "int4:inputs,stream");
    /* without the stream point there is nothing to read in float: refused */
    a.points = ACT_POINT_INPUTS;
    a.correction_float = 1;
    assert_int_equal(act_scheme_check(&a), -1);
    assert_non_null(strstr(qc_last_error(), "stream point"));
    /* linear-kind methods and the ones that add nothing are refused */
    QuantScheme s;
    quant_scheme_default(&s, 4);
    s.act = scheme(4, ACT_POINT_INPUTS | ACT_POINT_STREAM, 0, ACT_TOKEN, 1);
    CorrectOptions o;
    correct_options_default(&o);
    assert_int_equal(correct_method_parse("train", &o), 0);
    assert_int_equal(correct_options_check(&o, &s), 0);
    const char *refused[] = {"lowrank", "bias", "normtweak", "none", "lwc"};
    for (int i = 0; i < 5; i++) {
        correct_options_default(&o);
        assert_int_equal(correct_method_parse(refused[i], &o), 0);
        o.steps = 0;
        assert_int_equal(correct_options_check(&o, &s), -1);
        assert_non_null(strstr(qc_last_error(), "--correction-reads float"));
    }
    correct_options_default(&o); /* a combination: the correction after the tuned base reads the stream */
    assert_int_equal(correct_method_parse("lwc+train", &o), 0);
    assert_int_equal(correct_options_check(&o, &s), 0);
}

/* ---- Part A: what the correction after block 0 reads, on exact values ----
 * A linear correction with W = 0.5 I, b = 0 after block 0 of a 2-block model whose weights are not
 * quantized (block 0's float output x is then the float model's): float mode passes Q(x + 0.5x)
 * on (x itself stays float in resid_out), quantized mode Q(x) + 0.5 Q(x). */
static void test_stream_reads_exact(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 2, 2, 901);
    int T = f.config.ctx, C = f.config.d_model, B = 2, N = B * T;
    int32_t in[2 * 64];
    windows_of(&corpus, B, T, in, NULL);
    assert_int_equal(gpt_forward(&f, in, B, T, NULL), 0);
    float *x = malloc((size_t)N * C * sizeof(float)), *want = malloc((size_t)N * C * sizeof(float));
    float *qx = malloc((size_t)N * C * sizeof(float));
    memcpy(x, f.layers[0].resid_out, (size_t)N * C * sizeof(float));
    for (int reads_float = 0; reads_float < 2; reads_float++) {
        for (int asym = 0; asym < 2; asym++) {
            assert_int_equal(gpt_clone(&q, &f, 2), 0);
            ActScheme a = scheme(3, ACT_POINT_STREAM, asym, ACT_TOKEN, reads_float);
            assert_int_equal(gpt_set_act_scheme(&q, &a), 0);
            Corrections c;
            assert_int_equal(stream_corrections(&c, &q.config, 1, 0, N, 902), 0);
            corrections_set_act(&c, &a);
            CorrectionSite *s = &c.sites[0];
            assert_int_equal(s->where, 0);
            for (int i = 0; i < C; i++) s->param[0][(size_t)i * C + i] = 0.5f;
            assert_int_equal(gpt_forward(&q, in, B, T, &c.hook), 0);
            if (reads_float) {
                /* x + 0.5x summed exactly as the site does (zeros add nothing), then quantized */
                for (long i = 0; i < (long)N * C; i++) want[i] = x[i] + 0.5f * x[i];
                act_quantize_rows(want, C, want, C, N, C, 3, asym);
                assert_memory_equal(q.layers[0].resid_out, x, (size_t)N * C * sizeof(float)); /* what it read: float */
            } else {
                act_quantize_rows(qx, C, x, C, N, C, 3, asym);
                for (long i = 0; i < (long)N * C; i++) want[i] = qx[i] + 0.5f * qx[i];
                assert_memory_equal(q.layers[0].resid_out, qx, (size_t)N * C * sizeof(float));
            }
            assert_same_values(q.block_input[1], want, (size_t)N * C);
            corrections_free(&c);
            gpt_free(&q);
        }
    }
    /* the two modes differ on these values (the test can tell them apart) */
    act_quantize_rows(qx, C, x, C, N, C, 3, 0);
    for (long i = 0; i < (long)N * C; i++) want[i] = x[i] + 0.5f * x[i];
    act_quantize_rows(want, C, want, C, N, C, 3, 0);
    int differ = 0;
    for (long i = 0; i < (long)N * C; i++) differ += want[i] != qx[i] + 0.5f * qx[i];
    assert_true(differ > N);
    free(x);
    free(want);
    free(qx);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* ---- Part A: where a block has no site, float mode is quantized mode to the bit ---- */
static void test_float_mode_without_site(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f;
    corpus_model(&f, &corpus, 3, 2, 911);
    QuantScheme qs;
    quant_scheme_default(&qs, 3);
    assert_int_equal(quantize_model(&f, &qs, NULL, NULL), 0);
    int T = f.config.ctx, C = f.config.d_model, B = 2, N = B * T;
    size_t nl = (size_t)N * f.config.vocab_size;
    int32_t in[2 * 64], target[2 * 64];
    windows_of(&corpus, B, T, in, target);
    /* 0: no hook; 1: no correction (none); 2: fresh linear corrections after every block (zero);
     * 3: MLP corrections after blocks 1 and 2 (every 2), trained-looking weights: block 0 has none */
    for (int variant = 0; variant < 4; variant++) {
        float *logits[2], *stream1[2], *stream2[2];
        double loss[2];
        for (int m = 0; m < 2; m++) {
            GPT q;
            assert_int_equal(gpt_clone(&q, &f, 2), 0);
            assert_int_equal(gpt_enable_backward(&q), 0);
            ActScheme a = scheme(4, ACT_POINT_INPUTS | ACT_POINT_STREAM, 0, ACT_TOKEN, m);
            assert_int_equal(gpt_set_act_scheme(&q, &a), 0);
            Corrections c;
            CorrectionLayout none = {.kind = KIND_NONE, .every = 1};
            if (variant == 1) assert_int_equal(corrections_init(&c, &q.config, &none, N, 1), 0);
            else assert_int_equal(stream_corrections(&c, &q.config, variant == 3 ? 2 : 1, variant == 3 ? 8 : 0, N, 912), 0);
            if (variant == 3) {
                Rng rng;
                rng_seed(&rng, 913);
                for (size_t i = 0; i < c.num_params; i++) c.params[i] = 0.1f * rng_normal(&rng);
                assert_int_equal(c.sites[0].where, 1);
            }
            assert_int_equal(gpt_forward(&q, in, B, T, variant == 0 ? NULL : &c.hook), 0);
            loss[m] = gpt_loss(&q, target);
            logits[m] = malloc(nl * sizeof(float));
            stream1[m] = malloc((size_t)N * C * sizeof(float));
            stream2[m] = malloc((size_t)N * C * sizeof(float));
            memcpy(logits[m], q.logits, nl * sizeof(float));
            memcpy(stream1[m], q.block_input[1], (size_t)N * C * sizeof(float));
            memcpy(stream2[m], q.block_input[2], (size_t)N * C * sizeof(float));
            corrections_free(&c);
            gpt_free(&q);
        }
        /* block 0 never has a site here: the stream entering block 1 is the same bits */
        if (variant == 2) assert_same_values(stream1[0], stream1[1], (size_t)N * C); /* a zero site: the same values */
        else assert_memory_equal(stream1[0], stream1[1], (size_t)N * C * sizeof(float));
        if (variant < 3) {
            assert_memory_equal(logits[0], logits[1], nl * sizeof(float));
            assert_true(loss[0] == loss[1]);
        } else { /* a site after block 1: the modes part there */
            assert_true(memcmp(stream2[0], stream2[1], (size_t)N * C * sizeof(float)) != 0);
        }
        for (int m = 0; m < 2; m++) {
            free(logits[m]);
            free(stream1[m]);
            free(stream2[m]);
        }
    }
    gpt_free(&f);
    corpus_free(&corpus);
}

/* ---- quantized (the default) is what it was before the option existed ----
 * (1) structurally: the blocks one at a time with no hook (each quantizes its output in place),
 * the hook called by hand on the stored stream, then the head: the same logits as the forward;
 * (2) the loss and correction-gradient norm recorded by the build before this change (a98b992, on
 * the avx512 kernel path of the AMD EPYC Zen 4 it was recorded on). */
static void mode_values(int narrow, int reads_float, double *loss, double *gnorm, float **logits) {
    Corpus corpus;
    small_corpus(&corpus);
    GPT q;
    corpus_model(&q, &corpus, 2, 4, 4711);
    int T = q.config.ctx, B = 4, N = B * T;
    assert_int_equal(gpt_enable_backward(&q), 0);
    ActScheme a;
    act_scheme_default(&a);
    a.bits = 4;
    a.points = narrow ? ACT_POINT_STREAM : ACT_POINT_INPUTS | ACT_POINT_STREAM; /* narrow: no inputs point, so no own quantization */
    a.correction_float = reads_float;
    assert_int_equal(gpt_set_act_scheme(&q, &a), 0);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, narrow ? 0 : 8, N, 4712), 0);
    Rng rng;
    rng_seed(&rng, 4713);
    for (size_t i = 0; i < c.num_params; i++) c.params[i] = 0.05f * rng_normal(&rng);
    corrections_set_act(&c, &a);
    if (narrow) corrections_store_narrow(&c, 8);
    int32_t *in = malloc((size_t)N * sizeof(int32_t)), *target = malloc((size_t)N * sizeof(int32_t));
    windows_of(&corpus, B, T, in, target);
    assert_int_equal(gpt_forward(&q, in, B, T, &c.hook), 0);
    *loss = gpt_loss(&q, target);
    corrections_zero_grad(&c);
    gpt_backward(&q, &c.hook, 1, 0, 0);
    *gnorm = 0;
    for (size_t i = 0; i < c.num_params; i++) *gnorm += (double)c.grads[i] * c.grads[i];
    size_t nl = (size_t)N * q.config.vocab_size;
    *logits = malloc(nl * sizeof(float));
    memcpy(*logits, q.logits, nl * sizeof(float));
    /* (1): by hand (the quantized mode: each block's quantized output, then its hook) */
    if (!reads_float) {
        float *x = q.encoded;
        GlobalParams g = global_view(&q, q.params);
        embedding_forward(x, in, g.wte, g.wpe, B, T, q.config.d_model);
        for (int l = 0; l < q.config.n_layer; l++) {
            assert_int_equal(gpt_forward_range(&q, x, l, l + 1, B, T, NULL), 0);
            x = c.hook.after_block(c.hook.ctx, l, q.layers[l].resid_out, N);
        }
        assert_int_equal(gpt_forward_head(&q, x, B, T, NULL), 0);
        assert_memory_equal(q.logits, *logits, nl * sizeof(float));
    }
    free(in);
    free(target);
    corrections_free(&c);
    gpt_free(&q);
    corpus_free(&corpus);
}

static void test_quantized_mode_unchanged(void **state) {
    (void)state;
    /* printed by this function's body built on a98b992 (no corrections_set_act there), avx512
     * kernels, the default build. Other kernel paths and builds (sanitizers) round otherwise, by
     * at most 2e-7 relative (measured: avx2, generic, -fsanitize), so the comparison allows 1e-5;
     * reading the float stream instead moves the loss by far more than that (checked below), so
     * the tolerance still tells the modes apart. */
    const double want_loss[2] = {0x1.0cc62cf6bdf96p+2, 0x1.fe9e3d2a2544ep+1};
    const double want_gnorm[2] = {0x1.643edac994a5p+0, 0x1.7b8ea9862a9e7p+2};
    const double tol = 1e-5;
    for (int narrow = 0; narrow < 2; narrow++) {
        double loss, gnorm;
        float *logits;
        mode_values(narrow, 0, &loss, &gnorm, &logits);
        free(logits);
        printf("narrow %d: loss %a gnorm %a (kernels %s)\n", narrow, loss, gnorm, kernels_name());
        if (fabs(loss - want_loss[narrow]) > tol * want_loss[narrow] || fabs(gnorm - want_gnorm[narrow]) > tol * want_gnorm[narrow])
            fail_msg("narrow %d: loss %a gradient norm %a, before the option %a %a", narrow, loss, gnorm, want_loss[narrow], want_gnorm[narrow]);
        mode_values(narrow, 1, &loss, &gnorm, &logits);
        free(logits);
        if (!(fabs(loss - want_loss[narrow]) > 100 * tol * want_loss[narrow]))
            fail_msg("narrow %d: the float-reading loss %a is within %g of the quantized one's: the tolerance cannot tell the modes apart",
                     narrow, loss, 100 * tol);
    }
}

/* ---- Part A: the prefix cache in float mode: training and evaluation as from the tokens ---- */
static void test_float_mode_cache(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 3, 4, 921);
    assert_int_equal(gpt_clone(&q, &f, 4), 0);
    QuantScheme s;
    quant_scheme_default(&s, 3);
    s.act = scheme(4, ACT_POINT_INPUTS | ACT_POINT_STREAM, 0, ACT_TOKEN, 1);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    assert_true(act_correction_float(&q));
    int T = q.config.ctx;
    const int32_t *val = corpus.ids + corpus.n_train;
    int n_val = (int)((corpus.n_val - 1) / (size_t)T);
    Corrections plain, cached;
    assert_int_equal(stream_corrections(&plain, &q.config, 2, 8, 4 * T, 922), 0);
    assert_int_equal(stream_corrections(&cached, &q.config, 2, 8, 4 * T, 922), 0);
    int first = plain.sites[0].where;
    assert_int_equal(first, 1);
    CorrectOptions o;
    correct_options_default(&o);
    o.steps = 6;
    o.batch = 4;
    o.calib_tokens = 1024;
    o.quiet = 1;
    o.lr = 1e-2f;
    int64_t *starts;
    StreamCache calib, vc;
    double rel = train_from_tokens_and_cache(&q, &f, &plain, &cached, &corpus, &o, first, &calib, &starts);
    if (!(rel <= 1e-4)) fail_msg("float mode: training from the prefix cache differs (relative %g)", rel);
    assert_int_equal(stream_cache_build(&vc, &q, val, NULL, n_val, first), 0);
    Evaluation from_tokens, from_cache;
    assert_int_equal(evaluate_model(&q, &plain.hook, val, corpus.n_val, NULL, first, NULL, &from_tokens), 0);
    assert_int_equal(evaluate_model(&q, &plain.hook, val, corpus.n_val, &vc, first, NULL, &from_cache), 0);
    assert_true(from_cache.loss == from_tokens.loss);
    assert_memory_equal(from_cache.window_loss, from_tokens.window_loss, (size_t)n_val * sizeof(double));
    evaluation_free(&from_tokens);
    evaluation_free(&from_cache);
    /* without a hook (nothing reads the stream before it is quantized): the cache's float stream
     * quantized into the model's buffer, the cache itself untouched, the logits of the plain forward */
    {
        int B = 4, *pick = malloc((size_t)B * sizeof(int));
        int32_t *targets = malloc((size_t)B * T * sizeof(int32_t)), *in = malloc((size_t)B * T * sizeof(int32_t));
        for (int b = 0; b < B; b++) pick[b] = b;
        stream_cache_gather(&vc, pick, B, targets);
        for (int b = 0; b < B; b++) memcpy(in + (size_t)b * T, val + (size_t)b * T, (size_t)T * sizeof(int32_t));
        size_t ns = (size_t)B * T * q.config.d_model, nl = (size_t)B * T * q.config.vocab_size;
        float *copy = malloc(ns * sizeof(float)), *logits = malloc(nl * sizeof(float));
        memcpy(copy, vc.batch, ns * sizeof(float));
        assert_int_equal(gpt_forward(&q, in, B, T, NULL), 0);
        memcpy(logits, q.logits, nl * sizeof(float));
        assert_int_equal(gpt_forward_from(&q, vc.batch, first + 1, B, T, NULL), 0);
        assert_memory_equal(vc.batch, copy, ns * sizeof(float));
        assert_memory_equal(q.logits, logits, nl * sizeof(float));
        free(pick);
        free(targets);
        free(in);
        free(copy);
        free(logits);
    }
    /* a cache built in the other mode holds the other stream: not usable */
    q.act.scheme.correction_float = 0;
    assert_false(stream_cache_usable(&vc, &q, first));
    q.act.scheme.correction_float = 1;
    assert_true(stream_cache_usable(&vc, &q, first));
    stream_cache_free(&calib);
    stream_cache_free(&vc);
    free(starts);
    corrections_free(&plain);
    corrections_free(&cached);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* ---- Part B: a narrow correction's own products on hand-made values ----
 * d = 4, a linear correction W = w I, b = 0, w = 127/128 (a row's codes are 127 times an f16 scale
 * of 2^-7: stored unchanged at 8 bits); every value below is exact in float, so y = x + w Q(x)
 * exactly, Q its input at 3 bits. */
static void expect_site(Corrections *c, const float *x, int rows, const float *qx, float w) {
    float y[16];
    memcpy(y, c->hook.after_block(c->hook.ctx, 0, (float *)x, rows), (size_t)rows * 4 * sizeof(float));
    for (int i = 0; i < rows * 4; i++)
        if (!(y[i] == x[i] + w * qx[i])) fail_msg("value %d: %.9g, expected %.9g + %.9g x %.9g", i, y[i], x[i], w, qx[i]);
}

static void test_narrow_products_exact(void **state) {
    (void)state;
    GPTConfig cfg = {.vocab_size = 4, .ctx = 2, .d_model = 4, .n_layer = 1, .n_head = 1};
    Corrections c;
    assert_int_equal(stream_corrections(&c, &cfg, 1, 0, 4, 1), 0);
    const float w = 127.0f / 128.0f;
    for (int i = 0; i < 4; i++) c.sites[0].param[0][i * 4 + i] = w;
    /* symmetric: absmax 1.5 over 3 steps, scale 0.5: codes 3, -2, 1, 1 */
    const float xs[4] = {1.5f, -1.1f, 0.3f, 0.6f}, qs[4] = {1.5f, -1.0f, 0.5f, 0.5f};
    /* asymmetric: [-0.5, 1.25] over 7 steps, scale 0.25, zero point 2: codes 7, 0, 3, 4 */
    const float xa[4] = {1.25f, -0.5f, 0.3f, 0.6f}, qa[4] = {1.25f, -0.5f, 0.25f, 0.5f};
    /* float-stored: float products */
    ActScheme a = scheme(3, ACT_POINT_INPUTS, 0, ACT_TOKEN, 0);
    corrections_set_act(&c, &a);
    assert_null(c.sites[0].quant);
    expect_site(&c, xs, 1, xs, w);
    corrections_store_narrow(&c, 8);
    for (int i = 0; i < 16; i++) assert_true(c.sites[0].param[0][i] == (i % 5 == 0 ? w : 0.0f));
    assert_non_null(c.sites[0].quant);
    expect_site(&c, xs, 1, qs, w);
    a.asymmetric = 1;
    corrections_set_act(&c, &a);
    expect_site(&c, xa, 1, qa, w);
    /* the stream point on and read as stored: the input is on the grid already, not quantized again */
    a = scheme(3, ACT_POINT_INPUTS | ACT_POINT_STREAM, 0, ACT_TOKEN, 0);
    corrections_set_act(&c, &a);
    expect_site(&c, xs, 1, xs, w);
    /* read in float: quantized by the correction */
    a.correction_float = 1;
    corrections_set_act(&c, &a);
    expect_site(&c, xs, 1, qs, w);
    /* per window (tensor; a window is ctx = 2 rows): rows 0-1 absmax 6 (scale 2), rows 2-3 absmax 1.5 (scale 0.5) */
    a = scheme(3, ACT_POINT_INPUTS, 0, ACT_TENSOR, 0);
    corrections_set_act(&c, &a);
    const float xw[16] = {2, 0, 0, 0, 0, -6, 0, 0, 0.6f, 0, 0, 0, 0, 0, 1.5f, 0};
    const float qw[16] = {2, 0, 0, 0, 0, -6, 0, 0, 0.5f, 0, 0, 0, 0, 0, 1.5f, 0};
    expect_site(&c, xw, 4, qw, w);
    /* per token the third row is its own grid (scale 0.2: 0.6 stays about 0.6, not 0.5) */
    a.granularity = ACT_TOKEN;
    corrections_set_act(&c, &a);
    float y[16];
    memcpy(y, c.hook.after_block(c.hook.ctx, 0, (float *)xw, 4), sizeof y);
    assert_true(fabsf(y[8] - (0.6f + w * 0.6f)) < 1e-6f);
    /* static: per token (a correction has no calibrated ranges) */
    a = scheme(3, ACT_POINT_INPUTS, 0, ACT_STATIC, 0);
    corrections_set_act(&c, &a);
    expect_site(&c, xs, 1, qs, w);
    /* no inputs point (the stream alone): float products */
    a = scheme(3, ACT_POINT_STREAM, 0, ACT_TOKEN, 1);
    corrections_set_act(&c, &a);
    assert_null(c.sites[0].quant);
    corrections_free(&c);
}

/* ---- Part B: the straight-through backward of every kind's quantized products, against a naive one ---- */
static double gelu_ref(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_ref(double x) {
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), t = tanh(u);
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3 * 0.044715 * x * x);
}

static int close_to(const char *what, const float *got, const double *want, size_t n) {
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(got[i] - want[i]) / scale);
    if (worst > 1e-5) printf("NOT OK %s: %g of the largest\n", what, worst);
    return worst <= 1e-5;
}

static void mlp_ste_case(int asym) {
    enum { D = 8, H = 6, R = 5 };
    GPTConfig cfg = {.vocab_size = 4, .ctx = R, .d_model = D, .n_layer = 1, .n_head = 1};
    Corrections c;
    assert_int_equal(stream_corrections(&c, &cfg, 1, H, R, 7), 0);
    Rng rng;
    rng_seed(&rng, 31 + asym);
    for (size_t i = 0; i < c.num_params; i++) c.params[i] = 0.4f * rng_normal(&rng);
    ActScheme a = scheme(4, ACT_POINT_INPUTS, asym, ACT_TOKEN, 0);
    corrections_set_act(&c, &a);
    corrections_store_narrow(&c, 6);
    float x[R * D], dy[R * D], dx[R * D], y[R * D], xq[R * D], hq[R * H], hid[R * H];
    for (int i = 0; i < R * D; i++) x[i] = rng_normal(&rng), dy[i] = rng_normal(&rng);
    CorrectionSite *s = &c.sites[0];
    memcpy(y, c.hook.after_block(c.hook.ctx, 0, x, R), sizeof y);
    /* naive: Q(x), pre, gelu, Q(hidden), y */
    act_quantize_rows(xq, D, x, D, R, D, 4, asym);
    double pre[R * H], yr[R * D];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < H; j++) {
            double acc = s->param[1][j];
            for (int k = 0; k < D; k++) acc += (double)xq[r * D + k] * s->param[0][j * D + k];
            pre[r * H + j] = acc;
            hid[r * H + j] = (float)gelu_ref(acc);
        }
    act_quantize_rows(hq, H, hid, H, R, H, 4, asym);
    for (int r = 0; r < R; r++)
        for (int i = 0; i < D; i++) {
            double acc = x[r * D + i] + s->param[3][i];
            for (int j = 0; j < H; j++) acc += (double)hq[r * H + j] * s->param[2][i * H + j];
            yr[r * D + i] = acc;
        }
    assert_true(close_to("mlp forward", y, yr, R * D));
    /* naive straight-through backward: the weight gradients from what each product read */
    double gW1[H * D] = {0}, gb1[H] = {0}, gW2[D * H] = {0}, gb2[D] = {0}, dxr[R * D];
    for (int r = 0; r < R; r++) {
        double dh[H];
        for (int j = 0; j < H; j++) {
            double acc = 0;
            for (int i = 0; i < D; i++) acc += (double)dy[r * D + i] * s->param[2][i * H + j];
            dh[j] = acc * gelu_grad_ref(pre[r * H + j]);
        }
        for (int i = 0; i < D; i++) {
            gb2[i] += dy[r * D + i];
            for (int j = 0; j < H; j++) gW2[i * H + j] += (double)dy[r * D + i] * hq[r * H + j];
        }
        for (int j = 0; j < H; j++) {
            gb1[j] += dh[j];
            for (int k = 0; k < D; k++) gW1[j * D + k] += dh[j] * xq[r * D + k];
        }
        for (int k = 0; k < D; k++) {
            double acc = dy[r * D + k];
            for (int j = 0; j < H; j++) acc += dh[j] * s->param[0][j * D + k];
            dxr[r * D + k] = acc;
        }
    }
    corrections_zero_grad(&c);
    memcpy(dx, dy, sizeof dx);
    c.hook.after_block_backward(c.hook.ctx, 0, dx, R);
    assert_true(close_to("mlp dx", dx, dxr, R * D));
    assert_true(close_to("mlp dW1", s->grad[0], gW1, H * D));
    assert_true(close_to("mlp db1", s->grad[1], gb1, H));
    assert_true(close_to("mlp dW2", s->grad[2], gW2, D * H));
    assert_true(close_to("mlp db2", s->grad[3], gb2, D));
    corrections_free(&c);
}

static void lowrank_ste_case(void) {
    enum { R = 5, K = 3 };
    GPTConfig cfg = {.vocab_size = 4, .ctx = R, .d_model = 8, .n_layer = 1, .n_head = 1};
    int sizes[5] = {0, 0, K, 0, 0}; /* on mlp.c_fc: in 8, out 32 */
    CorrectionLayout lay = {.kind = KIND_LOWRANK, .linear_sizes = sizes};
    Corrections c;
    assert_int_equal(corrections_init(&c, &cfg, &lay, R, 3), 0);
    CorrectionSite *s = &c.sites[0];
    int I = s->in, O = s->out;
    Rng rng;
    rng_seed(&rng, 41);
    for (size_t i = 0; i < c.num_params; i++) c.params[i] = 0.5f * rng_normal(&rng);
    ActScheme a = scheme(3, ACT_POINT_INPUTS, 1, ACT_TOKEN, 0);
    corrections_set_act(&c, &a);
    corrections_store_narrow(&c, 5);
    float x[R * 8], out[R * 32] = {0}, dout[R * 32], din[R * 8] = {0}, mid[R * K], midq[R * K];
    for (int i = 0; i < R * I; i++) x[i] = rng_normal(&rng);
    for (int i = 0; i < R * O; i++) dout[i] = rng_normal(&rng);
    c.hook.after_linear(c.hook.ctx, 2, out, x, R);
    for (int r = 0; r < R; r++)
        for (int k = 0; k < K; k++) {
            double acc = 0;
            for (int i = 0; i < I; i++) acc += (double)x[r * I + i] * s->param[0][k * I + i];
            mid[r * K + k] = (float)acc;
        }
    act_quantize_rows(midq, K, mid, K, R, K, 3, 1);
    double outr[R * 32], gA[K * 8] = {0}, gB[32 * K] = {0}, dinr[R * 8];
    for (int r = 0; r < R; r++) {
        double dm[K] = {0};
        for (int o = 0; o < O; o++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                acc += (double)midq[r * K + k] * s->param[1][o * K + k];
                gB[o * K + k] += (double)dout[r * O + o] * midq[r * K + k];
                dm[k] += (double)dout[r * O + o] * s->param[1][o * K + k];
            }
            outr[r * O + o] = acc;
        }
        for (int i = 0; i < I; i++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                acc += dm[k] * s->param[0][k * I + i];
                gA[k * I + i] += dm[k] * x[r * I + i];
            }
            dinr[r * I + i] = acc;
        }
    }
    assert_true(close_to("lowrank forward", out, outr, R * O));
    corrections_zero_grad(&c);
    c.hook.after_linear_backward(c.hook.ctx, 2, din, dout, x, R);
    assert_true(close_to("lowrank din", din, dinr, R * I));
    assert_true(close_to("lowrank dA", s->grad[0], gA, K * I));
    assert_true(close_to("lowrank dB", s->grad[1], gB, O * K));
    corrections_free(&c);
}

static void linear_ste_case(void) {
    enum { D = 8, R = 5 };
    GPTConfig cfg = {.vocab_size = 4, .ctx = R, .d_model = D, .n_layer = 1, .n_head = 1};
    Corrections c;
    assert_int_equal(stream_corrections(&c, &cfg, 1, 0, R, 7), 0);
    Rng rng;
    rng_seed(&rng, 51);
    for (size_t i = 0; i < c.num_params; i++) c.params[i] = 0.4f * rng_normal(&rng);
    ActScheme a = scheme(4, ACT_POINT_INPUTS | ACT_POINT_STREAM, 1, ACT_TOKEN, 1); /* reads float: its input quantized */
    corrections_set_act(&c, &a);
    corrections_store_narrow(&c, 6);
    CorrectionSite *s = &c.sites[0];
    float x[R * D], dy[R * D], dx[R * D], y[R * D], xq[R * D];
    for (int i = 0; i < R * D; i++) x[i] = rng_normal(&rng), dy[i] = rng_normal(&rng);
    memcpy(y, c.hook.after_block(c.hook.ctx, 0, x, R), sizeof y);
    act_quantize_rows(xq, D, x, D, R, D, 4, 1);
    double yr[R * D], gW[D * D] = {0}, gb[D] = {0}, dxr[R * D];
    for (int r = 0; r < R; r++)
        for (int i = 0; i < D; i++) {
            double acc = x[r * D + i] + s->param[1][i], back = dy[r * D + i];
            for (int k = 0; k < D; k++) {
                acc += (double)xq[r * D + k] * s->param[0][i * D + k];
                gW[i * D + k] += (double)dy[r * D + i] * xq[r * D + k];
                back += (double)dy[r * D + k] * s->param[0][k * D + i];
            }
            yr[r * D + i] = acc;
            gb[i] += dy[r * D + i];
            dxr[r * D + i] = back;
        }
    assert_true(close_to("linear forward", y, yr, R * D));
    corrections_zero_grad(&c);
    memcpy(dx, dy, sizeof dx);
    c.hook.after_block_backward(c.hook.ctx, 0, dx, R);
    assert_true(close_to("linear dx", dx, dxr, R * D));
    assert_true(close_to("linear dW", s->grad[0], gW, D * D));
    assert_true(close_to("linear db", s->grad[1], gb, D));
    corrections_free(&c);
}

static void test_narrow_products_backward(void **state) {
    (void)state;
    linear_ste_case();
    mlp_ste_case(0);
    mlp_ste_case(1);
    lowrank_ste_case();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_option),
        cmocka_unit_test(test_stream_reads_exact),
        cmocka_unit_test(test_float_mode_without_site),
        cmocka_unit_test(test_quantized_mode_unchanged),
        cmocka_unit_test(test_float_mode_cache),
        cmocka_unit_test(test_narrow_products_exact),
        cmocka_unit_test(test_narrow_products_backward),
    };
    return cmocka_run_group_tests_name("actcorr", tests, setup_one_thread, restore_threads);
}
