/* model: see model.h. The tensor table is expanded from the X-macros once, at init; every
 * buffer (parameters, gradients, AdamW moments, activations, scratch) is one allocation. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "quant.h"
#include "util.h"

#define MAX_D_MODEL 8192
#define MAX_LAYERS 256
#define MAX_CTX 8192

int gpt_config_check(const GPTConfig *c) {
    if (c->vocab_size < 1 || c->vocab_size > 256) { qc_error("vocab size %d is out of range [1, 256]", c->vocab_size); return -1; }
    if (c->ctx < 1 || c->ctx > MAX_CTX) { qc_error("--ctx %d is out of range [1, %d]", c->ctx, MAX_CTX); return -1; }
    if (c->d_model < 1 || c->d_model > MAX_D_MODEL) { qc_error("--d-model %d is out of range [1, %d]", c->d_model, MAX_D_MODEL); return -1; }
    if (c->n_layer < 1 || c->n_layer > MAX_LAYERS) { qc_error("--layers %d is out of range [1, %d]", c->n_layer, MAX_LAYERS); return -1; }
    if (c->n_head < 1 || c->d_model % c->n_head != 0) {
        qc_error("--heads %d must be positive and divide --d-model %d", c->n_head, c->d_model);
        return -1;
    }
    return 0;
}

static size_t layer_floats(const GPTConfig *cfg) {
    size_t C = (size_t)cfg->d_model, n = 0;
#define COUNT(field, name, rows, cols, role) n += (size_t)(rows) * ((cols) != 0 ? (size_t)(cols) : 1);
    GPT_LAYER_TENSORS(COUNT)
#undef COUNT
    return n;
}

size_t gpt_param_count(const GPTConfig *cfg) {
    size_t V = (size_t)cfg->vocab_size, P = (size_t)cfg->ctx, C = (size_t)cfg->d_model, n = 0;
#define COUNT(field, name, rows, cols, role) n += (size_t)(rows) * ((cols) != 0 ? (size_t)(cols) : 1);
    GPT_EMBEDDING_TENSORS(COUNT)
    GPT_HEAD_TENSORS(COUNT)
#undef COUNT
    (void)V; (void)P;
    return n + layer_floats(cfg) * (size_t)cfg->n_layer;
}

/* Floats of saved activations for B rows of T (all layers) plus the global ones. */
static size_t activation_count(const GPTConfig *cfg, int B) {
    long T = cfg->ctx, C = cfg->d_model, NH = cfg->n_head, N = (long)B * T, per_layer = 0;
#define COUNT(field, count) per_layer += (count);
    GPT_LAYER_ACTIVATIONS(COUNT)
#undef COUNT
    return (size_t)(per_layer * cfg->n_layer + N * C /*encoded*/ + N * C + 2 * N /*ln_f*/ + N * cfg->vocab_size);
}

static size_t grad_scratch_count(const GPTConfig *cfg, int B) {
    size_t N = (size_t)B * cfg->ctx, C = (size_t)cfg->d_model;
    return N * C * 3 /*dresid, dln, datty*/ + N * 3 * C + N * 4 * C + N * (size_t)cfg->vocab_size;
}

double gpt_memory_bytes(const GPTConfig *cfg, int max_batch, int training) {
    double params = (double)gpt_param_count(cfg);
    double bytes = 4.0 * (params + (double)activation_count(cfg, max_batch));
    if (training) bytes += 4.0 * (3.0 * params + (double)grad_scratch_count(cfg, max_batch));
    return bytes;
}

size_t tensor_numel(const TensorSpec *t) { return (size_t)t->rows * (t->cols ? (size_t)t->cols : 1); }

