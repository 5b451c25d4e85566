/* test_combine: combinations (issue 22 item 5), a method that tunes the base followed by one that
 * adds corrections ("lwc+train"): the parse and its refusals; run_correction of a combination is
 * the first method's tune_fit then the second's run_correction on the tuned model, bit for bit;
 * each stage's steps as the README says; the correction's bits on top of the quantized model's;
 * the validation split unreadable all along. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "correct/budget.h"
#include "correct/experiment.h"
#include "correct/tune.h"
#include "quant/quant.h"

static void test_parse(void **state) {
    (void)state;
    CorrectOptions o;
    correct_options_default(&o);
    assert_int_equal(correct_method_parse("lwc", &o), 0);
    assert_true(o.method == METHOD_LWC && !o.with_first);
    assert_int_equal(correct_method_parse("adaround+lowrank", &o), 0);
    assert_true(o.with_first && o.first == METHOD_ADAROUND && o.method == METHOD_LOWRANK);
    char label[64];
    correct_method_label(&o, label, sizeof label);
    assert_string_equal(label, "adaround+lowrank");
    assert_int_equal(correct_method_parse("lwc", &o), 0); /* a single method clears the first */
    assert_false(o.with_first);
    const char *bad[] = {"train+lwc", "lwc+qat", "lwc+none", "foo+train", "lwc+", "+train", "lwc+train+bias", "frob"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (correct_method_parse(bad[i], &o) == 0) fail_msg("'%s' was accepted", bad[i]);
        if (!strstr(qc_last_error(), bad[i])) fail_msg("'%s' refused without naming it: %s", bad[i], qc_last_error());
    }
}

static void setup_options(CorrectOptions *o, const char *method, const QuantScheme *s, int steps) {
    correct_options_default(o);
    assert_int_equal(correct_method_parse(method, o), 0);
    o->scheme = s;
    o->steps = steps;
    o->batch = 4;
    o->calib_tokens = 2048;
    o->lr = 1e-2f;
    o->quiet = 1;
}

/* lwc+train and normtweak+lowrank: the same model, corrections and loss as the two stages run by
 * hand; the first stage's steps run; corrections stored; the base moved. */
static void test_two_stages(void **state) {
    (void)state;
    Corpus corpus;
    const char *path = write_test_corpus("combine.txt", 6000, "abcdefgh ,.\n", 811);
    assert_int_equal(corpus_load(&corpus, path, NULL), 0);
    const char *methods[] = {"lwc+train", "normtweak+lowrank"};
    for (int k = 0; k < 2; k++) {
        QuantScheme s;
        quant_scheme_default(&s, 2);
        GPT f, q, q2;
        corpus_model(&f, &corpus, 2, 8, 90 + k);
        assert_int_equal(gpt_clone(&q, &f, 8), 0);
        assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
        assert_int_equal(gpt_clone(&q2, &q, 8), 0);
        float *start = copy_floats(q.params, q.num_params);
        CorrectOptions o;
        setup_options(&o, methods[k], &s, 12);
        Corrections c, c2;
        CorrectionResult res, res2;
        /* by hand: the first method alone, then the second alone on the tuned model */
        CorrectOptions first = o, second = o;
        first.with_first = second.with_first = 0;
        first.method = o.first;
        if (method_info[o.method].solves) second.steps = 0;
        Corrections none;
        CorrectionLayout bare = {.kind = KIND_NONE, .every = 1};
        assert_int_equal(corrections_init(&none, &q2.config, &bare, q2.max_batch * q2.config.ctx, o.seed), 0);
        TrainSummary ts;
        if (tune_fit(&q2, &f, &none, &corpus, &first, &ts) != 0) fail_msg("%s", qc_last_error());
        corrections_free(&none);
        assert_int_equal(ts.steps_run, 12);
        if (run_correction(&q2, &f, &corpus, &second, NULL, NULL, &c2, &res2) != 0) fail_msg("%s", qc_last_error());
        if (run_correction(&q, &f, &corpus, &o, NULL, NULL, &c, &res) != 0) fail_msg("%s: %s", methods[k], qc_last_error());
        assert_memory_equal(q.params, q2.params, q.num_params * sizeof(float));
        assert_int_equal(c.n_sites, c2.n_sites);
        assert_true(c.n_sites > 0 && corrections_storage_bits(&c) > 0.0);
        assert_true(corrections_storage_bits(&c) == corrections_storage_bits(&c2));
        assert_true(res.eval.loss == res2.eval.loss);
        assert_int_equal(res.first.steps_run, 12);
        assert_int_equal(res.train.steps_run, res2.train.steps_run);
        assert_true(memcmp(q.params, start, q.num_params * sizeof(float)) != 0); /* the first stage moved the base */
        evaluation_free(&res.eval);
        evaluation_free(&res2.eval);
        corrections_free(&c);
        corrections_free(&c2);
        free(start);
        gpt_free(&q);
        gpt_free(&q2);
        gpt_free(&f);
    }
    corpus_free(&corpus);
}

