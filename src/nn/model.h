/* model: the GPT of the README's Float model and training — its tensor table, the flat
 * parameter/gradient/optimizer buffers, and the whole model's forward and backward, with a hook
 * after every block. */
#ifndef QCORR_MODEL_H
#define QCORR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nn/actscheme.h"

typedef struct {
    int vocab_size; /* V */
    int ctx;        /* P: maximum context, rows of the position embedding */
    int d_model;    /* C */
    int n_layer;    /* L */
    int n_head;     /* NH, divides C */
} GPTConfig;

/* What a tensor is, for weight decay and the quantizer's scope. */
typedef enum { ROLE_EMBEDDING, ROLE_NORM, ROLE_BIAS, ROLE_LINEAR, ROLE_HEAD } TensorRole;

/* The tensor table, in nanoGPT's names and layouts. X(field, name, rows, cols, role):
 * cols == 0 means a vector of `rows`. V, P, C are the config's sizes. Adding a tensor is one line. */
#define GPT_EMBEDDING_TENSORS(X)                                     \
    X(wte, "transformer.wte.weight", V, C, ROLE_EMBEDDING)           \
    X(wpe, "transformer.wpe.weight", P, C, ROLE_EMBEDDING)
#define GPT_LAYER_TENSORS(X)                                         \
    X(ln_1_weight, "ln_1.weight", C, 0, ROLE_NORM)                   \
    X(ln_1_bias, "ln_1.bias", C, 0, ROLE_NORM)                       \
    X(attn_weight, "attn.c_attn.weight", 3 * C, C, ROLE_LINEAR)      \
    X(attn_bias, "attn.c_attn.bias", 3 * C, 0, ROLE_BIAS)            \
    X(attn_proj_weight, "attn.c_proj.weight", C, C, ROLE_LINEAR)     \
    X(attn_proj_bias, "attn.c_proj.bias", C, 0, ROLE_BIAS)           \
    X(ln_2_weight, "ln_2.weight", C, 0, ROLE_NORM)                   \
    X(ln_2_bias, "ln_2.bias", C, 0, ROLE_NORM)                       \
    X(fc_weight, "mlp.c_fc.weight", 4 * C, C, ROLE_LINEAR)           \
    X(fc_bias, "mlp.c_fc.bias", 4 * C, 0, ROLE_BIAS)                 \
    X(mlp_proj_weight, "mlp.c_proj.weight", C, 4 * C, ROLE_LINEAR)   \
    X(mlp_proj_bias, "mlp.c_proj.bias", C, 0, ROLE_BIAS)
#define GPT_HEAD_TENSORS(X)                                          \
    X(ln_f_weight, "transformer.ln_f.weight", C, 0, ROLE_NORM)       \
    X(ln_f_bias, "transformer.ln_f.bias", C, 0, ROLE_NORM)           \
    X(lm_head_weight, "lm_head.weight", V, C, ROLE_HEAD)             \
    X(lm_head_bias, "lm_head.bias", V, 0, ROLE_BIAS)

#define PLUS_ONE(field, name, rows, cols, role) +1
enum {
    EMBEDDING_TENSOR_COUNT = 0 GPT_EMBEDDING_TENSORS(PLUS_ONE),
    LAYER_TENSOR_COUNT = 0 GPT_LAYER_TENSORS(PLUS_ONE),
    HEAD_TENSOR_COUNT = 0 GPT_HEAD_TENSORS(PLUS_ONE),
};
#define DECLARE_POINTER(field, name, rows, cols, role) float *field;
typedef struct { GPT_LAYER_TENSORS(DECLARE_POINTER) } LayerParams;
typedef struct { GPT_EMBEDDING_TENSORS(DECLARE_POINTER) GPT_HEAD_TENSORS(DECLARE_POINTER) } GlobalParams;

typedef struct {
    char name[64];
    size_t offset;   /* into the flat buffer, in floats */
    int rows, cols;  /* cols == 0: a vector */
    int layer;       /* -1 for embeddings and head */
    TensorRole role;
} TensorSpec;

