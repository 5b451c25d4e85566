/* test_sweep: the sweep library without running a sweep — the plan (the one cost model of the dry
 * run and the ETA) against counts and token sums worked out here from the grid; the schema's
 * summary columns and record checks. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sweep/parts.h" /* plan_expected_steps */
#include "sweep/sweep.h"
#include "tables/schema.h"

/* ============================ plan ============================ */

/* The quick preset with every {1, 2} on 2 layers: per bit width (2, 4 and the control arm 32)
 * the runs of every 1 read a cache after block 0 and those of every 2 one after block 1. */
static void test_plan_counts_and_tokens(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(&cfg, &n_runs, &n_groups);
    assert_non_null(runs);
    assert_int_equal(n_runs, 12);
    const double eval = 1000.0 * cfg.ctx;
    SweepSizePlan plan;
    sweep_plan(&cfg, runs, n_runs, NULL, 1, 1, eval, &plan);
    assert_int_equal(plan.float_models, 1);
    assert_int_equal(plan.quant_models, 2);
    assert_int_equal(plan.prefix_caches, 6);
    assert_int_equal(plan.runs, 12);
    double train = 400.0 * 32 * 64, calib = 32768;
    /* evaluations: the float model, two quantized ones, each run above its site (every 1: half the
     * blocks, every 2: none); caches: the prefix below the site of every 1 (half), of every 2 (all) */
    double forward = eval + 2 * eval + 6 * (eval * 0.5) + 3 * ((eval + calib) * 0.5 + (eval + calib) * 1.0);
    double correct = 6 * (60.0 * 16 * 64 * 0.5);
    assert_close(plan.work.train, train, 0);
    assert_close(plan.work.forward, forward, 1e-9 * forward);
    assert_close(plan.work.correct, correct, 1e-9 * correct);
    free(runs);
}

/* --steps auto's expected steps: the measured mean of its width's row (the nearest width's for
 * others), by kind, never above the cap; fixed steps are what they say. */
static void test_auto_steps_by_width(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "seed243"), 0);
    assert_int_equal(cfg.n_sizes, 3);
    SweepRun r = {.steps = STEPS_AUTO, .size_index = 0, .hidden = 0};
    assert_close(plan_expected_steps(&cfg, &r), 1069, 0);
    r.hidden = 32;
    assert_close(plan_expected_steps(&cfg, &r), 1265, 0);
    r.size_index = 1;
    assert_close(plan_expected_steps(&cfg, &r), 1022, 0);
    r.size_index = 2;
    assert_close(plan_expected_steps(&cfg, &r), 1672, 0);
    r.hidden = 0;
    assert_close(plan_expected_steps(&cfg, &r), 889, 0);
    cfg.sizes[0].d_model = 100; /* nearer 128 than 64 */
    r.size_index = 0;
    assert_close(plan_expected_steps(&cfg, &r), 738, 0);
    cfg.autostop.max_steps = 800;
    r.size_index = 2;
    r.hidden = 64;
    assert_close(plan_expected_steps(&cfg, &r), 800, 0);
    r.steps = 60;
    assert_close(plan_expected_steps(&cfg, &r), 60, 0);
}

/* Finished runs drop out with the shared work they alone needed; shards partition the plan. */
static void test_plan_skips_done_and_splits_shards(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    int seeds[2] = {1, 2};
    memcpy(cfg.seeds, seeds, sizeof seeds);
    cfg.n_seeds = 2;
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(&cfg, &n_runs, &n_groups);
    assert_non_null(runs);
    assert_int_equal(n_groups, 2);
    int *done = calloc((size_t)n_runs, sizeof(int));
    assert_non_null(done);
    /* seed 1 finished; of seed 2, every run at 2 bits finished */
    for (int i = 0; i < n_runs; i++) done[i] = runs[i].seed == 1 || runs[i].bits == 2;
    SweepSizePlan plan;
    sweep_plan(&cfg, runs, n_runs, done, 1, 1, 1e5, &plan);
    assert_int_equal(plan.float_models, 1);
    assert_int_equal(plan.quant_models, 1); /* 4 bits only */
    assert_int_equal(plan.prefix_caches, 4); /* 4 and 32 bits, two first sites each */
    assert_int_equal(plan.runs, 8);
    SweepSizePlan all, one, two;
    sweep_plan(&cfg, runs, n_runs, NULL, 1, 1, 1e5, &all);
    sweep_plan(&cfg, runs, n_runs, NULL, 1, 2, 1e5, &one);
    sweep_plan(&cfg, runs, n_runs, NULL, 2, 2, 1e5, &two);
    assert_int_equal(one.float_models + two.float_models, all.float_models);
    assert_int_equal(one.runs + two.runs, all.runs);
    assert_int_equal(one.runs, 12);
    assert_close(one.work.forward + two.work.forward, all.work.forward, 1e-9 * all.work.forward);
    assert_close(one.work.correct + two.work.correct, all.work.correct, 1e-9 * all.work.correct);
    free(done);
    free(runs);
}

