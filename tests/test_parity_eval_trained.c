/* test_parity_eval_trained: issue 12's acceptance of `eval --reference` on a trained model — a
 * 32x2 GPT qcorr trained on tiny Shakespeare and its int3 copy, over 64 validation windows stored
 * in the fixture, against PyTorch (tools/ref_eval.py write_eval_trained; no corpus needed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_file.h"
#include "nn/evaluate.h"
#include "parity_fixture.h"
#include "testutil.h"

#define TRAINED_EXPECTED "tests/fixtures/eval_trained.safetensors"
#define TRAINED_FLOAT "tests/fixtures/gpt_trained_float.safetensors"
#define TRAINED_QUANT "tests/fixtures/gpt_trained_quant3.safetensors"
#define MAX_BATCH 16

/* Two bounds per number. The issue's (its done-criterion): KL within 2%, top-1 within 0.002,
 * loss_diff_se within 3%, and, as the task sets them, the losses within 1e-4 relative (a loss
 * difference within 1e-4 of loss_M + loss_F; the other standard errors within 3%, as
 * loss_diff_se). And float32's: the reference's own numbers move by at most 6.9e-7 relative
 * (kl_p99) between float32 and float64 models, so 1e-4 relative leaves C's float32 room and still
 * sees faults the issue's bounds let through at 64 windows (a standard error with n instead of
 * n-1 is 0.8% off). Top-1 may differ by one position of the 4096 there: the closest top-2 logits
 * are 2.8e-5 apart (float64 keeps every choice), against float32 logit noise of ~1e-6. */
#define FLOAT32_REL 1e-4
#define FLOAT32_TOP1_POSITIONS 1.5

/* BOUND_REL: |C - torch| <= bound |torch|; BOUND_ABS: <= bound; BOUND_LOSSES: <= bound
 * (loss_M + loss_F), a difference of two losses each held to `bound`; BOUND_POSITIONS: <= bound
 * positions of the fixture's, as a share. */
typedef enum { BOUND_REL, BOUND_ABS, BOUND_LOSSES, BOUND_POSITIONS } BoundKind;

typedef struct {
    const char *name; /* the fixture's scalar */
    BoundKind issue_kind, float32_kind;
    double issue_bound, float32_bound;
} Bound;

enum { KL_MEAN, KL_SE, KL_P99, TOP1, LOSS_MODEL, LOSS_REFERENCE, LOSS_MODEL_SE, LOSS_REFERENCE_SE, LOSS_DIFF, LOSS_DIFF_SE, N_STATS };
static const Bound bounds[N_STATS] = {
    [KL_MEAN] = {"kl_mean", BOUND_REL, BOUND_REL, 0.02, FLOAT32_REL},
    [KL_SE] = {"kl_se", BOUND_REL, BOUND_REL, 0.02, FLOAT32_REL},
    [KL_P99] = {"kl_p99", BOUND_REL, BOUND_REL, 0.02, FLOAT32_REL},
    [TOP1] = {"top1_agree", BOUND_ABS, BOUND_POSITIONS, 0.002, FLOAT32_TOP1_POSITIONS},
    [LOSS_MODEL] = {"loss_model", BOUND_REL, BOUND_REL, 1e-4, FLOAT32_REL},
    [LOSS_REFERENCE] = {"loss_reference", BOUND_REL, BOUND_REL, 1e-4, FLOAT32_REL},
    [LOSS_MODEL_SE] = {"loss_model_se", BOUND_REL, BOUND_REL, 0.03, FLOAT32_REL},
    [LOSS_REFERENCE_SE] = {"loss_reference_se", BOUND_REL, BOUND_REL, 0.03, FLOAT32_REL},
    [LOSS_DIFF] = {"loss_diff", BOUND_LOSSES, BOUND_REL, 1e-4, FLOAT32_REL},
    [LOSS_DIFF_SE] = {"loss_diff_se", BOUND_REL, BOUND_REL, 0.03, FLOAT32_REL},
};

