/* correct: see correct.h. A fresh correction is exactly the identity (its last matrix and bias
 * start at zero), so the corrected model reproduces the quantized one bit for bit before training. */
#include "correct/correct.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "quant/fakequant.h"

/* ---------------------------------------------------------------- the kinds */

/* out (rows, cols) = x at the activation grid of q: a grid per token, or per window of q->window rows */
static const float *quant_rows(const CorrectionActQuant *q, float *out, const float *x, int rows, int cols) {
    if (q->window <= 0) {
        act_quantize_rows(out, cols, x, cols, rows, cols, q->bits, q->asymmetric);
        return out;
    }
    for (int r0 = 0; r0 < rows; r0 += q->window) {
        int n = rows - r0 < q->window ? rows - r0 : q->window;
        act_quantize_block(out + (size_t)r0 * cols, cols, x + (size_t)r0 * cols, cols, n, cols, q->bits, q->asymmetric);
    }
    return out;
}
/* What a site's first product reads: x, or its quantized copy in buf (saved: the backward's weight gradient reads it) */
static int quantizes_input(const CorrectionSite *s) { return s->quant && !s->quant->input_on_grid; }
static const float *site_input(const CorrectionSite *s, float *buf, const float *x, int rows) {
    return quantizes_input(s) ? quant_rows(s->quant, buf, x, rows, s->in) : x;
}

/* none: no tensors, no sites (the quantized model as it is: the "none" method's baseline) */
static int no_tensors(int in, int out, int size, SiteTensor *t) { return 0; }
static void no_forward(CorrectionSite *s, float *y, const float *x, int rows) {}
static void no_backward(CorrectionSite *s, float *dx, const float *dy, const float *x, int rows, float *scratch) {}
static size_t no_floats(int in, int out, int size);
static void zero_init(CorrectionSite *s, Rng *rng);
static const CorrectionKindOps none_kind = {no_tensors, no_floats, no_floats, zero_init, no_forward, no_backward, 0, NULL};

/* linear: y += x . W^T + b, W (out, in) and b start at zero */
static int linear_tensors(int in, int out, int size, SiteTensor *t) {
    t[0] = (SiteTensor){"weight", out, in};
    t[1] = (SiteTensor){"bias", out, 0};
    return 2;
}
static size_t no_floats(int in, int out, int size) { return 0; }
static void zero_init(CorrectionSite *s, Rng *rng) {}
static size_t linear_act_floats(int in, int out, int size) { return (size_t)in; } /* its quantized input */
static void linear_forward_site(CorrectionSite *s, float *y, const float *x, int rows) {
    matmul_forward(y, site_input(s, s->act, x, rows), s->param[0], s->param[1], rows, s->in, s->out, 1);
}
static void linear_backward_site(CorrectionSite *s, float *dx, const float *dy, const float *x, int rows, float *scratch) {
    matmul_backward(dx, s->grad[0], s->grad[1], dy, quantizes_input(s) ? s->act : x, s->param[0], rows, s->in, s->out);
}
static const CorrectionKindOps linear_kind = {linear_tensors, linear_act_floats, no_floats, zero_init, linear_forward_site,
                                              linear_backward_site, 0, NULL};

