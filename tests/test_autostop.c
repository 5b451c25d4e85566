/* test_autostop: --steps auto (experiment.h, AutoStop) — the held-out windows drawn beyond the
 * calibration budget, training that never reads the validation split (its pages are unreadable while it
 * runs), the best held-out parameters returned, a flat objective stopped after `patience`
 * measurements (a tenth of the rate first under the plateau schedule), a falling one run to the
 * cap, and lstsq as a start. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "correct/correct.h"
#include "correct/experiment.h"
#include "nn/data.h"
#include "quant/quant.h"

static void small_corpus(Corpus *c) {
    const char *path = write_test_corpus("autostop.txt", 6000, "abcdefgh ,.\n", 501);
    assert_int_equal(corpus_load(c, path, NULL), 0);
}

static void auto_options(CorrectOptions *o, Objective objective) {
    correct_options_default(o);
    o->objective = objective;
    o->steps = STEPS_AUTO;
    o->batch = 4;
    o->calib_tokens = 2048;
    o->quiet = 1;
    o->lr = 1e-2f;
    auto_stop_default(&o->autostop);
    o->autostop.max_steps = 200;
    o->autostop.eval_every = 5;
    o->autostop.patience = 3;
}

/* A quantized model and its float model: a 2-bit model of a small trained-looking GPT. */
static void quantized_pair(GPT *f, GPT *q, const Corpus *corpus, int bits, uint64_t seed) {
    corpus_model(f, corpus, 2, 8, seed);
    assert_int_equal(gpt_clone(q, f, 8), 0);
    QuantScheme s;
    quant_scheme_default(&s, bits);
    assert_int_equal(quantize_model(q, &s, NULL, NULL), 0);
}

/* The held-out windows: their count as asked (rounded, at least one), drawn after the budget's
 * windows, so the fitted ones are exactly a fixed-steps run's; fixed steps draw the budget alone. */
static void test_heldout_windows(void **state) {
    (void)state;
    assert_int_equal(heldout_window_count(64, 0.125), 8);
    assert_int_equal(heldout_window_count(10, 0.01), 1);
    assert_int_equal(heldout_window_count(3, 0.9), 3);
    assert_int_equal(calibration_draw_tokens(1000, 16, 0, 0.125), 1000);
    assert_int_equal(calibration_draw_tokens(1000, 16, 1, 0.125), (63 + 8) * 16); /* 63 windows cover 1000 */
    Corpus corpus;
    small_corpus(&corpus);
    int n = 0, m = 0;
    int64_t *fixed = calibration_windows(&corpus, 1000, 16, 5, &n), *autos = calibration_windows(&corpus, calibration_draw_tokens(1000, 16, 1, 0.125), 16, 5, &m);
    assert_non_null(fixed);
    assert_non_null(autos);
    assert_int_equal(n, 63);
    assert_int_equal(m, 71);
    assert_memory_equal(fixed, autos, (size_t)n * sizeof(int64_t));
    int differs = 0; /* the held-out windows are new draws, not copies of the fitted ones */
    for (int i = n; i < m; i++) differs += autos[i] != autos[i - n];
    assert_true(differs > 0);
    free(fixed);
    free(autos);
    corpus_free(&corpus);
}

/* The validation split is never read: the corpus's ids are moved so that the validation part
 * starts a page, and those pages are made unreadable while every objective, with and without a
 * prefix cache and with lstsq as the start, trains by --steps auto. A read faults the test. */
