/* test_parity_correct: the correction layers against PyTorch (tools/ref_correct.py) — the
 * corrected model's logits and the ce / kl / mse objectives with the gradient of every
 * correction parameter (linear and MLP, every 1 and 2), and the lstsq closed form. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/correct.h"
#include "correct/experiment.h"
#include "io/checkpoint.h"
#include "quant/quant.h"
#include "parity_fixture.h"
#include "testutil.h"

#define TINY_FLOAT "tests/fixtures/gpt_tiny_init.safetensors"
#define TINY_QUANT "tests/fixtures/gpt_tiny_quant3.safetensors"
#define CORRECTIONS_EXPECTED "tests/fixtures/corrections_expected.safetensors"
#define SMALL_FLOAT "tests/fixtures/gpt_small_float.safetensors"
#define SMALL_QUANT "tests/fixtures/gpt_small_quant3.safetensors"
#define LSTSQ_EXPECTED "tests/fixtures/lstsq_expected.safetensors"

/* Tolerances, as test_parity's: |c - torch| / max(|torch|, 1e-2 x the tensor's largest |value|).
 * The reference rerun in float64 moves the float32 results by at most (measured) 2.0e-5 for the
 * logits, 2.7e-5 for the gradients and 5.3e-7 relative for the objectives: that is float32's own
 * noise, which the C engine (another summation order) shares. 1e-4 allows 4x that and is still
 * far below what a wrong path costs (a missing site, identity or factor moves them by O(1)). */
#define CORRECTION_REL_TOL 1e-4
#define FLOOR_FRACTION 1e-2
#define OBJECTIVE_REL_TOL 1e-5

static void load_model(GPT *m, Vocab *vocab, const char *path, int max_batch) {
    if (gpt_load(m, vocab, path, max_batch, NULL) != 0) fail_msg("%s (run from the repository root)", qc_last_error());
}

/* ============================ the quantized models ============================ */

/* The fixtures' quantized models were written by the reference quantizer (int3, symmetric,
 * per channel, scope linear,head, exact double scales): C's quantize_model on the float
 * checkpoint must give them value for value, so the corrections below run on C's own scheme. */
static void check_quantized_copy(const char *float_path, const char *quant_path) {
    GPT f, q;
    Vocab vf, vq;
    load_model(&f, &vf, float_path, 1);
    load_model(&q, &vq, quant_path, 1);
    QuantScheme s;
    quant_scheme_default(&s, 3);
    if (scheme_set_scale_dtype(&s, "f64") != 0) fail_msg("exact double scales (\"f64\"): %s", qc_last_error());
    assert_int_equal(quantize_model(&f, &s, NULL, NULL), 0);
    double max_abs = 0.0;
    size_t differ = compare_exact(quant_path, f.params, q.params, f.num_params, &max_abs);
    printf("%-7s %-46s %zu of %zu parameters differ, max abs %.3e\n", differ ? "NOT OK" : "OK", quant_path, differ,
           f.num_params, max_abs);
    gpt_free(&f);
    gpt_free(&q);
    if (differ) fail_msg("quantize_model of %s differs from %s", float_path, quant_path);
}

static void test_quantized_models_are_cs_quantizer(void **state) {
    (void)state;
    check_quantized_copy(TINY_FLOAT, TINY_QUANT);
    check_quantized_copy(SMALL_FLOAT, SMALL_QUANT);
}

/* ============================ corrections: forward and gradients ============================ */

typedef struct {
    GPT f, q;
    Vocab vocab;
    SafeTensors expected;
    int B, T, N, V;
    int32_t *inputs, *targets;
} CorrectionFixture;

