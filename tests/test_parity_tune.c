/* test_parity_tune: normtweak, qat and scales against PyTorch (tools/ref_tune.py) on the tiny
 * model and its int3 copy — the ce and kl objectives with the gradient of every LayerNorm tensor
 * (normtweak), the straight-through gradient of every quantized matrix (qat) and of every row's
 * log-scale (scales) and lwc (the codes following the scale), then one AdamW step as the training loop takes it (clip, AdamW, the tuned
 * values into the model): the new LayerNorms, qat's new latent weights and their grid values,
 * the new log-scales, and the loss after the step; adaround's per-matrix objective and gradient. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/adaround.h"
#include "correct/experiment.h"
#include "correct/tune.h"
#include "io/checkpoint.h"
#include "nn/optim.h"
#include "parity_fixture.h"
#include "testutil.h"

#define TINY_FLOAT "tests/fixtures/gpt_tiny_init.safetensors"
#define TINY_QUANT "tests/fixtures/gpt_tiny_quant3.safetensors"
#define TUNE_EXPECTED "tests/fixtures/tune_expected.safetensors"
/* as test_parity_correct's: float32 noise of another summation order, far below a wrong path */
#define REL_TOL 1e-4
#define FLOOR_FRACTION 1e-2
#define OBJECTIVE_REL_TOL 1e-5
#define B 3
#define T 16

typedef struct {
    GPT f, q;
    Vocab vf, vq;
    SafeTensors st;
    int32_t *inputs, *targets;
    QuantScheme scheme;
    Corrections none;
} Fixture;

static void fixture_load(Fixture *x) {
    if (gpt_load(&x->f, &x->vf, TINY_FLOAT, B, NULL) != 0 || gpt_load(&x->q, &x->vq, TINY_QUANT, B, NULL) != 0)
        fail_msg("%s (run from the repository root)", qc_last_error());
    fixture_open(&x->st, TUNE_EXPECTED);
    int V = x->q.config.vocab_size;
    x->inputs = fixture_ids(&x->st, "inputs", B * T, V);
    x->targets = fixture_ids(&x->st, "targets", B * T, V);
    quant_scheme_default(&x->scheme, 3);
    assert_int_equal(scheme_set_scale_dtype(&x->scheme, "f64"), 0);
    CorrectionLayout layout = {.kind = KIND_NONE, .every = 1};
    assert_int_equal(corrections_init(&x->none, &x->q.config, &layout, B * T, 1), 0);
    assert_int_equal(gpt_enable_training(&x->q), 0);
}

static void fixture_free(Fixture *x) {
    corrections_free(&x->none);
    free(x->inputs);
    free(x->targets);
    st_free(&x->st);
    gpt_free(&x->q);
    gpt_free(&x->f);
}

/* The objective and the tuned values' gradients (tuning_collect) by the training loop's step. */
static double gradients(Fixture *x, Tuning *t, Objective o) {
    double v;
    gpt_zero_grad(&x->q);
    if (correction_step_objective(&x->q, &x->f, &x->none, o, x->inputs, x->targets, B, T, 1, 0, NULL, &v) != 0)
        fail_msg("%s", qc_last_error());
    tuning_collect(t, &x->q);
    return v;
}

/* The first range of tensor spec in t, or NULL: a tensor's values lie consecutively from it. */
static const TuneRange *range_of(const Tuning *t, const TensorSpec *spec) {
    for (int i = 0; i < t->n_ranges; i++)
        if (t->ranges[i].at == spec->offset) return &t->ranges[i];
    return NULL;
}

/* The tensor of q that holds parameter offset at. */
static const TensorSpec *spec_of(const GPT *q, size_t at) {
    for (int i = 0; i < q->n_specs; i++)
        if (at >= q->specs[i].offset && at < q->specs[i].offset + tensor_numel(&q->specs[i])) return &q->specs[i];
    fail_msg("offset %zu is in no tensor", at);
    return NULL;
}

/* The values t trains of tensor spec: a whole tensor (normtweak, qat) or one or two a span (scales). */
static size_t values_of(const Tuning *t, const TensorSpec *spec) {
    size_t n = 0, end = spec->offset + tensor_numel(spec);
    for (int i = 0; i < t->n_ranges; i++)
        if (t->ranges[i].at >= spec->offset && t->ranges[i].at < end) n += t->ranges[i].n;
    return n;
}

/* Compares, for every tensor t trains, values[from ..] with the fixture's prefix.<tensor name>. */
static int compare_tensors(Fixture *x, const Tuning *t, const float *values, const char *prefix, int exact) {
    int ok = 1, n = 0;
    for (int i = 0; i < x->q.n_specs; i++) {
        const TensorSpec *spec = &x->q.specs[i];
        const TuneRange *r = range_of(t, spec);
        if (!r) continue;
        char name[256];
        snprintf(name, sizeof name, "%s.%s", prefix, spec->name);
        size_t numel = values_of(t, spec);
        float *want = fixture_floats(&x->st, name, numel);
        if (exact) ok &= compare_exact(name, values + r->from, want, numel, NULL) == 0;
        else ok &= compare_floats(name, values + r->from, want, numel, FLOOR_FRACTION, REL_TOL);
        free(want);
        n++;
    }
    assert_true(n > 0);
    return ok;
}

