/* sweep/parts: what the parts of the sweep share — paths inside the sweep directory, the record
 * functions and the per-item work of the plan that sweep_run calls. */
#ifndef QCORR_SWEEP_PARTS_H
#define QCORR_SWEEP_PARTS_H

#include <stdio.h>

#include "../correct.h"
#include "../sweep.h"

/* dir/name */
static inline void join(char *out, size_t size, const char *dir, const char *name) { snprintf(out, size, "%s/%s", dir, name); }

/* ---- records.c ---- */
/* Writes dir/runs/<id>.json atomically: the run's factors, its losses and recoveries, timings. */
int sweep_write_record(const char *dir, const SweepConfig *cfg, const SweepRun *r, double lf, double lq, double lc,
                       const Corrections *c, double t_float, double t_quant, double t_corr, double t_eval);
/* 1 per run whose record is valid; corrupt records are reported, moved aside and re-run. */
int *sweep_finished_runs(const char *dir, const SweepRun *runs, int n, int quiet);

/* ---- plan.c: the work of each thing sweep_run makes, for its ETA ---- */
SweepWork plan_float_model(const SweepConfig *cfg, int size_index, double eval_tokens);
SweepWork plan_quant_model(const SweepConfig *cfg, int size_index, double eval_tokens);
SweepWork plan_prefix_cache(const SweepConfig *cfg, int size_index, int first_block, double eval_tokens);
SweepWork plan_run(const SweepConfig *cfg, const SweepRun *r, double eval_tokens);

#endif
