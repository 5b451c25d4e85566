/* transform: see transform.h. Every fold is computed in double from the float weights and
 * rounded once to float, so a transformed float model differs from the original by one rounding
 * of each weight (and the model's own float arithmetic on the transformed values). */
#include "quant/transform.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "kernels/ops.h"
#include "quant/calib.h"

void transform_default(TransformScheme *t) {
    memset(t, 0, sizeof *t);
    t->smooth_alpha = 0.5;
}

int transform_parse(const char *text, TransformScheme *t) {
    unsigned kinds = 0;
    if (strcmp(text, "none") != 0) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", text);
        for (char *save = NULL, *tok = strtok_r(buf, "+", &save); tok; tok = strtok_r(NULL, "+", &save)) {
            unsigned part = strcmp(tok, "smooth") == 0   ? TRANSFORM_SMOOTH
                            : strcmp(tok, "online") == 0 ? TRANSFORM_ONLINE
                            : strcmp(tok, "rotate") == 0 ? TRANSFORM_ROTATE | TRANSFORM_ONLINE
                                                         : 0;
            if (!part) {
                qc_error("transform '%s' is not none or a '+'-joined list of smooth, online and rotate", text);
                return -1;
            }
            kinds |= part;
        }
        if (!kinds) {
            qc_error("transform '%s' names no part (none, smooth, online, rotate)", text);
            return -1;
        }
    }
    t->kinds = kinds;
    return 0;
}

void transform_kinds_name(unsigned kinds, char *out, size_t size) {
    const char *rot = kinds & TRANSFORM_ROTATE ? "rotate" : kinds & TRANSFORM_ONLINE ? "online" : "";
    if (!kinds) snprintf(out, size, "none");
    else if (kinds & TRANSFORM_SMOOTH) snprintf(out, size, "%s%ssmooth", rot, rot[0] ? "+" : "");
    else snprintf(out, size, "%s", rot);
}

void transform_describe(const TransformScheme *t, char *out, size_t size) {
    transform_kinds_name(t->kinds, out, size);
    if (t->kinds & (TRANSFORM_ROTATE | TRANSFORM_ONLINE))
        snprintf(out + strlen(out), size - strlen(out), ":seed=%llu", (unsigned long long)t->rotate_seed);
    if (t->kinds & TRANSFORM_SMOOTH) snprintf(out + strlen(out), size - strlen(out), ":alpha=%g", t->smooth_alpha);
}

int transform_check(const TransformScheme *t) {
    if (t->kinds & ~(unsigned)(TRANSFORM_ROTATE | TRANSFORM_ONLINE | TRANSFORM_SMOOTH)) {
        qc_error("transform parts 0x%x are unknown", t->kinds);
        return -1;
    }
    if ((t->kinds & TRANSFORM_ROTATE) && !(t->kinds & TRANSFORM_ONLINE)) {
        qc_error("the stream rotation comes with the online transforms (rotate)");
        return -1;
    }
    if ((t->kinds & TRANSFORM_SMOOTH) && !(t->smooth_alpha >= 0.0 && t->smooth_alpha <= 1.0)) {
        qc_error("SmoothQuant's alpha %g is outside [0, 1]", t->smooth_alpha);
        return -1;
    }
    return 0;
}

int transform_needs_calibration(const TransformScheme *t) { return (t->kinds & TRANSFORM_SMOOTH) != 0; }

unsigned transform_online_slots(const TransformScheme *t) {
    return t->kinds & TRANSFORM_ONLINE ? 1u << LINEAR_ATTN_PROJ | 1u << LINEAR_MLP_PROJ : 0u;
}

void transform_online_names(unsigned slots, char *out, size_t size) {
    static const char *names[LINEARS_PER_BLOCK] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    out[0] = 0;
    for (int s = 0; s < LINEARS_PER_BLOCK; s++)
        if (slots >> s & 1) snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", names[s]);
}

/* ---------------------------------------------------------------- folds, in double */

/* v (n, a power of two) = H v, H the normalized Walsh-Hadamard matrix (Sylvester order) */
static void fwht_double(double *v, int n) {
    for (int h = 1; h < n; h <<= 1)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                double a = v[j], b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
    double scale = 1.0 / sqrt((double)n);
    for (int j = 0; j < n; j++) v[j] *= scale;
}