static double fixture_scalar(Fixture *x, const char *name) {
    float *v = fixture_floats(&x->st, name, 1);
    double out = v[0];
    free(v);
    return out;
}

/* One step of the training loop on the ce gradients: clip, AdamW (step 1), into the model. */
static void one_step(Tuning *t, GPT *q, float lr) {
    clip_grad_norm(t->fit.grads, t->fit.num_params, 1.0f);
    AdamWStep s = {.lr = lr, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.0f, .step = 1};
    adamw_update(t->fit.params, t->fit.grads, t->fit.adam_m, t->fit.adam_v, t->fit.num_params, 1, &s);
    t->fit.apply(t->fit.ctx, q);
}

static void check_method(TuneTarget target, const char *method) {
    Fixture x;
    fixture_load(&x);
    Tuning t;
    if (tuning_init(&t, target, &x.q, &x.f, &x.scheme) != 0) fail_msg("%s", qc_last_error());
    int ok = 1;
    char key[64];
    float *ce_grads = NULL;
    for (int o = OBJECTIVE_CE; o <= OBJECTIVE_KL; o++) {
        double v = gradients(&x, &t, (Objective)o);
        snprintf(key, sizeof key, "%s.%s.value", method, objective_name(o));
        double want = fixture_scalar(&x, key);
        ok &= compare_scalar(key, v, want, OBJECTIVE_REL_TOL * fabs(want));
        snprintf(key, sizeof key, "%s.%s.grad", method, objective_name(o));
        ok &= compare_tensors(&x, &t, t.fit.grads, key, 0);
        if (o == OBJECTIVE_CE) ce_grads = copy_floats(t.fit.grads, t.fit.num_params);
    }
    memcpy(t.fit.grads, ce_grads, t.fit.num_params * sizeof(float));
    snprintf(key, sizeof key, "%s_lr", method);
    double lr = fixture_meta_number(&x.st, key);
    one_step(&t, &x.q, (float)lr);
    if (target == TUNE_NORMS || target == TUNE_SCALES || target == TUNE_CLIP) {
        snprintf(key, sizeof key, "%s.step", method);
        ok &= compare_tensors(&x, &t, t.fit.params, key, 0);
    } else {
        ok &= compare_tensors(&x, &t, t.fit.params, "qat.step.latent", 0);
        /* the grid values: exact (the closest latent value is 1e-3 steps from a rounding boundary) */
        float *weights = malloc(t.fit.num_params * sizeof(float));
        assert_non_null(weights);
        for (int i = 0; i < t.n_ranges; i++) memcpy(weights + t.ranges[i].from, x.q.params + t.ranges[i].at, t.ranges[i].n * sizeof(float));
        ok &= compare_tensors(&x, &t, weights, "qat.step.weight", 1);
        free(weights);
    }
    gpt_forward(&x.q, x.inputs, B, T, NULL);
    double loss = gpt_loss(&x.q, x.targets);
    snprintf(key, sizeof key, "%s.step.loss", method);
    double want = fixture_scalar(&x, key);
    ok &= compare_scalar(key, loss, want, OBJECTIVE_REL_TOL * fabs(want));
    free(ce_grads);
    tuning_free(&t);
    fixture_free(&x);
    if (!ok) fail_msg("%s: C and PyTorch differ beyond the tolerances (lines above)", method);
}

static void test_normtweak(void **state) {
    (void)state;
    check_method(TUNE_NORMS, "normtweak");
}

static void test_qat(void **state) {
    (void)state;
    check_method(TUNE_WEIGHTS, "qat");
}

static void test_scales(void **state) {
    (void)state;
    check_method(TUNE_SCALES, "scales");
}

/* lwc also at log-scales away from the start (the fixture's theta_r = -0.6 + 0.15 (r mod 7) over
 * each matrix's rows), where narrower grids clamp weights: the clamped codes' gradient; and
 * asymmetric, the minimum trained too. */
