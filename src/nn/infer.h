/* infer: the forward pass alone, for evaluation. The training forward (model.c) keeps every
 * block's activations for the backward: 16 (B,T,C)-sized arrays and the attention matrix per
 * block, hundreds of megabytes at batch 32, each written once and read back later. Here every
 * block reuses one block's scratch (the residual stream is added to in place) and the GELU's tanh
 * is not kept, so a block's arrays are the ones the previous block left warm; the windows can go
 * through in chunks (tests use that), though the whole batch at once is fastest (infer.c). The
 * arithmetic is the training forward's, op for op (the same kernels, the residual added in the
 * same order), so the logits are the same bits (tested) whenever a window has at least GEMM_MIN_ROWS positions, as every
 * model of the tool's presets does (shorter products go to BLAS, whose sums depend on the row
 * count, and then agree to rounding). */
#ifndef QCORR_INFER_H
#define QCORR_INFER_H

#include "nn/model.h"

typedef struct {
    int windows;     /* windows per chunk */
    int T;
    float *memory;   /* one allocation: the model's (GPT.infer_memory) or, if another Inference holds that, its own */
    GPT *owner;      /* the model whose scratch `memory` is; NULL when the Inference allocated it */
    float *x, *ln, *mean, *rstd, *qkv, *att, *atty, *fch;
} Inference;

/* Scratch for chunks of `windows` windows of the model's context (0, or more than m->max_batch:
 * m->max_batch windows): the model's own, grown if too small and kept until gpt_free (evaluating
 * batch after batch pays for the allocation and its page faults once), unless another Inference
 * of the model holds it. */
int inference_init(Inference *inf, GPT *m, int windows);
/* Gives the scratch back to its model (before gpt_free of that model) or frees it. */
void inference_free(Inference *inf);

/* Logits (B,T,V) into m->logits for B windows (B <= m->max_batch, T <= the context): from the
 * tokens inputs (B,T) when x is NULL, else from x (B,T,C), block first-1's output before its hook
 * (a prefix cache; first >= 1). The hook runs as in gpt_forward (its max_rows checked against B*T);
 * the model's saved activations are neither read nor written. Returns -1 (with a message) on a
 * refused batch. */
int gpt_infer(GPT *m, Inference *inf, const int32_t *inputs, const float *x, int first, int B, int T, const ModelHook *hook);

#endif
