/* sweep: the grid (README: Sweeps) — enumeration, shards, the output directory (manifest,
 * shared float and quantized checkpoints, one atomic record per run, summary.csv) and resuming. */
#ifndef QCORR_SWEEP_H
#define QCORR_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "correct/experiment.h"
#include "quant/quant.h"
#include "tables/schema.h"

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

/* What a new value of an axis makes anew, the unit the sweep shares work by: a float model (a
 * group: trained once for all its runs), a quantized model (made once for all its runs), or only
 * the run. The axes of a level come before those of the next in SWEEP_AXES; the group and model
 * indices of a run (SweepRun), and so the cost model's count of float and quantized models
 * (plan.c) and the shards, follow from it. */
typedef enum { AXIS_FLOAT, AXIS_QUANT, AXIS_RUN } AxisLevel;
/* The object of manifest.json an axis's entry goes in (its rank orders it among the section's
 * entries, manifest.c lists the others'). */
typedef enum { MANIFEST_GRID, MANIFEST_CORRECTION } ManifestSection;

/* The sweep axes (README: Sweeps): every factor a sweep varies, one line each, in the order of
 * enumeration (the first varies slowest: runs that share a float model, then a quantized model,
 * then a calibration set are neighbours). An axis is always a list of at least one value: its
 * default (ops.defaults) or the preset's, a list of one where not varied (there is no "unset").
 * A new axis is a line here plus its SweepAxisOps in axes.c. Columns:
 *   field    SweepConfig's list: type field[SWEEP_MAX_VALUES] and int n_field
 *   type     its element type
 *   run      SweepRun's field holding a run's value (or index into the list), of run_type
 *   flag     the sweep flag that sets the list (its text parsed by ops.parse)
 *   key      its key in a grid file (a JSON list of numbers or names, parsed as the flag's
 *            text) and in manifest.json
 *   level    what a new value makes anew (AxisLevel)
 *   id       the place of its part in the run id (1 first; historic order, so ids keep meaning)
 *   sort     its place in summary.csv's row order (0: none; ties fall to the run id)
 *   section, rank   where its manifest entry goes
 *   ops      its functions (SweepAxisOps, axes.c): parse, slots, set, admits, id part,
 *            manifest entry, row comparison, what it sets in the run's scheme or options, and
 *            its default list */
#define SWEEP_AXES(X)                                                                                                            \
    /* field      type              run         run_type       flag                key                   level       id sort section          rank ops */ \
    X(seeds,      int,              seed,       int,           "--seeds",          "seeds",              AXIS_FLOAT, 1, 1, MANIFEST_GRID,       10, axis_seeds)      \
    X(sizes,      ModelSize,        size_index, int,           "--sizes",          "sizes",              AXIS_FLOAT, 2, 2, MANIFEST_GRID,       30, axis_sizes)      \
    X(quantizers, QuantizerId,      quantizer,  QuantizerId,   "--quantizers",     "quantizers",         AXIS_QUANT, 5, 3, MANIFEST_GRID,       70, axis_quantizers) \
    X(grans,      SweepGranularity, gran,       int,           "--granularities",  "granularities",      AXIS_QUANT, 4, 8, MANIFEST_GRID,       80, axis_grans)      \
    X(bits,       int,              bits,       int,           "--bits",           "bits",               AXIS_QUANT, 3, 4, MANIFEST_GRID,       20, axis_bits)       \
    X(transforms, unsigned,         transform,  unsigned,      "--transforms",     "transforms",         AXIS_QUANT,13, 0, MANIFEST_GRID,       85, axis_transforms) \
    X(calib_axis, int,              calib,      long,          "--calib-tokens",   "calib_tokens",       AXIS_RUN,  11, 0, MANIFEST_CORRECTION, 60, axis_calib)      \
    X(every,      int,              every,      int,           "--every",          "every",              AXIS_RUN,   6, 5, MANIFEST_GRID,       40, axis_every)      \
    X(methods,    CorrectMethod,    method,     CorrectMethod, "--methods",        "methods",            AXIS_RUN,   8, 7, MANIFEST_GRID,       60, axis_methods)    \
    X(firsts,     CorrectMethod,    first,      CorrectMethod, "--first-methods",  "first_methods",      AXIS_RUN,  12, 0, MANIFEST_GRID,       65, axis_firsts)     \
    X(hidden,     int,              hidden,     int,           "--hidden",         "hidden",             AXIS_RUN,   7, 6, MANIFEST_GRID,       50, axis_hidden)     \
    X(corr_bits,  int,              corr_bits,  int,           "--correction-bits", "correction_stored_bits", AXIS_RUN, 9, 9, MANIFEST_GRID,   90, axis_corr_bits)  \
    X(steps_axis, int,              steps,      int,           "--steps",          "steps",              AXIS_RUN,  10, 0, MANIFEST_CORRECTION, 20, axis_steps)

