/* test_parity_act: activation quantization (README: Activation quantization; issue 21) against
 * PyTorch (tools/ref_act.py): for every scheme of the fixture — per-token and per-window dynamic,
 * static ranges calibrated by minmax, percentile and mse, symmetric and asymmetric, at the matrices'
 * inputs, the stream, keys and values, probabilities — the calibrated ranges, the loss of the small
 * int3 model over the eval windows (within 1e-5 relative), and for some every parameter gradient
 * through the straight-through estimator. Also: the inference path and a saved and reloaded
 * checkpoint give the training forward's loss. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "io/model_file.h"
#include "kernels/ops.h"
#include "nn/infer.h"
#include "quant/actcalib.h"
#include "parity_fixture.h"
#include "testutil.h"

#define ACT_EXPECTED "tests/fixtures/act_expected.safetensors"
#define SMALL_QUANT "tests/fixtures/gpt_small_quant3.safetensors"
#define LOSS_REL_TOL 1e-5
/* Ranges: a calibrated extreme is an activation value, which C's float32 forward computes to
 * within ~1e-6 of PyTorch's. */
#define RANGE_REL_TOL 1e-5
/* Gradients through the quantized forward: the same straight-through rule; float32 summation noise
 * (~1e-5 of each tensor's largest entry) and nothing else. */
#define GRAD_REL_TOL 5e-4

/* "bits=4 kv=0 points=inputs gran=token asym=0 calib=minmax" */
static void parse_spec(const char *spec, ActScheme *a) {
    act_scheme_default(a);
    char buf[256], points[64] = "", gran[16] = "", calib[32] = "";
    int asym = 0;
    snprintf(buf, sizeof buf, "%s", spec);
    if (sscanf(buf, "bits=%d kv=%d points=%63s gran=%15s asym=%d calib=%31s", &a->bits, &a->kv_bits, points, gran, &asym, calib) != 6)
        fail_msg("malformed scheme spec '%s'", spec);
    a->asymmetric = asym;
    if (act_parse_points(points, &a->points) != 0 || act_parse_granularity(gran, &a->granularity) != 0 || act_parse_calib(calib, a) != 0 ||
        act_scheme_check(a) != 0)
        fail_msg("scheme '%s': %s", spec, qc_last_error());
}

typedef struct {
    SafeTensors st;
    GPT m;
    Vocab vocab;
    int T, V, n_calib, n_eval, n_grad, n_short, T_short;
    int32_t *calib, *eval_in, *eval_target, *short_in, *short_target;
} ActFixture;

static void fixture_load(ActFixture *x) {
    memset(x, 0, sizeof *x);
    fixture_open(&x->st, ACT_EXPECTED);
    x->n_calib = (int)fixture_meta_number(&x->st, "calib_windows");
    x->n_eval = (int)fixture_meta_number(&x->st, "eval_windows");
    x->n_grad = (int)fixture_meta_number(&x->st, "grad_windows");
    x->n_short = (int)fixture_meta_number(&x->st, "short_windows");
    x->T_short = (int)fixture_meta_number(&x->st, "short_T");
    int batch = x->n_calib > x->n_eval ? x->n_calib : x->n_eval;
    if (gpt_load(&x->m, &x->vocab, SMALL_QUANT, batch, NULL) != 0) fail_msg("%s", qc_last_error());
    x->T = x->m.config.ctx;
    x->V = x->m.config.vocab_size;
    assert_int_equal((int)fixture_meta_number(&x->st, "T"), x->T);
    assert_int_equal((long)fixture_meta_number(&x->st, "calib_values"), ACT_CALIB_VALUES);
    x->calib = fixture_ids(&x->st, "calib_ids", (size_t)x->n_calib * x->T, x->V);
    size_t n = (size_t)x->n_eval * x->T + 1;
    int32_t *ids = fixture_ids(&x->st, "eval_ids", n, x->V);
    x->eval_in = malloc((size_t)x->n_eval * x->T * sizeof(int32_t));
    x->eval_target = malloc((size_t)x->n_eval * x->T * sizeof(int32_t));
    x->short_in = malloc((size_t)x->n_short * x->T_short * sizeof(int32_t));
    x->short_target = malloc((size_t)x->n_short * x->T_short * sizeof(int32_t));
    assert_true(x->n_short <= x->n_eval && x->T_short <= x->T);
    for (int w = 0; w < x->n_eval; w++)
        for (int t = 0; t < x->T; t++) {
            x->eval_in[w * x->T + t] = ids[w * x->T + t];
            x->eval_target[w * x->T + t] = ids[w * x->T + t + 1];
            if (w < x->n_short && t < x->T_short) {
                x->short_in[w * x->T_short + t] = ids[w * x->T + t];
                x->short_target[w * x->T_short + t] = ids[w * x->T + t + 1];
            }
        }
    free(ids);
}

static void fixture_free(ActFixture *x) {
    free(x->calib);
    free(x->eval_in);
    free(x->eval_target);
    free(x->short_in);
    free(x->short_target);
    gpt_free(&x->m);
    st_free(&x->st);
}

