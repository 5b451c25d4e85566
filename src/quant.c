/* quant: see quant.h. Scales are computed in double and the dequantized value rounded once to
 * float, so the extreme weight maps back to itself exactly and quantizing twice changes nothing. */
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
}

int parse_granularity(const char *text, QuantScheme *s) {
    if (strcmp(text, "tensor") == 0) { s->granularity = GRAN_TENSOR; return 0; }
    if (strcmp(text, "channel") == 0) { s->granularity = GRAN_CHANNEL; return 0; }
    if (strncmp(text, "group:", 6) == 0) {
        long g;
        if (parse_int("--granularity group:G", text + 6, 1, 1 << 20, &g) != 0) return -1;
        s->granularity = GRAN_GROUP;
        s->group = (int)g;
        return 0;
    }
    qc_error("--granularity: expected tensor, channel or group:G, got '%s'", text);
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
            qc_error("--scope: unknown tensor kind '%s' (embedding, norm, bias, linear, head)", tok);
            return -1;
        }
        out |= SCOPE_OF(found);
    }
    if (!out) { qc_error("--scope: empty"); return -1; }
    *scope = out;
    return 0;
}

static void describe_scope(unsigned scope, char *out, size_t size) {
    out[0] = 0;
    for (int r = 0; r < 5; r++)
        if (scope & SCOPE_OF(r)) snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", role_names[r]);
}

static void describe_granularity(const QuantScheme *s, char *out, size_t size) {
    if (s->granularity == GRAN_TENSOR) snprintf(out, size, "tensor");
    else if (s->granularity == GRAN_CHANNEL) snprintf(out, size, "channel");
    else snprintf(out, size, "group:%d", s->group);
}

void quant_scheme_describe(const QuantScheme *s, char *out, size_t size) {
    if (s->bits >= 32) { snprintf(out, size, "float32 (no quantization)"); return; }
    char gran[32], scope[64], act[16];
    describe_granularity(s, gran, sizeof gran);
    describe_scope(s->scope, scope, sizeof scope);
    if (s->act_bits) snprintf(act, sizeof act, "int%d", s->act_bits);
    else snprintf(act, sizeof act, "none");
    snprintf(out, size, "int%d %s %s rtn scope=%s act=%s", s->bits, s->asymmetric ? "asym-minmax" : "sym-absmax", gran, scope, act);
}

int quant_scheme_check(const QuantScheme *s) {
    if (s->bits != 32 && (s->bits < 2 || s->bits > 8)) {
        qc_error("--bits: %d is not supported (2..8, or 32 for no quantization)", s->bits);
        return -1;
    }
    if (s->act_bits != 0 && (s->act_bits < 2 || s->act_bits > 8)) {
        qc_error("--act-bits: %d is not supported (0 for off, or 2..8)", s->act_bits);
        return -1;
    }
    if (s->granularity == GRAN_GROUP && s->group < 1) { qc_error("--granularity: group size must be positive"); return -1; }
    return 0;
}

void quantize_span_ref(float *out, const float *in, int n, int bits, int asymmetric) {
    if (!asymmetric) {
        double qmax = (double)((1 << (bits - 1)) - 1), absmax = 0.0;
        for (int i = 0; i < n; i++) absmax = fmax(absmax, fabs((double)in[i]));
        if (absmax == 0.0) {
            for (int i = 0; i < n; i++) out[i] = 0.0f;
            return;
        }
        double scale = absmax / qmax;
        for (int i = 0; i < n; i++) {
            double q = nearbyint((double)in[i] / scale);
            if (q > qmax) q = qmax;
            if (q < -qmax) q = -qmax;
            out[i] = (float)(q * scale);
        }
    } else {
        double levels = (double)((1 << bits) - 1), lo = in[0], hi = in[0];
        for (int i = 1; i < n; i++) {
            lo = fmin(lo, in[i]);
            hi = fmax(hi, in[i]);
        }
        if (hi == lo) {
            for (int i = 0; i < n; i++) out[i] = (float)lo;
            return;
        }
        double scale = (hi - lo) / levels;
        for (int i = 0; i < n; i++) {
            double q = nearbyint(((double)in[i] - lo) / scale);
            if (q > levels) q = levels;
            if (q < 0) q = 0;
            out[i] = (float)(lo + q * scale);
        }
    }
}

