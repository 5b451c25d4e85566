/* quant: see quant.h. The quantizers are table entries (QUANTIZERS in methods.h); the arithmetic
 * of a span lives in the kernel layer (fakequant.c). */
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *role_names[] = {"embedding", "norm", "bias", "linear", "head"};

void quant_scheme_default(QuantScheme *s, int bits) {
    memset(s, 0, sizeof *s);
    s->bits = bits;
    s->granularity = GRAN_CHANNEL;
    s->scope = SCOPE_DEFAULT;
    s->scale_dtype = SCALE_F16; /* as real formats store it (ggml's block_q4_0) */
    s->quantizer = QUANTIZER_RTN;
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

void quant_scheme_describe(const QuantScheme *s, char *out, size_t size) {
    if (s->bits >= 32) { /* the control arm keeps the activation quantization of the arm it controls */
        if (s->act_bits) snprintf(out, size, "float32 weights act=int%d", s->act_bits);
        else snprintf(out, size, "float32 (no quantization)");
        return;
    }
    char gran[32], scope[64], act[16];
    describe_granularity(s, gran, sizeof gran);
    describe_scope(s->scope, scope, sizeof scope);
    if (s->act_bits) snprintf(act, sizeof act, "int%d", s->act_bits);
    else snprintf(act, sizeof act, "none");
    char scale[32] = "";
    if (s->scale_dtype != SCALE_EXACT) snprintf(scale, sizeof scale, " scale=%s", scale_dtype_name(s->scale_dtype));
    snprintf(out, size, "int%d %s %s %s%s scope=%s act=%s", s->bits, s->asymmetric ? "asym-minmax" : "sym-absmax", gran,
             quantizer_info[s->quantizer].name, scale, scope, act);
}

int quant_scheme_check(const QuantScheme *s) {
    if (s->bits != 32 && (s->bits < 2 || s->bits > 8)) {
        qc_error("%d weight bits are not supported (2..8, or 32 for no quantization)", s->bits);
        return -1;
    }
    if (s->act_bits != 0 && (s->act_bits < 2 || s->act_bits > 8)) {
        qc_error("%d activation bits are not supported (0 for off, or 2..8)", s->act_bits);
        return -1;
    }
    if (s->quantizer < 0 || s->quantizer >= QUANTIZER_COUNT) {
        qc_error("quantizer %d is unknown", (int)s->quantizer);
        return -1;
    }
    if (s->granularity == GRAN_GROUP && s->group < 1) { qc_error("group size %d must be positive", s->group); return -1; }
    return 0;
}

int quant_span(const QuantScheme *s, int rows, int cols) {
    return s->granularity == GRAN_TENSOR ? rows * cols : s->granularity == GRAN_CHANNEL ? cols : s->group;
}

/* rtn: each span round-to-nearest with its absmax (or min/max) scale */
static int quantize_tensor_rtn(float *out, const float *w, int rows, int cols, const QuantScheme *s, const CalibStats *stats) {
    (void)stats;
    quantize_spans(out, w, (size_t)rows * cols, quant_span(s, rows, cols), s->bits, s->asymmetric, s->scale_dtype);
    return 0;
}

#define QUANTIZER_FN(id, name, calib, fn) [id] = fn,
static const QuantizeTensorFn quantize_tensor[QUANTIZER_COUNT] = {QUANTIZERS(QUANTIZER_FN)};
#undef QUANTIZER_FN

int quantize_matrix(float *out, const float *in, int rows, int cols, const QuantScheme *s) {
    int n = cols ? cols : 1;
    if (s->granularity == GRAN_GROUP && n % s->group != 0) {
        qc_error("granularity group:%d does not divide the row length %d", s->group, n);
        return -1;
    }
    return quantize_tensor[s->quantizer](out, in, rows, n, s, NULL);
}

int quantize_model(GPT *m, const QuantScheme *s, TensorQuantError *errors, int *n_errors) {
    if (quant_scheme_check(s) != 0) return -1;
    if (quantizer_info[s->quantizer].needs_calibration) {
        qc_error("the %s quantizer needs calibration data", quantizer_info[s->quantizer].name);
        return -1;
    }
    int count = 0;
    if (s->bits < 32) {
        /* check every tensor's shape before changing any */
        for (int i = 0; i < m->n_specs; i++) {
            const TensorSpec *t = &m->specs[i];
            int n = t->cols ? t->cols : t->rows; /* vectors are quantized as one row */
            if ((s->scope & SCOPE_OF(t->role)) && s->granularity == GRAN_GROUP && n % s->group != 0) {
                qc_error("granularity group:%d does not divide the row length %d of %s", s->group, n, t->name);
                return -1;
            }
        }
        for (int i = 0; i < m->n_specs; i++) {
            const TensorSpec *t = &m->specs[i];
            if (!(s->scope & SCOPE_OF(t->role))) continue;
            float *w = m->params + t->offset;
            size_t n = tensor_numel(t);
            float *before = qc_malloc(n * sizeof(float), "quantization copy");
            if (!before) return -1;
            memcpy(before, w, n * sizeof(float));
            /* vectors (biases, norms) are quantized as one row */
            int rows = t->cols ? t->rows : 1, cols = t->cols ? t->cols : t->rows;
            if (quantize_matrix(w, before, rows, cols, s) != 0) { free(before); return -1; }
            double num = 0.0, den = 0.0;
            for (size_t k = 0; k < n; k++) {
                double d = (double)w[k] - before[k];
                num += d * d;
                den += (double)before[k] * before[k];
            }
            free(before);
            if (errors) {
                snprintf(errors[count].name, sizeof errors[count].name, "%s", t->name);
                errors[count].rel_error = den > 0 ? sqrt(num / den) : 0.0;
            }
            count++;
        }
    }
    /* at 32 bits too: the control arm differs from the quantized arm in its weights alone */
    if (gpt_set_act_bits(m, s->act_bits) != 0) return -1;
    if (n_errors) *n_errors = count;
    return 0;
}

