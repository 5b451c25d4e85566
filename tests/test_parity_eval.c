/* test_parity_eval: `eval --reference` (issue 12 part 4) against PyTorch (tools/ref_eval.py):
 * KL to the float model, its standard error and 99th percentile, top-1 agreement, the loss
 * difference and the standard errors over windows, on a small model and its int3 copy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/correct.h"
#include "io/checkpoint.h"
#include "kernels/ops.h"
#include "nn/evaluate.h"
#include "nn/train.h"
#include "report/stats.h"
#include "parity_fixture.h"
#include "testutil.h"

#define EVAL_EXPECTED "tests/fixtures/eval_reference.safetensors"
#define SMALL_FLOAT "tests/fixtures/gpt_small_float.safetensors"
#define SMALL_QUANT "tests/fixtures/gpt_small_quant3.safetensors"

/* The reference's statistics move by at most 6.7e-7 relative (kl_p99; measured) when its two
 * models run in float64 instead of float32, and no top-1 choice changes (the closest top-2
 * logits are 2.8e-4 apart, against logit noise of ~1e-6). 1e-4 relative allows C's own float32
 * noise with room; top-1 agreement must match exactly. (Issue 12's acceptance bounds, KL within
 * 2%, top-1 within 0.002, loss_diff_se within 3%, are for the command on a trained model.) */
#define EVAL_REL_TOL 1e-4
#define FLOOR_FRACTION 1e-2

/* What `eval --reference` reports (issue 12 part 4), as the fixture names it. */
typedef struct {
    double kl_mean, kl_se, kl_p99, top1_agree;
    double loss_model, loss_reference, loss_model_se, loss_reference_se, loss_diff, loss_diff_se;
} ReferenceEval;

/* The library's evaluation (src/nn/evaluate.c): model against reference over the windows of the
 * README's Evaluation and recovery in ids[0..n) (floor((n-1)/T) windows of T = ctx); 0, or -1 with qc_error set. */
static int library_eval_reference(GPT *model, GPT *reference, const int32_t *ids, size_t n, ReferenceEval *out) {
    EvalReference ref;
    Evaluation e;
    if (eval_reference_build(&ref, reference, ids, n) != 0) return -1;
    int rc = evaluate_model(model, NULL, ids, n, NULL, 0, &ref, &e);
    if (rc == 0) {
        *out = (ReferenceEval){.kl_mean = e.kl_mean, .kl_se = e.kl_se, .kl_p99 = e.kl_p99, .top1_agree = e.top1_agree,
                               .loss_model = e.loss, .loss_reference = ref.loss, .loss_model_se = e.loss_se,
                               .loss_reference_se = mean_se(ref.window_loss, ref.n_windows), .loss_diff = e.loss_diff,
                               .loss_diff_se = e.loss_diff_se};
        evaluation_free(&e);
    }
    eval_reference_free(&ref);
    return rc;
}

typedef struct {
    SafeTensors expected;
    GPT model, reference;
    int T, n_windows, N, V;
    size_t n_ids;
    int32_t *ids;
} EvalFixture;

static void eval_fixture_load(EvalFixture *x) {
    memset(x, 0, sizeof *x);
    fixture_open(&x->expected, EVAL_EXPECTED);
    Vocab vf, vm;
    x->n_windows = (int)fixture_meta_number(&x->expected, "windows");
    if (gpt_load(&x->reference, &vf, SMALL_FLOAT, x->n_windows, NULL) != 0 ||
        gpt_load(&x->model, &vm, SMALL_QUANT, x->n_windows, NULL) != 0)
        fail_msg("%s", qc_last_error());
    x->T = x->model.config.ctx;
    x->V = x->model.config.vocab_size;
    assert_int_equal((int)fixture_meta_number(&x->expected, "T"), x->T);
    int rows, cols;
    fixture_shape(&x->expected, "ids", &rows, &cols);
    x->n_ids = (size_t)rows * cols;
    assert_int_equal((int)((x->n_ids - 1) / x->T), x->n_windows);
    x->N = x->n_windows * x->T;
    x->ids = fixture_ids(&x->expected, "ids", x->n_ids, x->V);
}

static void eval_fixture_free(EvalFixture *x) {
    st_free(&x->expected);
    gpt_free(&x->model);
    gpt_free(&x->reference);
    free(x->ids);
}

static double expected_scalar(const EvalFixture *x, const char *name) {
    float *v = fixture_floats(&x->expected, name, 1);
    double out = v[0];
    free(v);
    return out;
}

