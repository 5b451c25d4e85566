/* test_sweep: the sweep library without running a sweep — the plan (the one cost model of the dry
 * run and the ETA) against counts and token sums worked out here from the grid. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/sweep.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_counts_and_tokens),
        cmocka_unit_test(test_plan_skips_done_and_splits_shards),
        cmocka_unit_test(test_flops_per_token),
    };
    return cmocka_run_group_tests_name("sweep", tests, NULL, NULL);
}