/* The fits of a combination never read the validation split: both stages, as run_correction runs
 * them (--steps auto, so each draws its held-out windows), with the split unreadable. */
static void test_fits_never_read_validation(void **state) {
    (void)state;
    Corpus corpus;
    const char *path = write_test_corpus("combine2.txt", 6000, "abcdefgh ,.\n", 812);
    assert_int_equal(corpus_load(&corpus, path, NULL), 0);
    QuantScheme s;
    quant_scheme_default(&s, 3);
    GPT f, q;
    corpus_model(&f, &corpus, 2, 8, 93);
    assert_int_equal(gpt_clone(&q, &f, 8), 0);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    CorrectOptions o;
    setup_options(&o, "scales+train", &s, STEPS_AUTO);
    auto_stop_default(&o.autostop);
    o.autostop.max_steps = 20;
    o.autostop.eval_every = 5;
    o.autostop.patience = 2;
    Corrections none, c;
    CorrectionLayout bare = {.kind = KIND_NONE, .every = 1};
    assert_int_equal(corrections_init(&none, &q.config, &bare, q.max_batch * q.config.ctx, o.seed), 0);
    GuardedSplit guard;
    unreadable_validation(&corpus, &guard);
    CorrectOptions first = o;
    first.with_first = 0;
    first.method = o.first;
    TrainSummary ts;
    if (tune_fit(&q, &f, &none, &corpus, &first, &ts) != 0) fail_msg("%s", qc_last_error());
    assert_true(ts.steps_run > 0 && isfinite(ts.heldout_objective));
    CorrectOptions second = o;
    second.with_first = 0;
    CorrectionLayout layout = {.kind = KIND_LINEAR, .every = 1};
    assert_int_equal(corrections_init(&c, &q.config, &layout, q.max_batch * q.config.ctx, o.seed), 0);
    if (correction_fit(&q, &f, &c, &corpus, &second, &ts) != 0) fail_msg("%s", qc_last_error());
    assert_true(ts.steps_run > 0);
    readable_validation(&corpus, &guard);
    corrections_free(&c);
    corrections_free(&none);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* The option rules reach both stages: a grid-tuning first method at 32 bits, the mse objective
 * for a first that tunes, --steps for a combination where neither stage takes steps. */
static void test_refusals(void **state) {
    (void)state;
    QuantScheme s;
    quant_scheme_default(&s, 2);
    CorrectOptions o;
    setup_options(&o, "lwc+train", &s, 10);
    assert_int_equal(correct_options_check(&o, &s), 0);
    QuantScheme fl = s;
    fl.bits = 32;
    assert_int_equal(correct_options_check(&o, &fl), -1);
    assert_non_null(strstr(qc_last_error(), "lwc"));
    o.objective = OBJECTIVE_MSE;
    assert_int_equal(correct_options_check(&o, &s), -1);
    assert_non_null(strstr(qc_last_error(), "mse"));
    setup_options(&o, "adaround+lstsq", &s, 0);
    assert_int_equal(correct_options_check(&o, &s), 0);
    o.steps = 10;
    assert_int_equal(correct_options_check(&o, &s), -1);
    assert_non_null(strstr(qc_last_error(), "--steps"));
    setup_options(&o, "lwc+lstsq", &s, 10); /* lwc's steps; lstsq solves */
    assert_int_equal(correct_options_check(&o, &s), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_two_stages),
        cmocka_unit_test(test_fits_never_read_validation),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests_name("combine", tests, setup_one_thread, restore_threads);
}