/* The ETA's weights: a training token costs three forward tokens, a correction token two. */
static void test_flops_per_token(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    SweepWork w = sweep_flops_per_token(&cfg, 0);
    double d = 64, forward = 2 * (12 * d * d + 2 * 64 * d) + 65 * d;
    assert_close(w.forward, forward, 0);
    assert_close(w.train, 3 * forward, 0);
    assert_close(w.correct, 2 * forward, 0);
    assert_close(sweep_work_cost((SweepWork){1, 2, 3}, (SweepWork){10, 100, 1000}), 3210, 0);
}

/* ============================ grid ============================ */

/* A value twice in a grid file would run every one of its runs twice (two records under one id,
 * rows repeated): refused as the list flags refuse it, naming the file, the key and the value. */
static void test_grid_file_refuses_repeated_values(void **state) {
    (void)state;
    const struct { const char *text, *key, *value; } cases[] = {
        {"{\"bits\": [4, 4]}", "bits", "4"},
        {"{\"seeds\": [1, 2, 1]}", "seeds", "1"},
        {"{\"every\": [2, 2]}", "every", "2"},
        {"{\"hidden\": [0, 32, 0]}", "hidden", "0"},
        {"{\"sizes\": [\"64x2\", \"64x2:9\"]}", "sizes", "64x2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        SweepConfig cfg;
        assert_int_equal(sweep_preset(&cfg, "quick"), 0);
        qc_clear_error();
        if (sweep_parse_grid(&cfg, cases[i].text, strlen(cases[i].text), "grid.json") == 0)
            fail_msg("%s: accepted a value twice", cases[i].text);
        const char *msg = qc_last_error();
        if (!strstr(msg, "grid.json") || !strstr(msg, cases[i].key) || !strstr(msg, cases[i].value) || !strstr(msg, "twice"))
            fail_msg("%s: the message '%s' does not name the file, \"%s\" and %s twice", cases[i].text, msg, cases[i].key,
                     cases[i].value);
    }
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    const char *fine = "{\"bits\": [2, 4, 8], \"seeds\": [1, 2]}";
    if (sweep_parse_grid(&cfg, fine, strlen(fine), "grid.json") != 0) fail_msg("%s", qc_last_error());
    assert_int_equal(cfg.n_bits, 3);
}

/* A size named without :STEPS keeps the preset's float budget for it: `--preset seed243 --sizes
 * 128x4` trained 128x4 for the preset's default 1500 steps instead of seed243's 800 (a different
 * float model than the grid's, silently). A size the preset lacks takes the default. */
static void test_sizes_keep_preset_budgets(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "seed243"), 0);
    const char *text = "{\"sizes\": [\"128x4\", \"256x6:50\", \"96x3\", \"64x2\"]}";
    if (sweep_parse_grid(&cfg, text, strlen(text), "grid.json") != 0) fail_msg("%s", qc_last_error());
    assert_int_equal(cfg.n_sizes, 4);
    assert_int_equal(SIZE_TRAIN_STEPS(&cfg, 0), 800);
    assert_int_equal(SIZE_TRAIN_STEPS(&cfg, 1), 50);
    assert_int_equal(SIZE_TRAIN_STEPS(&cfg, 2), cfg.train_steps);
    assert_int_equal(SIZE_TRAIN_STEPS(&cfg, 3), 1500);
    assert_int_equal(cfg.sizes[2].train_steps, 0);
}

/* A key twice: cJSON keeps both and the lookup reads the first, so {"seeds":[1],"seeds":[2]} ran
 * seed 1 alone, silently. Refused naming the file and the key. */