static void test_lwc(void **state) {
    (void)state;
    check_method(TUNE_CLIP, "lwc");
    Fixture x;
    fixture_load(&x);
    Tuning t;
    if (tuning_init(&t, TUNE_CLIP, &x.q, &x.f, &x.scheme) != 0) fail_msg("%s", qc_last_error());
    for (int i = 0; i < t.n_ranges; i++) {
        const TuneRange *r = &t.ranges[i];
        int row = (int)((r->at - range_of(&t, spec_of(&x.q, r->at))->at) / r->span);
        t.fit.params[r->from] = (float)(-0.6 + 0.15 * (row % 7));
    }
    tuning_apply(&t, &x.q);
    size_t clamped = 0;
    for (int i = 0; i < t.n_ranges; i++) {
        const TuneRange *r = &t.ranges[i];
        SpanGrid g = tuning_grid(&t, r);
        for (size_t k = 0; k < r->span; k++) clamped += fabs(nearbyint(x.f.params[r->at + k] / g.scale)) > 3;
    }
    if (clamped == 0) fail_msg("no weight is clamped at the moved log-scales: the test does not reach the clamped branch");
    double v = gradients(&x, &t, OBJECTIVE_CE);
    int ok = compare_scalar("lwc.moved.ce.value", v, fixture_scalar(&x, "lwc.moved.ce.value"), OBJECTIVE_REL_TOL * fabs(v));
    ok &= compare_tensors(&x, &t, t.fit.grads, "lwc.moved.ce.grad", 0);
    tuning_free(&t);
    /* asymmetric: the float model quantized asymmetrically (rtn, exact scales), per row a log-scale
     * and a minimum (mu_r = 0.5 ((r mod 5) - 2) steps), both trained */
    QuantScheme asym = x.scheme;
    asym.asymmetric = 1;
    GPT qa;
    Vocab va;
    if (gpt_load(&qa, &va, TINY_FLOAT, B, NULL) != 0 || quantize_model(&qa, &asym, NULL, NULL) != 0 || gpt_enable_training(&qa) != 0)
        fail_msg("%s", qc_last_error());
    GPT keep = x.q;
    x.q = qa;
    if (tuning_init(&t, TUNE_CLIP, &x.q, &x.f, &asym) != 0) fail_msg("%s", qc_last_error());
    for (int i = 0; i < t.n_ranges; i++) {
        const TuneRange *r = &t.ranges[i];
        int row = (int)((r->at - range_of(&t, spec_of(&x.q, r->at))->at) / r->span);
        t.fit.params[r->from] = (float)(-0.6 + 0.15 * (row % 7));
        t.fit.params[r->from + 1] = (float)(0.5 * ((row % 5) - 2));
    }
    tuning_apply(&t, &x.q);
    v = gradients(&x, &t, OBJECTIVE_CE);
    ok &= compare_scalar("lwc.asym.ce.value", v, fixture_scalar(&x, "lwc.asym.ce.value"), OBJECTIVE_REL_TOL * fabs(v));
    ok &= compare_tensors(&x, &t, t.fit.grads, "lwc.asym.ce.grad", 0);
    tuning_free(&t);
    x.q = keep;
    gpt_free(&qa);
    fixture_free(&x);
    if (!ok) fail_msg("lwc at moved log-scales: C and PyTorch differ beyond the tolerances (lines above)");
}

/* adaround's objective (reconstruction plus regulariser) and its gradient in V on one matrix, per
 * row, symmetric and asymmetric, at the fixture's V, beta and lambda. */
static void test_adaround(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, TUNE_EXPECTED);
    int bits = (int)fixture_meta_number(&st, "adaround_bits"), ok = 1;
    double beta = fixture_meta_number(&st, "adaround_beta"), lambda = fixture_meta_number(&st, "adaround_lambda");
    enum { R = 6, C = 16 };
    for (int asym = 0; asym <= 1; asym++) {
        char key[64];
        const char *name = asym ? "asym" : "sym";
#define LOAD(var, part, n) snprintf(key, sizeof key, "adaround.%s.%s", name, part); float *var = fixture_floats(&st, key, n)
        LOAD(w, "w", R * C);
        LOAD(scale, "scale", R);
        LOAD(minimum, "minimum", R);
        LOAD(V, "V", R * C);
        LOAD(G, "G", C * C);
        LOAD(value, "value", 1);
        LOAD(want, "grad", R * C);
#undef LOAD
        SpanGrid grids[R];
        for (int r = 0; r < R; r++) grids[r] = (SpanGrid){scale[r], asym ? minimum[r] : 0.0};
        float below[R * C], start[R * C], grad[R * C], e[R * C], rr[R * C];
        adaround_start(w, R * C, grids, C, asym, below, start);
        AdaRoundMatrix a = {w, R, C, grids, C, bits, asym, G, below};
        double got = adaround_objective(&a, V, beta, lambda, grad, e, rr);
        snprintf(key, sizeof key, "adaround.%s.value", name);
        ok &= compare_scalar(key, got, value[0], OBJECTIVE_REL_TOL * fabs(value[0]));
        snprintf(key, sizeof key, "adaround.%s.grad", name);
        ok &= compare_floats(key, grad, want, R * C, FLOOR_FRACTION, REL_TOL);
        free(w);
        free(scale);
        free(minimum);
        free(V);
        free(G);
        free(value);
        free(want);
    }
    st_free(&st);
    if (!ok) fail_msg("adaround: C and PyTorch differ beyond the tolerances (lines above)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adaround),
        cmocka_unit_test(test_normtweak),
        cmocka_unit_test(test_qat),
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_lwc),
    };
    return cmocka_run_group_tests(tests, setup_one_thread, restore_threads);
}