/* v = H diag(signs) v: the online transform (and its fold into a weight's rows) */
static void hadamard_double(double *v, const float *signs, int n) {
    for (int j = 0; j < n; j++) v[j] *= signs[j];
    fwht_double(v, n);
}

/* v = Q M v with M = I - 11^T/C (centering) and Q = H D H: symmetric, orthogonal, Q 1 = d_0 1 */
static void stream_map(double *v, const float *d, int C) {
    double mean = 0.0;
    for (int j = 0; j < C; j++) mean += v[j];
    mean /= C;
    for (int j = 0; j < C; j++) v[j] -= mean;
    fwht_double(v, C);
    for (int j = 0; j < C; j++) v[j] *= d[j];
    fwht_double(v, C);
}

/* Any D will do: H 1 = sqrt(C) e_0, so Q 1 = d_0 1. Then Q commutes with the centering M, and
 * LayerNorm's normalization n(Q x) = Q n(x) for every x: exact even without the writers centered
 * (which is SliceGPT's recipe for a LayerNorm model, kept so the stream has mean 0). */
void rotation_signs(float *signs, uint64_t seed, int C) { gpt_online_signs(signs, seed, -1, C); }

/* A matrix w (rows, C) reading a LayerNorm's output (weight g, bias b): its bias += w . b, each row
 * = Q (row . g); then the LayerNorm becomes the plain normalization (g = 1, b = 0). */
static void fold_reader(float *w, float *bias, int rows, int C, float *g, float *b, const float *d, double *v) {
    for (int r = 0; r < rows; r++) {
        float *row = w + (size_t)r * C;
        double add = 0.0;
        for (int j = 0; j < C; j++) {
            add += (double)row[j] * b[j];
            v[j] = (double)row[j] * g[j];
        }
        bias[r] = (float)((double)bias[r] + add);
        fwht_double(v, C);
        for (int j = 0; j < C; j++) v[j] *= d[j];
        fwht_double(v, C);
        for (int j = 0; j < C; j++) row[j] = (float)v[j];
    }
    for (int j = 0; j < C; j++) {
        g[j] = 1.0f;
        b[j] = 0.0f;
    }
}

/* A matrix w (C, in) and bias (C) writing the stream: each column and the bias = Q M column */
static void fold_writer(float *w, float *bias, int C, int in, const float *d, double *v) {
    for (int k = 0; k < in; k++) {
        for (int j = 0; j < C; j++) v[j] = w[(size_t)j * in + k];
        stream_map(v, d, C);
        for (int j = 0; j < C; j++) w[(size_t)j * in + k] = (float)v[j];
    }
    for (int j = 0; j < C; j++) v[j] = bias[j];
    stream_map(v, d, C);
    for (int j = 0; j < C; j++) bias[j] = (float)v[j];
}

static int check_power_of_two(const GPT *m, const char *what) {
    int C = m->config.d_model;
    if (!is_power_of_two(C)) {
        qc_error("the %s transform needs d_model to be a power of two (the Walsh-Hadamard orders), not %d", what, C);
        return -1;
    }
    return 0;
}

int rotate_stream(GPT *m, uint64_t seed) {
    if (check_power_of_two(m, "rotate") != 0) return -1;
    const GPTConfig *cfg = &m->config;
    int C = cfg->d_model;
    float *d = qc_malloc((size_t)C * sizeof(float), "rotation signs");
    double *v = qc_malloc((size_t)C * sizeof(double), "rotation scratch");
    if (!d || !v) { free(d); free(v); return -1; }
    rotation_signs(d, seed, C);
    GlobalParams g = global_view(m, m->params);
    /* the embeddings write the stream: each row centered, then rotated */
    for (int pass = 0; pass < 2; pass++) {
        float *e = pass ? g.wpe : g.wte;
        int rows = pass ? cfg->ctx : cfg->vocab_size;
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < C; j++) v[j] = e[(size_t)r * C + j];
            stream_map(v, d, C);
            for (int j = 0; j < C; j++) e[(size_t)r * C + j] = (float)v[j];
        }
    }
    for (int l = 0; l < cfg->n_layer; l++) {
        LayerParams p = layer_view(m, m->params, l);
        fold_reader(p.attn_weight, p.attn_bias, 3 * C, C, p.ln_1_weight, p.ln_1_bias, d, v);
        fold_writer(p.attn_proj_weight, p.attn_proj_bias, C, C, d, v);
        fold_reader(p.fc_weight, p.fc_bias, 4 * C, C, p.ln_2_weight, p.ln_2_bias, d, v);
        fold_writer(p.mlp_proj_weight, p.mlp_proj_bias, C, 4 * C, d, v);
    }
    fold_reader(g.lm_head_weight, g.lm_head_bias, cfg->vocab_size, C, g.ln_f_weight, g.ln_f_bias, d, v);
    free(d);
    free(v);
    return 0;
}