static void test_grid_file_refuses_repeated_keys(void **state) {
    (void)state;
    const char *cases[] = {"{\"seeds\": [1], \"seeds\": [2]}", "{\"bits\": [2], \"every\": [1], \"bits\": [2]}",
                           "{\"sizes\": [\"16x1\"], \"sizes\": [\"16x1\"]}"};
    const char *keys[] = {"seeds", "bits", "sizes"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        SweepConfig cfg;
        assert_int_equal(sweep_preset(&cfg, "quick"), 0);
        if (sweep_parse_grid(&cfg, cases[i], strlen(cases[i]), "grid.json") == 0) fail_msg("%s: accepted a key twice", cases[i]);
        const char *msg = qc_last_error();
        if (!strstr(msg, "grid.json") || !strstr(msg, keys[i]) || !strstr(msg, "twice"))
            fail_msg("%s: the message '%s' does not name the file and \"%s\" twice", cases[i], msg, keys[i]);
    }
}

/* An empty element of a list flag ("1,,2", "2,", ",2") was skipped by strtok: "--seeds 1,,2" ran
 * seeds 1 and 2 as if typed right. Every list is refused naming the flag; so is a padded number. */
static void test_lists_refuse_empty_elements(void **state) {
    (void)state;
    const char *bad[] = {"1,,2", "2,", ",2", ",", "", " 2", "2 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int v[SWEEP_MAX_VALUES], n = 0;
        qc_clear_error();
        if (parse_int_list("--seeds", bad[i], v, &n, 0, 100) == 0) fail_msg("--seeds '%s' accepted as %d values", bad[i], n);
        if (!strstr(qc_last_error(), "--seeds")) fail_msg("--seeds '%s': %s", bad[i], qc_last_error());
    }
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    ModelSize sizes[SWEEP_MAX_VALUES];
    int n = 0;
    if (parse_size_list("--sizes", "16x1,,24x1", sizes, &n) == 0) fail_msg("--sizes 16x1,,24x1 accepted");
    if (parse_method_list("--methods", ",train", &cfg) == 0) fail_msg("--methods ,train accepted");
    if (parse_quantizer_list("--quantizers", "rtn,", &cfg) == 0) fail_msg("--quantizers rtn, accepted");
    if (parse_granularity_list("--granularities", "channel,,tensor", &cfg) == 0) fail_msg("--granularities channel,,tensor accepted");
    if (!strstr(qc_last_error(), "--granularities") || !strstr(qc_last_error(), "empty")) fail_msg("%s", qc_last_error());
    /* what the lists are for still parses */
    int v[SWEEP_MAX_VALUES];
    assert_int_equal(parse_int_list("--seeds", "42,123,999", v, &n, 0, 2147483647), 0);
    assert_int_equal(n, 3);
    assert_int_equal(v[2], 999);
    assert_int_equal(parse_size_list("--sizes", "64x2:1500,128x4", sizes, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(sizes[0].train_steps, 1500);
}

/* ============================ manifest ============================ */

/* A start that failed before any work (its first float model's training log could not be
 * written) would leave a manifest that refused every corrected command as "a different sweep":
 * its creator releases it while floats/, quant/, runs/ and logs/ are empty, and only then. */
static void test_manifest_released_only_without_work(void **state) {
    (void)state;
    char dir[512], path[700];
    snprintf(dir, sizeof dir, "%s/release", test_tmpdir());
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    int created = 0;
    assert_int_equal(sweep_prepare_dir(dir, &cfg, "qcorr sweep", &created), 0);
    assert_int_equal(created, 1);
    sweep_release_manifest(dir);
    if (access(path, F_OK) == 0) fail_msg("the manifest of a directory without work is still there");
    cfg.steps_axis[0] = 61; /* a corrected command: no longer "a different sweep" */
    if (sweep_prepare_dir(dir, &cfg, "qcorr sweep", &created) != 0) fail_msg("%s", qc_last_error());
    assert_int_equal(created, 1);
    assert_int_equal(sweep_prepare_dir(dir, &cfg, "qcorr sweep", &created), 0); /* the same sweep again */
    assert_int_equal(created, 0);
    char work[800];
    snprintf(work, sizeof work, "%s/floats/s42_64x2.safetensors", dir);
    assert_int_equal(write_file_atomic(work, "x", 1), 0);
    sweep_release_manifest(dir);
    if (access(path, F_OK) != 0) fail_msg("the manifest went although floats/ holds a float model");
}


/* Starts of sweeps with different settings, all at once, into one new directory: exactly one
 * makes it its own, every other one refuses it naming the difference. Each round releases its
 * processes together (they wait on a pipe) so they reach sweep_prepare_dir at the same moment. */
static void test_concurrent_starts_one_manifest(void **state) {
    (void)state;
    enum { ROUNDS = 20, STARTS = 8 };
    for (int round = 0; round < ROUNDS; round++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/race%d", test_tmpdir(), round);
        int gate[2];
        assert_int_equal(pipe(gate), 0);
        pid_t pids[STARTS];
        for (int k = 0; k < STARTS; k++) {
            pids[k] = fork();
            assert_true(pids[k] >= 0);
            if (pids[k] == 0) {
                close(gate[1]);
                char c;
                if (read(gate[0], &c, 1) != 0) _exit(3); /* EOF: all released at once */
                SweepConfig cfg;
                if (sweep_preset(&cfg, "quick") != 0) _exit(3);
                cfg.steps_axis[0] = 50 + k; /* every start its own settings */
                int created = 0;
                if (sweep_prepare_dir(dir, &cfg, "qcorr sweep", &created) == 0) _exit(created ? 0 : 4); /* the winner made it */
                _exit(strstr(qc_last_error(), "holds a different sweep") && strstr(qc_last_error(), "correction.steps") ? 1 : 2);
            }
        }
        close(gate[0]);
        close(gate[1]);
        int won = 0, refused = 0, other = 0;
        for (int k = 0; k < STARTS; k++) {
            int status;
            assert_int_equal(waitpid(pids[k], &status, 0), pids[k]);
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            won += code == 0, refused += code == 1, other += code != 0 && code != 1;
        }
        if (won != 1 || refused != STARTS - 1)
            fail_msg("round %d: %d of %d starts took the directory, %d refused it, %d failed otherwise", round, won, STARTS, refused, other);
    }
}

/* ============================ schema ============================ */

/* summary.csv's columns as every earlier version wrote them: new columns go after them, so the
 * existing ones keep their order (scripts and old readers index them by position). */
static const char *const SUMMARY_HEADER_V1 =
    "run_id,seed,size,d_model,n_layer,bits,scheme,every,hidden,correction,method,objective,arm,loss_float,loss_quant,"
    "loss_corrected,ppl_float,ppl_quant,ppl_corrected,recovery_loss,recovery_ppl,recovery_flag,gain_loss,correction_params,"
    "correction_sites,steps,calib_tokens,seconds_train_float,seconds_quantize,seconds_correct,seconds_eval";

static void test_summary_header_keeps_column_order(void **state) {
    (void)state;
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    assert_non_null(f);
    schema_write_summary_header(f);
    fclose(f);
    if (strncmp(text, SUMMARY_HEADER_V1, strlen(SUMMARY_HEADER_V1)) != 0 || !strchr(",\n", text[strlen(SUMMARY_HEADER_V1)]))
        fail_msg("summary.csv header changed the existing columns:\n  got  %s  want %s...", text, SUMMARY_HEADER_V1);
    free(text);
}

/* A record from a sweep, as JSON text (a real one's fields; host and finished_unix optional). */
static const char *const RECORD =
    "{\"run_id\": \"s1_16x1_b2_e1_h0_train\", \"seed\": 1, \"size\": \"16x1\", \"d_model\": 16, \"n_layer\": 1, \"bits\": 2,"
    " \"scheme\": \"int2 sym-absmax channel\", \"every\": 1, \"hidden\": 0, \"correction\": \"linear\", \"method\": \"train\","
    " \"objective\": \"ce\", \"arm\": \"quant\", \"loss_float\": 3.43, \"loss_quant\": 3.40, \"loss_corrected\": 3.39,"
    " \"ppl_float\": 30.8, \"ppl_quant\": 29.9, \"ppl_corrected\": 29.8, \"recovery_loss\": null, \"recovery_ppl\": null,"
    " \"recovery_flag\": \"undefined\", \"gain_loss\": 0.01, \"correction_params\": 272, \"correction_sites\": 1, \"steps\": 4,"
    " \"calib_tokens\": 256, \"seconds_train_float\": null, \"seconds_quantize\": 0, \"seconds_correct\": 0.1,"
    " \"seconds_eval\": 0.02}";

/* RECORD with the text `from` replaced by `to`; parsed; NULL and why[] when refused. */
static int record_accepted(const char *from, const char *to, char *why, size_t why_size) {
    char text[2048];
    const char *at = strstr(RECORD, from);
    assert_non_null(at);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - RECORD), RECORD, to, at + strlen(from));
    why[0] = 0;
    cJSON *record = sweep_parse_record(text, strlen(text), why, why_size);
    cJSON_Delete(record);
    return record != NULL;
}

