/* sweep/parts: what the parts of the sweep share — paths inside the sweep directory, the record
 * functions and the per-item work of the plan that sweep_run calls. */
#ifndef QCORR_SWEEP_PARTS_H
#define QCORR_SWEEP_PARTS_H

#include <stdio.h>

#include "correct/correct.h"
#include "sweep/sweep.h"

/* dir/name */
static inline void join(char *out, size_t size, const char *dir, const char *name) { snprintf(out, size, "%s/%s", dir, name); }

/* ---- axes.c: each axis's functions ---- */
#define SWEEP_AXIS_DECLARE_OPS(field, type, run, run_type, flag, key, level, id, sort, section, rank, ops) extern const SweepAxisOps ops;
SWEEP_AXES(SWEEP_AXIS_DECLARE_OPS)
#undef SWEEP_AXIS_DECLARE_OPS

/* ---- records.c ---- */
/* Seconds spent on a run's parts (the float model's and quantized model's shared by their runs). */
typedef struct {
    double train_float, quantize, correct, eval;
} RunTimes;
/* Writes dir/runs/<id>.json atomically: the run's factors, its outcome (losses with standard
 * errors, recovery and its flag, KL, top-1, model bits), its corrections' size, its timings and
 * what its training did (ts; NULL or a method that does not train: empty). */
int sweep_write_record(const char *dir, const SweepConfig *cfg, const SweepRun *r, const Outcome *out, const Corrections *c,
                       const RunTimes *t, const TrainSummary *ts);
/* 1 per run whose record is valid; corrupt records are reported, moved aside and re-run. */
int *sweep_finished_runs(const char *dir, const SweepRun *runs, int n, int quiet);

/* ---- plan.c: the work of each thing sweep_run makes, for its ETA ---- */
SweepWork plan_float_model(const SweepConfig *cfg, int size_index, double eval_tokens);
SweepWork plan_quant_model(const SweepConfig *cfg, const SweepRun *r, double eval_tokens);
SweepWork plan_prefix_cache(const SweepConfig *cfg, int size_index, int first_block, long calib_tokens, double eval_tokens);
SweepWork plan_run(const SweepConfig *cfg, const SweepRun *r, double eval_tokens);


#endif