int rotate_online(GPT *m, uint64_t seed) {
    if (check_power_of_two(m, "online") != 0) return -1;
    const GPTConfig *cfg = &m->config;
    unsigned slots = 1u << LINEAR_ATTN_PROJ | 1u << LINEAR_MLP_PROJ;
    int width = 4 * cfg->d_model;
    float *signs = qc_malloc((size_t)width * sizeof(float), "online signs");
    double *v = qc_malloc((size_t)width * sizeof(double), "online scratch");
    if (!signs || !v) { free(signs); free(v); return -1; }
    /* y = W x = (W D H)(H D x): each row of W becomes H D row */
    for (int l = 0; l < cfg->n_layer; l++)
        for (int s = 0; s < LINEARS_PER_BLOCK; s++) {
            if (!(slots >> s & 1)) continue;
            Linear lin = gpt_linear(m, l * LINEARS_PER_BLOCK + s);
            gpt_online_signs(signs, seed, lin.index, lin.in);
            for (int r = 0; r < lin.out; r++) {
                float *row = lin.weight + (size_t)r * lin.in;
                for (int j = 0; j < lin.in; j++) v[j] = row[j];
                hadamard_double(v, signs, lin.in);
                for (int j = 0; j < lin.in; j++) row[j] = (float)v[j];
            }
        }
    free(signs);
    free(v);
    return gpt_set_online(m, slots, seed);
}

/* ---------------------------------------------------------------- SmoothQuant */

void smooth_scales(double *s, const double *act_absmax, const float *w, int rows, int cols, double alpha) {
    for (int j = 0; j < cols; j++) {
        double wmax = 0.0;
        for (int r = 0; r < rows; r++) wmax = fmax(wmax, fabs((double)w[(size_t)r * cols + j]));
        s[j] = act_absmax[j] > 0.0 && wmax > 0.0 ? pow(act_absmax[j], alpha) / pow(wmax, 1.0 - alpha) : 1.0;
    }
}

typedef struct {
    double **absmax; /* per linear layer, NULL where not visited */
} SmoothStats;

static int smooth_visit(void *ctx, int linear, const CalibStats *stats) {
    SmoothStats *st = ctx;
    st->absmax[linear] = qc_malloc((size_t)stats->in * sizeof(double), "smoothing statistics");
    if (!st->absmax[linear]) return -1;
    memcpy(st->absmax[linear], stats->absmax, (size_t)stats->in * sizeof(double));
    return 0;
}

/* x / s read by w . diag(s): the LayerNorm (g, b) before the matrix divided by s, w's columns times s */
static void smooth_norm(float *g, float *b, float *w, int rows, int C, const double *s) {
    for (int j = 0; j < C; j++) {
        g[j] = (float)(g[j] / s[j]);
        b[j] = (float)(b[j] / s[j]);
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < C; j++) w[(size_t)r * C + j] = (float)(w[(size_t)r * C + j] * s[j]);
}

