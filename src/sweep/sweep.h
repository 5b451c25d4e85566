/* sweep: the grid (README: Sweeps) — enumeration, shards, the output directory (manifest,
 * shared float and quantized checkpoints, one atomic record per run, summary.csv) and resuming. */
#ifndef QCORR_SWEEP_H
#define QCORR_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "correct/experiment.h"
#include "quant/quant.h"

#define SWEEP_MAX_VALUES 32

typedef struct {
    int d_model, n_layer;
    int train_steps; /* this size's float training steps ("256x6:400"); 0: SweepConfig.train_steps */
} ModelSize;

/* The float training steps of size z: its own when it names them, else the sweep's. */
#define SIZE_TRAIN_STEPS(cfg, z) ((cfg)->sizes[z].train_steps > 0 ? (cfg)->sizes[z].train_steps : (cfg)->train_steps)

typedef struct {
    Granularity granularity;
    int group;
} SweepGranularity;

typedef struct {
    /* the grid */
    int seeds[SWEEP_MAX_VALUES], n_seeds;
    int bits[SWEEP_MAX_VALUES], n_bits;
    ModelSize sizes[SWEEP_MAX_VALUES];
    int n_sizes;
    int every[SWEEP_MAX_VALUES], n_every;
    int hidden[SWEEP_MAX_VALUES], n_hidden;
    CorrectMethod methods[METHOD_COUNT];   /* the fitting methods (methods.h), in table order */
    int n_methods;
    QuantizerId quantizers[QUANTIZER_COUNT]; /* in table order */
    int n_quantizers;
    SweepGranularity grans[SWEEP_MAX_VALUES]; /* weight granularities (default: the scheme's) */
    int n_grans;
    int corr_bits[SWEEP_MAX_VALUES], n_corr_bits; /* corrections stored at: 32 (float), or 2..16 */
    /* where the correcting methods run (0 entries: everywhere); elsewhere only those that do not
     * correct (none) — so a frontier of many quantized models corrects only a few of them */
    int corrected_bits[SWEEP_MAX_VALUES], n_corrected_bits;
    SweepGranularity corrected_grans[SWEEP_MAX_VALUES];
    int n_corrected_grans;
    int control;                    /* the float+correction arm (bits 32) */
    /* float training */
    int heads, ctx, train_batch, train_steps;
    double train_lr;
    /* quantization (besides bits) */
    QuantScheme scheme;
    /* correction: steps and calibration budget, one value each or an axis (a budget curve) */
    int corr_steps, corr_batch;
    double corr_lr, ridge;
    long calib_tokens;
    int steps_axis[SWEEP_MAX_VALUES], n_steps_axis;   /* 0 entries: corr_steps alone; STEPS_AUTO: --steps auto */
    AutoStop autostop;       /* the stopping rule of STEPS_AUTO runs */
    CorrectionInit init;     /* train, linear corrections: the start */
    int rank;                /* lowrank: the rank per matrix, or 0: matched to a linear correction after every block */
    int lowrank_act_scale;   /* lowrank: SVD of the error scaled by each input column's mean |x| (L2QER) */
    int calib_axis[SWEEP_MAX_VALUES], n_calib_axis;   /* 0 entries: calib_tokens alone */
    Objective objective;
    /* the corpus, by content */
    char data_sha256[65];
} SweepConfig;

typedef struct {
    int seed, size_index, bits, every, hidden; /* every, hidden 0 where the method has none */
    int gran;                /* index into SweepConfig.grans */
    QuantizerId quantizer;
    CorrectMethod method;
    int corr_bits;           /* 32, or the narrower width the corrections are stored at */
    int steps;               /* correction steps (0 where the method does not train; STEPS_AUTO) */
    long calib;              /* calibration budget (characters) */
    char id[128];            /* s42_128x4_b4_e1_h0_train; non-default factors add parts (README) */
    int group;               /* index of its (seed, size) float-model group */
    int model;               /* index of its quantized model within the group (quantizer, granularity, bits) */
} SweepRun;

/* The scheme of a run: the sweep's, with the run's bits, granularity and quantizer. */
QuantScheme sweep_run_scheme(const SweepConfig *cfg, const SweepRun *r);
/* Its quantized model's name, the part of its id that names the model: s42_64x2_b4. */
const char *sweep_model_name(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size);
/* The correction layout a run fits. */
CorrectionLayout sweep_run_layout(const SweepRun *r);
/* The options `correct` would get for a run (the sweep's budgets, the run's method, width, steps,
 * seed and storage); scope from *scheme, which o->scheme points to (the caller's, for its life). */
void sweep_run_options(const SweepConfig *cfg, const SweepRun *r, const QuantScheme *scheme, CorrectOptions *o);
int sweep_preset(SweepConfig *cfg, const char *name);
/* "42,123,999" style lists and "64x2,128x4" sizes (each optionally ":STEPS" of float training,
 * e.g. "256x6:400"); messages name the flag. */
