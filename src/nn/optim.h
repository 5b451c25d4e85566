/* optim: AdamW over a flat buffer, the warm-up + cosine learning-rate schedule, and global-norm
 * gradient clipping. It knows nothing of tensors: decay applies to the spans it is given. */
#ifndef QCORR_OPTIM_H
#define QCORR_OPTIM_H

#include <stddef.h>

typedef struct {
    float lr;            /* this step's learning rate */
    float beta1, beta2, eps;
    float weight_decay;
    int step;            /* 1-based, for bias correction */
} AdamWStep;

/* params/grads/m/v: n floats; decay: apply weight decay (matrices) or not (vectors) */
void adamw_update(float *params, const float *grads, float *m, float *v, size_t n, int decay, const AdamWStep *s);

/* The same over spans of one flat buffer in a single parallel region (no barrier per tensor):
 * span i covers [offsets[i], offsets[i] + counts[i]) with decay[i]. */
void adamw_update_spans(float *params, const float *grads, float *m, float *v, const size_t *offsets,
                        const size_t *counts, const unsigned char *decay, int n_spans, const AdamWStep *s);

/* Linear warm-up over `warmup` steps to lr, then cosine decay to min_lr at `total` (0-based step). */
float lr_schedule(int step, int total, int warmup, float lr, float min_lr);

/* Scales grads so their global L2 norm is at most max_norm; returns the norm before clipping
 * (summed in double). max_norm <= 0: no clipping. */
double clip_grad_norm(float *grads, size_t n, float max_norm);

#endif