typedef struct {
    SafeTensors expected;
    LoadedModel model, reference;
    int T, n_windows;
    size_t n_ids;
    int32_t *ids;
} TrainedFixture;

static void trained_fixture_load(TrainedFixture *x) {
    memset(x, 0, sizeof *x);
    fixture_open(&x->expected, TRAINED_EXPECTED);
    if (load_checkpoint(&x->reference, TRAINED_FLOAT, MAX_BATCH) != 0 || load_checkpoint(&x->model, TRAINED_QUANT, MAX_BATCH) != 0)
        fail_msg("%s", qc_last_error());
    /* the files are what the fixture says: a float model and its int3 copy (f16 scales) */
    assert_false(x->reference.quantized);
    assert_true(x->model.quantized);
    assert_int_equal(x->model.scheme.bits, 3);
    assert_false(x->model.corrected);
    x->T = x->model.model.config.ctx;
    x->n_windows = (int)fixture_meta_number(&x->expected, "windows");
    assert_int_equal((int)fixture_meta_number(&x->expected, "T"), x->T);
    int rows, cols;
    fixture_shape(&x->expected, "ids", &rows, &cols);
    x->n_ids = (size_t)rows * cols;
    assert_int_equal(eval_window_count(x->n_ids, x->T), x->n_windows);
    x->ids = fixture_ids(&x->expected, "ids", x->n_ids, x->model.model.config.vocab_size);
}

static void trained_fixture_free(TrainedFixture *x) {
    st_free(&x->expected);
    loaded_model_free(&x->model);
    loaded_model_free(&x->reference);
    free(x->ids);
}

static double expected_scalar(const TrainedFixture *x, const char *name) {
    float *v = fixture_floats(&x->expected, name, 1);
    double out = v[0];
    free(v);
    return out;
}

/* The limit a bound sets on |C - torch|. */
static double bound_limit(BoundKind kind, double bound, double want, double loss_sum, int positions) {
    switch (kind) {
    case BOUND_REL: return bound * fabs(want);
    case BOUND_ABS: return bound;
    case BOUND_LOSSES: return bound * loss_sum;
    case BOUND_POSITIONS: return bound / positions;
    }
    return NAN;
}

/* Compares every statistic at both bounds, one line each; returns 1 if all are within. */
static int compare_stats(const TrainedFixture *x, const double got[N_STATS]) {
    double want[N_STATS];
    for (int k = 0; k < N_STATS; k++) want[k] = expected_scalar(x, bounds[k].name);
    double loss_sum = fabs(want[LOSS_MODEL]) + fabs(want[LOSS_REFERENCE]);
    int positions = x->n_windows * x->T, ok = 1;
    printf("        %-18s %14s %14s %10s %10s  %-22s %s\n", "", "C", "torch", "abs diff", "rel diff", "issue 12 bound", "float32 bound");
    for (int k = 0; k < N_STATS; k++) {
        const Bound *b = &bounds[k];
        double diff = fabs(got[k] - want[k]);
        double issue = bound_limit(b->issue_kind, b->issue_bound, want[k], loss_sum, positions);
        double float32 = bound_limit(b->float32_kind, b->float32_bound, want[k], loss_sum, positions);
        int within = diff <= issue && diff <= float32;
        ok &= within;
        printf("%-7s %-18s %14.9g %14.9g %10.3e %10.3e  %-9.3e %-12s %.3e %s\n", within ? "OK" : "NOT OK", b->name, got[k], want[k],
               diff, want[k] != 0 ? diff / fabs(want[k]) : INFINITY, issue, diff <= issue ? "ok" : "EXCEEDED", float32,
               diff <= float32 ? "ok" : "EXCEEDED");
    }
    return ok;
}

/* Per-window mean losses against the fixture's (float32 bound): points at a window when a
 * loss or standard error is off. */
