/* experiment: one run of the research question — fit corrections to a quantized model by the
 * method's table entry (AdamW on ce/kl/mse, or the kind's closed form such as lstsq), evaluate,
 * and compute recovery; plus the prefix caches a sweep shares between runs. */
#ifndef QCORR_EXPERIMENT_H
#define QCORR_EXPERIMENT_H

#include <stdint.h>

#include "correct/correct.h"
#include "nn/data.h"
#include "nn/evaluate.h"
#include "nn/model.h"
#include "quant/quant.h"

/* steps: train until the held-out objective stops improving (--steps auto) */
#define STEPS_AUTO (-1)

typedef enum { SCHEDULE_PLATEAU, SCHEDULE_COSINE, SCHEDULE_DECAY } AutoSchedule;

/* --steps auto: the calibration windows are split (by the seed) into a fitting part and a held-out
 * part, both from the train split; every eval_every steps the held-out objective is measured
 * (forward only); training stops after `patience` measurements without an improvement of at
 * least min_delta times the held-out gap (the objective at step 0 less the float model's on the
 * same windows: kl and mse 0) over the best, or at max_steps, and the best parameters measured
 * are kept. Without a gap (the control arm: the float model itself) an improvement counts from
 * AUTOSTOP_NO_GAP_DELTA of the objective. Schedule plateau: warm-up, then the constant lr until
 * the first plateau, then lr/10 until the second; cosine: the fixed schedule set for max_steps,
 * stopped at the first plateau; decay (warm-up, stable, decay): the constant rate until the first
 * plateau, then a linear fall to 0 over a quarter of the steps so far, then stop. */
#define AUTOSTOP_MIN_DELTA 0.002
#define AUTOSTOP_NO_GAP_DELTA 1e-4
typedef struct {
    int max_steps, eval_every, patience;
    double min_delta, heldout_share;
    AutoSchedule schedule;
    double ema; /* > 0: measure and keep the running average of the parameters, weight ema per step (0.99) */
} AutoStop;

void auto_stop_default(AutoStop *a);
int parse_schedule(const char *text, AutoSchedule *out);
const char *schedule_name(AutoSchedule s);

typedef enum { STOPPED_FIXED, STOPPED_PLATEAU, STOPPED_CAP } StopReason;
const char *stop_reason_name(StopReason r);

/* What one training did: steps run, the step whose parameters were kept (the best held-out
 * measurement; the last step under fixed steps), why it stopped, the held-out objective there
 * (NaN under fixed steps) and the mean training objective of the last steps. */
typedef struct {
    int steps_run, best_step;
    StopReason stopped_by;
    double heldout_objective, objective;
} TrainSummary;

typedef enum { INIT_ZERO, INIT_LSTSQ } CorrectionInit;

typedef struct {
    int every, hidden;
    Objective objective;
    CorrectMethod method;
    /* a combination ("lwc+train"): with_first 1 runs first, a method that tunes the base (tune.h),
     * on the quantized model, then method on the tuned model; each with these options (so each
     * its own steps: a combination trains twice the budget). with_first 0: method alone. */
    int with_first;
    CorrectMethod first;
    int steps, batch, warmup;   /* steps: a fixed count, or STEPS_AUTO (auto below) */
    AutoStop autostop;
    CorrectionInit init;        /* train on linear corrections: start from zero (the kind's init) or the lstsq solution */
    float lr, weight_decay, grad_clip;
    long calib_tokens;          /* calibration budget: train characters, as whole windows */
    uint64_t seed;
    double ridge;               /* lstsq: lambda = ridge * mean diagonal of X^T X */
    int correction_bits;        /* 32: corrections stored as float32; 2..16: rounded as stored (per-row codes, f16 scales) */
    int rank;                   /* lowrank: k per matrix, or RANK_MATCH */
    int lowrank_act_scale;      /* lowrank: SVD of E S, S = diag of each input column's mean |x| (L2QER) */
    unsigned scope;             /* linear kinds: the matrices the scheme quantized (SCOPE_OF roles), one site each */
    const QuantScheme *scheme;  /* the methods that tune the base (tune.h): the scheme q was quantized by (qat: its grids) */
    const char *log_path;       /* CSV step,objective,lr,grad_norm; NULL: none */
    const char *heldout_log_path; /* --steps auto: CSV step,heldout_objective,lr,best; NULL: none */
    int quiet;
    /* optional, ce objective only: the calibration windows' prefix (built from the same
     * calibration_windows), so steps skip the frozen blocks below the first site; a cache of
     * other windows, block or model is refused */
    const StreamCache *calib_cache;
} CorrectOptions;

