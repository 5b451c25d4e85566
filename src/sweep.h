/* sweep: the grid of SPEC section 6 — enumeration, shards, the output directory (manifest,
 * shared float and quantized checkpoints, one atomic record per run, summary.csv) and resuming. */
#ifndef QCORR_SWEEP_H
#define QCORR_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "experiment.h"
#include "quant.h"

#define SWEEP_MAX_VALUES 32

typedef struct {
    int d_model, n_layer;
    int train_steps; /* this size's float training steps ("256x6:400"); 0: SweepConfig.train_steps */
} ModelSize;

/* The float training steps of size z: its own when it names them, else the sweep's. */
#define SIZE_TRAIN_STEPS(cfg, z) ((cfg)->sizes[z].train_steps > 0 ? (cfg)->sizes[z].train_steps : (cfg)->train_steps)

typedef struct {
    /* the grid */
    int seeds[SWEEP_MAX_VALUES], n_seeds;
    int bits[SWEEP_MAX_VALUES], n_bits;
    ModelSize sizes[SWEEP_MAX_VALUES];
    int n_sizes;
    int every[SWEEP_MAX_VALUES], n_every;
    int hidden[SWEEP_MAX_VALUES], n_hidden;
    int method_train, method_lstsq; /* which methods run */
    int control;                    /* the float+correction arm (bits 32) */
    /* float training */
    int heads, ctx, train_batch, train_steps;
    double train_lr;
    /* quantization (besides bits) */
    QuantScheme scheme;
    /* correction */
    int corr_steps, corr_batch;
    double corr_lr, ridge;
    long calib_tokens;
    Objective objective;
    /* the corpus, by content */
    char data_sha256[65];
} SweepConfig;

typedef struct {
    int seed, size_index, bits, every, hidden;
    CorrectMethod method;
    char id[96];   /* s42_128x4_b4_e1_h0_train */
    int group;     /* index of its (seed, size) float-model group */
} SweepRun;

typedef enum { PRESET_QUICK, PRESET_SEED243 } SweepPreset;
int sweep_preset(SweepConfig *cfg, const char *name);
/* "42,123,999" style lists and "64x2,128x4" sizes (each optionally ":STEPS" of float training,
 * e.g. "256x6:400"); messages name the flag. */
int parse_int_list(const char *flag, const char *text, int *out, int *n, long min, long max);
int parse_size_list(const char *flag, const char *text, ModelSize *out, int *n);
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
 * difference the error names the first differing key and both values. */
int sweep_prepare_dir(const char *dir, const SweepConfig *cfg, const char *command);

typedef struct {
    int quiet, dry_run;
    int shard_k, shard_n;  /* 1-based shard K of N; 1/1 = everything */
    const char *data_path;
} SweepOptions;

/* Runs (or resumes) this shard's part of the sweep in dir. */
int sweep_run(const char *dir, const SweepConfig *cfg, const SweepOptions *o, const char *command);
/* A run record (size bytes of JSON) holding every summary field, or NULL with the reason in why. */
cJSON *sweep_parse_record(const char *text, size_t size, char *why, size_t why_size);
/* Rebuilds dir/summary.csv from dir/runs/ (under a lock, atomically). */
int sweep_write_summary(const char *dir);

#define SUMMARY_COLUMNS                                                                                              \
    "run_id,seed,size,d_model,n_layer,bits,scheme,every,hidden,correction,method,objective,arm,loss_float,"        \
    "loss_quant,loss_corrected,ppl_float,ppl_quant,ppl_corrected,recovery_loss,recovery_ppl,recovery_flag,"       \
    "gain_loss,correction_params,correction_sites,steps,calib_tokens,seconds_train_float,seconds_quantize,"       \
    "seconds_correct,seconds_eval"

#endif
