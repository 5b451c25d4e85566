/* test_parity: the C engine against PyTorch, as llm.c's test_gpt2.c — logits, loss, every
 * parameter gradient and 10 AdamW steps, from fixtures written by tools/pytorch_reference.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "nn/train.h"
#include "testutil.h"

/* Paths relative to the repository root (make test runs from there). */
#define FIXTURE_CHECKPOINT "tests/fixtures/gpt_tiny_init.safetensors"
#define FIXTURE_EXPECTED "tests/fixtures/gpt_tiny_expected.safetensors"

/* Relative tolerance for every comparison. An element's error is |c - torch| divided by
 * max(|torch|, floor), where the floor of a tensor is FLOOR_FRACTION times its largest |value|
 * (never below ABSOLUTE_FLOOR): a gradient element a hundred times smaller than its tensor's
 * largest is held to an absolute error of 1e-6 x that largest, not to a relative error that
 * float32 rounding alone (summation order in sgemm, softmax, LayerNorm) cannot meet. */
#define REL_TOL 1e-4
#define FLOOR_FRACTION 1e-2
#define ABSOLUTE_FLOOR 1e-8
/* Scalar losses and gradient norms: |c - torch| <= REL_TOL * max(|torch|, 1). */

typedef struct {
    GPT model;
    Vocab vocab;
    SafeTensors expected;
    int B, T;
    int32_t *inputs, *targets;
} Fixture;

/* A copy of an expected tensor as aligned floats (the file's data may be unaligned). */
static float *expected_copy(const Fixture *f, const char *name, size_t numel) {
    const StTensor *t = st_find(&f->expected, name);
    if (!t) fail_msg("%s: tensor '%s' is missing: regenerate with tools/pytorch_reference.py", FIXTURE_EXPECTED, name);
    if (t->numel != numel) fail_msg("%s: tensor '%s' has %zu values, the model has %zu", FIXTURE_EXPECTED, name, t->numel, numel);
    float *out = malloc(numel * sizeof(float) + 1);
    assert_non_null(out);
    memcpy(out, t->data, numel * sizeof(float));
    return out;
}

static double expected_meta_number(const Fixture *f, const char *key) {
    const char *v = st_meta(&f->expected, key);
    if (!v) fail_msg("%s: metadata '%s' is missing", FIXTURE_EXPECTED, key);
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end) fail_msg("%s: metadata '%s' = '%s' is not a number", FIXTURE_EXPECTED, key, v);
    return x;
}

static int32_t *ids_from_floats(const Fixture *f, const char *name, int V) {
    size_t n = (size_t)f->B * f->T;
    float *values = expected_copy(f, name, n);
    int32_t *ids = malloc(n * sizeof(int32_t));
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) {
        if (!(values[i] >= 0 && values[i] < V && values[i] == floorf(values[i])))
            fail_msg("%s: %s[%zu] = %g is not a token id below %d", FIXTURE_EXPECTED, name, i, values[i], V);
        ids[i] = (int32_t)values[i];
    }
    free(values);
    return ids;
}

static void fixture_load(Fixture *f) {
    memset(f, 0, sizeof *f);
    if (st_read(&f->expected, FIXTURE_EXPECTED) != 0) fail_msg("%s (run from the repository root)", qc_last_error());
    const StTensor *inputs = st_find(&f->expected, "inputs");
    if (!inputs || inputs->ndim != 2) fail_msg("%s: 'inputs' (B,T) is missing", FIXTURE_EXPECTED);
    f->B = (int)inputs->shape[0];
    f->T = (int)inputs->shape[1];
    if (gpt_load(&f->model, &f->vocab, FIXTURE_CHECKPOINT, f->B, NULL) != 0) fail_msg("%s", qc_last_error());
    assert_int_equal(gpt_enable_training(&f->model), 0);
    assert_true(f->T <= f->model.config.ctx);
    f->inputs = ids_from_floats(f, "inputs", f->model.config.vocab_size);
    f->targets = ids_from_floats(f, "targets", f->model.config.vocab_size);
}

static void fixture_free(Fixture *f) {
    gpt_free(&f->model);
    st_free(&f->expected);
    free(f->inputs);
    free(f->targets);
}