int parse_int_list(const char *flag, const char *text, int *out, int *n, long min, long max);
int parse_size_list(const char *flag, const char *text, ModelSize *out, int *n);
/* "60", "15,60,auto": correction steps, "auto" for STEPS_AUTO. */
int parse_steps_list(const char *flag, const char *text, int *out, int *n);
/* "train,lstsq" (names of the methods table), "rtn,gptq" (quantizers), "channel,group:32" */
int parse_method_list(const char *flag, const char *text, SweepConfig *cfg);
int parse_quantizer_list(const char *flag, const char *text, SweepConfig *cfg);
int parse_granularity_list(const char *flag, const char *text, SweepConfig *cfg);
/* A JSON grid file: {"seeds":[..],"bits":[..],"sizes":["64x2"],"every":[..],"hidden":[..]} */
int sweep_read_grid_file(SweepConfig *cfg, const char *path);
/* The same from text in memory (size bytes, no NUL needed); name stands for the path in messages. */
int sweep_parse_grid(SweepConfig *cfg, const char *text, size_t size, const char *name);
int sweep_config_check(const SweepConfig *cfg);

/* All runs of the grid in a fixed order: float-model groups (seed, size) together. */
SweepRun *sweep_enumerate(const SweepConfig *cfg, int *n_runs, int *n_groups);

/* The manifest: every grid value and hyper-parameter, as canonical JSON text (caller frees). */
char *sweep_manifest_json(const SweepConfig *cfg, const char *command);
/* Creates DIR (and its sub-folders) or checks an existing manifest equals this one; on a
 * difference the error names the first differing key and both values. *created (may be NULL)
 * says whether this call wrote the manifest. */
int sweep_prepare_dir(const char *dir, const SweepConfig *cfg, const char *command, int *created);
/* After a failure of the start that created the manifest: removes it again if the directory
 * holds no work at all (floats/, quant/, runs/ and logs/ empty), so that a sweep that failed
 * before its first float model does not lock the directory against a corrected command. */
void sweep_release_manifest(const char *dir);

typedef struct {
    int quiet, dry_run;
    int shard_k, shard_n;  /* 1-based shard K of N; 1/1 = everything */
    int claim;             /* a --jobs worker: take groups, the most work first, by claim files */
    const char *data_path;
} SweepOptions;

/* ---- the plan: one cost model for --dry-run's estimate and the running sweep's ETA ---- */
/* Tokens through each kind of pass, in whole-model passes (a pass over k of L blocks counts k/L). */
typedef struct {
    double train;   /* float training steps: forward and backward with weight gradients */
    double forward; /* evaluations and the frozen prefix caches */
    double correct; /* correction steps: forward and the stream's backward, no weight gradients */
} SweepWork;

typedef struct {
    int float_models, quant_models, prefix_caches, runs;
    SweepWork work;
} SweepSizePlan;

/* The tokens of one evaluation over the validation split (n_val characters, windows of ctx). */
double sweep_eval_tokens(size_t n_val, int ctx);
/* What shard K of N computes, per model size (out: cfg->n_sizes entries), in the order sweep_run
 * works; runs with done[i] set are skipped (done may be NULL: everything). */
void sweep_plan(const SweepConfig *cfg, const SweepRun *runs, int n_runs, const int *done, int shard_k, int shard_n,
                double eval_tokens, SweepSizePlan *out);
/* The correction steps a run is expected to take: its steps, or under --steps auto the mean
 * measured for its width and kind (plan.c says where; at most the cap). */
double plan_expected_steps(const SweepConfig *cfg, const SweepRun *r);
/* The cost of work given the cost of one token of each kind. */
double sweep_work_cost(SweepWork work, SweepWork per_token);
/* Per token of each kind: multiply-adds of the matrix products (the ETA's weights), ... */
SweepWork sweep_flops_per_token(const SweepConfig *cfg, int size_index);
/* ... or seconds, from a few real steps of this size timed on this machine (the dry run's). */
int sweep_measure_seconds_per_token(const SweepConfig *cfg, const Corpus *corpus, int size_index, SweepWork *out);

/* Runs (or resumes) this shard's part of the sweep in dir. */
int sweep_run(const char *dir, const SweepConfig *cfg, const SweepOptions *o, const char *command);
/* --jobs: workers on one machine share a directory's float-model groups through DIR/claims/
 * (sweep_run with o->claim). Before starting them: removes the claims of processes of this host
 * that are gone (an interrupted or finished earlier start), so their groups can be taken again. */
int sweep_clear_stale_claims(const char *dir);
/* The estimated cost (seconds, given each size's measured seconds per token) of every float-model
 * group's unfinished work (done may be NULL), into cost[n_groups]. */
void sweep_group_costs(const SweepConfig *cfg, const SweepRun *runs, int n_runs, int n_groups, const int *done,
                       double eval_tokens, const SweepWork *seconds_per_token, double *cost);
/* order[0..n) = 0..n-1 sorted by cost, the largest first (ties keep their order): the order
 * --jobs workers take the groups in. */
void sweep_order_by_cost(const double *cost, int n, int *order);
/* A run record (size bytes of JSON) whose fields match the schema (schema.h: every required field
 * present, each of its type and bounds), or NULL with the reason in why. */
cJSON *sweep_parse_record(const char *text, size_t size, char *why, size_t why_size);
/* Rebuilds dir/summary.csv from dir/runs/ (under a lock, atomically). */
int sweep_write_summary(const char *dir);

#endif