/* The scheme's eval windows (the fixture's eval.<scheme>: full or short) and which of them are
 * compared (mask.<scheme>: the reference leaves out windows where a value came within float32
 * noise of a rounding boundary, whose code the last bits of either side decide). */
typedef struct {
    const int32_t *in, *target;
    int B, T;
    float *mask;
} SchemeEval;

static int is_short(ActFixture *x, const char *name);

static SchemeEval scheme_eval(ActFixture *x, const char *name) {
    int sh = is_short(x, name);
    SchemeEval e = {sh ? x->short_in : x->eval_in, sh ? x->short_target : x->eval_target, sh ? x->n_short : x->n_eval, sh ? x->T_short : x->T, NULL};
    char key[128];
    snprintf(key, sizeof key, "mask.%s", name);
    e.mask = fixture_floats(&x->st, key, (size_t)e.B);
    return e;
}

/* The mean loss over the compared windows of the logits of the last forward. */
static double masked_loss(ActFixture *x, const SchemeEval *e) {
    double sum = 0;
    int n = 0;
    for (int w = 0; w < e->B; w++)
        if (e->mask[w] != 0) {
            sum += crossentropy_forward_backward(NULL, x->m.logits + (size_t)w * e->T * x->V, e->target + (size_t)w * e->T, e->T, x->V, 1.0f);
            n++;
        }
    assert_true(n >= 3);
    return sum / n;
}

static double eval_loss(ActFixture *x, const SchemeEval *e) {
    if (gpt_forward(&x->m, e->in, e->B, e->T, NULL) != 0) fail_msg("%s", qc_last_error());
    return masked_loss(x, e);
}

static int is_short(ActFixture *x, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "eval.%s", name);
    return strcmp(fixture_meta(&x->st, key), "short") == 0;
}

static int check_loss(const char *name, double got, double want) {
    double rel = fabs(got - want) / fabs(want);
    int ok = rel <= LOSS_REL_TOL;
    printf("%-7s loss %-38s C %.7f  PyTorch %.7f  rel %.2e (tol %.0e)\n", ok ? "OK" : "NOT OK", name, got, want, rel, LOSS_REL_TOL);
    return ok;
}

/* Each scheme: static ranges calibrated here, compared, then the loss with them. */
static void test_act_schemes(void **state) {
    (void)state;
    ActFixture x;
    fixture_load(&x);
    int n_sites = act_site_count(x.m.config.n_layer), bad = 0;
    char list[2048];
    snprintf(list, sizeof list, "%s", fixture_meta(&x.st, "schemes"));
    int count = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save), count++) {
        char key[128];
        snprintf(key, sizeof key, "scheme.%s", name);
        ActScheme a;
        parse_spec(fixture_meta(&x.st, key), &a);
        assert_int_equal(gpt_set_act_scheme(&x.m, &a), 0);
        if (a.granularity == ACT_STATIC) {
            /* before calibration a static scheme is refused, not run on zero ranges */
            assert_int_equal(gpt_forward(&x.m, x.eval_in, 1, x.T, NULL), -1);
            assert_non_null(strstr(qc_last_error(), "not calibrated"));
            if (act_calibrate(&x.m, x.calib, x.n_calib, x.T) != 0) fail_msg("%s: %s", name, qc_last_error());
            snprintf(key, sizeof key, "ranges.%s", name);
            float *want = fixture_floats(&x.st, key, (size_t)n_sites * 2);
            snprintf(key, sizeof key, "%s static ranges", name);
            bad += !compare_floats(key, x.m.act.ranges, want, (size_t)n_sites * 2, 1e-2, RANGE_REL_TOL);
            /* the loss from the reference's ranges: a range 1e-7 off moves every code by up to 1e-5 of a step */
            assert_int_equal(gpt_set_act_ranges(&x.m, want), 0);
            free(want);
        }
        snprintf(key, sizeof key, "loss.%s", name);
        float *want = fixture_floats(&x.st, key, 1);
        SchemeEval e = scheme_eval(&x, name);
        double loss = eval_loss(&x, &e);
        bad += !check_loss(name, loss, want[0]);
        /* the inference path (the evaluation's) quantizes the same values: the same loss */
        Inference inf;
        assert_int_equal(inference_init(&inf, &x.m, 0), 0);
        assert_int_equal(gpt_infer(&x.m, &inf, e.in, NULL, 0, e.B, e.T, NULL), 0);
        inference_free(&inf);
        double infer_loss = masked_loss(&x, &e);
        free(e.mask);
        if (!(fabs(infer_loss - loss) <= 1e-6 * loss)) fail_msg("%s: the inference path gives %.8f, the training forward %.8f", name, infer_loss, loss);
        free(want);
    }
    assert_true(count >= 20);
    fixture_free(&x);
    if (bad) fail_msg("%d activation schemes differ from PyTorch", bad);
}