/* mlp: y += gelu(x . W1^T + b1) . W2^T + b2; W1 ~ N(0, 0.02) so it can learn, the rest zero */
static int mlp_tensors(int in, int out, int h, SiteTensor *t) {
    t[0] = (SiteTensor){"fc.weight", h, in};
    t[1] = (SiteTensor){"fc.bias", h, 0};
    t[2] = (SiteTensor){"proj.weight", out, h};
    t[3] = (SiteTensor){"proj.bias", out, 0};
    return 4;
}
/* pre-activation, activation, its quantized copy, the quantized input */
static size_t mlp_act_floats(int in, int out, int h) { return 3 * (size_t)h + (size_t)in; }
static size_t mlp_scratch_floats(int in, int out, int h) { return (size_t)h; }
static void mlp_init(CorrectionSite *s, Rng *rng) {
    for (size_t k = 0; k < (size_t)s->size * s->in; k++) s->param[0][k] = 0.02f * rng_normal(rng);
}
/* what the second product read: the activation, or its quantized copy */
static const float *mlp_hidden_read(const CorrectionSite *s, int rows) { return s->act + (size_t)rows * s->size * (s->quant ? 2 : 1); }
static void mlp_forward_site(CorrectionSite *s, float *y, const float *x, int rows) {
    int h = s->size;
    float *pre = s->act, *hidden = s->act + (size_t)rows * h;
    matmul_forward(pre, site_input(s, s->act + (size_t)rows * 3 * h, x, rows), s->param[0], s->param[1], rows, s->in, h, 0);
    gelu_forward(hidden, pre, (long)rows * h);
    if (s->quant) quant_rows(s->quant, hidden + (size_t)rows * h, hidden, rows, h);
    matmul_forward(y, mlp_hidden_read(s, rows), s->param[2], s->param[3], rows, h, s->out, 1);
}
static void mlp_backward_site(CorrectionSite *s, float *dx, const float *dy, const float *x, int rows, float *dhidden) {
    int h = s->size;
    const float *pre = s->act;
    /* straight through both quantizers: the weight gradients from what each product read */
    matmul_backward(dhidden, s->grad[2], s->grad[3], dy, mlp_hidden_read(s, rows), s->param[2], rows, h, s->out);
    gelu_backward(dhidden, pre, dhidden, (long)rows * h);
    matmul_backward(dx, s->grad[0], s->grad[1], dhidden, quantizes_input(s) ? s->act + (size_t)rows * 3 * h : x, s->param[0], rows,
                    s->in, h);
}
static const CorrectionKindOps mlp_kind = {mlp_tensors, mlp_act_floats, mlp_scratch_floats, mlp_init, mlp_forward_site,
                                           mlp_backward_site, 0, NULL};

/* lowrank (LoRC / LQER): y += (x . A^T) . B^T, A (k, in) and B (out, k) under PEFT's names; fresh
 * as LoRA starts, A ~ N(0, 0.02) and B = 0: the term is zero and both factors can learn */
static int lowrank_tensors(int in, int out, int k, SiteTensor *t) {
    t[0] = (SiteTensor){"lora_A.weight", k, in};
    t[1] = (SiteTensor){"lora_B.weight", out, k};
    return 2;
}
static size_t lowrank_floats(int in, int out, int k) { return (size_t)k; } /* its gradient */
static size_t lowrank_act_floats(int in, int out, int k) { return 2 * (size_t)k; } /* x . A^T, its quantized copy */
static void lowrank_init(CorrectionSite *s, Rng *rng) {
    for (size_t i = 0; i < (size_t)s->size * s->in; i++) s->param[0][i] = 0.02f * rng_normal(rng);
}
/* the k-wide middle the second product read; x itself is the matrix's (already quantized) input */
static const float *lowrank_mid_read(const CorrectionSite *s, int rows) { return s->act + (s->quant ? (size_t)rows * s->size : 0); }
static void lowrank_forward_site(CorrectionSite *s, float *y, const float *x, int rows) {
    matmul_forward(s->act, x, s->param[0], NULL, rows, s->in, s->size, 0);
    if (s->quant) quant_rows(s->quant, s->act + (size_t)rows * s->size, s->act, rows, s->size);
    matmul_forward(y, lowrank_mid_read(s, rows), s->param[1], NULL, rows, s->size, s->out, 1);
}
static void lowrank_backward_site(CorrectionSite *s, float *dx, const float *dy, const float *x, int rows, float *dmid) {
    matmul_backward(dmid, s->grad[1], NULL, dy, lowrank_mid_read(s, rows), s->param[1], rows, s->size, s->out);
    matmul_backward(dx, s->grad[0], NULL, dmid, x, s->param[0], rows, s->in, s->size);
}
static const CorrectionKindOps lowrank_kind = {lowrank_tensors, lowrank_act_floats, lowrank_floats, lowrank_init, lowrank_forward_site,
                                               lowrank_backward_site, 0, NULL};

/* bias (Nagel et al. 2019): y += delta (out), stored folded into the layer's bias */
static int bias_tensors(int in, int out, int size, SiteTensor *t) {
    t[0] = (SiteTensor){"bias_correction", out, 0};
    return 1;
}
static void bias_forward_site(CorrectionSite *s, float *y, const float *x, int rows) {
    const float *delta = s->param[0];
    int out = s->out;
#pragma omp parallel for schedule(static) if ((long)rows * out >= 32768)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < out; i++) y[(size_t)r * out + i] += delta[i];
}
static void bias_backward_site(CorrectionSite *s, float *dx, const float *dy, const float *x, int rows, float *scratch) {
    memset(dx, 0, (size_t)rows * s->in * sizeof(float));
    column_sum_add(s->grad[0], dy, rows, s->out);
}
static void bias_fold(const CorrectionSite *s, float *weight, float *bias) {
    for (int i = 0; i < s->out; i++) bias[i] += s->param[0][i];
}
static const CorrectionKindOps bias_kind = {bias_tensors, no_floats, no_floats, zero_init, bias_forward_site, bias_backward_site, 1,
                                            bias_fold};

