/* experiment: one run of the research question — fit corrections to a quantized model by the
 * method's table entry (AdamW on ce/kl/mse, or the kind's closed form such as lstsq), evaluate,
 * and compute recovery; plus the prefix caches a sweep shares between runs. */
#ifndef QCORR_EXPERIMENT_H
#define QCORR_EXPERIMENT_H

#include <stdint.h>

#include "correct.h"
#include "data.h"
#include "model.h"
#include "quant.h"

/* The frozen prefix of a quantized model computed once: for each window, the stream after
 * block first_block (before its hook). Every correction whose first site follows that block
 * reuses it — the sweep shares one cache across all widths and methods of a (bits, every). */
typedef struct {
    int first_block, n_windows, T, C, max_batch;
    uint64_t identity;  /* stream_cache_identity of what it was built from */
    float *streams;     /* (n_windows, T, C) */
    int32_t *targets;   /* (n_windows, T): the next token of every position */
    float *batch;       /* (max_batch, T, C) scratch the forward reads from */
} StreamCache;

/* What a cache holds, by content: a hash of the window starts (or their count, when contiguous),
 * the block and the model's weights, so a cache from another calibration set or model is refused. */
uint64_t stream_cache_identity(const GPT *m, const int64_t *starts, int n_windows, int first_block);
/* starts == NULL: the windows are contiguous, window i at ids[i*T] (the evaluation layout). */
int stream_cache_build(StreamCache *sc, GPT *m, const int32_t *ids, const int64_t *starts, int n_windows, int first_block);
void stream_cache_free(StreamCache *sc);
/* evaluate_loss over the windows of a cache (same result as evaluate_loss on them). */
double evaluate_loss_cached(GPT *m, const StreamCache *sc, const ModelHook *hook);

typedef struct {
    int every, hidden;
    Objective objective;
    CorrectMethod method;
    int steps, batch, warmup;
    float lr, weight_decay, grad_clip;
    long calib_tokens;          /* calibration budget: train characters, as whole windows */
    uint64_t seed;
    double ridge;               /* lstsq: lambda = ridge * mean diagonal of X^T X */
    int rank;                   /* lowrank: k per matrix, or RANK_MATCH */
    int lowrank_act_scale;      /* lowrank: SVD of E S, S = diag of each input column's mean |x| (L2QER) */
    unsigned scope;             /* linear kinds: the matrices the scheme quantized (SCOPE_OF roles), one site each */
    const char *log_path;       /* CSV step,objective,lr; NULL: none */
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

/* Trains c on the frozen q (f: the float model, needed by kl and mse). q's weights never change.
 * *objective_out: the mean objective of the last steps. */
int correction_train(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, double *objective_out);
/* Solves each linear site in order by ridge least squares to the float stream (QwT). */
int correction_lstsq(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o);

typedef struct {
    double loss_corrected;  /* validation loss of the corrected model */
    double objective;       /* mean objective of the last training steps (NaN when it does not train) */
    double seconds_correct, seconds_eval;
} CorrectionResult;

/* The correction half of one experiment, as `correct` and the sweep both run it: sizes c for the
 * method, fits it (the kind's closed form where the method solves, then AdamW steps where it
 * trains) and evaluates the corrected model on the validation split — through val, a cache of
 * q's prefix over the validation windows, when given and deep enough. c is the caller's to free
 * on success. */
int run_correction(GPT *q, GPT *f, const Corpus *corpus, const CorrectOptions *o, const StreamCache *val, Corrections *c,
                   CorrectionResult *r);

/* recovery = (lq - lc) / (lq - lf); defined only when |lq - lf| >= 1e-4 nats. Returns 0 when
 * undefined (and sets *out to NAN). The perplexity form uses the same rule. */
#define RECOVERY_MIN_GAP 1e-4
int recovery_loss(double lf, double lq, double lc, double *out);
int recovery_ppl(double lf, double lq, double lc, double *out);

/* Adds one run's result to a JSON object — loss_float, loss_quant, loss_corrected, ppl_*,
 * recovery_loss and recovery_ppl (null when undefined), gain_loss — as `qcorr correct --json`
 * and the sweep's records both report it. Returns whether the recovery is defined. */
struct cJSON;
int add_result_fields(struct cJSON *o, double lf, double lq, double lc);

#endif