int quantize_matrix(float *out, const float *in, int rows, int cols, const QuantScheme *s) {
    int n = cols ? cols : 1;
    if (s->granularity == GRAN_TENSOR) {
        quantize_span_ref(out, in, rows * n, s->bits, s->asymmetric);
        return 0;
    }
    int span = s->granularity == GRAN_CHANNEL ? n : s->group;
    if (n % span != 0) {
        qc_error("--granularity group:%d does not divide the row length %d", s->group, n);
        return -1;
    }
#pragma omp parallel for schedule(static)
    for (long off = 0; off < (long)rows * n; off += span) quantize_span_ref(out + off, in + off, span, s->bits, s->asymmetric);
    return 0;
}

int quantize_model(GPT *m, const QuantScheme *s, TensorQuantError *errors, int *n_errors) {
    if (quant_scheme_check(s) != 0) return -1;
    int count = 0;
    if (s->bits < 32) {
        /* check every tensor's shape before changing any */
        for (int i = 0; i < m->n_specs; i++) {
            const TensorSpec *t = &m->specs[i];
            int n = t->cols ? t->cols : t->rows; /* vectors are quantized as one row */
            if ((s->scope & SCOPE_OF(t->role)) && s->granularity == GRAN_GROUP && n % s->group != 0) {
                qc_error("--granularity group:%d does not divide the row length %d of %s", s->group, n, t->name);
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
    if (gpt_set_act_bits(m, s->bits < 32 ? s->act_bits : 0) != 0) return -1;
    if (n_errors) *n_errors = count;
    return 0;
}

void quantize_activations(float *out, const float *in, int rows, int cols, int bits) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) quantize_span_ref(out + (long)r * cols, in + (long)r * cols, cols, bits, 0);
}

void quant_scheme_to_meta(const QuantScheme *s, StMeta *out) {
    char gran[32], scope[64];
    describe_granularity(s, gran, sizeof gran);
    describe_scope(s->scope, scope, sizeof scope);
    out[0].key = "quant_bits"; snprintf(out[0].value, sizeof out[0].value, "%d", s->bits);
    out[1].key = "quant_granularity"; snprintf(out[1].value, sizeof out[1].value, "%s", gran);
    out[2].key = "quant_asymmetric"; snprintf(out[2].value, sizeof out[2].value, "%d", s->asymmetric);
    out[3].key = "quant_scope"; snprintf(out[3].value, sizeof out[3].value, "%s", scope);
    out[4].key = "quant_act_bits"; snprintf(out[4].value, sizeof out[4].value, "%d", s->act_bits);
    out[5].key = "quant_scheme"; quant_scheme_describe(s, out[5].value, sizeof out[5].value);
}

int quant_scheme_from_meta(const SafeTensors *st, QuantScheme *s) {
    const char *bits = st_meta(st, "quant_bits");
    if (!bits) return 0;
    const char *gran = st_meta(st, "quant_granularity"), *asym = st_meta(st, "quant_asymmetric");
    const char *scope = st_meta(st, "quant_scope"), *act = st_meta(st, "quant_act_bits");
    long v;
    quant_scheme_default(s, 4);
    if (!gran || !asym || !scope || !act || parse_int("quant_bits", bits, 2, 32, &v) != 0) goto bad;
    s->bits = (int)v;
    if (parse_granularity(gran, s) != 0 || parse_scope(scope, &s->scope) != 0) goto bad;
    if (parse_int("quant_asymmetric", asym, 0, 1, &v) != 0) goto bad;
    s->asymmetric = (int)v;
    if (parse_int("quant_act_bits", act, 0, 8, &v) != 0) goto bad;
    s->act_bits = (int)v;
    if (quant_scheme_check(s) != 0) goto bad;
    return 1;
bad:
    qc_error("%s: malformed quantization metadata", st->path);
    return -1;
}
