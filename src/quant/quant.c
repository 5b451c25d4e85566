/* quant: see quant.h. The quantizers are table entries (QUANTIZERS in methods.h), each with its
 * functions in its own file (rtn.c, mse.c, gptq.c); this file walks the table. The arithmetic of
 * a span lives in fakequant.c. */
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "quant/actcalib.h"

static const char *role_names[] = {"embedding", "norm", "bias", "linear", "head"};

#define QUANTIZER_OPS_ENTRY(id, name, data, gram, ops) [id] = &ops,
static const QuantizerOps *const quantizer_table[QUANTIZER_COUNT] = {QUANTIZERS(QUANTIZER_OPS_ENTRY)};
#undef QUANTIZER_OPS_ENTRY

const QuantizerOps *quantizer_ops(QuantizerId q) { return quantizer_table[q]; }

const QuantizerOption *quantizer_option(QuantizerId q, const char *flag) {
    const QuantizerOption *const *o = quantizer_table[q]->options;
    for (; o && *o; o++)
        if (strcmp((*o)->flag, flag) == 0) return *o;
    return NULL;
}

void quantizer_weight_only_names(char *out, size_t size) {
    int n = 0, k = 0;
    for (int q = 0; q < QUANTIZER_COUNT; q++) n += !quantizer_info[q].needs_data && !quantizer_info[q].needs_gram;
    out[0] = 0;
    for (int q = 0; q < QUANTIZER_COUNT; q++)
        if (!quantizer_info[q].needs_data && !quantizer_info[q].needs_gram)
            snprintf(out + strlen(out), size - strlen(out), "%s%s", k++ == 0 ? "" : k == n ? " or " : ", ", quantizer_info[q].name);
}

void quant_scheme_default(QuantScheme *s, int bits) {
    memset(s, 0, sizeof *s);
    s->bits = bits;
    s->granularity = GRAN_CHANNEL;
    s->scope = SCOPE_DEFAULT;
    s->scale_dtype = SCALE_F16; /* as real formats store it (ggml's block_q4_0) */
    s->quantizer = (QuantizerId)0; /* the table's first: rtn */
    for (int q = 0; q < QUANTIZER_COUNT; q++) /* every quantizer's options, so switching quantizer finds its defaults */
        if (quantizer_table[q]->defaults) quantizer_table[q]->defaults(&s->options);
    act_scheme_default(&s->act);
    transform_default(&s->transform);
}

int parse_granularity(const char *text, QuantScheme *s) {
    if (strcmp(text, "tensor") == 0) { s->granularity = GRAN_TENSOR; return 0; }
    if (strcmp(text, "channel") == 0) { s->granularity = GRAN_CHANNEL; return 0; }
    if (strncmp(text, "group:", 6) == 0) {
        long g;
        if (parse_int("group size", text + 6, 1, 1 << 20, &g) != 0) return -1;
        s->granularity = GRAN_GROUP;
        s->group = (int)g;
        return 0;
    }
    qc_error("granularity '%s' is not tensor, channel or group:G", text);
    return -1;
}

int parse_scope(const char *text, unsigned *scope) {
    unsigned out = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int r = 0; r < 5; r++)
            if (strcmp(tok, role_names[r]) == 0) found = r;
        if (found < 0) {
            qc_error("unknown tensor kind '%s' (embedding, norm, bias, linear, head)", tok);
            return -1;
        }
        out |= SCOPE_OF(found);
    }
    if (!out) { qc_error("empty list of tensor kinds"); return -1; }
    *scope = out;
    return 0;
}

void describe_scope(unsigned scope, char *out, size_t size) {
    out[0] = 0;
    for (int r = 0; r < 5; r++)
        if (scope & SCOPE_OF(r)) snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", role_names[r]);
}

void describe_granularity(const QuantScheme *s, char *out, size_t size) {
    if (s->granularity == GRAN_TENSOR) snprintf(out, size, "tensor");
    else if (s->granularity == GRAN_CHANNEL) snprintf(out, size, "channel");
    else snprintf(out, size, "group:%d", s->group);
}

void describe_quantizer(const QuantScheme *s, char *out, size_t size) {
    snprintf(out, size, "%s", quantizer_name(s->quantizer));
    if (quantizer_table[s->quantizer]->describe) quantizer_table[s->quantizer]->describe(s, out, size);
}

static void describe_transform(const QuantScheme *s, char *out, size_t size) {
    if (!s->transform.kinds) return;
    char t[96];
    transform_describe(&s->transform, t, sizeof t);
    snprintf(out + strlen(out), size - strlen(out), " transform=%s", t);
}

