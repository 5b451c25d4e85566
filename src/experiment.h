/* experiment: one run of the research question — quantize a float model, fit corrections by
 * SGD (ce/kl/mse) or by ridge least squares (lstsq), evaluate, and compute recovery. */
#ifndef QCORR_EXPERIMENT_H
#define QCORR_EXPERIMENT_H

#include <stdint.h>

#include "correct.h"
#include "data.h"
#include "model.h"
#include "quant.h"

typedef enum { METHOD_TRAIN, METHOD_LSTSQ } CorrectMethod;

typedef struct {
    int every, hidden;
    Objective objective;
    CorrectMethod method;
    int steps, batch, warmup;
    float lr, weight_decay, grad_clip;
    long calib_tokens;          /* calibration budget: train characters, as whole windows */
    uint64_t seed;
    double ridge;               /* lstsq: lambda = ridge * mean diagonal of X^T X */
    const char *log_path;       /* CSV step,objective,lr; NULL: none */
    int quiet;
} CorrectOptions;

void correct_options_default(CorrectOptions *o);
int parse_objective(const char *text, Objective *out);
const char *objective_name(Objective o);

/* The fixed calibration set: ceil(calib_tokens / T) window starts drawn (seeded) from the train
 * split. Caller frees. */
int64_t *calibration_windows(const Corpus *c, long calib_tokens, int T, uint64_t seed, int *n_windows);

/* Trains c on the frozen q (f: the float model, needed by kl and mse). q's weights never change.
 * *objective_out: the mean objective of the last steps. */
int correction_train(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, double *objective_out);
/* Solves each linear site in order by ridge least squares to the float stream (QwT). */
int correction_lstsq(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o);

/* recovery = (lq - lc) / (lq - lf); defined only when |lq - lf| >= 1e-4 nats. Returns 0 when
 * undefined (and sets *out to NAN). The perplexity form uses the same rule. */
#define RECOVERY_MIN_GAP 1e-4
int recovery_loss(double lf, double lq, double lc, double *out);
int recovery_ppl(double lf, double lq, double lc, double *out);

#endif
