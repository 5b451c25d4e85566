/* train: the float training loop (seeded windows, AdamW, warm-up + cosine, clipping, CSV log,
 * progress) and the evaluation (README: Evaluation and recovery) over the whole validation split. */
#ifndef QCORR_TRAIN_H
#define QCORR_TRAIN_H

#include <stdio.h>

#include "nn/data.h"
#include "nn/model.h"

typedef struct {
    int batch, steps, warmup;   /* warmup < 0: min(100, steps/10) */
    float lr, min_lr;           /* min_lr < 0: lr/10 */
    float weight_decay, grad_clip;
    uint64_t seed;
    int eval_every;             /* 0: evaluate only at the end */
    const char *log_path;       /* CSV: step,loss,lr,grad_norm,tokens_per_s,val_loss; NULL: none */
    int quiet;                  /* no progress on stderr */
    /* called after every step when set (the sweep's live progress line) */
    void (*on_step)(void *ctx, int step, int total, double loss);
    void *on_step_ctx;
    /* called when training has ended well, before the log is committed, to write the checkpoint
     * (NULL: none): a failed save leaves no log, and a log always has its checkpoint beside it */
    int (*save)(const GPT *m, void *ctx);
    void *save_ctx;
} TrainOptions;

typedef struct {
    double train_loss;  /* mean of the last 20 steps */
    double val_loss;
    double seconds;     /* training steps only */
    double tokens_per_second;
    int steps;
} TrainResult;

void train_options_default(TrainOptions *o);
/* Trains m in place on c's train split (m needs gpt_enable_training); a corpus without one window
 * in either split, a non-finite loss, gradient norm or validation loss is an error. */
int train_model(GPT *m, const Corpus *c, const TrainOptions *o, TrainResult *r);
/* One AdamW step over every tensor (decay on matrices only), after clipping; returns grad norm. */
double gpt_optimizer_step(GPT *m, float lr, float weight_decay, float grad_clip, int step);

/* Mean next-token cross-entropy over ids[0..n) in non-overlapping windows of T = ctx:
 * windows i = 0 .. floor((n-1)/T)-1 read ids[iT .. iT+T-1] and predict ids[iT+1 .. iT+T]. */
double evaluate_loss(GPT *m, const int32_t *ids, size_t n, const ModelHook *hook);

/* A progress line: rewritten in place on a terminal, a plain line otherwise. */
void progress_line(FILE *f, int is_final, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