/* Compares n values against the expected tensor `name`; prints one line; returns 1 if within. */
static int compare_tensor(const Fixture *f, const char *label, const char *name, const float *got, size_t n) {
    float *want = expected_copy(f, name, n);
    double largest = 0.0;
    for (size_t i = 0; i < n; i++) largest = fmax(largest, fabs((double)want[i]));
    double floor = fmax(FLOOR_FRACTION * largest, ABSOLUTE_FLOOR);
    double rel = max_rel_diff(got, want, n, floor);
    double abs_diff = max_abs_diff(got, want, n);
    int ok = rel <= REL_TOL;
    printf("%-7s %-40s max rel %.3e  max abs %.3e  (|max| %.3e)\n", ok ? "OK" : "NOT OK", label, rel, abs_diff, largest);
    free(want);
    return ok;
}

static int compare_scalar(const char *label, double got, double want) {
    double diff = fabs(got - want);
    int ok = diff <= REL_TOL * fmax(fabs(want), 1.0);
    printf("%-7s %-40s c %.7f  torch %.7f  diff %.3e\n", ok ? "OK" : "NOT OK", label, got, want, diff);
    return ok;
}

static void test_forward_logits_and_loss(void **state) {
    (void)state;
    Fixture f;
    fixture_load(&f);
    GPT *m = &f.model;
    gpt_forward(m, f.inputs, f.B, f.T, NULL);
    size_t n_logits = (size_t)f.B * f.T * m->config.vocab_size;
    int ok = compare_tensor(&f, "logits", "logits", m->logits, n_logits);
    double loss = gpt_loss(m, f.targets);
    float *want = expected_copy(&f, "loss", 1);
    ok &= compare_scalar("loss", loss, want[0]);
    free(want);
    fixture_free(&f);
    if (!ok) fail_msg("forward pass differs from PyTorch beyond %g", REL_TOL);
}

static void test_every_parameter_gradient(void **state) {
    (void)state;
    Fixture f;
    fixture_load(&f);
    GPT *m = &f.model;
    gpt_forward(m, f.inputs, f.B, f.T, NULL);
    gpt_zero_grad(m);
    gpt_loss(m, f.targets);
    gpt_backward(m, NULL, 1, 1, 0);
    int ok = 1, failures = 0;
    for (int i = 0; i < m->n_specs; i++) {
        const TensorSpec *t = &m->specs[i];
        char name[160];
        snprintf(name, sizeof name, "grad.%s", t->name);
        int tensor_ok = compare_tensor(&f, name, name, m->grads + t->offset, tensor_numel(t));
        failures += !tensor_ok;
        ok &= tensor_ok;
    }
    fixture_free(&f);
    if (!ok) fail_msg("%d parameter gradients differ from PyTorch beyond %g", failures, REL_TOL);
}

static void test_adamw_steps(void **state) {
    (void)state;
    Fixture f;
    fixture_load(&f);
    GPT *m = &f.model;
    int steps = (int)expected_meta_number(&f, "steps");
    float lr = (float)expected_meta_number(&f, "lr");
    float weight_decay = (float)expected_meta_number(&f, "weight_decay");
    float grad_clip = (float)expected_meta_number(&f, "grad_clip");
    assert_true(steps >= 1);
    /* the optimizer's constants are fixed in gpt_optimizer_step: the fixture must agree */
    assert_true(expected_meta_number(&f, "beta1") == 0.9 && expected_meta_number(&f, "beta2") == 0.95 &&
                expected_meta_number(&f, "eps") == 1e-8);
    float *want_losses = expected_copy(&f, "step_losses", (size_t)steps);
    float *want_norms = expected_copy(&f, "step_grad_norms", (size_t)steps);
    printf("AdamW, constant lr %g, weight decay %g, clip %g, %d steps on one batch:\n", lr, weight_decay, grad_clip, steps);
    int ok = 1;
    for (int s = 1; s <= steps; s++) {
        gpt_forward(m, f.inputs, f.B, f.T, NULL);
        gpt_zero_grad(m);
        double loss = gpt_loss(m, f.targets);
        gpt_backward(m, NULL, 1, 1, 0);
        double norm = gpt_optimizer_step(m, lr, weight_decay, grad_clip, s);
        char label[64];
        snprintf(label, sizeof label, "step %d loss", s);
        ok &= compare_scalar(label, loss, want_losses[s - 1]);
        snprintf(label, sizeof label, "step %d grad norm", s);
        ok &= compare_scalar(label, norm, want_norms[s - 1]);
    }
    free(want_losses);
    free(want_norms);
    fixture_free(&f);
    if (!ok) fail_msg("AdamW trajectory differs from PyTorch beyond %g", REL_TOL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_logits_and_loss),
        cmocka_unit_test(test_every_parameter_gradient),
        cmocka_unit_test(test_adamw_steps),
    };
    return cmocka_run_group_tests_name("parity", tests, NULL, NULL);
}