void quant_scheme_describe(const QuantScheme *s, char *out, size_t size) {
    char gran[32], scope[64], act[128], quantizer[96];
    act_scheme_describe(&s->act, act, sizeof act);
    if (s->bits >= 32) { /* the control arm keeps the activation quantization of the arm it controls */
        if (act_scheme_on(&s->act)) snprintf(out, size, "float32 weights act=%s", act);
        else snprintf(out, size, "float32 (no quantization)");
        describe_transform(s, out, size);
        return;
    }
    describe_quantizer(s, quantizer, sizeof quantizer);
    describe_granularity(s, gran, sizeof gran);
    describe_scope(s->scope, scope, sizeof scope);
    char scale[32] = "";
    if (s->scale_dtype != SCALE_EXACT) snprintf(scale, sizeof scale, " scale=%s", scale_dtype_name(s->scale_dtype));
    snprintf(out, size, "int%d %s %s %s%s scope=%s act=%s", s->bits, s->asymmetric ? "asym-minmax" : "sym-absmax", gran,
             quantizer, scale, scope, act);
    describe_transform(s, out, size);
}

int quant_scheme_check(const QuantScheme *s) {
    if (s->bits != 32 && (s->bits < 2 || s->bits > 8)) {
        qc_error("%d weight bits are not supported (2..8, or 32 for no quantization)", s->bits);
        return -1;
    }
    if (act_scheme_check(&s->act) != 0) return -1;
    if (s->quantizer < 0 || s->quantizer >= QUANTIZER_COUNT) {
        qc_error("quantizer %d is unknown", (int)s->quantizer);
        return -1;
    }
    if (s->granularity == GRAN_GROUP && s->group < 1) { qc_error("group size %d must be positive", s->group); return -1; }
    if (transform_check(&s->transform) != 0) return -1;
    const QuantizerOps *ops = quantizer_table[s->quantizer];
    return ops->check ? ops->check(s) : 0;
}

/* whether the quantizer itself (not the transform, not static activation ranges) needs the
 * statistics of each matrix's input */
static int weights_need_calibration(const QuantScheme *s) {
    if (s->bits >= 32) return 0;
    if (quantizer_info[s->quantizer].needs_data) return 1;
    return quantizer_table[s->quantizer]->needs_data && quantizer_table[s->quantizer]->needs_data(s);
}

static int act_static(const QuantScheme *s) { return act_scheme_on(&s->act) && s->act.granularity == ACT_STATIC; }

int quant_scheme_needs_calibration(const QuantScheme *s) {
    return transform_needs_calibration(&s->transform) || weights_need_calibration(s) || act_static(s);
}

int quant_span(const QuantScheme *s, int rows, int cols) {
    return s->granularity == GRAN_TENSOR ? rows * cols : s->granularity == GRAN_CHANNEL ? cols : s->group;
}

static int check_group(const QuantScheme *s, int cols) {
    if (s->granularity == GRAN_GROUP && cols % s->group != 0) {
        qc_error("granularity group:%d does not divide the row length %d", s->group, cols);
        return -1;
    }
    return 0;
}

int quantize_matrix_calibrated(float *out, const float *in, int rows, int cols, const QuantScheme *s, const CalibStats *stats) {
    int n = cols ? cols : 1;
    if (check_group(s, n) != 0) return -1;
    if (stats && stats->in != n) {
        qc_error("calibration statistics of %d columns for a matrix of %d", stats->in, n);
        return -1;
    }
    if (!stats && weights_need_calibration(s)) {
        qc_error("the %s quantizer needs calibration data", quantizer_name(s->quantizer));
        return -1;
    }
    return quantizer_table[s->quantizer]->quantize(out, in, rows, n, s, stats);
}

int quantize_matrix(float *out, const float *in, int rows, int cols, const QuantScheme *s) {
    return quantize_matrix_calibrated(out, in, rows, cols, s, NULL);
}

/* Quantizes tensor t of m in place (with the statistics of its input, or NULL); its relative error. */
static int quantize_spec(GPT *m, const TensorSpec *t, const QuantScheme *s, const CalibStats *stats, double *rel_error) {
    float *w = m->params + t->offset;
    size_t n = tensor_numel(t);
    float *before = qc_malloc(n * sizeof(float), "quantization copy");
    if (!before) return -1;
    memcpy(before, w, n * sizeof(float));
    /* vectors (biases, norms) are quantized as one row */
    int rows = t->cols ? t->rows : 1, cols = t->cols ? t->cols : t->rows;
    if (quantizer_table[s->quantizer]->quantize(w, before, rows, cols, s, stats) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", qc_last_error());
        qc_error("%s: %s", t->name, why);
        memcpy(w, before, n * sizeof(float));
        free(before);
        return -1;
    }
    double num = 0.0, den = 0.0;
    for (size_t k = 0; k < n; k++) {
        double d = (double)w[k] - before[k];
        num += d * d;
        den += (double)before[k] * before[k];
    }
    free(before);
    *rel_error = den > 0 ? sqrt(num / den) : 0.0;
    return 0;
}