static void correction_fixture_load(CorrectionFixture *x) {
    memset(x, 0, sizeof *x);
    fixture_open(&x->expected, CORRECTIONS_EXPECTED);
    fixture_shape(&x->expected, "inputs", &x->B, &x->T);
    Vocab vq;
    load_model(&x->f, &x->vocab, TINY_FLOAT, x->B);
    load_model(&x->q, &vq, TINY_QUANT, x->B);
    assert_int_equal(gpt_enable_backward(&x->q), 0); /* frozen: stream gradients only */
    x->N = x->B * x->T;
    x->V = x->q.config.vocab_size;
    x->inputs = fixture_ids(&x->expected, "inputs", (size_t)x->N, x->V);
    x->targets = fixture_ids(&x->expected, "targets", (size_t)x->N, x->V);
}

static void correction_fixture_free(CorrectionFixture *x) {
    gpt_free(&x->f);
    gpt_free(&x->q);
    st_free(&x->expected);
    free(x->inputs);
    free(x->targets);
}

/* The fixture's parameters of one configuration, copied into c by checkpoint name. */
static void load_corrections(const CorrectionFixture *x, Corrections *c, const char *config) {
    CorrectionTensor names[4 * 8];
    int n = corrections_tensors(c, &x->q.config, names, 4 * 8);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        char name[320];
        snprintf(name, sizeof name, "%s.%.127s", config, names[i].name);
        size_t numel = (size_t)names[i].rows * (names[i].cols ? names[i].cols : 1);
        float *values = fixture_floats(&x->expected, name, numel);
        memcpy((float *)names[i].data, values, numel * sizeof(float));
        free(values);
    }
}

/* The objective's value and c->grads, by the production step of correction_train. */
static double objective_and_gradients(CorrectionFixture *x, Corrections *c, Objective objective) {
    const float *streams[8];
    double value;
    corrections_zero_grad(c);
    if (correction_step_objective(&x->q, &x->f, c, objective, x->inputs, x->targets, x->B, x->T, 0, corrections_frozen_prefix(c) + 1, streams,
                                  &value) != 0)
        fail_msg("correction_step_objective: %s", qc_last_error());
    return value;
}

static void test_corrections_forward_and_gradients(void **state) {
    (void)state;
    CorrectionFixture x;
    correction_fixture_load(&x);
    int configs[][2] = {{1, 0}, {1, 16}, {2, 0}, {2, 16}};
    const Objective objectives[] = {OBJECTIVE_CE, OBJECTIVE_KL, OBJECTIVE_MSE};
    int ok = 1, compared = 0;
    for (size_t k = 0; k < sizeof configs / sizeof *configs; k++) {
        int every = configs[k][0], hidden = configs[k][1];
        char config[64], name[320];
        snprintf(config, sizeof config, "every%d.hidden%d", every, hidden);
        Corrections c;
        assert_int_equal(stream_corrections(&c, &x.q.config, every, hidden, x.N, 1), 0);
        load_corrections(&x, &c, config);

        gpt_forward(&x.q, x.inputs, x.B, x.T, &c.hook);
        snprintf(name, sizeof name, "%s.logits", config);
        float *want = fixture_floats(&x.expected, name, (size_t)x.N * x.V);
        ok &= compare_floats(name, x.q.logits, want, (size_t)x.N * x.V, FLOOR_FRACTION, CORRECTION_REL_TOL);
        free(want);

        for (int o = 0; o < 3; o++) {
            const char *obj = objective_name(objectives[o]);
            double value = objective_and_gradients(&x, &c, objectives[o]);
            snprintf(name, sizeof name, "%s.%s.value", config, obj);
            float *want_value = fixture_floats(&x.expected, name, 1);
            ok &= compare_scalar(name, value, want_value[0], OBJECTIVE_REL_TOL * fabs(want_value[0]));
            free(want_value);
            CorrectionTensor grads[4 * 8];
            int n = corrections_tensors(&c, &x.q.config, grads, 4 * 8);
            for (int i = 0; i < n; i++) {
                size_t numel = (size_t)grads[i].rows * (grads[i].cols ? grads[i].cols : 1);
                const float *g = c.grads + (grads[i].data - c.params);
                snprintf(name, sizeof name, "%s.%s.grad.%.127s", config, obj, grads[i].name);
                float *want_grad = fixture_floats(&x.expected, name, numel);
                ok &= compare_floats(name, g, want_grad, numel, FLOOR_FRACTION, CORRECTION_REL_TOL);
                free(want_grad);
                compared++;
            }
        }
        corrections_free(&c);
    }
    correction_fixture_free(&x);
    printf("%d gradient tensors compared\n", compared);
    if (!ok) fail_msg("corrections differ from PyTorch beyond %g", CORRECTION_REL_TOL);
}