/* Saved activations of one block (B,T rows). */
#define GPT_LAYER_ACTIVATIONS(X) \
    X(ln_1, N * C) X(ln_1_mean, N) X(ln_1_rstd, N) X(qkv, N * 3 * C) X(att, (long)B * NH * T * T) \
    X(atty, N * C) X(resid_mid, N * C) X(ln_2, N * C) X(ln_2_mean, N) X(ln_2_rstd, N)          \
    X(fch, N * 4 * C) X(fch_tanh, N * 4 * C) X(fch_gelu, N * 4 * C) X(resid_out, N * C)
#define DECLARE_ACTIVATION(field, count) float *field;
typedef struct { GPT_LAYER_ACTIVATIONS(DECLARE_ACTIVATION) } LayerActivations;

/* The linear layers of a block in forward order, each named by its tensors and by the activation
 * it reads: X(slot, name, weight field, bias field, input activation, in, out) with in/out in
 * terms of C. The head (input ln_f) follows the last block's. Index of block l's slot s:
 * l * LINEARS_PER_BLOCK + s; the head's: L * LINEARS_PER_BLOCK. */
#define GPT_BLOCK_LINEARS(X)                                                               \
    X(LINEAR_QKV, "attn.c_attn", attn_weight, attn_bias, ln_1, C, 3 * C)                   \
    X(LINEAR_ATTN_PROJ, "attn.c_proj", attn_proj_weight, attn_proj_bias, atty, C, C)       \
    X(LINEAR_FC, "mlp.c_fc", fc_weight, fc_bias, ln_2, C, 4 * C)                           \
    X(LINEAR_MLP_PROJ, "mlp.c_proj", mlp_proj_weight, mlp_proj_bias, fch_gelu, 4 * C, C)
#define LINEAR_SLOT(slot, name, w, b, input, in, out) slot,
enum { GPT_BLOCK_LINEARS(LINEAR_SLOT) LINEARS_PER_BLOCK };
#undef LINEAR_SLOT

/* A linear layer's shape and name, from the config alone. */
typedef struct {
    int in, out;          /* IC, OC */
    char name[64];        /* "transformer.h.1.mlp.c_fc", "lm_head": its tensors' common prefix */
} LinearShape;

/* One linear layer out = in . weight^T + bias, as the model runs it. */
typedef struct {
    int index;            /* see GPT_BLOCK_LINEARS */
    int in, out;          /* IC, OC */
    float *weight, *bias; /* (OC, IC), (OC), in the parameter buffer */
} Linear;

/* How corrections enter the model without the model knowing them. Every callback may be NULL.
 * after_block returns the stream the next block reads (x itself where it does nothing);
 * after_block_backward turns dx, the gradient w.r.t. that stream, into the gradient w.r.t. x in
 * place. after_linear adds to a linear layer's output (rows, OC) given the input the matrix read
 * (after activation quantization); after_linear_backward adds its part of the input gradient
 * into din (rows, IC) given dout (and accumulates its own parameter gradients). */
typedef struct {
    void *ctx;
    int max_rows; /* the most rows (B*T) its saved activations hold; 0: any. The forward refuses more. */
    float *(*after_block)(void *ctx, int block, float *x, int rows);
    void (*after_block_backward)(void *ctx, int block, float *dx, int rows);
    void (*after_linear)(void *ctx, int linear, float *out, const float *in, int rows);
    void (*after_linear_backward)(void *ctx, int linear, float *din, const float *dout, const float *in, int rows);
} ModelHook;