static int compare_against(const EvalFixture *x, const char *name, double got, double tol_rel) {
    double want = expected_scalar(x, name);
    return compare_scalar(name, got, want, tol_rel * fabs(want));
}

static int compare_all(const EvalFixture *x, const ReferenceEval *r) {
    int ok = 1;
    ok &= compare_against(x, "kl_mean", r->kl_mean, EVAL_REL_TOL);
    ok &= compare_against(x, "kl_se", r->kl_se, EVAL_REL_TOL);
    ok &= compare_against(x, "kl_p99", r->kl_p99, EVAL_REL_TOL);
    /* top-1: the same count of agreeing positions (the fixture stores the share as float32) */
    ok &= compare_scalar("top1_agree", r->top1_agree, expected_scalar(x, "top1_agree"), 0.5 / x->N);
    ok &= compare_against(x, "loss_model", r->loss_model, EVAL_REL_TOL);
    ok &= compare_against(x, "loss_reference", r->loss_reference, EVAL_REL_TOL);
    ok &= compare_against(x, "loss_model_se", r->loss_model_se, EVAL_REL_TOL);
    ok &= compare_against(x, "loss_reference_se", r->loss_reference_se, EVAL_REL_TOL);
    ok &= compare_against(x, "loss_diff", r->loss_diff, EVAL_REL_TOL);
    ok &= compare_against(x, "loss_diff_se", r->loss_diff_se, EVAL_REL_TOL);
    return ok;
}

/* numpy.percentile's default ('linear'): h = (N-1) p/100 over the sorted values. */
static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile_linear(const double *values, int n, double p) {
    double *sorted = malloc((size_t)n * sizeof(double));
    assert_non_null(sorted);
    memcpy(sorted, values, (size_t)n * sizeof(double));
    qsort(sorted, (size_t)n, sizeof(double), compare_doubles);
    double h = (n - 1) * p / 100.0;
    int lo = (int)floor(h);
    double out = lo + 1 < n ? sorted[lo] + (h - lo) * (sorted[lo + 1] - sorted[lo]) : sorted[lo];
    free(sorted);
    return out;
}

static int argmax_first(const float *z, int V) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > z[best]) best = v;
    return best;
}

static double standard_error(const double *x, int n) { return stats_std(x, n) / sqrt((double)n); }

/* The statistics from C's own pieces, as they exist today: both models' logits, per position
 * kl_forward_backward (correct.c) and crossentropy_forward_backward (ops.c), evaluate_loss per
 * window and over the whole sequence; the aggregation (means, standard errors, percentile,
 * argmax) written here from the fixture's definitions. Each per-position and per-window tensor
 * is compared too, so a disagreement points at its source. */