static int build_specs(GPT *m) {
    const GPTConfig *cfg = &m->config;
    int V = cfg->vocab_size, P = cfg->ctx, C = cfg->d_model;
    m->n_specs = EMBEDDING_TENSOR_COUNT + HEAD_TENSOR_COUNT + LAYER_TENSOR_COUNT * cfg->n_layer;
    m->specs = qc_calloc((size_t)m->n_specs, sizeof(TensorSpec), "tensor table");
    if (!m->specs) return -1;
    size_t offset = 0;
    int k = 0;
#define ADD(field, tname, r, c, trole)                                             \
    do {                                                                           \
        TensorSpec *t = &m->specs[k++];                                            \
        snprintf(t->name, sizeof t->name, "%s%s", prefix, tname);                  \
        t->rows = (r); t->cols = (c); t->role = (trole); t->layer = layer;         \
        t->offset = offset;                                                        \
        offset += tensor_numel(t);                                                 \
    } while (0);
    {
        const char *prefix = ""; int layer = -1;
        GPT_EMBEDDING_TENSORS(ADD)
    }
    for (int l = 0; l < cfg->n_layer; l++) {
        char prefix[32]; int layer = l;
        snprintf(prefix, sizeof prefix, "transformer.h.%d.", l);
        GPT_LAYER_TENSORS(ADD)
    }
    {
        const char *prefix = ""; int layer = -1;
        GPT_HEAD_TENSORS(ADD)
    }
#undef ADD
    (void)V; (void)P; (void)C;
    m->num_params = offset;
    return 0;
}

LayerParams layer_view(const GPT *m, float *base, int layer) {
    LayerParams p;
    const TensorSpec *t = m->specs + EMBEDDING_TENSOR_COUNT + (size_t)layer * LAYER_TENSOR_COUNT;
#define SET(field, name, rows, cols, role) p.field = base + (t++)->offset;
    GPT_LAYER_TENSORS(SET)
#undef SET
    return p;
}

GlobalParams global_view(const GPT *m, float *base) {
    GlobalParams p;
    const TensorSpec *t = m->specs;
#define SET(field, name, rows, cols, role) p.field = base + (t++)->offset;
    GPT_EMBEDDING_TENSORS(SET)
    t = m->specs + m->n_specs - HEAD_TENSOR_COUNT;
    GPT_HEAD_TENSORS(SET)
#undef SET
    return p;
}

const TensorSpec *gpt_find_tensor(const GPT *m, const char *name) {
    for (int i = 0; i < m->n_specs; i++)
        if (strcmp(m->specs[i].name, name) == 0) return &m->specs[i];
    return NULL;
}

int gpt_init(GPT *m, const GPTConfig *cfg, int max_batch) {
    memset(m, 0, sizeof *m);
    if (gpt_config_check(cfg) != 0) return -1;
    if (max_batch < 1) { qc_error("batch %d must be positive", max_batch); return -1; }
    m->config = *cfg;
    m->max_batch = max_batch;
    if (build_specs(m) != 0) return -1;
    m->params = qc_aligned_alloc(m->num_params * sizeof(float), "parameters");
    if (!m->params) { gpt_free(m); return -1; }
    memset(m->params, 0, m->num_params * sizeof(float));

    int L = cfg->n_layer, B = max_batch, T = cfg->ctx, C = cfg->d_model, NH = cfg->n_head;
    long N = (long)B * T;
    m->activation_floats = activation_count(cfg, B);
    m->activation_memory = qc_aligned_alloc(m->activation_floats * sizeof(float), "activations");
    m->layers = qc_calloc((size_t)L, sizeof(LayerActivations), "activation table");
    m->block_input = qc_calloc((size_t)L, sizeof(float *), "activation table");
    m->inputs = qc_malloc((size_t)N * sizeof(int32_t), "inputs");
    if (!m->activation_memory || !m->layers || !m->block_input || !m->inputs) { gpt_free(m); return -1; }
    float *p = m->activation_memory;
    m->encoded = p; p += N * C;
    for (int l = 0; l < L; l++) {
#define CARVE(field, count) m->layers[l].field = p; p += (count);
        GPT_LAYER_ACTIVATIONS(CARVE)
#undef CARVE
    }
    m->ln_f = p; p += N * C;
    m->ln_f_mean = p; p += N;
    m->ln_f_rstd = p; p += N;
    m->logits = p; p += N * cfg->vocab_size;
    (void)NH;
    return 0;
}

