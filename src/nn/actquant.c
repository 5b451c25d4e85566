/* actquant: see actquant.h. The arithmetic of a grid is fakequant's (act_grid); here only which
 * values one grid covers, by the scheme's granularity, at each point. */
#include "nn/actquant.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "quant/fakequant.h"

void act_state_free(ActState *s) {
    free(s->scratch);
    free(s->ranges);
    free(s->probs);
    free(s->stream);
    memset(s, 0, sizeof *s);
}

int gpt_set_act_scheme(GPT *m, const ActScheme *a) {
    if (act_scheme_check(a) != 0) return -1;
    ActState *s = &m->act;
    const GPTConfig *c = &m->config;
    size_t rows = (size_t)m->max_batch * c->ctx;
    if ((a->points & ACT_POINT_INPUTS) && !s->scratch) {
        s->scratch = qc_aligned_alloc(rows * 4 * c->d_model * sizeof(float), "activation quantization scratch");
        if (!s->scratch) return -1;
    }
    if ((a->points & ACT_POINT_PROBS) && !s->probs) {
        size_t n = (size_t)c->n_layer * m->max_batch * c->n_head * c->ctx * c->ctx;
        s->probs = qc_aligned_alloc(n * sizeof(float), "quantized attention probabilities");
        if (!s->probs) return -1;
    }
    if (a->correction_float && (a->points & ACT_POINT_STREAM) && !s->stream) {
        s->stream = qc_aligned_alloc((size_t)c->n_layer * rows * c->d_model * sizeof(float), "quantized stream");
        if (!s->stream) return -1;
    }
    free(s->ranges);
    s->ranges = NULL;
    s->calibrated = 0;
    if (a->points && a->granularity == ACT_STATIC) {
        s->ranges = qc_calloc((size_t)act_site_count(c->n_layer) * 2, sizeof(float), "static activation ranges");
        if (!s->ranges) return -1;
    }
    s->scheme = *a;
    return 0;
}

int gpt_set_act_bits(GPT *m, int bits) {
    ActScheme a;
    act_scheme_inputs(&a, bits);
    return gpt_set_act_scheme(m, &a);
}

int gpt_set_act_ranges(GPT *m, const float *ranges) {
    if (!m->act.ranges) { qc_error("static activation ranges given to a scheme that is not static"); return -1; }
    memcpy(m->act.ranges, ranges, (size_t)act_site_count(m->config.n_layer) * 2 * sizeof(float));
    m->act.calibrated = 1;
    return 0;
}

int gpt_copy_act(GPT *dst, const GPT *src) {
    if (gpt_set_act_scheme(dst, &src->act.scheme) != 0) return -1;
    return src->act.calibrated ? gpt_set_act_ranges(dst, src->act.ranges) : 0;
}

int act_check_ready(const GPT *m) {
    const ActState *s = &m->act;
    if (s->scheme.points && s->scheme.granularity == ACT_STATIC && !s->calibrated && !s->observe) {
        qc_error("the static activation ranges are not calibrated (quantize with calibration windows, or load them)");
        return -1;
    }
    return 0;
}

static ActGrid static_grid(const GPT *m, int site, int bits) {
    const float *r = m->act.ranges + 2 * (size_t)site;
    return act_grid(r[0], r[1], bits, m->act.scheme.asymmetric);
}

/* rows of cols (strides ldo, ldi; out may be in) of one site, by the granularity */
static void quantize_site(GPT *m, int site, int bits, float *out, long ldo, const float *in, long ldi, int rows, int cols) {
    const ActState *s = &m->act;
    int asym = s->scheme.asymmetric;
    switch (s->scheme.granularity) {
    case ACT_TOKEN:
        act_quantize_rows(out, ldo, in, ldi, rows, cols, bits, asym);
        break;
    case ACT_TENSOR: {
        int W = s->window > 0 ? s->window : rows;
        for (int r0 = 0; r0 < rows; r0 += W)
            act_quantize_block(out + (long)r0 * ldo, ldo, in + (long)r0 * ldi, ldi, rows - r0 < W ? rows - r0 : W, cols, bits, asym);
        break;
    }
    case ACT_STATIC:
        act_quantize_fixed(out, ldo, in, ldi, rows, cols, static_grid(m, site, bits));
        break;
    }
}

static int linear_site(const GPT *m, int linear) {
    int L = m->config.n_layer;
    return linear == L * LINEARS_PER_BLOCK ? L * ACT_SITES_PER_BLOCK : linear / LINEARS_PER_BLOCK * ACT_SITES_PER_BLOCK + linear % LINEARS_PER_BLOCK;
}

const float *act_linear_input(GPT *m, int linear, const float *in, int rows, int cols) {
    int bits = act_point_bits(&m->act.scheme, ACT_POINT_INPUTS);
    if (!bits) return in;
    int site = linear_site(m, linear);
    if (m->act.observe) {
        m->act.observe(m->act.observe_ctx, site, in, rows, cols, cols, 0);
        return in;
    }
    quantize_site(m, site, bits, m->act.scratch, cols, in, cols, rows, cols);
    return m->act.scratch;
}

void act_keys_values(GPT *m, int layer, float *qkv, int rows) {
    int bits = act_point_bits(&m->act.scheme, ACT_POINT_KV), C = m->config.d_model;
    if (!bits) return;
    for (int part = 1; part <= 2; part++) {
        int site = layer * ACT_SITES_PER_BLOCK + (part == 1 ? ACT_SITE_KEY : ACT_SITE_VALUE);
        float *x = qkv + (long)part * C;
        if (m->act.observe) m->act.observe(m->act.observe_ctx, site, x, rows, C, 3L * C, 0);
        else quantize_site(m, site, bits, x, 3L * C, x, 3L * C, rows, C);
    }
}