static void test_eval_statistics_from_cs_pieces(void **state) {
    (void)state;
    EvalFixture x;
    eval_fixture_load(&x);
    int N = x.N, V = x.V, T = x.T, n = x.n_windows;
    const int32_t *targets = x.ids + 1;
    gpt_forward(&x.model, x.ids, n, T, NULL);
    float *logits_model = copy_floats(x.model.logits, (size_t)N * V);
    gpt_forward(&x.reference, x.ids, n, T, NULL);
    const float *logits_reference = x.reference.logits;
    double *kl = malloc((size_t)N * sizeof(double)), *window_kl = calloc((size_t)n, sizeof(double));
    double *window_model = calloc((size_t)n, sizeof(double)), *window_reference = calloc((size_t)n, sizeof(double));
    double *window_diff = malloc((size_t)n * sizeof(double));
    float *kl_f = malloc((size_t)N * sizeof(float)), *loss_model_f = malloc((size_t)N * sizeof(float));
    float *loss_reference_f = malloc((size_t)N * sizeof(float)), *agree_f = malloc((size_t)N * sizeof(float));
    double agree = 0.0, kl_sum = 0.0, loss_model_sum = 0.0, loss_reference_sum = 0.0;
    for (int p = 0; p < N; p++) {
        const float *zm = logits_model + (size_t)p * V, *zr = logits_reference + (size_t)p * V;
        kl[p] = kl_forward_backward(NULL, zm, zr, 1, V, 0.0f);
        double lm = crossentropy_forward_backward(NULL, zm, targets + p, 1, V, 0.0f);
        double lr = crossentropy_forward_backward(NULL, zr, targets + p, 1, V, 0.0f);
        int same = argmax_first(zm, V) == argmax_first(zr, V);
        kl_f[p] = (float)kl[p];
        loss_model_f[p] = (float)lm;
        loss_reference_f[p] = (float)lr;
        agree_f[p] = (float)same;
        agree += same;
        kl_sum += kl[p];
        loss_model_sum += lm;
        loss_reference_sum += lr;
        window_kl[p / T] += kl[p] / T;
    }
    for (int i = 0; i < n; i++) {
        /* one window: ids[iT .. iT+T] */
        window_model[i] = evaluate_loss(&x.model, x.ids + (size_t)i * T, (size_t)T + 1, NULL);
        window_reference[i] = evaluate_loss(&x.reference, x.ids + (size_t)i * T, (size_t)T + 1, NULL);
        window_diff[i] = window_model[i] - window_reference[i];
    }
    int ok = 1;
    float *want = fixture_floats(&x.expected, "position.kl", (size_t)N);
    ok &= compare_floats("position.kl", kl_f, want, (size_t)N, FLOOR_FRACTION, EVAL_REL_TOL);
    free(want);
    want = fixture_floats(&x.expected, "position.loss_model", (size_t)N);
    ok &= compare_floats("position.loss_model", loss_model_f, want, (size_t)N, FLOOR_FRACTION, EVAL_REL_TOL);
    free(want);
    want = fixture_floats(&x.expected, "position.loss_reference", (size_t)N);
    ok &= compare_floats("position.loss_reference", loss_reference_f, want, (size_t)N, FLOOR_FRACTION, EVAL_REL_TOL);
    free(want);
    want = fixture_floats(&x.expected, "position.agree", (size_t)N);
    size_t flips = compare_exact("position.agree", agree_f, want, (size_t)N, NULL);
    printf("%-7s %-46s %zu of %d positions differ\n", flips ? "NOT OK" : "OK", "position.agree", flips, N);
    ok &= flips == 0;
    free(want);
    const char *window_names[] = {"window.loss_model", "window.loss_reference", "window.kl"};
    const double *window_values[] = {window_model, window_reference, window_kl};
    for (int k = 0; k < 3; k++) {
        float got[64];
        assert_true(n <= 64);
        for (int i = 0; i < n; i++) got[i] = (float)window_values[k][i];
        want = fixture_floats(&x.expected, window_names[k], (size_t)n);
        ok &= compare_floats(window_names[k], got, want, (size_t)n, FLOOR_FRACTION, EVAL_REL_TOL);
        free(want);
    }
    ReferenceEval r = {
        .kl_mean = kl_sum / N, .kl_se = standard_error(window_kl, n), .kl_p99 = percentile_linear(kl, N, 99.0),
        .top1_agree = agree / N, .loss_model = loss_model_sum / N, .loss_reference = loss_reference_sum / N,
        .loss_model_se = standard_error(window_model, n), .loss_reference_se = standard_error(window_reference, n),
        .loss_diff = loss_model_sum / N - loss_reference_sum / N, .loss_diff_se = standard_error(window_diff, n),
    };
    ok &= compare_all(&x, &r);
    /* evaluate_loss over the whole sequence batches the windows: the same mean loss */
    ok &= compare_against(&x, "loss_model", evaluate_loss(&x.model, x.ids, x.n_ids, NULL), EVAL_REL_TOL);
    ok &= compare_against(&x, "loss_reference", evaluate_loss(&x.reference, x.ids, x.n_ids, NULL), EVAL_REL_TOL);
    free(logits_model);
    free(kl);
    free(window_kl);
    free(window_model);
    free(window_reference);
    free(window_diff);
    free(kl_f);
    free(loss_model_f);
    free(loss_reference_f);
    free(agree_f);
    eval_fixture_free(&x);
    if (!ok) fail_msg("eval statistics differ from the reference beyond %g", EVAL_REL_TOL);
}

/* The library's own `eval --reference` against the same numbers. */
static void test_eval_reference(void **state) {
    (void)state;
    EvalFixture x;
    eval_fixture_load(&x);
    ReferenceEval r;
    if (library_eval_reference(&x.model, &x.reference, x.ids, x.n_ids, &r) != 0) fail_msg("%s", qc_last_error());
    int ok = compare_all(&x, &r);
    eval_fixture_free(&x);
    if (!ok) fail_msg("eval --reference differs from the reference beyond %g", EVAL_REL_TOL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_statistics_from_cs_pieces),
        cmocka_unit_test(test_eval_reference),
    };
    return cmocka_run_group_tests_name("parity_eval", tests, setup_one_thread, restore_threads);
}