int gpt_enable_training(GPT *m) {
    if (m->grads) return 0;
    size_t n = m->num_params;
    m->grads = qc_aligned_alloc(n * sizeof(float), "gradients");
    m->adam_m = qc_aligned_alloc(n * sizeof(float), "AdamW first moment");
    m->adam_v = qc_aligned_alloc(n * sizeof(float), "AdamW second moment");
    if (!m->grads || !m->adam_m || !m->adam_v) return -1;
    memset(m->grads, 0, n * sizeof(float));
    memset(m->adam_m, 0, n * sizeof(float));
    memset(m->adam_v, 0, n * sizeof(float));
    return gpt_enable_backward(m);
}

int gpt_clone(GPT *dst, const GPT *src, int max_batch) {
    if (gpt_init(dst, &src->config, max_batch) != 0) return -1;
    memcpy(dst->params, src->params, src->num_params * sizeof(float));
    return gpt_set_act_bits(dst, src->act_bits);
}

int gpt_enable_backward(GPT *m) {
    if (m->grad_memory) return 0;
    size_t scratch = grad_scratch_count(&m->config, m->max_batch);
    m->grad_memory = qc_aligned_alloc(scratch * sizeof(float), "backward scratch");
    if (!m->grad_memory) return -1;
    size_t N = (size_t)m->max_batch * m->config.ctx, C = (size_t)m->config.d_model;
    float *p = m->grad_memory;
    m->dresid = p; p += N * C;
    m->dln = p; p += N * C;
    m->datty = p; p += N * C;
    m->dqkv = p; p += N * 3 * C;
    m->dfch = p; p += N * 4 * C;
    m->dlogits = p;
    return 0;
}

void gpt_free(GPT *m) {
    free(m->specs);
    free(m->params);
    free(m->grads);
    free(m->adam_m);
    free(m->adam_v);
    free(m->activation_memory);
    free(m->layers);
    free(m->block_input);
    free(m->inputs);
    free(m->grad_memory);
    free(m->act_quant);
    memset(m, 0, sizeof *m);
}

void gpt_init_weights(GPT *m, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    float residual_std = 0.02f / sqrtf(2.0f * m->config.n_layer);
    for (int i = 0; i < m->n_specs; i++) {
        const TensorSpec *t = &m->specs[i];
        float *w = m->params + t->offset;
        size_t n = tensor_numel(t);
        int is_residual_proj = strstr(t->name, "c_proj.weight") != NULL;
        switch (t->role) {
        case ROLE_EMBEDDING:
        case ROLE_LINEAR:
        case ROLE_HEAD:
            for (size_t k = 0; k < n; k++) w[k] = rng_normal(&rng) * (is_residual_proj ? residual_std : 0.02f);
            break;
        case ROLE_NORM:
            for (size_t k = 0; k < n; k++) w[k] = strstr(t->name, ".weight") ? 1.0f : 0.0f;
            break;
        case ROLE_BIAS:
            memset(w, 0, n * sizeof(float));
            break;
        }
    }
}

int gpt_set_act_bits(GPT *m, int bits) {
    m->act_bits = bits;
    if (bits && !m->act_quant) {
        size_t n = (size_t)m->max_batch * m->config.ctx * 4 * m->config.d_model;
        m->act_quant = qc_aligned_alloc(n * sizeof(float), "activation quantization scratch");
        if (!m->act_quant) return -1;
    }
    return 0;
}

const float *gpt_matmul_input(GPT *m, const float *in, int rows, int cols) {
    if (!m->act_bits) return in;
    quantize_activations(m->act_quant, in, rows, cols, m->act_bits);
    return m->act_quant;
}