#define KIND_OPS(id, name, place, ops, solve) [id] = &ops,
static const CorrectionKindOps *const kind_ops[KIND_COUNT] = {CORRECTION_KINDS(KIND_OPS)};
#undef KIND_OPS

const CorrectionKindOps *correction_kind_ops(CorrectionKindId kind) { return kind_ops[kind]; }

/* ---------------------------------------------------------------- hooks */

static float *stream_after_block(void *ctx, int block, float *x, int rows) {
    Corrections *c = ctx;
    int j = c->site_of[block];
    if (j < 0) return x;
    CorrectionSite *s = &c->sites[j];
    s->input = x;
    memcpy(s->output, x, (size_t)rows * c->d * sizeof(float));
    c->ops->forward(s, s->output, x, rows);
    if (c->mse_targets) {
        const float *t = c->mse_targets[j];
        double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (long i = 0; i < (long)rows * c->d; i++) {
            double e = (double)s->output[i] - t[i];
            sum += e * e;
        }
        c->mse_loss += sum / ((double)rows * c->d) / c->n_sites;
    }
    return s->output;
}

static void stream_after_block_backward(void *ctx, int block, float *dx, int rows) {
    Corrections *c = ctx;
    int j = c->site_of[block];
    if (j < 0) return;
    CorrectionSite *s = &c->sites[j];
    long n = (long)rows * c->d;
    if (c->mse_targets) { /* d/d output of mean over sites of mean squared error */
        const float *t = c->mse_targets[j];
        float scale = 2.0f / ((float)rows * c->d * c->n_sites);
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) dx[i] += scale * (s->output[i] - t[i]);
    }
    c->ops->backward(s, c->dscratch, dx, s->input, rows, c->kind_scratch);
    /* output = x + f(x): the identity path plus the correction's own */
    residual_forward(dx, dx, c->dscratch, n);
}

static void linear_after(void *ctx, int index, float *out, const float *in, int rows) {
    Corrections *c = ctx;
    int j = c->site_of[index];
    if (j >= 0) c->ops->forward(&c->sites[j], out, in, rows);
}

static void linear_after_backward(void *ctx, int index, float *din, const float *dout, const float *in, int rows) {
    Corrections *c = ctx;
    int j = c->site_of[index];
    if (j < 0) return;
    CorrectionSite *s = &c->sites[j];
    c->ops->backward(s, c->dscratch, dout, in, rows, c->kind_scratch);
    residual_forward(din, din, c->dscratch, (long)rows * s->in);
}

/* ---------------------------------------------------------------- layout */

/* Calls visit(where, in, out, size) for every site of the layout in order; returns the site count
 * or -1 (message names the value). */
typedef void (*SiteVisitor)(void *ctx, int where, int in, int out, int size);
static int layout_sites(const GPTConfig *cfg, const CorrectionLayout *lay, SiteVisitor visit, void *ctx) {
    if (lay->kind < 0 || lay->kind >= KIND_COUNT) { qc_error("correction kind %d is unknown", (int)lay->kind); return -1; }
    int n = 0;
    if (lay->kind == KIND_NONE) return 0; /* nothing to place */
    if (kind_info[lay->kind].placement == PLACE_STREAM) {
        if (lay->every < 1) { qc_error("correction every %d must be at least 1", lay->every); return -1; }
        if (lay->size < 0) { qc_error("correction hidden width %d must be 0 (linear) or positive (MLP)", lay->size); return -1; }
        for (int i = 0; i < cfg->n_layer; i++)
            if (correction_is_site(i, cfg->n_layer, lay->every)) {
                if (visit) visit(ctx, i, cfg->d_model, cfg->d_model, lay->size);
                n++;
            }
        return n;
    }
    if (!lay->linear_sizes) { qc_error("a %s correction needs a size per linear layer", kind_info[lay->kind].name); return -1; }
    for (int i = 0; i < gpt_linear_count(cfg); i++) {
        if (lay->linear_sizes[i] == 0) continue;
        LinearShape sh = gpt_linear_shape(cfg, i);
        if (lay->linear_sizes[i] < 0) { qc_error("%s: correction size %d must be positive", sh.name, lay->linear_sizes[i]); return -1; }
        if (visit) visit(ctx, i, sh.in, sh.out, lay->linear_sizes[i]);
        n++;
    }
    return n;
}

