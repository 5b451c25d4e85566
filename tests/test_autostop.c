/* test_autostop: --steps auto (experiment.h, AutoStop) — the held-out split of the calibration
 * windows, training that never reads the validation split (its pages are unreadable while it
 * runs), the best held-out parameters returned, a flat objective stopped after `patience`
 * measurements (a tenth of the rate first under the plateau schedule), a falling one run to the
 * cap, and lstsq as a start. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/correct.h"
#include "../src/data.h"
#include "../src/experiment.h"
#include "../src/quant.h"
#include "../src/util.h"

static void corpus_model(GPT *m, const Corpus *corpus, int L, int max_batch, uint64_t seed) {
    GPTConfig cfg = {.vocab_size = corpus->vocab.size, .ctx = 16, .d_model = 16, .n_layer = L, .n_head = 2};
    assert_int_equal(gpt_init(m, &cfg, max_batch), 0);
    gpt_init_weights(m, seed);
    for (size_t i = 0; i < m->num_params; i++) m->params[i] *= 5.0f;
}

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

/* The split: disjoint, covering every window, each part ascending, its share as asked (rounded,
 * at least one window each side), the same for the same seed and another for another seed. */
static void test_split(void **state) {
    (void)state;
    int n_held = 0, n_held2 = 0;
    int *a = calibration_split(64, 0.125, 7, &n_held);
    assert_non_null(a);
    assert_int_equal(n_held, 8);
    unsigned char seen[64] = {0};
    for (int i = 0; i < 64; i++) {
        assert_true(a[i] >= 0 && a[i] < 64);
        assert_int_equal(seen[a[i]], 0);
        seen[a[i]] = 1;
        if (i != 0 && i != 64 - n_held) assert_true(a[i] > a[i - 1]);
    }
    int *b = calibration_split(64, 0.125, 7, &n_held2), *c = calibration_split(64, 0.125, 8, &n_held2);
    assert_memory_equal(a, b, 64 * sizeof(int));
    assert_true(memcmp(a, c, 64 * sizeof(int)) != 0);
    free(a);
    free(b);
    free(c);
    a = calibration_split(2, 0.9, 1, &n_held); /* one window each side, whatever the share */
    assert_int_equal(n_held, 1);
    free(a);
    a = calibration_split(10, 0.01, 1, &n_held);
    assert_int_equal(n_held, 1);
    free(a);
    assert_null(calibration_split(1, 0.5, 1, &n_held)); /* nothing to hold out */
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
    int n_windows = 0;
    int64_t *starts = calibration_windows(&corpus, o.calib_tokens, q.config.ctx, o.seed, &n_windows);
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

/* The held-out objective of c over the split's held-out windows, one window at a time. */
static double heldout_ce(GPT *q, Corrections *c, const Corpus *corpus, const CorrectOptions *o) {
    int T = q->config.ctx, n_windows = 0, n_held = 0;
    int64_t *starts = calibration_windows(corpus, o->calib_tokens, T, o->seed, &n_windows);
    int *split = calibration_split(n_windows, o->autostop.heldout_share, o->seed, &n_held);
    double sum = 0;
    for (int i = n_windows - n_held; i < n_windows; i++) {
        const int32_t *w = corpus->ids + starts[split[i]];
        assert_int_equal(gpt_forward(q, w, 1, T, &c->hook), 0);
        sum += gpt_loss(q, w + 1);
    }
    free(starts);
    free(split);
    return sum / n_held;
}

/* Training that overfits (a high rate on few windows) passes its best held-out point: the
 * corrections returned are those of the lowest measurement of the held-out log, not the last. */
static void test_returns_best_parameters(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    quantized_pair(&f, &q, &corpus, 2, 521);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 8, 8 * 16, 522), 0);
    CorrectOptions o;
    auto_options(&o, OBJECTIVE_CE);
    o.lr = 0.05f;
    o.calib_tokens = 256; /* 16 windows: 14 fitted, 2 held out */
    o.autostop.max_steps = 400;
    o.autostop.heldout_share = 0.125;
    o.autostop.schedule = SCHEDULE_COSINE;
    char log[4096];
    snprintf(log, sizeof log, "%s/autostop.heldout.csv", test_tmpdir());
    o.heldout_log_path = log;
    TrainSummary s;
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), 0);
    FILE *fp = fopen(log, "r");
    assert_non_null(fp);
    char line[256];
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "step,heldout_objective,lr,best\n");
    int step, best_step = -1, last = -1, rows = 0;
    double h, lr, best_seen, lowest = INFINITY;
    while (fscanf(fp, "%d,%lf,%lf,%lf\n", &step, &h, &lr, &best_seen) == 4) {
        if (h < lowest) lowest = h, best_step = step;
        last = step;
        rows++;
    }
    fclose(fp);
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
    FILE *fp = fopen(log, "r");
    assert_non_null(fp);
    char line[256];
    assert_non_null(fgets(line, sizeof line, fp));
    int step, rows = 0;
    double h, lr, best, prev = INFINITY;
    while (fscanf(fp, "%d,%lf,%lf,%lf\n", &step, &h, &lr, &best) == 4) {
        if (!(h < prev)) fail_msg("held-out objective %.6f at step %d is not below %.6f: not a falling case", h, step, prev);
        prev = h;
        rows++;
    }
    fclose(fp);
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
        size_t na, nb;
        uint8_t *a = read_file(logs[0], &na), *b = read_file(logs[1], &nb);
        assert_non_null(a);
        assert_non_null(b);
        if (na != nb || memcmp(a, b, na) != 0) fail_msg("ema %d: the step logs differ with the measurement interval", ema);
        free(a);
        free(b);
    }
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* Fixed steps are what they were: no split (every window fitted), the last parameters, stopped
 * "fixed"; and --steps auto refuses a calibration set of one window. */
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
    o.calib_tokens = 10; /* one window */
    assert_int_equal(correction_fit(&q, &f, &c, &corpus, &o, &s), -1);
    assert_non_null(strstr(qc_last_error(), "too few"));
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_never_reads_validation),
        cmocka_unit_test(test_returns_best_parameters),
        cmocka_unit_test(test_flat_objective_stops_after_patience),
        cmocka_unit_test(test_falling_objective_runs_to_cap),
        cmocka_unit_test(test_measuring_leaves_training_alone),
        cmocka_unit_test(test_fixed_steps_and_refusals),
    };
    return cmocka_run_group_tests_name("autostop", tests, setup_one_thread, restore_threads);
}