void gpt_zero_grad(GPT *m) {
    if (m->grads) memset(m->grads, 0, m->num_params * sizeof(float));
}


/* Blocks [first, last) on x, the stream entering block `first`. */
static void forward_range(GPT *m, float *x, int first, int last, int B, int T, const StreamHook *hook) {
    const GPTConfig *cfg = &m->config;
    int C = cfg->d_model, NH = cfg->n_head;
    int N = B * T;
    m->batch = B;
    m->seq = T;
    for (int l = first; l < last; l++) {
        LayerParams p = layer_view(m, m->params, l);
        LayerActivations *a = &m->layers[l];
        m->block_input[l] = x;
        layernorm_forward(a->ln_1, a->ln_1_mean, a->ln_1_rstd, x, p.ln_1_weight, p.ln_1_bias, N, C);
        matmul_forward(a->qkv, gpt_matmul_input(m, a->ln_1, N, C), p.attn_weight, p.attn_bias, N, C, 3 * C, 0);
        attention_forward(a->atty, a->att, a->qkv, B, T, C, NH);
        memcpy(a->resid_mid, x, (size_t)N * C * sizeof(float));
        matmul_forward(a->resid_mid, gpt_matmul_input(m, a->atty, N, C), p.attn_proj_weight, p.attn_proj_bias, N, C, C, 1);
        layernorm_forward(a->ln_2, a->ln_2_mean, a->ln_2_rstd, a->resid_mid, p.ln_2_weight, p.ln_2_bias, N, C);
        matmul_forward(a->fch, gpt_matmul_input(m, a->ln_2, N, C), p.fc_weight, p.fc_bias, N, C, 4 * C, 0);
        gelu_forward_saving(a->fch_gelu, a->fch_tanh, a->fch, (long)N * 4 * C);
        memcpy(a->resid_out, a->resid_mid, (size_t)N * C * sizeof(float));
        matmul_forward(a->resid_out, gpt_matmul_input(m, a->fch_gelu, N, 4 * C), p.mlp_proj_weight, p.mlp_proj_bias, N, 4 * C, C, 1);
        x = hook ? hook->forward(hook->ctx, l, a->resid_out, N) : a->resid_out;
    }
    m->final_stream = x;
}

void gpt_forward_blocks(GPT *m, const int32_t *inputs, int B, int T, const StreamHook *hook, int n_blocks) {
    int N = B * T;
    memcpy(m->inputs, inputs, (size_t)N * sizeof(int32_t));
    GlobalParams g = global_view(m, m->params);
    embedding_forward(m->encoded, inputs, g.wte, g.wpe, B, T, m->config.d_model);
    forward_range(m, m->encoded, 0, n_blocks, B, T, hook);
}

static void forward_head(GPT *m) {
    int N = m->batch * m->seq, C = m->config.d_model, V = m->config.vocab_size;
    GlobalParams g = global_view(m, m->params);
    layernorm_forward(m->ln_f, m->ln_f_mean, m->ln_f_rstd, m->final_stream, g.ln_f_weight, g.ln_f_bias, N, C);
    matmul_forward(m->logits, gpt_matmul_input(m, m->ln_f, N, C), g.lm_head_weight, g.lm_head_bias, N, C, V, 0);
}

void gpt_forward_from(GPT *m, float *x, int first, int B, int T, const StreamHook *hook) {
    if (first > 0 && hook) x = hook->forward(hook->ctx, first - 1, x, B * T);
    forward_range(m, x, first, m->config.n_layer, B, T, hook);
    forward_head(m);
}

void gpt_forward(GPT *m, const int32_t *inputs, int B, int T, const StreamHook *hook) {
    gpt_forward_blocks(m, inputs, B, T, hook, m->config.n_layer);
    forward_head(m);
}