typedef struct {
    GPTConfig config;
    TensorSpec *specs;
    int n_specs;
    size_t num_params;
    float *params;      /* one allocation each */
    float *grads;       /* NULL until gpt_enable_training */
    float *adam_m, *adam_v;

    /* activations, one allocation, sized for max_batch rows of ctx */
    int max_batch;
    float *activation_memory;
    size_t activation_floats;
    float *encoded;     /* (B,T,C) */
    LayerActivations *layers;
    float **block_input;/* the stream each block reads (after the previous block's hook) */
    float *final_stream;/* the stream ln_f reads */
    float *ln_f, *ln_f_mean, *ln_f_rstd;
    float *logits;      /* (B,T,V) */
    int32_t *inputs;    /* (B,T) of the last forward */
    int batch, seq;     /* B, T of the last forward */

    /* activation fake quantization (nn/actscheme.h; off unless gpt_set_act_scheme): the inputs
     * of the five matrices, the stream, keys and values, probabilities go through it */
    ActState act;

    /* online Hadamard transforms (README: Transforms; 0: none): every block's linear slot s with
     * bit s of online_slots set reads H diag(signs) x instead of x (before activation
     * quantization), its weight holding W diag(signs) H; signs drawn from online_seed */
    unsigned online_slots;
    uint64_t online_seed;
    float *online_signs; /* (gpt_linear_count, 4C): linear i's signs at i * 4C */
    float *online_buf;   /* (B,T,4C): the transformed input, allocated by gpt_set_online */

    /* the forward-only path's scratch (infer.h), allocated by its first Inference and kept until
     * gpt_free, so repeated evaluations do not fault in tens of megabytes each time (so evaluate
     * a model through a pointer to it, never a copy of the struct: the copy's scratch would be
     * freed by no one) */
    float *infer_memory;
    size_t infer_floats;
    int infer_busy;     /* an Inference holds infer_memory */

    /* backward scratch (training only) */
    float *grad_memory;
    float *dresid, *dln, *datty, *dqkv, *dfch, *dlogits;
} GPT;

/* Validates the config (sizes, heads dividing d_model, limits) with a message naming the value. */
int gpt_config_check(const GPTConfig *cfg);
size_t gpt_param_count(const GPTConfig *cfg);
/* Bytes that gpt_init + gpt_enable_training will allocate for a given batch (for limits). */
double gpt_memory_bytes(const GPTConfig *cfg, int max_batch, int training);

int gpt_init(GPT *m, const GPTConfig *cfg, int max_batch);
int gpt_enable_backward(GPT *m); /* backward scratch only: stream gradients of a frozen model */
int gpt_enable_training(GPT *m); /* plus parameter gradients and AdamW state */
/* A copy of src's config and weights (not its activations), sized for max_batch. */
int gpt_clone(GPT *dst, const GPT *src, int max_batch);
void gpt_free(GPT *m);
/* nanoGPT init: N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), biases 0, LN weight 1 */
void gpt_init_weights(GPT *m, uint64_t seed);

LayerParams layer_view(const GPT *m, float *base, int layer);
GlobalParams global_view(const GPT *m, float *base);
const TensorSpec *gpt_find_tensor(const GPT *m, const char *name);
size_t tensor_numel(const TensorSpec *t);

/* Forward over inputs (B,T), B <= max_batch, T <= ctx: fills m->logits. hook may be NULL. The
 * forwards return -1 (with a message) when B*T exceeds the hook's max_rows, else 0. */
int gpt_forward(GPT *m, const int32_t *inputs, int B, int T, const ModelHook *hook);
/* Only blocks [0, n_blocks) (with their hooks), no head: for work that needs the stream only. */
int gpt_forward_blocks(GPT *m, const int32_t *inputs, int B, int T, const ModelHook *hook, int n_blocks);
/* Forward from a cached prefix: x (B,T,C) is block first-1's output before its hook (quantized, or
 * float where a stream correction reads the float stream: act_correction_float); runs that
 * hook, blocks [first, L) and the head. x must stay alive until the backward (stop_block =
 * first) is done. The embedding is not run, so parameter gradients are not available. */
int gpt_forward_from(GPT *m, float *x, int first, int B, int T, const ModelHook *hook);
/* Blocks [first, last) (with their hooks) on x (B,T,C), the stream entering block first; the stream
 * after the last one's hook is then m->final_stream. For work that walks the model block by block
 * from a cache (calibration). */