/* ============================ lstsq ============================ */

/* The reference's solution moves by up to 1.6e-4 (measured, max rel with the floor above) when
 * its streams are computed in float64 instead of float32: R = Y - X is a difference of nearby
 * streams, so the streams' float32 noise is amplified in the fit. The C engine's streams carry
 * noise of that size too; 1e-3 allows 6x. A solve on the wrong stream (float instead of
 * quantized, earlier sites not applied), a shrunk bias or a transposed weight is off by O(1). */
#define LSTSQ_REL_TOL 1e-3

static void test_lstsq_weights(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, LSTSQ_EXPECTED);
    GPT f, q;
    Vocab vocab, vq;
    load_model(&f, &vocab, SMALL_FLOAT, 1);
    load_model(&q, &vq, SMALL_QUANT, 1);
    int n_bytes, one;
    fixture_shape(&st, "corpus_bytes", &n_bytes, &one);
    float *bytes = fixture_floats(&st, "corpus_bytes", (size_t)n_bytes);
    uint8_t *text = malloc((size_t)n_bytes);
    for (int i = 0; i < n_bytes; i++) text[i] = (uint8_t)bytes[i];
    free(bytes);
    Corpus corpus;
    if (corpus_from_bytes(&corpus, text, (size_t)n_bytes, "lstsq fixture corpus", &vocab) != 0) fail_msg("%s", qc_last_error());
    int T = q.config.ctx;
    /* the train split holds exactly one window of T+1: every calibration window is window 0 */
    assert_int_equal((int)corpus.n_train, T + 1);
    const double ridges[] = {1e-4, 1e-1};
    int ok = 1;
    for (int r = 0; r < 2; r++)
        for (int every = 1; every <= 2; every++) {
            CorrectOptions o;
            correct_options_default(&o);
            o.method = METHOD_LSTSQ;
            o.ridge = ridges[r];
            o.calib_tokens = (long)fixture_meta_number(&st, "calib_windows") * T;
            o.batch = 1; /* one window per batch: the normal equations are summed over batches */
            o.quiet = 1;
            Corrections c;
            assert_int_equal(stream_corrections(&c, &q.config, every, 0, T, 1), 0);
            if (correction_lstsq(&q, &f, &c, &corpus, &o) != 0) fail_msg("lstsq: %s", qc_last_error());
            CorrectionTensor names[2 * 8];
            int n = corrections_tensors(&c, &q.config, names, 2 * 8);
            for (int i = 0; i < n; i++) {
                char name[320];
                snprintf(name, sizeof name, "ridge%g.every%d.%.127s", ridges[r], every, names[i].name);
                size_t numel = (size_t)names[i].rows * (names[i].cols ? names[i].cols : 1);
                float *want = fixture_floats(&st, name, numel);
                ok &= compare_floats(name, names[i].data, want, numel, FLOOR_FRACTION, LSTSQ_REL_TOL);
                free(want);
            }
            corrections_free(&c);
        }
    corpus_free(&corpus);
    gpt_free(&f);
    gpt_free(&q);
    st_free(&st);
    if (!ok) fail_msg("lstsq corrections differ from the reference beyond %g", LSTSQ_REL_TOL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantized_models_are_cs_quantizer),
        cmocka_unit_test(test_corrections_forward_and_gradients),
        cmocka_unit_test(test_lstsq_weights),
    };
    return cmocka_run_group_tests_name("parity_correct", tests, setup_one_thread, restore_threads);
}
