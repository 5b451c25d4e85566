/* actquant: activation fake quantization at its points of the forward (README: Activation
 * quantization), the one implementation the training forward (model.c), the inference path
 * (infer.c) and the sampler's key/value cache (sample.c) all call, so they quantize the same
 * values the same way. Each point is a no-op when it is off; in calibration (ActState.observe)
 * each hands its float values to the observer and quantizes nothing. The backward of every point
 * is the straight-through estimator: its gradient passes unchanged (the probabilities' backward
 * below is the one place that needs work, because the softmax backward reads the float ones). */
#ifndef QCORR_ACTQUANT_H
#define QCORR_ACTQUANT_H

#include "nn/model.h"

/* What matrix `linear` reads: in itself, or its quantized copy (the model's scratch). */
const float *act_linear_input(GPT *m, int linear, const float *in, int rows, int cols);
/* qkv (rows, 3C): the keys and values (columns C..3C) quantized in place, each its own site. */
void act_keys_values(GPT *m, int layer, float *qkv, int rows);
/* The stream (rows, C) a block passes on, quantized in place. */
void act_stream(GPT *m, int layer, float *x, int rows);
/* Whether a stream correction reads the float stream (ActScheme.correction_float, the stream point
 * on): then the forwards run the hook on the block's float output and quantize what it returns
 * with act_stream_into, into a buffer of their own (never the input: a prefix cache or what the
 * correction saved for its backward); else act_stream in place, then the hook. */
int act_correction_float(const GPT *m);
/* out (rows, C) = the quantized stream of `in` (out may be in; in calibration: in observed, copied). */
void act_stream_into(GPT *m, int layer, float *out, const float *in, int rows);
/* correction_float: block `layer`'s quantized stream in the training forward (max_batch * ctx rows). */
float *act_stream_buffer(GPT *m, int layer);

/* The probabilities: whether they are quantized (or observed); where the training forward keeps
 * layer l's quantized ones for the backward. */
int act_probs_on(const GPT *m);
float *act_saved_probs(GPT *m, int layer);
/* After attention_forward: att_q = Q(att) (the causal part of each (B, NH, T, T) row; att_q may be
 * att itself when no backward follows) and out (B,T,C) recomputed as att_q . V. */
void act_probs_forward(GPT *m, int layer, float *out, float *att_q, const float *att, const float *qkv, int B, int T);
/* After attention_backward (which took the float probabilities: the softmax backward, straight
 * through Q): the values' gradient redone from what the forward used, dV = att_q^T dout. */
void act_probs_backward(GPT *m, float *dqkv, const float *dout, const float *att_q, int B, int T);
/* The sampler's form: rows (one per head) of n probabilities at stride ld, quantized in place as a
 * step of one token sees them (a tensor's scale then covers this token's heads). */
void act_probs_rows(GPT *m, int layer, float *p, int rows, int n, long ld);

/* -1 (with a message) when the scheme is static and has no ranges yet. */
int act_check_ready(const GPT *m);
void act_state_free(ActState *s);

#endif