static void test_never_reads_validation(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    quantized_pair(&f, &q, &corpus, 2, 511); /* reads only the vocabulary */
    GuardedSplit guard;
    unreadable_validation(&corpus, &guard);
    for (int objective = OBJECTIVE_CE; objective <= OBJECTIVE_MSE; objective++)
        for (int hidden = 0; hidden <= 8; hidden += 8) {
            Corrections c;
            assert_int_equal(stream_corrections(&c, &q.config, 1, hidden, 8 * 16, 512), 0);
            CorrectOptions o;
            auto_options(&o, (Objective)objective);
            o.autostop.max_steps = 30;
            TrainSummary s;
            if (correction_fit(&q, &f, &c, &corpus, &o, &s) != 0) fail_msg("%s: %s", objective_name(objective), qc_last_error());
            assert_true(s.steps_run > 0 && isfinite(s.heldout_objective));
            corrections_free(&c);
        }
    /* the ce objective through a prefix cache of the calibration windows, and lstsq first */
    Corrections c;
    CorrectOptions o;
    auto_options(&o, OBJECTIVE_CE);
    o.autostop.max_steps = 30;
    int n_windows = 0; /* the cache holds the fitted and the held-out windows */
    int64_t *starts = calibration_windows(&corpus, calibration_draw_tokens(o.calib_tokens, q.config.ctx, 1, o.autostop.heldout_share),
                                          q.config.ctx, o.seed, &n_windows);
    assert_non_null(starts);
    assert_int_equal(stream_corrections(&c, &q.config, 2, 0, 8 * 16, 513), 0); /* its first site after block 1 */
    StreamCache cache = {0};
    assert_int_equal(gpt_enable_backward(&q), 0);
    assert_int_equal(stream_cache_build(&cache, &q, corpus.ids, starts, n_windows, corrections_frozen_prefix(&c)), 0);
    o.calib_cache = &cache;
    TrainSummary s;
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
    o.calib_cache = NULL;
    corrections_free(&c);
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 8 * 16, 514), 0);
    assert_int_equal(correction_lstsq(&q, &f, &c, &corpus, &o), 0);
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
    corrections_free(&c);
    stream_cache_free(&cache);
    free(starts);
    readable_validation(&corpus, &guard);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* The held-out objective of c over the held-out windows (those drawn after the budget's), one
 * window at a time. */
static double heldout_ce(GPT *q, Corrections *c, const Corpus *corpus, const CorrectOptions *o) {
    int T = q->config.ctx, n_windows = 0, n_fit = (int)((o->calib_tokens + T - 1) / T);
    int64_t *starts = calibration_windows(corpus, calibration_draw_tokens(o->calib_tokens, T, 1, o->autostop.heldout_share), T,
                                          o->seed, &n_windows);
    assert_non_null(starts);
    double sum = 0;
    for (int i = n_fit; i < n_windows; i++) {
        const int32_t *w = corpus->ids + starts[i];
        assert_int_equal(gpt_forward(q, w, 1, T, &c->hook), 0);
        sum += gpt_loss(q, w + 1);
    }
    free(starts);
    return sum / (n_windows - n_fit);
}

/* The rows of a held-out log (its header checked): each measurement's step and objective. */
enum { LOG_ROWS = 512 };
static int read_heldout_log(const char *path, int *steps, double *h) {
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[256];
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "step,heldout_objective,lr,best\n");
    int rows = 0;
    double lr, best;
    while (rows < LOG_ROWS && fscanf(fp, "%d,%lf,%lf,%lf\n", &steps[rows], &h[rows], &lr, &best) == 4) rows++;
    fclose(fp);
    return rows;
}

/* Training that overfits (a high rate on few windows) passes its best held-out point: the
 * corrections returned are those of the lowest measurement of the held-out log, not the last. */
static double returns_best_parameters(double ema) {
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    quantized_pair(&f, &q, &corpus, 2, 521);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 8, 8 * 16, 522), 0);
    CorrectOptions o;
    auto_options(&o, OBJECTIVE_CE);
    o.lr = 0.05f;
    o.calib_tokens = 256; /* 16 windows fitted, 2 more held out */
    o.autostop.max_steps = 400;
    o.autostop.heldout_share = 0.125;
    o.autostop.schedule = SCHEDULE_COSINE;
    o.autostop.ema = ema;
    char log[4096];
    snprintf(log, sizeof log, "%s/autostop.heldout.csv", test_tmpdir());
    o.heldout_log_path = log;
    TrainSummary s;
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
    int steps[LOG_ROWS], best_step = -1, last = -1;
    double hs[LOG_ROWS], lowest = INFINITY;
    int rows = read_heldout_log(log, steps, hs);
    for (int i = 0; i < rows; i++) {
        if (hs[i] < lowest) lowest = hs[i], best_step = steps[i];
        last = steps[i];
    }
    assert_true(rows >= 2);
    assert_int_equal(last, s.steps_run);
    assert_int_equal(best_step, s.best_step);
    if (!(s.best_step < s.steps_run)) fail_msg("best step %d is the last (%d): this case tests nothing", s.best_step, s.steps_run);
    double now = heldout_ce(&q, &c, &corpus, &o);
    if (!(fabs(now - s.heldout_objective) <= 1e-5 * s.heldout_objective))
        fail_msg("the corrections returned give held-out %.9g; the best measured was %.9g at step %d", now, s.heldout_objective, s.best_step);
    assert_true(fabs(lowest - s.heldout_objective) <= 1e-6 * lowest); /* the log's 6 decimals */
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
    return s.heldout_objective;
}
/* with the running average (the default) and with the last step's parameters */
static void test_returns_best_parameters(void **state) {
    (void)state;
    double averaged = returns_best_parameters(0.99), last = returns_best_parameters(0.0);
    /* the average is what was measured and kept: another objective than the last step's */
    if (!(fabs(averaged - last) > 1e-6 * last)) fail_msg("held-out %.9g with the average, %.9g without: the average changed nothing", averaged, last);
}

/* A flat objective (rate 0: the corrections never move) improves at no measurement: the cosine
 * schedule stops after exactly `patience` measurements past the first, the plateau schedule after
 * twice that (one plateau at the full rate, one at a tenth), and the start is what is kept. */
