/* ops: every layer as a _forward/_backward pair over flat float arrays (llm.c style): outputs
 * first, then inputs, then weights. Parameter gradients are ADDED into; activation gradients are
 * written or added as each function's comment says. N = B*T rows; shapes in the comments.
 * Each op with a fast path (kernels.h) has a naive _ref beside it, the same contract computed in
 * double by the textbook formula: the specification the fast path is tested against on every
 * kernel path (tests/test_ops.c). The fast bodies are kernels_ops.h's and kernels_gemm.h's
 * KERNEL(name) functions, indexed under their op's name by `make tags`. */
#ifndef QCORR_OPS_H
#define QCORR_OPS_H

#include <stdint.h>

/* out (B,T,C) = wte[inputs] + wpe[t] */
void embedding_forward(float *out, const int32_t *inputs, const float *wte, const float *wpe, int B, int T, int C);
/* dwte (V,C), dwpe (P,C) += scatter of dout (B,T,C) */
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inputs, int B, int T, int C);

/* out (N,C) = (inp - mean) * rstd * weight + bias; saves mean, rstd (N) for backward */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N, int C);
/* dinp (N,C) += ...; dweight, dbias (C) += ... (either may be NULL: frozen) */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);
void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N,
                           int C);
void layernorm_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, const float *mean, const float *rstd, int N, int C);

/* out (N,OC) = inp (N,IC) . weight(OC,IC)^T + bias (OC, may be NULL); accumulate: out += instead */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC, int accumulate);
/* dinp (N,IC) = dout . weight (overwritten; NULL: skip); dweight (OC,IC) += dout^T . inp and
 * dbias (OC) += column sums of dout (NULL: frozen, skipped) */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int IC, int OC);
void matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC, int accumulate);
void matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, int N, int IC, int OC);

/* Causal multi-head self-attention. qkv (B,T,3C) holds q|k|v; out (B,T,C); att (B,NH,T,T)
 * saves the softmax probabilities (zero above the diagonal) for backward. */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
/* dqkv (B,T,3C) is overwritten */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH);
void attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
void attention_backward_ref(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH);

/* GELU, tanh approximation. out (N) ; dinp (N) is overwritten (may alias dout) */
void gelu_forward(float *out, const float *inp, long N);
void gelu_backward(float *dinp, const float *inp, const float *dout, long N);
/* The same pair with the tanh saved: the forward also writes th (N), the backward reads it
 * instead of recomputing it (the exp and division are most of GELU's cost); same results. */
void gelu_forward_saving(float *out, float *th, const float *inp, long N);
void gelu_backward_saved(float *dinp, const float *inp, const float *th, const float *dout, long N);
void gelu_forward_ref(float *out, const float *inp, long N);
void gelu_backward_ref(float *dinp, const float *inp, const float *dout, long N);

/* out = a + b (N) */
void residual_forward(float *out, const float *a, const float *b, long N);

/* Fused softmax + cross-entropy over logits (N,V) with targets (N). Returns the mean loss
 * (summed in double). If dlogits != NULL it is overwritten with (softmax - onehot) * dloss,
 * i.e. the gradient of dloss * sum-of-losses; pass dloss = 1/N for the mean. */
double crossentropy_forward_backward(float *dlogits, const float *logits, const int32_t *targets, int N, int V, float dloss);
double crossentropy_forward_backward_ref(float *dlogits, const float *logits, const int32_t *targets, int N, int V, float dloss);

/* column sums: out (C) += sum over rows of inp (N,C); deterministic whatever the thread count */
void column_sum_add(float *out, const float *inp, int N, int C);
void column_sum_add_ref(float *out, const float *inp, int N, int C);

/* The randomized Hadamard transform of rows (README: Transforms): out (rows, n) = H diag(signs) in
 * per row, H the normalized Walsh-Hadamard matrix of order n (a power of two; symmetric, H H = I),
 * signs (n) of +-1 or NULL (all +1). out may alias in. Orthogonal, so its backward is its transpose:
 * dinp = diag(signs) H dout (dinp may alias dout). */
void hadamard_forward(float *out, const float *in, const float *signs, long rows, int n);
void hadamard_backward(float *dinp, const float *dout, const float *signs, long rows, int n);
/* The specification: the product with the explicit matrix, in double. */
void hadamard_forward_ref(float *out, const float *in, const float *signs, long rows, int n);
/* Whether n is a power of two (the orders the transform has), n >= 1. */
int is_power_of_two(long n);

#endif