/* lowrank's rank chosen per matrix so the terms' parameters match a linear stream correction at
 * the options' `every` (lowrank_match_ranks in compensate.h). */
#define RANK_MATCH 0

/* The layout a method fits: its kind (by the table, and hidden for train); stream kinds: every and
 * hidden; linear kinds: a site on each quantized matrix (o->scope), sized by the kind (bias) or the
 * rank (lowrank: o->rank, or matched), in linear_sizes (gpt_linear_count entries, the caller's).
 * -1 (error names the value) for a rank beyond a matrix's min(in, out). */
int correction_layout_for(const CorrectOptions *o, const GPTConfig *cfg, CorrectionLayout *layout, int *linear_sizes);

void correct_options_default(CorrectOptions *o);
/* The rules a method's options meet whoever runs it (`correct`, every run of a sweep): o's method,
 * hidden, steps (resolved: a count or STEPS_AUTO), init and objective against the scheme s the
 * model is quantized by (bits 32: the control arm). -1 and one message naming the rule. */
int correct_options_check(const CorrectOptions *o, const QuantScheme *s);
/* --method's text into o: a method of the table ("lwc"), or a combination "T+M" of a method T
 * that tunes the base and a method M that adds corrections (train, lstsq, lowrank, bias).
 * -1 with a message naming the text otherwise. */
int correct_method_parse(const char *text, CorrectOptions *o);
/* Whether a run of method (after first, where with_first) trains by steps: the method, or in a
 * combination its first method or a second that trains and does not solve (the rule of
 * first_options and second_options in experiment.c; the sweep's steps axis follows it). */
int correct_takes_steps(CorrectMethod method, int with_first, CorrectMethod first);
/* The method's name as records and results give it: "lwc", or "lwc+train" for a combination. */
void correct_method_label(const CorrectOptions *o, char *out, size_t size);
int parse_objective(const char *text, Objective *out);
const char *objective_name(Objective o);

/* The fixed calibration set: ceil(calib_tokens / T) window starts drawn (seeded) from the train
 * split. Caller frees. */
int64_t *calibration_windows(const Corpus *c, long calib_tokens, int T, uint64_t seed, int *n_windows);

/* The tokens of those windows, (n_windows, T), for the layers that take windows rather than a
 * corpus (calib.h, quantize_model_calibrated). Caller frees. */
int32_t *calibration_tokens(const Corpus *c, long calib_tokens, int T, uint64_t seed, int *n_windows);
/* Quantizes m by any quantizer: one that needs data calibrates on the windows calibration_windows
 * draws with (calib_tokens, seed), the same windows the corrections are then fitted on; corpus may
 * be NULL when the scheme needs no data. */
int quantize_model_on_corpus(GPT *m, const QuantScheme *s, const Corpus *corpus, long calib_tokens, uint64_t seed,
                             TensorQuantError *errors, int *n_errors);
/* The scheme's transform alone (transform_model) on those windows: the float model in the basis
 * the quantized one lives in, which every fit that compares weights or streams with the float model
 * needs (correct: the reference the corrections are fitted against). */
int transform_model_on_corpus(GPT *m, const TransformScheme *t, const Corpus *corpus, long calib_tokens, uint64_t seed);

/* Trains c on the frozen q (f: the float model, needed by kl and mse). q's weights never change.
 * o->steps fixed: that many steps on every calibration window; STEPS_AUTO: the rule of AutoStop,
 * c left at the best held-out parameters. The validation split is never read. */
int correction_fit(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out);
/* What fit_params trains: a flat vector with its AdamW state. Corrections train in place (their
 * hook reads params; apply and collect NULL, param_grads 0: q cannot change). A method that trains
 * the base's own parameters (tune.h) keeps them here: apply writes params into q after every
 * change, param_grads runs q's backward with parameter gradients and collect reads those it
 * trains out of q->grads into grads (its rule, the straight-through estimator for qat). Nothing
 * below block frozen_prefix + 1 changes (-1: all may): the prefix a calibration cache may hold. */
typedef struct {
    float *params, *grads, *adam_m, *adam_v;
    size_t num_params;
    int param_grads, frozen_prefix;
    void *ctx;
    void (*apply)(void *ctx, GPT *q);
    void (*collect)(void *ctx, const GPT *q);
} FitParams;
/* correction_fit's loop (the steps, --steps auto's rule) on any FitParams; c gives the hook (and
 * the mse objective's sites). */