/* Every field is checked against the schema's type and bounds, not only for presence: a record
 * the report would refuse is corrupt when the sweep reads it back (and runs again). */
static void test_record_fields_typed_by_schema(void **state) {
    (void)state;
    char why[128];
    assert_true(record_accepted("\"seed\": 1", "\"seed\": 1", why, sizeof why));
    const struct { const char *from, *to, *why; } bad[] = {
        {"\"bits\": 2", "\"bits\": \"four\"", "\"bits\" is not a number"},
        {"\"bits\": 2", "\"bits\": 2.5", "\"bits\" is 2.5"},
        {"\"bits\": 2", "\"bits\": 1e22", "\"bits\" is 1e+22"},
        {"\"every\": 1", "\"every\": -1", "\"every\" is -1"},
        {"\"method\": \"train\"", "\"method\": 7", "\"method\" is not a string"},
        {"\"seed\": 1, ", "", "field \"seed\" missing"},
        {"\"hidden\": 0", "\"hidden\": null", "field \"hidden\" is null"},
        {"\"loss_float\": 3.43", "\"loss_float\": \"3.43\"", "\"loss_float\" is not a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (record_accepted(bad[i].from, bad[i].to, why, sizeof why)) fail_msg("accepted %s", bad[i].to);
        if (!strstr(why, bad[i].why)) fail_msg("%s: refused as '%s', expected '%s'", bad[i].to, why, bad[i].why);
    }
}

/* The methods that tune the base (normtweak, qat, scales, lwc, adaround): all in the methods preset, once per model and budget
 * (no every, hidden or storage width, even with a storage axis), normtweak and qat in the control arm too, with the
 * correction steps; the mse objective refused for them. */
static void test_enumerate_tuning_methods(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "methods"), 0);
    int in_preset = 0, in_table = 0;
    for (int m = 0; m < cfg.n_methods; m++) in_preset += method_tunes(cfg.methods[m]) != TUNE_NONE;
    for (int m = 0; m < METHOD_COUNT; m++) in_table += method_tunes((CorrectMethod)m) != TUNE_NONE;
    assert_true(in_table >= 5); /* normtweak, qat, scales, lwc, adaround */
    assert_int_equal(in_preset, in_table);
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    assert_int_equal(parse_method_list("--methods", "normtweak,qat,train", &cfg), 0);
    cfg.corr_bits[0] = 32, cfg.corr_bits[1] = 8, cfg.n_corr_bits = 2;
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(&cfg, &n_runs, &n_groups);
    assert_non_null(runs);
    int tuned = 0;
    for (int i = 0; i < n_runs; i++) {
        if (!method_tunes(runs[i].method)) continue;
        tuned++;
        assert_true(runs[i].every == 0 && runs[i].hidden == 0 && runs[i].corr_bits == 32 && runs[i].steps == cfg.steps_axis[0]);
    }
    assert_int_equal(tuned, 2 * 3); /* two methods at bits 2 and 4, and their control (32) */
    free(runs);
    cfg.objective = OBJECTIVE_MSE;
    assert_int_equal(sweep_config_check(&cfg), -1);
    assert_non_null(strstr(qc_last_error(), "mse"));
}