void act_stream(GPT *m, int layer, float *x, int rows) {
    int bits = act_point_bits(&m->act.scheme, ACT_POINT_STREAM), C = m->config.d_model;
    if (!bits) return;
    int site = layer * ACT_SITES_PER_BLOCK + ACT_SITE_STREAM;
    if (m->act.observe) m->act.observe(m->act.observe_ctx, site, x, rows, C, C, 0);
    else quantize_site(m, site, bits, x, C, x, C, rows, C);
}

int act_correction_float(const GPT *m) { return m->act.scheme.correction_float && act_point_bits(&m->act.scheme, ACT_POINT_STREAM); }

void act_stream_into(GPT *m, int layer, float *out, const float *in, int rows) {
    int bits = act_point_bits(&m->act.scheme, ACT_POINT_STREAM), C = m->config.d_model;
    int site = layer * ACT_SITES_PER_BLOCK + ACT_SITE_STREAM;
    if (bits && m->act.observe) m->act.observe(m->act.observe_ctx, site, in, rows, C, C, 0);
    if (bits && !m->act.observe) quantize_site(m, site, bits, out, C, in, C, rows, C);
    else if (out != in) memcpy(out, in, (size_t)rows * C * sizeof(float));
}

float *act_stream_buffer(GPT *m, int layer) {
    return m->act.stream + (size_t)layer * m->max_batch * m->config.ctx * m->config.d_model;
}

int act_probs_on(const GPT *m) { return act_point_bits(&m->act.scheme, ACT_POINT_PROBS) != 0; }

float *act_saved_probs(GPT *m, int layer) {
    const GPTConfig *c = &m->config;
    return m->act.probs + (size_t)layer * m->max_batch * c->n_head * c->ctx * c->ctx;
}

/* The grid of the causal part of the (NH*T) probability rows of one window (tensor granularity). */
static ActGrid window_probs_grid(const float *att, int rows, int T, int bits, int asym) {
    float lo = att[0], hi = att[0];
    for (int r = 0; r < rows; r++) {
        float a, b;
        act_range(att + (long)r * T, r % T + 1, &a, &b);
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
    }
    return act_grid(lo, hi, bits, asym);
}

void act_probs_forward(GPT *m, int layer, float *out, float *att_q, const float *att, const float *qkv, int B, int T) {
    int bits = act_point_bits(&m->act.scheme, ACT_POINT_PROBS);
    if (!bits) return;
    const GPTConfig *c = &m->config;
    int C = c->d_model, NH = c->n_head, hs = C / NH, site = layer * ACT_SITES_PER_BLOCK + ACT_SITE_PROBS;
    int asym = m->act.scheme.asymmetric;
    if (m->act.observe) {
        m->act.observe(m->act.observe_ctx, site, att, B * NH * T, T, T, T);
        return;
    }
    ActGranularity g = m->act.scheme.granularity;
    ActGrid fixed = g == ACT_STATIC ? static_grid(m, site, bits) : (ActGrid){0};
    /* tensor: a thread takes a whole window, its grid found before any of its rows is overwritten
     * (att_q may be att); else one (window, head) each */
    int per_window = g == ACT_TENSOR, units = per_window ? B : B * NH;
#pragma omp parallel for schedule(static)
    for (int u = 0; u < units; u++) {
        int b = per_window ? u : u / NH, h0 = per_window ? 0 : u % NH, h1 = per_window ? NH : h0 + 1;
        ActGrid grid = per_window ? window_probs_grid(att + (long)b * NH * T * T, NH * T, T, bits, asym) : fixed;
        for (int h = h0; h < h1; h++) {
            const float *p = att + ((long)b * NH + h) * T * T;
            float *pq = att_q + ((long)b * NH + h) * T * T;
            for (int t = 0; t < T; t++) {
                const float *row = p + (long)t * T;
                float *q = pq + (long)t * T;
                if (g == ACT_TOKEN) {
                    float lo, hi;
                    act_range(row, t + 1, &lo, &hi);
                    grid = act_grid(lo, hi, bits, asym);
                }
                act_grid_apply(q, row, t + 1, grid);
                for (int t2 = t + 1; t2 < T; t2++) q[t2] = 0.0f;
                /* the output from the quantized probabilities */
                float *y = out + ((long)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) y[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    float a = q[t2];
                    const float *v = qkv + ((long)b * T + t2) * 3 * C + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) y[i] += a * v[i];
                }
            }
        }
    }
}

void act_probs_backward(GPT *m, float *dqkv, const float *dout, const float *att_q, int B, int T) {
    const GPTConfig *c = &m->config;
    int C = c->d_model, NH = c->n_head, hs = C / NH;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *pq = att_q + (long)bh * T * T;
        for (int t2 = 0; t2 < T; t2++) {
            float *dv = dqkv + ((long)b * T + t2) * 3 * C + 2 * C + h * hs;
            for (int i = 0; i < hs; i++) dv[i] = 0.0f;
            for (int t = t2; t < T; t++) {
                float a = pq[(long)t * T + t2];
                const float *dy = dout + ((long)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) dv[i] += a * dy[i];
            }
        }
    }
}

void act_probs_rows(GPT *m, int layer, float *p, int rows, int n, long ld) {
    int bits = act_point_bits(&m->act.scheme, ACT_POINT_PROBS);
    if (!bits || m->act.observe) return;
    int site = layer * ACT_SITES_PER_BLOCK + ACT_SITE_PROBS;
    if (m->act.scheme.granularity == ACT_TENSOR) act_quantize_block(p, ld, p, ld, rows, n, bits, m->act.scheme.asymmetric);
    else quantize_site(m, site, bits, p, ld, p, ld, rows, n);
}