/* The gradients of every parameter through the quantized forward (straight through each point). */
static void test_act_gradients(void **state) {
    (void)state;
    ActFixture x;
    fixture_load(&x);
    assert_int_equal(gpt_enable_training(&x.m), 0);
    char list[512];
    snprintf(list, sizeof list, "%s", fixture_meta(&x.st, "grad_schemes"));
    int bad = 0, count = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save), count++) {
        char key[256];
        snprintf(key, sizeof key, "scheme.%s", name);
        ActScheme a;
        parse_spec(fixture_meta(&x.st, key), &a);
        assert_int_equal(gpt_set_act_scheme(&x.m, &a), 0);
        if (a.granularity == ACT_STATIC) {
            snprintf(key, sizeof key, "ranges.%s", name);
            float *ranges = fixture_floats(&x.st, key, (size_t)act_site_count(x.m.config.n_layer) * 2);
            assert_int_equal(gpt_set_act_ranges(&x.m, ranges), 0);
            free(ranges);
        }
        /* the batch: the first grad_windows compared windows */
        SchemeEval e = scheme_eval(&x, name);
        int32_t *in = malloc((size_t)e.B * e.T * sizeof(int32_t)), *target = malloc((size_t)e.B * e.T * sizeof(int32_t));
        int B = 0;
        for (int w = 0; w < e.B && B < x.n_grad; w++)
            if (e.mask[w] != 0) {
                memcpy(in + (size_t)B * e.T, e.in + (size_t)w * e.T, (size_t)e.T * sizeof(int32_t));
                memcpy(target + (size_t)B * e.T, e.target + (size_t)w * e.T, (size_t)e.T * sizeof(int32_t));
                B++;
            }
        assert_true(B >= 3);
        if (gpt_forward(&x.m, in, B, e.T, NULL) != 0) fail_msg("%s", qc_last_error());
        gpt_loss(&x.m, target);
        free(in);
        free(target);
        free(e.mask);
        gpt_zero_grad(&x.m);
        gpt_backward(&x.m, NULL, 1, 1, 0);
        for (int i = 0; i < x.m.n_specs; i++) {
            const TensorSpec *t = &x.m.specs[i];
            snprintf(key, sizeof key, "grad.%s.%s", name, t->name);
            size_t n = tensor_numel(t);
            float *want = fixture_floats(&x.st, key, n);
            bad += !compare_floats(key, x.m.grads + t->offset, want, n, 1e-2, GRAD_REL_TOL);
            free(want);
        }
    }
    assert_true(count >= 3);
    fixture_free(&x);
    if (bad) fail_msg("%d gradient tensors differ from PyTorch", bad);
}

/* A quantized checkpoint with static ranges: saved, loaded, the same loss (eval reproduces quantize). */
static void test_act_checkpoint_roundtrip(void **state) {
    (void)state;
    ActFixture x;
    fixture_load(&x);
    QuantScheme s;
    quant_scheme_default(&s, 3);
    s.scale_dtype = SCALE_EXACT;
    parse_spec("bits=4 kv=4 points=inputs,stream,kv,probs gran=static asym=1 calib=percentile:99.9", &s.act);
    assert_int_equal(gpt_set_act_scheme(&x.m, &s.act), 0);
    /* unsaved ranges are refused */
    char path[] = "/tmp/qcorr_act_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(save_model(path, &x.m, &x.vocab, &s, NULL, NULL), -1);
    assert_int_equal(act_calibrate(&x.m, x.calib, x.n_calib, x.T), 0);
    assert_int_equal(gpt_forward(&x.m, x.eval_in, x.n_eval, x.T, NULL), 0);
    double loss = gpt_loss(&x.m, x.eval_target);
    assert_int_equal(save_model(path, &x.m, &x.vocab, &s, NULL, NULL), 0);
    LoadedModel lm;
    if (load_checkpoint(&lm, path, x.n_eval) != 0) fail_msg("%s", qc_last_error());
    assert_true(lm.quantized);
    assert_int_equal(lm.scheme.act.points, s.act.points);
    assert_int_equal(lm.scheme.act.granularity, ACT_STATIC);
    assert_int_equal(lm.scheme.act.calib, ACT_CALIB_PERCENTILE);
    assert_true(lm.scheme.act.percentile == 99.9);
    assert_int_equal(lm.scheme.act.asymmetric, 1);
    assert_int_equal(lm.scheme.act.kv_bits, 4);
    assert_memory_equal(lm.model.act.ranges, x.m.act.ranges, (size_t)act_site_count(x.m.config.n_layer) * 2 * sizeof(float));
    assert_int_equal(gpt_forward(&lm.model, x.eval_in, x.n_eval, x.T, NULL), 0);
    assert_true(gpt_loss(&lm.model, x.eval_target) == loss);
    loaded_model_free(&lm);
    unlink(path);
    close(fd);
    fixture_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_act_schemes),
        cmocka_unit_test(test_act_gradients),
        cmocka_unit_test(test_act_checkpoint_roundtrip),
    };
    return cmocka_run_group_tests_name("parity_act", tests, setup_one_thread, restore_threads);
}
