/* model: see model.h. The tensor table is expanded from the X-macros once, at init; every
 * buffer (parameters, gradients, AdamW moments, activations, scratch) is one allocation. */
#include "nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "kernels/ops.h"
#include "nn/actquant.h"

#define MAX_D_MODEL 8192
#define MAX_LAYERS 256
#define MAX_CTX 8192

int gpt_config_check(const GPTConfig *c) {
    if (c->vocab_size < 1 || c->vocab_size > 256) { qc_error("vocab size %d is out of range [1, 256]", c->vocab_size); return -1; }
    if (c->ctx < 1 || c->ctx > MAX_CTX) { qc_error("context length %d is out of range [1, %d]", c->ctx, MAX_CTX); return -1; }
    if (c->d_model < 1 || c->d_model > MAX_D_MODEL) { qc_error("d_model %d is out of range [1, %d]", c->d_model, MAX_D_MODEL); return -1; }
    if (c->n_layer < 1 || c->n_layer > MAX_LAYERS) { qc_error("%d layers is out of range [1, %d]", c->n_layer, MAX_LAYERS); return -1; }
    if (c->n_head < 1 || c->d_model % c->n_head != 0) {
        qc_error("%d heads must be positive and divide d_model %d", c->n_head, c->d_model);
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
    if (gpt_set_online(dst, src->online_slots, src->online_seed) != 0) return -1;
    return gpt_copy_act(dst, src);
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
    act_state_free(&m->act);
    free(m->online_signs);
    free(m->online_buf);
    free(m->infer_memory);
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

void gpt_online_signs(float *signs, uint64_t seed, int linear, int n) {
    Rng rng;
    rng_seed(&rng, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(linear + 1)));
    for (int j = 0; j < n; j++) signs[j] = rng_u32(&rng) & 0x80000000u ? -1.0f : 1.0f;
}

int gpt_set_online(GPT *m, unsigned slots, uint64_t seed) {
    const GPTConfig *cfg = &m->config;
    if (slots >> LINEARS_PER_BLOCK) { qc_error("online transform slots 0x%x name no linear layer", slots); return -1; }
    for (int s = 0; s < LINEARS_PER_BLOCK; s++) {
        LinearShape sh = gpt_linear_shape(cfg, s);
        if ((slots >> s & 1) && !is_power_of_two(sh.in)) {
            qc_error("an online Hadamard transform at the input of %s needs its width %d to be a power of two", sh.name + 16,
                     sh.in);
            return -1;
        }
    }
    free(m->online_signs);
    m->online_signs = NULL;
    m->online_slots = 0;
    m->online_seed = seed;
    if (!slots) return 0;
    int n_linear = gpt_linear_count(cfg), width = 4 * cfg->d_model;
    m->online_signs = qc_malloc((size_t)n_linear * width * sizeof(float), "online transform signs");
    if (!m->online_signs) return -1;
    if (!m->online_buf) {
        m->online_buf = qc_aligned_alloc((size_t)m->max_batch * cfg->ctx * width * sizeof(float), "online transform input");
        if (!m->online_buf) return -1;
    }
    for (int i = 0; i < n_linear; i++) gpt_online_signs(m->online_signs + (size_t)i * width, seed, i, gpt_linear_shape(cfg, i).in);
    m->online_slots = slots;
    return 0;
}

const float *gpt_online(const GPT *m, int linear) {
    if (!m->online_slots || linear >= m->config.n_layer * LINEARS_PER_BLOCK) return NULL;
    if (!(m->online_slots >> (linear % LINEARS_PER_BLOCK) & 1)) return NULL;
    return m->online_signs + (size_t)linear * 4 * m->config.d_model;
}

/* The input a quantized matrix reads: `in` itself, or its copy through the online transform and
 * the activation fake-quantization (nn/actquant.c), whichever are on. */
static const float *matmul_input(GPT *m, int linear, const float *in, int rows, int cols) {
    const float *signs = gpt_online(m, linear);
    if (signs) {
        hadamard_forward(m->online_buf, in, signs, rows, cols);
        in = m->online_buf;
    }
    return act_linear_input(m, linear, in, rows, cols);
}
int gpt_linear_count(const GPTConfig *cfg) { return cfg->n_layer * LINEARS_PER_BLOCK + 1; }

LinearShape gpt_linear_shape(const GPTConfig *cfg, int index) {
    int C = cfg->d_model, L = cfg->n_layer;
    LinearShape sh = {0};
    if (index == L * LINEARS_PER_BLOCK) {
        sh.in = C;
        sh.out = cfg->vocab_size;
        snprintf(sh.name, sizeof sh.name, "lm_head");
        return sh;
    }
    switch (index % LINEARS_PER_BLOCK) {
#define CASE(slot, tname, w, b, input, in_dim, out_dim)                                                \
    case slot:                                                                                         \
        sh.in = (in_dim);                                                                              \
        sh.out = (out_dim);                                                                            \
        snprintf(sh.name, sizeof sh.name, "transformer.h.%d.%s", index / LINEARS_PER_BLOCK, tname);    \
        break;
        GPT_BLOCK_LINEARS(CASE)
#undef CASE
    }
    return sh;
}

Linear gpt_linear(const GPT *m, int index) {
    LinearShape sh = gpt_linear_shape(&m->config, index);
    Linear lin = {.index = index, .in = sh.in, .out = sh.out};
    if (index == m->config.n_layer * LINEARS_PER_BLOCK) {
        GlobalParams g = global_view(m, m->params);
        lin.weight = g.lm_head_weight;
        lin.bias = g.lm_head_bias;
        return lin;
    }
    LayerParams p = layer_view(m, m->params, index / LINEARS_PER_BLOCK);
    switch (index % LINEARS_PER_BLOCK) {
#define CASE(slot, tname, w, b, input, in_dim, out_dim) \
    case slot:                                          \
        lin.weight = p.w;                               \
        lin.bias = p.b;                                 \
        break;
        GPT_BLOCK_LINEARS(CASE)
#undef CASE
    }
    return lin;
}

void linear_forward(GPT *m, const ModelHook *hook, int index, float *out, const float *in, int rows, int accumulate) {
    Linear lin = gpt_linear(m, index);
    const float *x = matmul_input(m, index, in, rows, lin.in);
    matmul_forward(out, x, lin.weight, lin.bias, rows, lin.in, lin.out, accumulate);
    if (hook && hook->after_linear) hook->after_linear(hook->ctx, index, out, x, rows);
}

void linear_backward(GPT *m, const ModelHook *hook, int index, float *din, float *dweight, float *dbias, const float *dout,
                     const float *in, int rows) {
    Linear lin = gpt_linear(m, index);
    int hooked = hook && hook->after_linear_backward;
    /* the weight gradient and the hook need what the matrix read; the input gradient does not */
    const float *x = dweight || hooked ? matmul_input(m, index, in, rows, lin.in) : in;
    matmul_backward(din, dweight, dbias, dout, x, lin.weight, rows, lin.in, lin.out);
    if (hooked) hook->after_linear_backward(hook->ctx, index, din, dout, x, rows);
    /* din is the gradient w.r.t. what the matrix read; through the online transform to `in` */
    const float *signs = gpt_online(m, index);
    if (din && signs) hadamard_backward(din, din, signs, rows, lin.in);
}

void gpt_zero_grad(GPT *m) {
    if (m->grads) memset(m->grads, 0, m->num_params * sizeof(float));
}


/* Blocks [first, last) on x, the stream entering block `first`. */
/* The last block stops after its linear layer last_slot (LINEARS_PER_BLOCK - 1: the whole block
 * and its hook). */
static void forward_range_until(GPT *m, float *x, int first, int last, int B, int T, const ModelHook *hook, int last_slot) {
    const GPTConfig *cfg = &m->config;
    int C = cfg->d_model, NH = cfg->n_head;
    int N = B * T;
    m->batch = B;
    m->seq = T;
    m->act.window = T;
    for (int l = first; l < last; l++) {
        LayerParams p = layer_view(m, m->params, l);
        LayerActivations *a = &m->layers[l];
        int li = l * LINEARS_PER_BLOCK, stop = l == last - 1 ? last_slot : LINEARS_PER_BLOCK - 1;
        m->block_input[l] = x;
        layernorm_forward(a->ln_1, a->ln_1_mean, a->ln_1_rstd, x, p.ln_1_weight, p.ln_1_bias, N, C);
        linear_forward(m, hook, li + LINEAR_QKV, a->qkv, a->ln_1, N, 0);
        act_keys_values(m, l, a->qkv, N);
        if (stop == LINEAR_QKV) break;
        attention_forward(a->atty, a->att, a->qkv, B, T, C, NH);
        if (act_probs_on(m)) act_probs_forward(m, l, a->atty, act_saved_probs(m, l), a->att, a->qkv, B, T);
        memcpy(a->resid_mid, x, (size_t)N * C * sizeof(float));
        linear_forward(m, hook, li + LINEAR_ATTN_PROJ, a->resid_mid, a->atty, N, 1);
        if (stop == LINEAR_ATTN_PROJ) break;
        layernorm_forward(a->ln_2, a->ln_2_mean, a->ln_2_rstd, a->resid_mid, p.ln_2_weight, p.ln_2_bias, N, C);
        linear_forward(m, hook, li + LINEAR_FC, a->fch, a->ln_2, N, 0);
        if (stop == LINEAR_FC) break;
        gelu_forward_saving(a->fch_gelu, a->fch_tanh, a->fch, (long)N * 4 * C);
        memcpy(a->resid_out, a->resid_mid, (size_t)N * C * sizeof(float));
        linear_forward(m, hook, li + LINEAR_MLP_PROJ, a->resid_out, a->fch_gelu, N, 1);
        if (act_correction_float(m)) { /* the hook reads the float output; the stream is quantized after it */
            x = hook && hook->after_block ? hook->after_block(hook->ctx, l, a->resid_out, N) : a->resid_out;
            act_stream_into(m, l, act_stream_buffer(m, l), x, N);
            x = act_stream_buffer(m, l);
            continue;
        }
        act_stream(m, l, a->resid_out, N);
        x = hook && hook->after_block ? hook->after_block(hook->ctx, l, a->resid_out, N) : a->resid_out;
    }
    m->final_stream = x;
}

static void forward_range(GPT *m, float *x, int first, int last, int B, int T, const ModelHook *hook) {
    forward_range_until(m, x, first, last, B, T, hook, LINEARS_PER_BLOCK - 1);
}

/* The hook's saved activations must hold the batch: checked once, before any of them is written. */
static int check_hook_rows(const GPT *m, const ModelHook *hook, int B, int T) {
    if (act_check_ready(m) != 0) return -1;
    if (hook && hook->max_rows > 0 && (long)B * T > hook->max_rows) {
        qc_error("a batch of %d x %d rows exceeds the %d rows the corrections were sized for", B, T, hook->max_rows);
        return -1;
    }
    return 0;
}

int gpt_forward_blocks(GPT *m, const int32_t *inputs, int B, int T, const ModelHook *hook, int n_blocks) {
    if (check_hook_rows(m, hook, B, T) != 0) return -1;
    int N = B * T;
    memcpy(m->inputs, inputs, (size_t)N * sizeof(int32_t));
    GlobalParams g = global_view(m, m->params);
    embedding_forward(m->encoded, inputs, g.wte, g.wpe, B, T, m->config.d_model);
    forward_range(m, m->encoded, 0, n_blocks, B, T, hook);
    return 0;
}

static void forward_head(GPT *m, const ModelHook *hook) {
    int N = m->batch * m->seq, C = m->config.d_model;
    GlobalParams g = global_view(m, m->params);
    layernorm_forward(m->ln_f, m->ln_f_mean, m->ln_f_rstd, m->final_stream, g.ln_f_weight, g.ln_f_bias, N, C);
    linear_forward(m, hook, m->config.n_layer * LINEARS_PER_BLOCK, m->logits, m->ln_f, N, 0);
}

int gpt_forward_from(GPT *m, float *x, int first, int B, int T, const ModelHook *hook) {
    if (check_hook_rows(m, hook, B, T) != 0) return -1;
    if (first > 0 && hook && hook->after_block) x = hook->after_block(hook->ctx, first - 1, x, B * T);
    if (first > 0 && act_correction_float(m)) { /* x: the float stream; quantized into the model's buffer, never the cache */
        m->act.window = T;
        act_stream_into(m, first - 1, act_stream_buffer(m, first - 1), x, B * T);
        x = act_stream_buffer(m, first - 1);
    }
    forward_range(m, x, first, m->config.n_layer, B, T, hook);
    forward_head(m, hook);
    return 0;
}

int gpt_forward_range(GPT *m, float *x, int first, int last, int B, int T, const ModelHook *hook) {
    if (check_hook_rows(m, hook, B, T) != 0) return -1;
    forward_range(m, x, first, last, B, T, hook);
    return 0;
}

int gpt_forward_block_until(GPT *m, float *x, int block, int slot, int B, int T, const ModelHook *hook) {
    if (check_hook_rows(m, hook, B, T) != 0) return -1;
    forward_range_until(m, x, block, block + 1, B, T, hook, slot);
    return 0;
}

int gpt_forward_head(GPT *m, float *x, int B, int T, const ModelHook *hook) {
    if (check_hook_rows(m, hook, B, T) != 0) return -1;
    m->batch = B;
    m->seq = T;
    m->act.window = T;
    m->final_stream = x;
    forward_head(m, hook);
    return 0;
}

int gpt_forward(GPT *m, const int32_t *inputs, int B, int T, const ModelHook *hook) {
    if (gpt_forward_blocks(m, inputs, B, T, hook, m->config.n_layer) != 0) return -1;
    forward_head(m, hook);
    return 0;
}

double gpt_loss(GPT *m, const int32_t *targets) {
    int N = m->batch * m->seq;
    return crossentropy_forward_backward(m->dlogits, m->logits, targets, N, m->config.vocab_size, 1.0f / N);
}

void gpt_backward(GPT *m, const ModelHook *hook, int from_logits, int param_grads, int stop_block) {
    const GPTConfig *cfg = &m->config;
    int B = m->batch, T = m->seq, C = cfg->d_model, NH = cfg->n_head, L = cfg->n_layer;
    int N = B * T;
    GlobalParams g = global_view(m, m->params);
    GlobalParams dg = param_grads ? global_view(m, m->grads) : (GlobalParams){0};
    float *dresid = m->dresid;
    memset(dresid, 0, (size_t)N * C * sizeof(float));
    if (from_logits) {
        linear_backward(m, hook, L * LINEARS_PER_BLOCK, m->dln, dg.lm_head_weight, dg.lm_head_bias, m->dlogits, m->ln_f, N);
        layernorm_backward(dresid, dg.ln_f_weight, dg.ln_f_bias, m->dln, m->final_stream, g.ln_f_weight, m->ln_f_mean,
                           m->ln_f_rstd, N, C);
    }
    if (stop_block < 0) stop_block = 0;
    for (int l = L - 1; l >= stop_block; l--) {
        if (hook && hook->after_block_backward) hook->after_block_backward(hook->ctx, l, dresid, N);
        LayerParams p = layer_view(m, m->params, l);
        /* a frozen model's parameter gradients are NULL: never formed, only the stream gradient flows */
        LayerParams dp = param_grads ? layer_view(m, m->grads, l) : (LayerParams){0};
        LayerActivations *a = &m->layers[l];
        int li = l * LINEARS_PER_BLOCK;
        /* resid_out = resid_mid + mlp(ln_2(resid_mid)): dresid flows through unchanged and the MLP adds */
        linear_backward(m, hook, li + LINEAR_MLP_PROJ, m->dfch, dp.mlp_proj_weight, dp.mlp_proj_bias, dresid, a->fch_gelu, N);
        gelu_backward_saved(m->dfch, a->fch, a->fch_tanh, m->dfch, (long)N * 4 * C);
        linear_backward(m, hook, li + LINEAR_FC, m->dln, dp.fc_weight, dp.fc_bias, m->dfch, a->ln_2, N);
        layernorm_backward(dresid, dp.ln_2_weight, dp.ln_2_bias, m->dln, a->resid_mid, p.ln_2_weight, a->ln_2_mean,
                           a->ln_2_rstd, N, C);
        /* resid_mid = x + proj(attn(ln_1(x))) */
        linear_backward(m, hook, li + LINEAR_ATTN_PROJ, m->datty, dp.attn_proj_weight, dp.attn_proj_bias, dresid, a->atty, N);
        attention_backward(m->dqkv, m->datty, a->qkv, a->att, B, T, C, NH);
        if (act_probs_on(m)) act_probs_backward(m, m->dqkv, m->datty, act_saved_probs(m, l), B, T);
        linear_backward(m, hook, li + LINEAR_QKV, m->dln, dp.attn_weight, dp.attn_bias, m->dqkv, a->ln_1, N);
        layernorm_backward(dresid, dp.ln_1_weight, dp.ln_1_bias, m->dln, m->block_input[l], p.ln_1_weight, a->ln_1_mean,
                           a->ln_1_rstd, N, C);
    }
    if (hook && hook->after_block_backward && stop_block > 0) hook->after_block_backward(hook->ctx, stop_block - 1, dresid, N);
    if (param_grads && stop_block == 0) embedding_backward(dg.wte, dg.wpe, dresid, m->inputs, B, T, C);
}