typedef struct {
    const GPTConfig *cfg;
    const CorrectionLayout *lay;
    CorrectionTensor *out;
    int max, n, site;
    size_t params;
} TensorWalk;

static void tensor_visit(void *ctx, int where, int in, int out, int size) {
    TensorWalk *w = ctx;
    SiteTensor t[SITE_MAX_TENSORS];
    /* a folded kind's tensors live inside the base's: nothing of its own is stored */
    int k = kind_ops[w->lay->kind]->fold ? 0 : kind_ops[w->lay->kind]->tensors(in, out, size, t);
    for (int i = 0; i < k; i++) {
        w->params += (size_t)t[i].rows * (t[i].cols ? (size_t)t[i].cols : 1);
        if (!w->out) continue;
        if (w->n >= w->max) { w->n = w->max + 1; continue; }
        CorrectionTensor *o = &w->out[w->n++];
        o->rows = t[i].rows;
        o->cols = t[i].cols;
        o->data = NULL;
        if (kind_info[w->lay->kind].placement == PLACE_STREAM) snprintf(o->name, sizeof o->name, "corrections.%d.%s", w->site, t[i].suffix);
        else snprintf(o->name, sizeof o->name, "%s.%s", gpt_linear_shape(w->cfg, where).name, t[i].suffix);
    }
    w->site++;
}

int correction_layout_tensors(const GPTConfig *cfg, const CorrectionLayout *layout, CorrectionTensor *out, int max) {
    TensorWalk w = {cfg, layout, out, max, 0, 0, 0};
    if (layout_sites(cfg, layout, tensor_visit, &w) < 0) return -1;
    if (w.n > max) { qc_error("more than %d correction tensors", max); return -1; }
    return w.n;
}

size_t correction_layout_params(const GPTConfig *cfg, const CorrectionLayout *layout) {
    TensorWalk w = {cfg, layout, NULL, 0, 0, 0, 0};
    if (layout_sites(cfg, layout, tensor_visit, &w) < 0) return 0;
    return w.params;
}

int corrections_tensors(const Corrections *c, const GPTConfig *cfg, CorrectionTensor *out, int max) {
    CorrectionLayout lay = {.kind = c->kind, .every = c->every, .size = c->size};
    int *sizes = NULL;
    if (kind_info[c->kind].placement == PLACE_LINEAR) {
        sizes = qc_calloc((size_t)c->n_where, sizeof(int), "correction layout");
        if (!sizes) return -1;
        for (int j = 0; j < c->n_sites; j++) sizes[c->sites[j].where] = c->sites[j].size;
        lay.linear_sizes = sizes;
    }
    int n = correction_layout_tensors(cfg, &lay, out, max);
    free(sizes);
    if (c->ops->fold) return n; /* 0: stored inside the base */
    /* the tensors lie in the buffer in the same order as the walk names them */
    int k = 0;
    for (int j = 0; j < c->n_sites && n >= 0; j++) {
        SiteTensor t[SITE_MAX_TENSORS];
        int nt = c->ops->tensors(c->sites[j].in, c->sites[j].out, c->sites[j].size, t);
        for (int i = 0; i < nt; i++) out[k++].data = c->sites[j].param[i];
    }
    return n;
}

size_t corrections_stored_params(const Corrections *c) { return c->ops->fold ? 0 : c->num_params; }

int corrections_fold(const Corrections *c, GPT *m) {
    if (!c->ops->fold || kind_info[c->kind].placement != PLACE_LINEAR) {
        qc_error("%s corrections are stored as their own tensors, not folded into the model", kind_info[c->kind].name);
        return -1;
    }
    for (int j = 0; j < c->n_sites; j++) {
        Linear lin = gpt_linear(m, c->sites[j].where);
        c->ops->fold(&c->sites[j], lin.weight, lin.bias);
    }
    return 0;
}

/* ---------------------------------------------------------------- lifetime */