double gpt_loss(GPT *m, const int32_t *targets) {
    int N = m->batch * m->seq;
    return crossentropy_forward_backward(m->dlogits, m->logits, targets, N, m->config.vocab_size, 1.0f / N);
}

void gpt_backward(GPT *m, const StreamHook *hook, int from_logits, int param_grads, int stop_block) {
    const GPTConfig *cfg = &m->config;
    int B = m->batch, T = m->seq, C = cfg->d_model, NH = cfg->n_head, V = cfg->vocab_size, L = cfg->n_layer;
    int N = B * T;
    GlobalParams g = global_view(m, m->params);
    GlobalParams dg = param_grads ? global_view(m, m->grads) : (GlobalParams){0};
    float *dresid = m->dresid;
    memset(dresid, 0, (size_t)N * C * sizeof(float));
    if (from_logits) {
        matmul_backward(m->dln, param_grads ? dg.lm_head_weight : NULL, param_grads ? dg.lm_head_bias : NULL,
                        m->dlogits, m->ln_f, g.lm_head_weight, N, C, V);
        layernorm_backward(dresid, param_grads ? dg.ln_f_weight : NULL, param_grads ? dg.ln_f_bias : NULL, m->dln,
                           m->final_stream, g.ln_f_weight, m->ln_f_mean, m->ln_f_rstd, N, C);
    }
    if (stop_block < 0) stop_block = 0;
    for (int l = L - 1; l >= stop_block; l--) {
        if (hook) hook->backward(hook->ctx, l, dresid, N);
        LayerParams p = layer_view(m, m->params, l);
        LayerParams dp = param_grads ? layer_view(m, m->grads, l) : (LayerParams){0};
        LayerActivations *a = &m->layers[l];
        /* gradients of frozen weights are never formed: only the stream gradient is needed */
#define PARAM_GRAD(field) (param_grads ? dp.field : NULL)
        /* resid_out = resid_mid + mlp(ln_2(resid_mid)): dresid flows through unchanged and the MLP adds */
        matmul_backward(m->dfch, PARAM_GRAD(mlp_proj_weight), PARAM_GRAD(mlp_proj_bias), dresid, a->fch_gelu,
                        p.mlp_proj_weight, N, 4 * C, C);
        gelu_backward_saved(m->dfch, a->fch, a->fch_tanh, m->dfch, (long)N * 4 * C);
        matmul_backward(m->dln, PARAM_GRAD(fc_weight), PARAM_GRAD(fc_bias), m->dfch, a->ln_2, p.fc_weight, N, C, 4 * C);
        layernorm_backward(dresid, PARAM_GRAD(ln_2_weight), PARAM_GRAD(ln_2_bias), m->dln, a->resid_mid, p.ln_2_weight,
                           a->ln_2_mean, a->ln_2_rstd, N, C);
        /* resid_mid = x + proj(attn(ln_1(x))) */
        matmul_backward(m->datty, PARAM_GRAD(attn_proj_weight), PARAM_GRAD(attn_proj_bias), dresid, a->atty,
                        p.attn_proj_weight, N, C, C);
        attention_backward(m->dqkv, m->datty, a->qkv, a->att, B, T, C, NH);
        matmul_backward(m->dln, PARAM_GRAD(attn_weight), PARAM_GRAD(attn_bias), m->dqkv, a->ln_1, p.attn_weight, N, C, 3 * C);
        layernorm_backward(dresid, PARAM_GRAD(ln_1_weight), PARAM_GRAD(ln_1_bias), m->dln, m->block_input[l],
                           p.ln_1_weight, a->ln_1_mean, a->ln_1_rstd, N, C);
#undef PARAM_GRAD
    }
    if (hook && stop_block > 0) hook->backward(hook->ctx, stop_block - 1, dresid, N);
    if (param_grads && stop_block == 0) embedding_backward(dg.wte, dg.wpe, dresid, m->inputs, B, T, C);
}