#define SWEEP_AXIS_ENUM(field, ...) AXIS_##field,
typedef enum { SWEEP_AXES(SWEEP_AXIS_ENUM) SWEEP_N_AXES } SweepAxisId;
#undef SWEEP_AXIS_ENUM

typedef struct {
    /* the grid: one list per axis (SWEEP_AXES) */
#define SWEEP_AXIS_LIST(field, type, ...) type field[SWEEP_MAX_VALUES]; int n_##field;
    SWEEP_AXES(SWEEP_AXIS_LIST)
#undef SWEEP_AXIS_LIST
    /* where the correcting methods run (0 entries: everywhere); elsewhere only those that do not
     * correct (none) — so a frontier of many quantized models corrects only a few of them */
    int corrected_bits[SWEEP_MAX_VALUES], n_corrected_bits;
    SweepGranularity corrected_grans[SWEEP_MAX_VALUES];
    int n_corrected_grans;
    int control;                    /* the float+correction arm (bits 32) */
    /* float training */
    int heads, ctx, train_batch, train_steps;
    double train_lr;
    /* quantization: the rest of each run's scheme (its bits, quantizer and granularity come from
     * the axes); the quantizers that use data calibrate on the first calibration budget */
    QuantScheme scheme;
    /* --act-bits same: scheme.act's bits (SWEEP_ACT_SAME_BITS) and its keys' and values' bits
     * (SWEEP_ACT_SAME_KV) follow each run's weight bits; the control arm (bits 32) then quantizes
     * no activation, so it stays the float model (README: Sweeps) */
    unsigned act_same;
    /* correction: the rest of each run's options (steps and calibration budget are axes:
     * steps_axis holds STEPS_AUTO for --steps auto) */
    int corr_batch;
    double corr_lr, ridge;
    AutoStop autostop;       /* the stopping rule of STEPS_AUTO runs */
    CorrectionInit init;     /* train, linear corrections: the start */
    int rank;                /* lowrank: the rank per matrix, or 0: matched to a linear correction after every block */
    int lowrank_act_scale;   /* lowrank: SVD of the error scaled by each input column's mean |x| (L2QER) */
    Objective objective;
    /* the corpus, by content */
    char data_sha256[65];
} SweepConfig;
#define SWEEP_ACT_SAME_BITS 1u
#define SWEEP_ACT_SAME_KV 2u

/* One run: its value on every axis (every, hidden 0 where the method has none; corr_bits 32 where
 * it stores no correction; steps 0 where it does not train; STEPS_AUTO), its id and its place. */
typedef struct {
#define SWEEP_AXIS_RUN_FIELD(field, type, run, run_type, ...) run_type run;
    SWEEP_AXES(SWEEP_AXIS_RUN_FIELD)
#undef SWEEP_AXIS_RUN_FIELD
    char id[128];            /* s42_128x4_b4_e1_h0_train; non-default factors add parts (README) */
    int group;               /* index of its float-model group (its AXIS_FLOAT values) */
    int model;               /* index of its quantized model within the group (its AXIS_QUANT values) */
} SweepRun;