int fit_params(GPT *q, GPT *f, Corrections *c, FitParams *p, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out);
/* The same; *objective_out: the mean objective of the last steps. */
int correction_train(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, double *objective_out);
/* --steps auto's held-out windows: max(1, round(share * n)) windows drawn after the n calibration
 * windows of the budget, from the same seeded stream of the train split, so the fitted windows
 * are exactly those a fixed-steps run fits on (holding some of them out instead costs recovery:
 * at 4 bits the corrections are limited by calibration data). */
int heldout_window_count(int n_calib, double heldout_share);
/* The characters calibration_windows is asked for: the budget, and under --steps auto its
 * held-out windows as well (windows [0, n_calib) fitted, the rest held out). */
long calibration_draw_tokens(long calib_tokens, int T, int autostop, double heldout_share);
/* One step's objective of a batch from the tokens into *value, and its gradients added into
 * c->grads (zero them first; param_grads: q->grads too) by a backward down to block stop: what
 * correction_train runs per step without a prefix cache.
 * mse_targets: scratch for c->n_sites stream pointers. -1 when the forward refuses. */
int correction_step_objective(GPT *q, GPT *f, Corrections *c, Objective objective, const int32_t *inputs, const int32_t *targets,
                              int B, int T, int param_grads, int stop, const float **mse_targets, double *value);
/* Solves each linear site in order by ridge least squares to the float stream (QwT), on the
 * calibration windows (never the held-out ones --steps auto draws beyond them). */
int correction_lstsq(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o);

typedef struct {
    Evaluation eval;        /* of the corrected model (its window losses owned: evaluation_free) */
    double objective;       /* mean objective of the last training steps (NaN when it does not train) */
    TrainSummary train;     /* steps_run 0 when it does not train */
    TrainSummary first;     /* a combination's first method (with_first): what its tuning did */
    double seconds_correct, seconds_eval;
} CorrectionResult;

/* The correction half of one experiment, as `correct` and the sweep both run it: sizes c for the
 * method, fits it (the kind's closed form where the method solves, then AdamW steps where it
 * trains; a method that tunes the base trains q's own parameters in place, tune.h) and evaluates the corrected model on the validation split — through val, a cache of
 * q's prefix over the validation windows, when given and deep enough, against ref (the float
 * model's view) when given. c and r->eval are the caller's to free on success. */
int run_correction(GPT *q, GPT *f, const Corpus *corpus, const CorrectOptions *o, const StreamCache *val,
                   const EvalReference *ref, Corrections *c, CorrectionResult *r);

/* recovery = (lq - lc) / (lq - lf); defined only when |lq - lf| >= 1e-4 nats. Returns 0 when
 * undefined (and sets *out to NAN). The perplexity form uses the same rule. */
#define RECOVERY_MIN_GAP 1e-4
/* A gap under this many standard errors is noise the validation split cannot resolve. */
#define RECOVERY_MIN_SE 3.0
int recovery_loss(double lf, double lq, double lc, double *out);
int recovery_ppl(double lf, double lq, double lc, double *out);

/* ok; unresolved: |gap| < 3 gap_se (no recovery reported); undefined: |gap| < 1e-4 nats */
typedef enum { RECOVERY_OK, RECOVERY_UNRESOLVED, RECOVERY_UNDEFINED } RecoveryFlag;
const char *recovery_flag_name(RecoveryFlag f);
RecoveryFlag recovery_flag_of(double gap, double gap_se);

/* Everything one experiment reports (correct --json, a sweep record): the three models' losses
 * with their standard errors over validation windows, the paired standard error of the gap
 * (quantized - float) and of the gain (quantized - corrected), the recovery and its flag, KL to
 * the float model and top-1 agreement, and what each model costs to store. */
typedef struct {
    double loss_float, loss_quant, loss_corrected;
    double loss_se_float, loss_se_quant, loss_se_corrected;
    double gap_se, gain_se;
    RecoveryFlag flag;
    double recovery_loss, recovery_ppl;  /* NaN unless the flag is ok */
    double kl_quant, kl_corrected, top1_quant, top1_corrected;
    double model_bits_float, model_bits_quant, model_bits_corrected, correction_bits, bits_per_weight;
} Outcome;

/* From the float model's view, the quantized and corrected evaluations (against that view), the
 * scheme and what the corrections store (corrections_storage_bits). */
void outcome_compute(Outcome *o, const EvalReference *f, const Evaluation *q, const Evaluation *c, const GPTConfig *cfg,
                     const QuantScheme *scheme, double correction_bits);
/* Adds an outcome's fields to a JSON object (null where a number is undefined). */
struct cJSON;
void add_outcome_fields(struct cJSON *o, const Outcome *out);

#endif