static void test_flat_objective_stops_after_patience(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    quantized_pair(&f, &q, &corpus, 2, 531);
    for (int schedule = SCHEDULE_PLATEAU; schedule <= SCHEDULE_COSINE; schedule++) {
        Corrections c;
        assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 8 * 16, 532), 0);
        CorrectOptions o;
        auto_options(&o, OBJECTIVE_CE);
        o.lr = 0.0f;
        o.autostop.schedule = (AutoSchedule)schedule;
        TrainSummary s;
        assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
        int expect = o.autostop.eval_every * o.autostop.patience * (schedule == SCHEDULE_PLATEAU ? 2 : 1);
        if (s.steps_run != expect) fail_msg("%s: stopped after %d steps, expected %d", schedule_name((AutoSchedule)schedule), s.steps_run, expect);
        assert_int_equal(s.stopped_by, STOPPED_PLATEAU);
        assert_int_equal(s.best_step, 0);
        corrections_free(&c);
    }
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* A steadily falling objective (early training at a fair rate, every measurement lower than the
 * last, checked from the log) runs to the cap, and the cap's parameters are kept. */
static void test_falling_objective_runs_to_cap(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    quantized_pair(&f, &q, &corpus, 2, 541);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 8 * 16, 542), 0);
    CorrectOptions o;
    auto_options(&o, OBJECTIVE_CE);
    o.lr = 3e-3f;
    o.autostop.max_steps = 40;
    o.autostop.eval_every = 5;
    o.autostop.patience = 1; /* a single measurement without improvement would stop it */
    o.autostop.schedule = SCHEDULE_COSINE;
    char log[4096];
    snprintf(log, sizeof log, "%s/autostop.falling.csv", test_tmpdir());
    o.heldout_log_path = log;
    TrainSummary s;
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
    int steps[LOG_ROWS];
    double hs[LOG_ROWS];
    int rows = read_heldout_log(log, steps, hs);
    for (int i = 1; i < rows; i++)
        if (!(hs[i] < hs[i - 1]))
            fail_msg("held-out objective %.6f at step %d is not below %.6f: not a falling case", hs[i], steps[i], hs[i - 1]);
    assert_int_equal(rows, 40 / 5 + 1);
    assert_int_equal(s.stopped_by, STOPPED_CAP);
    assert_int_equal(s.steps_run, 40);
    assert_int_equal(s.best_step, 40);
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* Measuring is read-only: the training steps (their objectives, rates and gradient norms in the
 * step log) are the same bytes whether the held-out windows are measured every 3 steps or every
 * 40, with and without the parameter average. */
static void test_measuring_leaves_training_alone(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    quantized_pair(&f, &q, &corpus, 2, 561);
    char logs[2][4096];
    for (int ema = 0; ema <= 1; ema++) {
        for (int k = 0; k < 2; k++) {
            Corrections c;
            assert_int_equal(stream_corrections(&c, &q.config, 1, 8, 8 * 16, 562), 0);
            CorrectOptions o;
            auto_options(&o, OBJECTIVE_CE);
            o.autostop.max_steps = 40;
            o.autostop.eval_every = k == 0 ? 3 : 40;
            o.autostop.patience = 1000;
            o.autostop.schedule = SCHEDULE_COSINE;
            o.autostop.ema = ema ? 0.9 : 0.0;
            snprintf(logs[k], sizeof logs[k], "%s/autostop.steps%d.csv", test_tmpdir(), k);
            o.log_path = logs[k];
            TrainSummary s;
            assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
            assert_int_equal(s.steps_run, 40);
            corrections_free(&c);
        }
        if (!same_file_bytes(logs[0], logs[1])) fail_msg("ema %d: the step logs differ with the measurement interval", ema);
    }
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* Fixed steps are what they were: no held-out windows, the last parameters, stopped "fixed";
 * --steps auto trains on a budget of one window (one more held out) and refuses a held-out share
 * out of range. */
static void test_fixed_steps_and_refusals(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    quantized_pair(&f, &q, &corpus, 2, 551);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 8 * 16, 552), 0);
    CorrectOptions o;
    auto_options(&o, OBJECTIVE_CE);
    o.steps = 7;
    TrainSummary s;
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
    assert_int_equal(s.steps_run, 7);
    assert_int_equal(s.best_step, 7);
    assert_int_equal(s.stopped_by, STOPPED_FIXED);
    assert_true(isnan(s.heldout_objective) && isfinite(s.objective));
    corrections_free(&c);
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 8 * 16, 553), 0);
    auto_options(&o, OBJECTIVE_CE);
    o.calib_tokens = 10; /* one window fitted, one more held out: enough */
    o.autostop.max_steps = 5;
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
    assert_true(isfinite(s.heldout_objective));
    o.autostop.heldout_share = 1.5;
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), -1);
    assert_non_null(strstr(qc_last_error(), "out of range"));
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heldout_windows),
        cmocka_unit_test(test_never_reads_validation),
        cmocka_unit_test(test_returns_best_parameters),
        cmocka_unit_test(test_flat_objective_stops_after_patience),
        cmocka_unit_test(test_falling_objective_runs_to_cap),
        cmocka_unit_test(test_measuring_leaves_training_alone),
        cmocka_unit_test(test_fixed_steps_and_refusals),
    };
    return cmocka_run_group_tests_name("autostop", tests, setup_one_thread, restore_threads);
}