/* A grid meets correct's option rules run by run (correct_options_check): bias correction with
 * the biases in --scope is refused naming the run, as correct refuses it; --init lstsq starts the
 * linear train runs and leaves the MLP and closed-form runs as they are. */
static void test_grid_meets_correct_rules(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    assert_int_equal(parse_method_list("--methods", "train,bias", &cfg), 0);
    assert_int_equal(sweep_config_check(&cfg), 0);
    cfg.scheme.scope |= SCOPE_OF(ROLE_BIAS);
    assert_int_equal(sweep_config_check(&cfg), -1);
    assert_non_null(strstr(qc_last_error(), "_bias: --method bias folds into the layers' biases"));
    int n_runs, n_groups;
    assert_null(sweep_enumerate(&cfg, &n_runs, &n_groups));
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    assert_int_equal(parse_method_list("--methods", "train,lstsq", &cfg), 0);
    cfg.init = INIT_LSTSQ;
    assert_int_equal(sweep_config_check(&cfg), 0);
    SweepRun *runs = sweep_enumerate(&cfg, &n_runs, &n_groups);
    assert_non_null(runs);
    int started = 0;
    for (int i = 0; i < n_runs; i++) {
        QuantScheme scheme = sweep_run_scheme(&cfg, &runs[i]);
        CorrectOptions o;
        sweep_run_options(&cfg, &runs[i], &scheme, &o);
        int linear_train = runs[i].method == METHOD_TRAIN && runs[i].hidden == 0;
        assert_int_equal(o.init, linear_train ? INIT_LSTSQ : INIT_ZERO);
        started += linear_train;
    }
    assert_true(started > 0);
    free(runs);
}

