/* infer: the forward pass alone, a few windows at a time through one block's scratch (infer.h). */
#include "nn/infer.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "kernels/ops.h"
#include "nn/actquant.h"

/* floats of one window's scratch: x, ln, qkv, atty, fch (10 C per row), mean and rstd, and the
 * window's attention matrix (NH T T) */
static size_t window_floats(const GPTConfig *cfg, int T) {
    size_t C = (size_t)cfg->d_model;
    return (size_t)T * (10 * C + 2) + (size_t)cfg->n_head * T * T;
}

int inference_init(Inference *inf, GPT *m, int windows) {
    memset(inf, 0, sizeof *inf);
    const GPTConfig *cfg = &m->config;
    /* 0: the whole batch. Measured (qcorr eval, README Speed): chunks of 2, 8 and 16 windows lose
     * to gemm packing the weights once per product, more often than the cache saves */
    if (windows <= 0 || windows > m->max_batch) windows = m->max_batch;
    int T = cfg->ctx, C = cfg->d_model, NH = cfg->n_head;
    size_t rows = (size_t)windows * T;
    size_t need = windows * window_floats(cfg, T);
    if (m->infer_busy) { /* another Inference holds the model's: its own */
        inf->memory = qc_aligned_alloc(need * sizeof(float), "inference scratch");
        if (!inf->memory) return -1;
    } else {
        if (m->infer_floats < need) {
            free(m->infer_memory);
            m->infer_floats = 0;
            m->infer_memory = qc_aligned_alloc(need * sizeof(float), "inference scratch");
            if (!m->infer_memory) return -1;
            m->infer_floats = need;
        }
        m->infer_busy = 1;
        inf->owner = m;
        inf->memory = m->infer_memory;
    }
    inf->windows = windows;
    inf->T = T;
    float *p = inf->memory;
#define TAKE(field, count) (inf->field = p, p += (count))
    TAKE(x, rows * C);
    TAKE(ln, rows * C);
    TAKE(qkv, rows * 3 * C);
    TAKE(atty, rows * C);
    TAKE(fch, rows * 4 * C);
    TAKE(mean, rows);
    TAKE(rstd, rows);
    TAKE(att, (size_t)windows * NH * T * T);
#undef TAKE
    return 0;
}

void inference_free(Inference *inf) {
    if (inf->owner)
        inf->owner->infer_busy = 0;
    else
        free(inf->memory);
    memset(inf, 0, sizeof *inf);
}

/* Blocks [first, L) and the head on the chunk's stream inf->x (nb windows), logits to `logits`. */
static void chunk_forward(GPT *m, Inference *inf, int first, int nb, int T, const ModelHook *hook, float *logits) {
    const GPTConfig *cfg = &m->config;
    int C = cfg->d_model, NH = cfg->n_head, N = nb * T;
    float *x = inf->x;
    m->act.window = T;
    for (int l = first; l < cfg->n_layer; l++) {
        LayerParams p = layer_view(m, m->params, l);
        int li = l * LINEARS_PER_BLOCK;
        layernorm_forward(inf->ln, inf->mean, inf->rstd, x, p.ln_1_weight, p.ln_1_bias, N, C);
        linear_forward(m, hook, li + LINEAR_QKV, inf->qkv, inf->ln, N, 0);
        act_keys_values(m, l, inf->qkv, N);
        attention_forward(inf->atty, inf->att, inf->qkv, nb, T, C, NH);
        if (act_probs_on(m)) act_probs_forward(m, l, inf->atty, inf->att, inf->att, inf->qkv, nb, T);
        /* the residual accumulates in place: the same sums as the training forward's copy-then-add */
        linear_forward(m, hook, li + LINEAR_ATTN_PROJ, x, inf->atty, N, 1);
        layernorm_forward(inf->ln, inf->mean, inf->rstd, x, p.ln_2_weight, p.ln_2_bias, N, C);
        linear_forward(m, hook, li + LINEAR_FC, inf->fch, inf->ln, N, 0);
        gelu_forward(inf->fch, inf->fch, (long)N * 4 * C);
        linear_forward(m, hook, li + LINEAR_MLP_PROJ, x, inf->fch, N, 1);
        if (act_correction_float(m)) { /* the hook on the float output, then the stream quantized (no backward: in place) */
            act_stream_into(m, l, x, hook && hook->after_block ? hook->after_block(hook->ctx, l, x, N) : x, N);
            continue;
        }
        act_stream(m, l, x, N);
        if (hook && hook->after_block) {
            float *y = hook->after_block(hook->ctx, l, x, N);
            if (y != x) memcpy(x, y, (size_t)N * C * sizeof(float));
        }
    }
    GlobalParams g = global_view(m, m->params);
    layernorm_forward(inf->ln, inf->mean, inf->rstd, x, g.ln_f_weight, g.ln_f_bias, N, C);
    linear_forward(m, hook, cfg->n_layer * LINEARS_PER_BLOCK, logits, inf->ln, N, 0);
}

int gpt_infer(GPT *m, Inference *inf, const int32_t *inputs, const float *x, int first, int B, int T, const ModelHook *hook) {
    const GPTConfig *cfg = &m->config;
    int C = cfg->d_model, V = cfg->vocab_size;
    if (B > m->max_batch || T > cfg->ctx || T > inf->T) {
        qc_error("a batch of %d windows of %d exceeds the model's %d of %d", B, T, m->max_batch, cfg->ctx);
        return -1;
    }
    if (hook && hook->max_rows > 0 && (long)B * T > hook->max_rows) {
        qc_error("a batch of %d x %d rows exceeds the %d rows the corrections were sized for", B, T, hook->max_rows);
        return -1;
    }
    if (act_check_ready(m) != 0) return -1;
    if (x && (first < 1 || first > cfg->n_layer)) { qc_error("a prefix ending at block %d of %d", first - 1, cfg->n_layer); return -1; }
    GlobalParams g = global_view(m, m->params);
    for (int w0 = 0; w0 < B; w0 += inf->windows) {
        int nb = B - w0 < inf->windows ? B - w0 : inf->windows;
        size_t rows = (size_t)nb * T, at = (size_t)w0 * T;
        if (x) {
            memcpy(inf->x, x + at * C, rows * C * sizeof(float));
            if (hook && hook->after_block) {
                float *y = hook->after_block(hook->ctx, first - 1, inf->x, (int)rows);
                if (y != inf->x) memcpy(inf->x, y, rows * C * sizeof(float));
            }
            if (act_correction_float(m)) { /* the cache holds the float stream; inf->x is a copy */
                m->act.window = T;
                act_stream_into(m, first - 1, inf->x, inf->x, (int)rows);
            }
        } else {
            embedding_forward(inf->x, inputs + at, g.wte, g.wpe, nb, T, C);
        }
        chunk_forward(m, inf, x ? first : 0, nb, T, hook, m->logits + at * V);
    }
    m->batch = B;
    m->seq = T;
    return 0;
}