int gpt_forward_range(GPT *m, float *x, int first, int last, int B, int T, const ModelHook *hook);
/* Block `block` on x up to and including its linear layer `slot` (GPT_BLOCK_LINEARS): what that
 * layer reads and writes, without the rest of the block (nor its hook). */
int gpt_forward_block_until(GPT *m, float *x, int block, int slot, int B, int T, const ModelHook *hook);
/* The final LayerNorm and the head on x (B,T,C), the stream after the last block's hook. */
int gpt_forward_head(GPT *m, float *x, int B, int T, const ModelHook *hook);
/* Mean cross-entropy of the last forward; also writes m->dlogits (for d mean) if training. */
double gpt_loss(GPT *m, const int32_t *targets);
/* Backward of the last forward. from_logits: start from m->dlogits (else from a zero gradient
 * at the final stream: objectives that live entirely in hooks). param_grads: accumulate into
 * m->grads (else the base is frozen and only stream gradients flow, to the hook). stop_block:
 * the lowest block whose backward runs; the hook after block stop_block-1 still runs (it sits
 * above the skipped blocks), nothing below it does. gpt_zero_grad first. */
void gpt_backward(GPT *m, const ModelHook *hook, int from_logits, int param_grads, int stop_block);
void gpt_zero_grad(GPT *m);
/* The linear layers: how many (4 per block and the head), and one by index. */
int gpt_linear_count(const GPTConfig *cfg);
LinearShape gpt_linear_shape(const GPTConfig *cfg, int index);
Linear gpt_linear(const GPT *m, int index);
/* The one place a linear layer runs: out (rows, OC) = Q(R(in)) . W^T + b (accumulate: out +=), with
 * R the layer's online transform and Q the activation fake-quantization where they are on, then
 * the hook's after_linear (given Q(R(in)), what the matrix read). */
void linear_forward(GPT *m, const ModelHook *hook, int index, float *out, const float *in, int rows, int accumulate);
/* Its backward: din (rows, IC) = R^T (dout . W) (overwritten; straight through Q), dweight/dbias += the
 * parameter gradients from Q(in) (NULL: frozen), then the hook's after_linear_backward. */
void linear_backward(GPT *m, const ModelHook *hook, int index, float *din, float *dweight, float *dbias, const float *dout,
                     const float *in, int rows);

/* Turns activation fake quantization on or off (README: Activation quantization). The gradient
 * through every point is the straight-through estimator. A static scheme starts uncalibrated: the
 * forwards refuse it until gpt_set_act_ranges (or act_calibrate, quant/actcalib.h) gives its
 * ranges. gpt_set_act_bits: the old scheme, per-token symmetric at the matrices' inputs (0: off). */
int gpt_set_act_scheme(GPT *m, const ActScheme *a);
int gpt_set_act_bits(GPT *m, int bits);
/* The static ranges, (act_site_count, 2) [lo, hi] per site; the scheme must be static. */
int gpt_set_act_ranges(GPT *m, const float *ranges);
/* dst's activation quantization made src's (scheme and ranges). */
int gpt_copy_act(GPT *dst, const GPT *src);

/* Online transforms: bit s of slots (1u << LINEAR_ATTN_PROJ, ...) puts the randomized Hadamard
 * transform H diag(signs) at the input of every block's linear slot s (0: none), with the signs of
 * linear i drawn by gpt_online_signs(seed, i, n). The slot's input width must be a power of two.
 * It changes only what the matrix reads; the caller folds diag(signs) H into the weights
 * (transform.c) so the float model computes the same function. Its backward is the transpose:
 * exact, so gradients flow through it (no straight-through). */
int gpt_set_online(GPT *m, unsigned slots, uint64_t seed);
/* The n signs (+-1) of linear layer i's online transform under seed: xorshift64* seeded with
 * seed ^ (0x9E3779B97F4A7C15 * (i + 1)), one draw per sign, its top bit the sign. */
void gpt_online_signs(float *signs, uint64_t seed, int linear, int n);
/* The signs linear i's input goes through, or NULL where it has no online transform. */
const float *gpt_online(const GPT *m, int linear);

#endif