/* The grid's axes from the method tables: methods that do not correct run once per model (no
 * every, hidden, storage width or budget), the control only for stream corrections, granularities
 * that do not fit a size skip it, the correcting methods only where --corrected-* allow, and the
 * ids name each factor that is not at its historic default. */
static void test_enumerate_axes(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    assert_int_equal(parse_method_list("--methods", "none,train", &cfg), 0);
    assert_int_equal(cfg.methods[0], METHOD_TRAIN); /* table order */
    assert_int_equal(parse_granularity_list("--granularities", "channel,group:128", &cfg), 0);
    cfg.sizes[1] = (ModelSize){128, 1, 10};
    cfg.n_sizes = 2;
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(&cfg, &n_runs, &n_groups);
    assert_non_null(runs);
    /* 64x2: channel only (group:128 does not divide 64): 2 bits x (1 none + 2 every x 2 hidden) + control 4;
     * 128x1: two granularities: 2 x 2 x 5 + 4 */
    assert_int_equal(n_runs, (2 * 5 + 4) + (2 * 2 * 5 + 4));
    int none = 0, g128 = 0;
    for (int i = 0; i < n_runs; i++) {
        none += runs[i].method == METHOD_NONE;
        if (runs[i].method == METHOD_NONE) assert_true(runs[i].every == 0 && runs[i].steps == 0 && runs[i].bits != 32);
        if (strstr(runs[i].id, "_g128")) g128++, assert_int_equal(cfg.sizes[runs[i].size_index].d_model, 128);
    }
    assert_int_equal(none, 2 + 4);
    assert_int_equal(g128, 2 * 5);
    assert_string_equal(runs[0].id, "s42_64x2_b2_e1_h0_train");
    free(runs);
    /* a budget curve: steps and calibration axes, correcting methods only at 2 bits */
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    cfg.n_methods = 2, cfg.methods[0] = METHOD_TRAIN, cfg.methods[1] = METHOD_NONE;
    int steps[3] = {10, 20, 40}, calib[2] = {1024, 4096};
    memcpy(cfg.steps_axis, steps, sizeof steps), cfg.n_steps_axis = 3;
    memcpy(cfg.calib_axis, calib, sizeof calib), cfg.n_calib_axis = 2;
    cfg.corrected_bits[0] = 2, cfg.n_corrected_bits = 1;
    cfg.control = 0;
    runs = sweep_enumerate(&cfg, &n_runs, &n_groups);
    assert_non_null(runs);
    /* 2 bits: 2 calib x 2 every x 2 hidden x 3 steps = 24 trained, plus none at 2 and 4 bits */
    assert_int_equal(n_runs, 24 + 2);
    int found = 0;
    for (int i = 0; i < n_runs; i++) {
        found |= strcmp(runs[i].id, "s42_64x2_b2_e2_h32_train_s40_k4096") == 0;
        if (runs[i].method == METHOD_TRAIN) assert_int_equal(runs[i].bits, 2);
    }
    assert_true(found);
    free(runs);
}

/* --jobs workers take the groups the largest first; equal costs keep the enumeration's order */
static void test_order_by_cost(void **state) {
    (void)state;
    const double cost[] = {3, 9, 1, 9, 5, 0};
    int order[6], want[6] = {1, 3, 4, 0, 2, 5};
    sweep_order_by_cost(cost, 6, order);
    assert_memory_equal(order, want, sizeof want);
    sweep_order_by_cost(cost, 0, order); /* nothing to order: nothing written */
    assert_memory_equal(order, want, sizeof want);
}