/* The tensor of linear layer i's weight. */
static const TensorSpec *linear_weight_spec(const GPT *m, int i) {
    char name[80];
    snprintf(name, sizeof name, "%s.weight", gpt_linear_shape(&m->config, i).name);
    return gpt_find_tensor(m, name);
}

typedef struct {
    GPT *m;
    const QuantScheme *s;
    double *rel_error; /* per spec */
} CalibratedQuantization;

static int quantize_visit(void *ctx, int linear, const CalibStats *stats) {
    CalibratedQuantization *q = ctx;
    const TensorSpec *t = linear_weight_spec(q->m, linear);
    return quantize_spec(q->m, t, q->s, stats, &q->rel_error[t - q->m->specs]);
}

int quantize_model_calibrated(GPT *m, const QuantScheme *s, const int32_t *windows, int n_windows, int T,
                              TensorQuantError *errors, int *n_errors) {
    if (quant_scheme_check(s) != 0) return -1;
    int calibrated = weights_need_calibration(s);
    if (quant_scheme_needs_calibration(s) && !windows) {
        if (transform_needs_calibration(&s->transform)) qc_error("the smooth transform needs calibration data");
        else if (calibrated) qc_error("the %s quantizer needs calibration data", quantizer_name(s->quantizer));
        else qc_error("static activation ranges need calibration data");
        return -1;
    }
    /* the transform of the float model first, its activations float: the quantizer (and gptq's
     * statistics) see its result */
    ActScheme off;
    act_scheme_default(&off);
    if (s->transform.kinds && (gpt_set_act_scheme(m, &off) != 0 || transform_model(m, &s->transform, windows, n_windows, T) != 0)) return -1;
    /* then: the calibration inputs are what the matrices read, after dynamic activation
     * quantization; static ranges are calibrated last, on the quantized weights (until then the
     * activations stay float) */
    if (gpt_set_act_scheme(m, act_static(s) ? &off : &s->act) != 0) return -1;
    int count = 0;
    if (s->bits < 32) {
        /* check every tensor's shape before changing any */
        for (int i = 0; i < m->n_specs; i++) {
            const TensorSpec *t = &m->specs[i];
            int n = t->cols ? t->cols : t->rows;
            if ((s->scope & SCOPE_OF(t->role)) && s->granularity == GRAN_GROUP && n % s->group != 0) {
                qc_error("granularity group:%d does not divide the row length %d of %s", s->group, n, t->name);
                return -1;
            }
        }
        double *rel = qc_malloc((size_t)m->n_specs * sizeof(double), "quantization errors");
        int n_linear = gpt_linear_count(&m->config);
        unsigned char *selected = qc_calloc((size_t)n_linear, 1, "calibration layers");
        if (!rel || !selected) { free(rel); free(selected); return -1; }
        for (int i = 0; i < m->n_specs; i++) rel[i] = -1.0;
        for (int i = 0; i < n_linear && calibrated; i++) {
            const TensorSpec *t = linear_weight_spec(m, i);
            selected[i] = (s->scope & SCOPE_OF(t->role)) != 0;
        }
        int rc = 0;
        for (int i = 0; i < m->n_specs && rc == 0; i++) {
            const TensorSpec *t = &m->specs[i];
            int later = calibrated && (t->role == ROLE_LINEAR || t->role == ROLE_HEAD); /* in forward order, below */
            if ((s->scope & SCOPE_OF(t->role)) && !later) rc = quantize_spec(m, t, s, NULL, &rel[i]);
        }
        if (rc == 0 && calibrated) {
            CalibratedQuantization ctx = {m, s, rel};
            rc = calib_walk(m, NULL, windows, n_windows, T, selected, quantizer_info[s->quantizer].needs_gram, quantize_visit, &ctx);
        }
        for (int i = 0; i < m->n_specs && rc == 0; i++) {
            if (rel[i] < 0) continue;
            if (errors) {
                snprintf(errors[count].name, sizeof errors[count].name, "%s", m->specs[i].name);
                errors[count].rel_error = rel[i];
            }
            count++;
        }
        free(rel);
        free(selected);
        if (rc != 0) return -1;
    }
    if (act_static(s) && (gpt_set_act_scheme(m, &s->act) != 0 || act_calibrate(m, windows, n_windows, T) != 0)) return -1;
    if (n_errors) *n_errors = count;
    return 0;
}

int quantize_model(GPT *m, const QuantScheme *s, TensorQuantError *errors, int *n_errors) {
    if (quant_scheme_check(s) != 0) return -1;
    return quantize_model_calibrated(m, s, NULL, 0, 0, errors, n_errors);
}