static int compare_windows(const TrainedFixture *x, const char *name, const double *values) {
    float *got = malloc((size_t)x->n_windows * sizeof(float));
    assert_non_null(got);
    for (int i = 0; i < x->n_windows; i++) got[i] = (float)values[i];
    float *want = fixture_floats(&x->expected, name, (size_t)x->n_windows);
    int ok = compare_floats(name, got, want, (size_t)x->n_windows, 1e-2, FLOAT32_REL);
    free(got);
    free(want);
    return ok;
}

/* `eval --model Q --reference F` as src/cli/cmd_eval.c runs it: the float model's view of the
 * windows built once, then the quantized model (through its hook: none here) against it. */
static void test_eval_reference_on_trained_model(void **state) {
    (void)state;
    TrainedFixture x;
    trained_fixture_load(&x);
    EvalReference ref;
    Evaluation e;
    if (eval_reference_build(&ref, &x.reference.model, x.ids, x.n_ids) != 0) fail_msg("%s", qc_last_error());
    if (evaluate_model(&x.model.model, loaded_hook(&x.model), x.ids, x.n_ids, NULL, 0, &ref, &e) != 0)
        fail_msg("%s", qc_last_error());
    assert_true(e.have_reference);
    assert_int_equal(e.n_windows, x.n_windows);
    double got[N_STATS] = {
        [KL_MEAN] = e.kl_mean, [KL_SE] = e.kl_se, [KL_P99] = e.kl_p99, [TOP1] = e.top1_agree,
        [LOSS_MODEL] = e.loss, [LOSS_REFERENCE] = ref.loss, [LOSS_MODEL_SE] = e.loss_se,
        [LOSS_REFERENCE_SE] = mean_se(ref.window_loss, ref.n_windows), [LOSS_DIFF] = e.loss_diff,
        [LOSS_DIFF_SE] = e.loss_diff_se,
    };
    printf("eval --reference on %s vs %s, %d windows of %d (%d of %d positions agree in C)\n", TRAINED_QUANT, TRAINED_FLOAT,
           x.n_windows, x.T, (int)lround(e.top1_agree * x.n_windows * x.T), x.n_windows * x.T);
    int ok = compare_stats(&x, got);
    ok &= compare_windows(&x, "window.loss_model", e.window_loss);
    ok &= compare_windows(&x, "window.loss_reference", ref.window_loss);
    evaluation_free(&e);
    eval_reference_free(&ref);
    trained_fixture_free(&x);
    if (!ok) fail_msg("eval --reference on the trained model differs from PyTorch beyond a bound (lines NOT OK above)");
}

/* `eval --model F` alone (no reference) reports the float model's loss and standard error: the
 * same numbers as the reference side of the comparison. */
static void test_eval_float_model_alone(void **state) {
    (void)state;
    TrainedFixture x;
    trained_fixture_load(&x);
    Evaluation e;
    if (evaluate_model(&x.reference.model, NULL, x.ids, x.n_ids, NULL, 0, NULL, &e) != 0) fail_msg("%s", qc_last_error());
    assert_false(e.have_reference);
    double want = expected_scalar(&x, "loss_reference"), want_se = expected_scalar(&x, "loss_reference_se");
    int ok = compare_scalar("loss (float model alone)", e.loss, want, FLOAT32_REL * fabs(want));
    ok &= compare_scalar("loss_se (float model alone)", e.loss_se, want_se, FLOAT32_REL * fabs(want_se));
    evaluation_free(&e);
    trained_fixture_free(&x);
    if (!ok) fail_msg("eval of the trained float model differs from PyTorch beyond %g relative", FLOAT32_REL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_reference_on_trained_model),
        cmocka_unit_test(test_eval_float_model_alone),
    };
    return cmocka_run_group_tests_name("parity_eval_trained", tests, setup_one_thread, restore_threads);
}