/* An axis's functions (axes.c, beside each other per axis). */
typedef struct {
    /* --help text of the flag; a %s in it receives names() (the table's names), where given */
    const char *help;
    void (*names)(char *out, size_t size);
    /* the list from text ("42,123", "rtn,gptq"); messages name flag */
    int (*parse)(const char *flag, const char *text, SweepConfig *cfg);
    /* the places the enumeration walks: the list's values, plus any extra one (bits: the control
     * arm; every: the place of the methods that have none) */
    int (*slots)(const SweepConfig *cfg);
    /* r's value at place slot; may read the values of the axes above it in the table */
    void (*set)(const SweepConfig *cfg, SweepRun *r, int slot);
    /* the skip rule: whether the run (every axis set) exists at place slot (NULL: always) */
    int (*admits)(const SweepConfig *cfg, const SweepRun *r, int slot);
    /* its part of the run id, with its separator ("_b4"; "" for none) */
    void (*id_part)(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size);
    /* adds its entry (or entries) to its manifest section */
    void (*manifest)(const SweepConfig *cfg, cJSON *section);
    /* orders two rows of summary.csv (records missing the column as their historic default);
     * NULL where sort is 0 */
    int (*compare)(const RunRecord *a, const RunRecord *b);
    /* what the run's value sets in its scheme (sweep_run_scheme: s) or in its options
     * (sweep_run_options: o); one of s and o is NULL each call (NULL: nothing) */
    void (*apply)(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o);
    /* its list before a preset sets anything (cfg->scheme is the default scheme already); NULL:
     * every preset gives it its values */
    void (*defaults)(SweepConfig *cfg);
} SweepAxisOps;

typedef struct {
    const char *field, *flag, *key;
    AxisLevel level;
    int id_rank, sort_rank;
    ManifestSection section;
    int manifest_rank;
    const SweepAxisOps *ops;
} SweepAxis;

extern const SweepAxis sweep_axes[SWEEP_N_AXES];
/* The axis a grid-file or manifest key names, or -1. */
int sweep_axis_by_key(const char *key);
/* Adds the manifest entries of the axes of section, merged by rank with the section's other
 * entries (rank, write(cfg, section)), n of them in rank order. */
typedef struct {
    int rank;
    void (*write)(const SweepConfig *cfg, cJSON *section);
} ManifestEntry;
void sweep_manifest_section(const SweepConfig *cfg, cJSON *section, ManifestSection which, const ManifestEntry *others, int n);
/* summary.csv's order of two rows: the axes by sort rank, then the run id. */
int sweep_compare_records(const RunRecord *a, const RunRecord *b);
/* Whether any run trains under --steps auto (STEPS_AUTO on the steps axis). */
int sweep_steps_auto(const SweepConfig *cfg);

/* The scheme of a run: the sweep's, with the run's bits, granularity and quantizer. */
QuantScheme sweep_run_scheme(const SweepConfig *cfg, const SweepRun *r);
/* Whether a run has a quantized model of its own: every run below 32 bits, and the control arm
 * where it quantizes activations; else its model is the float model. */
int sweep_run_has_model(const SweepConfig *cfg, const SweepRun *r);
/* Its quantized model's name, the part of its id that names the model (its AXIS_FLOAT and
 * AXIS_QUANT parts): s42_64x2_b4; its float model's (AXIS_FLOAT): s42_64x2. */
const char *sweep_model_name(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size);
const char *sweep_group_name(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size);
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
/* --first-methods: none and the methods that tune the base (a combination's first stage). */
int parse_first_method_list(const char *flag, const char *text, SweepConfig *cfg);
int parse_quantizer_list(const char *flag, const char *text, SweepConfig *cfg);
int parse_granularity_list(const char *flag, const char *text, SweepConfig *cfg);
/* A JSON grid file: any axis's key with a list, {"seeds":[42,123],"sizes":["64x2"],"methods":["train","none"]},
 * each list parsed as the axis's flag parses its text. */
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