typedef struct {
    Corrections *c;
    size_t params, act, scratch, widest_in;
} SizeWalk;

static void size_visit(void *ctx, int where, int in, int out, int size) {
    SizeWalk *w = ctx;
    Corrections *c = w->c;
    CorrectionSite *s = &c->sites[c->n_sites++];
    s->where = where;
    s->in = in;
    s->out = out;
    s->size = size;
    c->site_of[where] = c->n_sites - 1;
    SiteTensor t[SITE_MAX_TENSORS];
    int k = c->ops->tensors(in, out, size, t);
    for (int i = 0; i < k; i++) w->params += (size_t)t[i].rows * (t[i].cols ? (size_t)t[i].cols : 1);
    w->act += c->ops->act_floats(in, out, size) + (kind_info[c->kind].placement == PLACE_STREAM ? (size_t)out : 0);
    size_t scratch = c->ops->scratch_floats(in, out, size);
    if (scratch > w->scratch) w->scratch = scratch;
    if ((size_t)in > w->widest_in) w->widest_in = (size_t)in;
}

int corrections_init(Corrections *c, const GPTConfig *cfg, const CorrectionLayout *layout, int max_rows, uint64_t seed) {
    memset(c, 0, sizeof *c);
    int n_sites = layout_sites(cfg, layout, NULL, NULL);
    if (n_sites < 0) return -1;
    if (max_rows < 1) { qc_error("correction rows %d must be positive", max_rows); return -1; }
    c->kind = layout->kind;
    c->ops = kind_ops[layout->kind];
    c->d = cfg->d_model;
    c->every = layout->every;
    c->size = layout->size;
    c->n_layer = cfg->n_layer;
    c->max_rows = max_rows;
    c->stored_bits = 32;
    c->ctx = cfg->ctx;
    act_scheme_default(&c->act);
    c->n_where = kind_info[c->kind].placement == PLACE_STREAM ? cfg->n_layer : gpt_linear_count(cfg);
    c->site_of = qc_malloc((size_t)c->n_where * sizeof(int), "correction sites");
    c->sites = qc_calloc(n_sites ? (size_t)n_sites : 1, sizeof(CorrectionSite), "correction sites");
    if (!c->site_of || !c->sites) { corrections_free(c); return -1; }
    for (int i = 0; i < c->n_where; i++) c->site_of[i] = -1;
    SizeWalk w = {c, 0, 0, 0, 0};
    layout_sites(cfg, layout, size_visit, &w);
    c->num_params = w.params;
    size_t rows = (size_t)max_rows, n = c->num_params ? c->num_params : 1;
    c->params = qc_aligned_alloc(n * sizeof(float), "correction parameters");
    c->grads = qc_aligned_alloc(n * sizeof(float), "correction gradients");
    c->adam_m = qc_aligned_alloc(n * sizeof(float), "correction AdamW state");
    c->adam_v = qc_aligned_alloc(n * sizeof(float), "correction AdamW state");
    c->act_memory = qc_aligned_alloc((rows * (w.act + w.widest_in + (w.scratch ? w.scratch : 1))) * sizeof(float),
                                     "correction activations");
    if (!c->params || !c->grads || !c->adam_m || !c->adam_v || !c->act_memory) { corrections_free(c); return -1; }
    memset(c->params, 0, n * sizeof(float));
    memset(c->grads, 0, n * sizeof(float));
    memset(c->adam_m, 0, n * sizeof(float));
    memset(c->adam_v, 0, n * sizeof(float));
    Rng rng;
    rng_seed(&rng, seed ^ 0xC0C0C0C0ull);
    float *param = c->params, *grad = c->grads, *act = c->act_memory;
    int placed_on_stream = kind_info[c->kind].placement == PLACE_STREAM;
    for (int j = 0; j < c->n_sites; j++) {
        CorrectionSite *s = &c->sites[j];
        SiteTensor t[SITE_MAX_TENSORS];
        int k = c->ops->tensors(s->in, s->out, s->size, t);
        for (int i = 0; i < k; i++) {
            size_t count = (size_t)t[i].rows * (t[i].cols ? (size_t)t[i].cols : 1);
            s->param[i] = param;
            s->grad[i] = grad;
            param += count;
            grad += count;
        }
        c->ops->init(s, &rng);
        if (placed_on_stream) {
            s->output = act;
            act += rows * s->out;
        }
        s->act = act;
        act += rows * c->ops->act_floats(s->in, s->out, s->size);
    }
    c->dscratch = act;
    act += rows * w.widest_in;
    c->kind_scratch = act;
    c->hook = (ModelHook){.ctx = c, .max_rows = max_rows};
    if (placed_on_stream) {
        c->hook.after_block = stream_after_block;
        c->hook.after_block_backward = stream_after_block_backward;
    } else {
        c->hook.after_linear = linear_after;
        c->hook.after_linear_backward = linear_after_backward;
    }
    return 0;
}