/* Combinations (--first-methods) and the control arm of the methods that tune the base: each
 * first method other than none runs once before every method that adds corrections (train at
 * every every x hidden, lowrank), at the quantized bits only, never before a method that tunes
 * the base; its id ends _first-<method> and its options name it; the manifest has no
 * first_methods entry without combinations (older directories resume); at 32 bits the control
 * arm holds normtweak and qat (the same training means something on the float model) but not
 * lwc or lowrank; a method that adds corrections is refused as a first. */
static void test_enumerate_combinations(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    cJSON *plain = cJSON_CreateObject();
    for (int a = 0; a < SWEEP_N_AXES; a++) sweep_axes[a].ops->manifest(&cfg, plain);
    assert_null(cJSON_GetObjectItem(plain, "first_methods"));
    cJSON_Delete(plain);
    assert_int_equal(parse_method_list("--methods", "train,lowrank,lwc,normtweak,qat", &cfg), 0);
    assert_int_equal(parse_first_method_list("--first-methods", "none,lwc,adaround", &cfg), 0);
    assert_int_equal(sweep_config_check(&cfg), 0);
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(&cfg, &n_runs, &n_groups);
    assert_non_null(runs);
    int combos = 0, control_tuned = 0, by_first[METHOD_COUNT] = {0};
    for (int i = 0; i < n_runs; i++) {
        const SweepRun *r = &runs[i];
        if (r->bits == 32 && method_tunes(r->method)) {
            control_tuned++;
            assert_true(r->method == METHOD_NORMTWEAK || r->method == METHOD_QAT);
        }
        if (r->bits == 32) assert_true(r->method != METHOD_LOWRANK && r->method != METHOD_LWC);
        if (r->first == METHOD_NONE) continue;
        combos++;
        by_first[r->first]++;
        assert_true(r->bits != 32 && (r->method == METHOD_TRAIN || r->method == METHOD_LOWRANK));
        char tail[32];
        snprintf(tail, sizeof tail, "_first-%s", method_name(r->first));
        assert_non_null(strstr(r->id, tail));
        assert_int_equal((int)strlen(strstr(r->id, tail)), (int)strlen(tail)); /* at the end */
        CorrectOptions o;
        QuantScheme sc = sweep_run_scheme(&cfg, r);
        sweep_run_options(&cfg, r, &sc, &o);
        assert_true(o.with_first && o.first == r->first && o.method == r->method);
        assert_int_equal(correct_options_check(&o, &sc), 0);
    }
    int per_bits = cfg.n_every * cfg.n_hidden + 1; /* train at every every x hidden, and lowrank */
    assert_int_equal(by_first[METHOD_LWC], cfg.n_bits * per_bits);
    assert_int_equal(by_first[METHOD_ADAROUND], cfg.n_bits * per_bits);
    assert_int_equal(combos, 2 * cfg.n_bits * per_bits);
    assert_int_equal(control_tuned, 2); /* normtweak and qat, once each */
    cJSON *m = cJSON_CreateObject();
    for (int a = 0; a < SWEEP_N_AXES; a++) sweep_axes[a].ops->manifest(&cfg, m);
    assert_non_null(cJSON_GetObjectItem(m, "first_methods"));
    cJSON_Delete(m);
    free(runs);
    assert_int_equal(parse_first_method_list("--first-methods", "none,train", &cfg), -1);
    assert_non_null(strstr(qc_last_error(), "train"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_counts_and_tokens),
        cmocka_unit_test(test_plan_skips_done_and_splits_shards),
        cmocka_unit_test(test_auto_steps_by_width),
        cmocka_unit_test(test_flops_per_token),
        cmocka_unit_test(test_order_by_cost),
        cmocka_unit_test(test_grid_file_refuses_repeated_values),
        cmocka_unit_test(test_grid_file_refuses_repeated_keys),
        cmocka_unit_test(test_sizes_keep_preset_budgets),
        cmocka_unit_test(test_lists_refuse_empty_elements),
        cmocka_unit_test(test_manifest_released_only_without_work),
        cmocka_unit_test(test_concurrent_starts_one_manifest),
        cmocka_unit_test(test_summary_header_keeps_column_order),
        cmocka_unit_test(test_record_fields_typed_by_schema),
        cmocka_unit_test(test_enumerate_axes),
        cmocka_unit_test(test_enumerate_tuning_methods),
        cmocka_unit_test(test_grid_meets_correct_rules),
        cmocka_unit_test(test_enumerate_combinations),
    };
    return cmocka_run_group_tests_name("sweep", tests, NULL, NULL);
}