int smooth_model(GPT *m, double alpha, const int32_t *windows, int n_windows, int T) {
    const GPTConfig *cfg = &m->config;
    int C = cfg->d_model, L = cfg->n_layer, n_linear = gpt_linear_count(cfg);
    if (!windows) { qc_error("the smooth transform needs calibration data (max |x| per input channel)"); return -1; }
    unsigned char *selected = qc_calloc((size_t)n_linear, 1, "smoothing layers");
    double **absmax = qc_calloc((size_t)n_linear, sizeof(double *), "smoothing statistics");
    double *s = qc_malloc((size_t)(cfg->vocab_size > 4 * C ? cfg->vocab_size : 4 * C) * sizeof(double), "smoothing scales");
    int rc = -1;
    if (!selected || !absmax || !s) goto done;
    /* the inputs whose scale folds into what comes before: the LayerNorm-fed matrices, and
     * attn.c_proj through V (attention is linear in V per channel) unless it reads online H D x */
    for (int l = 0; l < L; l++) {
        int li = l * LINEARS_PER_BLOCK;
        selected[li + LINEAR_QKV] = selected[li + LINEAR_FC] = 1;
        selected[li + LINEAR_ATTN_PROJ] = gpt_online(m, li + LINEAR_ATTN_PROJ) == NULL;
    }
    selected[L * LINEARS_PER_BLOCK] = 1;
    /* max |x| of the float activations */
    ActScheme keep = m->act.scheme, off;
    act_scheme_default(&off);
    SmoothStats st = {absmax};
    rc = gpt_set_act_scheme(m, &off);
    if (rc == 0) rc = calib_walk(m, NULL, windows, n_windows, T, selected, 0, smooth_visit, &st);
    if (gpt_set_act_scheme(m, &keep) != 0) rc = -1;
    if (rc != 0) goto done;
    for (int l = 0; l < L; l++) {
        LayerParams p = layer_view(m, m->params, l);
        int li = l * LINEARS_PER_BLOCK;
        smooth_scales(s, absmax[li + LINEAR_QKV], p.attn_weight, 3 * C, C, alpha);
        smooth_norm(p.ln_1_weight, p.ln_1_bias, p.attn_weight, 3 * C, C, s);
        if (absmax[li + LINEAR_ATTN_PROJ]) { /* V's rows (2C..3C of c_attn) / s, c_proj's columns * s */
            smooth_scales(s, absmax[li + LINEAR_ATTN_PROJ], p.attn_proj_weight, C, C, alpha);
            for (int j = 0; j < C; j++) {
                float *row = p.attn_weight + (size_t)(2 * C + j) * C;
                for (int k = 0; k < C; k++) row[k] = (float)(row[k] / s[j]);
                p.attn_bias[2 * C + j] = (float)(p.attn_bias[2 * C + j] / s[j]);
            }
            for (int r = 0; r < C; r++)
                for (int j = 0; j < C; j++) p.attn_proj_weight[(size_t)r * C + j] = (float)(p.attn_proj_weight[(size_t)r * C + j] * s[j]);
        }
        smooth_scales(s, absmax[li + LINEAR_FC], p.fc_weight, 4 * C, C, alpha);
        smooth_norm(p.ln_2_weight, p.ln_2_bias, p.fc_weight, 4 * C, C, s);
    }
    GlobalParams g = global_view(m, m->params);
    smooth_scales(s, absmax[L * LINEARS_PER_BLOCK], g.lm_head_weight, cfg->vocab_size, C, alpha);
    smooth_norm(g.ln_f_weight, g.ln_f_bias, g.lm_head_weight, cfg->vocab_size, C, s);
    rc = 0;
done:
    if (absmax)
        for (int i = 0; i < n_linear; i++) free(absmax[i]);
    free(absmax);
    free(selected);
    free(s);
    return rc;
}

/* ---------------------------------------------------------------- the whole transform */

int transform_model(GPT *m, const TransformScheme *t, const int32_t *windows, int n_windows, int T) {
    if (transform_check(t) != 0) return -1;
    if ((t->kinds & (TRANSFORM_ROTATE | TRANSFORM_ONLINE)) && check_power_of_two(m, t->kinds & TRANSFORM_ROTATE ? "rotate" : "online") != 0)
        return -1;
    if ((t->kinds & TRANSFORM_SMOOTH) && !windows) {
        qc_error("the smooth transform needs calibration data (max |x| per input channel)");
        return -1;
    }
    if ((t->kinds & TRANSFORM_ROTATE) && rotate_stream(m, t->rotate_seed) != 0) return -1;
    if ((t->kinds & TRANSFORM_ONLINE) && rotate_online(m, t->rotate_seed) != 0) return -1;
    if ((t->kinds & TRANSFORM_SMOOTH) && smooth_model(m, t->smooth_alpha, windows, n_windows, T) != 0) return -1;
    return 0;
}