void corrections_free(Corrections *c) {
    free(c->site_of);
    free(c->sites);
    free(c->params);
    free(c->grads);
    free(c->adam_m);
    free(c->adam_v);
    free(c->act_memory);
    memset(c, 0, sizeof *c);
}

void corrections_zero_grad(Corrections *c) { memset(c->grads, 0, (c->num_params ? c->num_params : 1) * sizeof(float)); }

/* Every site's quant from the stored width and the scheme (corrections_set_act). */
static void corrections_update_quant(Corrections *c) {
    int bits = act_point_bits(&c->act, ACT_POINT_INPUTS), on = c->stored_bits < 32 && bits > 0;
    int stream_on_grid = act_point_bits(&c->act, ACT_POINT_STREAM) && !c->act.correction_float;
    c->quant = (CorrectionActQuant){.bits = bits, .asymmetric = c->act.asymmetric,
                                    .window = c->act.granularity == ACT_TENSOR ? c->ctx : 0,
                                    .input_on_grid = kind_info[c->kind].placement == PLACE_LINEAR || stream_on_grid};
    for (int j = 0; j < c->n_sites; j++) c->sites[j].quant = on ? &c->quant : NULL;
}

void corrections_set_act(Corrections *c, const ActScheme *a) {
    c->act = *a;
    corrections_update_quant(c);
}

void corrections_store_narrow(Corrections *c, int bits) {
    c->stored_bits = bits;
    corrections_update_quant(c);
    for (int j = 0; j < c->n_sites; j++) {
        CorrectionSite *s = &c->sites[j];
        SiteTensor t[SITE_MAX_TENSORS];
        int k = c->ops->tensors(s->in, s->out, s->size, t);
        for (int i = 0; i < k; i++)
            if (t[i].cols) quantize_spans(s->param[i], s->param[i], (size_t)t[i].rows * t[i].cols, t[i].cols, bits, 0, SCALE_F16);
    }
}

static void first_site_visit(void *ctx, int where, int in, int out, int size) {
    int *first = ctx;
    if (*first < 0) *first = where;
}

int correction_layout_frozen_prefix(const GPTConfig *cfg, const CorrectionLayout *layout) {
    int first = -1;
    if (layout_sites(cfg, layout, first_site_visit, &first) <= 0) return cfg->n_layer - 1;
    return kind_info[layout->kind].placement == PLACE_STREAM ? first : first / LINEARS_PER_BLOCK - 1;
}

int corrections_frozen_prefix(const Corrections *c) {
    if (c->n_sites == 0) return c->n_layer - 1;
    if (kind_info[c->kind].placement == PLACE_STREAM) return c->sites[0].where;
    return c->sites[0].where / LINEARS_PER_BLOCK - 1;
}

/* ---------------------------------------------------------------- the KL objective */

double kl_forward_backward(float *dlogits, const float *logits, const float *target_logits, int N, int V, float dloss) {
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int n = 0; n < N; n++) {
        const float *z = logits + (long)n * V, *t = target_logits + (long)n * V;
        double zmax = z[0], tmax = t[0];
        for (int v = 1; v < V; v++) {
            zmax = fmax(zmax, z[v]);
            tmax = fmax(tmax, t[v]);
        }
        double zs = 0.0, ts = 0.0;
        for (int v = 0; v < V; v++) {
            zs += exp(z[v] - zmax);
            ts += exp(t[v] - tmax);
        }
        double zlog = log(zs) + zmax, tlog = log(ts) + tmax, kl = 0.0;
        for (int v = 0; v < V; v++) {
            double lp = t[v] - tlog, lq = z[v] - zlog, p = exp(lp);
            kl += p * (lp - lq);
            if (dlogits) dlogits[(long)n * V + v] = (float)((exp(lq) - p) * dloss);
        }
        total += kl;
    }
    return total / N;
}
