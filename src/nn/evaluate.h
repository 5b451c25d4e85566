/* evaluate: the validation numbers (README: Evaluation and recovery) — the loss over the whole
 * validation split in windows of T with every window's mean kept (so each loss has a standard
 * error), and, against a reference model, KL divergence and top-1 agreement at every position
 * (llama.cpp's perplexity --kl-divergence); plus the prefix caches that let many corrections share
 * one prefix. */
#ifndef QCORR_EVALUATE_H
#define QCORR_EVALUATE_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

/* The frozen prefix of a model computed once: for each window, the stream after block
 * first_block (before its hook). Every correction whose sites all lie above that block reuses
 * it — the sweep shares one cache across all widths and methods of a (bits, every). */
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
/* Copies the chosen windows' streams into sc->batch and their targets into targets. */
void stream_cache_gather(const StreamCache *sc, const int *pick, int B, int32_t *targets);
/* Whether sc holds m's contiguous windows at a block no higher than first_block. */
int stream_cache_usable(const StreamCache *sc, const GPT *m, int first_block);

/* The reference model's view of the validation windows, computed once: every position's
 * log-probabilities and most likely token, every window's mean loss. */
typedef struct {
    int n_windows, T, V;
    double *logprobs;    /* (n_windows * T, V), in double: a model against itself has KL exactly 0 */
    uint8_t *top;        /* (n_windows * T) argmax (the first of equal ones) */
    double *window_loss; /* (n_windows) */
    double loss;
} EvalReference;

typedef struct {
    int n_windows, T;
    double *window_loss;  /* (n_windows) mean cross-entropy of each window; owned */
    double loss, loss_se; /* the mean over all positions (= the mean of the window means) and its
                           * standard error over windows (std with n-1, over sqrt n) */
    /* against a reference (have_reference): KL(p_ref || p_model) per position, its mean, the
     * standard error of the window means, its 99th percentile over positions (linear
     * interpolation between order statistics, numpy's default); top-1 agreement; the loss
     * difference (model - reference) and the standard error of its per-window differences */
    int have_reference;
    double kl_mean, kl_se, kl_p99, top1_agree, loss_diff, loss_diff_se;
} Evaluation;

/* The windows of ids[0..n): floor((n-1)/T) of them (README: Evaluation and recovery). */
int eval_window_count(size_t n, int T);
int eval_reference_build(EvalReference *r, GPT *ref, const int32_t *ids, size_t n);
void eval_reference_free(EvalReference *r);
/* Evaluates m (its hook may be NULL) over the validation windows of ids[0..n): through prefix
 * when it is given and usable for a hook whose sites all lie above prefix_block (else from the
 * tokens), against ref when given. -1 with a message when the split holds no window, the
 * reference does not match, or the forward refuses. */
int evaluate_model(GPT *m, const ModelHook *hook, const int32_t *ids, size_t n, const StreamCache *prefix, int prefix_block,
                   const EvalReference *ref, Evaluation *out);
void evaluation_free(Evaluation *e);
/* The reference model's evaluation against itself (KL 0, agreement 1), without running it. */
int evaluation_of_reference(Evaluation *e, const EvalReference *ref);
/* A deep copy (its own window losses). */
int evaluation_copy(Evaluation *dst, const Evaluation *src);

/* The standard error of the mean of x[0..n) (sample std, n-1), and of the paired differences a-b. */
double mean_se(const double *x, int n);
double paired_diff_se(const double *a, const double *b, int n);
/* The p-quantile (0..1) of x[0..n) by linear interpolation; sorts x in place. */
double quantile_sorted_inplace(double *x, long n, double p);

#endif
