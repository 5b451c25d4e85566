/* tune: see tune.h. */
#include "correct/tune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "correct/adaround.h"

static int add_range(Tuning *t, int *cap, TuneRange r) {
    if (t->n_ranges == *cap) {
        int grown = *cap ? 2 * *cap : 64;
        TuneRange *more = realloc(t->ranges, (size_t)grown * sizeof *more);
        if (!more) { qc_error("out of memory for the tuned ranges"); return -1; }
        t->ranges = more;
        *cap = grown;
    }
    t->ranges[t->n_ranges++] = r;
    return 0;
}

SpanGrid tune_refit_grid(const float *w, int n, const QuantScheme *s) {
    return quantizer_ops(s->quantizer)->grid_fit(w, n, s); /* the quantizer's own fit, from the weights alone */
}

/* One range per span of every tensor the scheme quantized, its grid refitted from f's weights;
 * qat trains every weight (n = span), scales one or two values a span and keeps its codes. */
static int grid_ranges(Tuning *t, int *cap, const GPT *q, const GPT *f, const QuantScheme *s, size_t *total, size_t *n_codes) {
    const char *method = tune_target_name(t->target);
    for (int i = 0; i < q->n_specs; i++) {
        const TensorSpec *spec = &q->specs[i];
        if (!(s->scope & SCOPE_OF(spec->role))) continue;
        if (s->bits >= 32) { /* qat's control arm: the float matrices fine-tuned, no grid */
            TuneRange r = {.at = spec->offset, .from = *total, .n = tensor_numel(spec), .span = tensor_numel(spec), .lo = -INFINITY, .hi = INFINITY};
            if (add_range(t, cap, r) != 0) return -1;
            *total += r.n;
            continue;
        }
        int rows = spec->cols ? spec->rows : 1, cols = spec->cols ? spec->cols : spec->rows, span = quant_span(s, rows, cols);
        size_t n = tensor_numel(spec);
        for (size_t off = 0; off < n; off += (size_t)span) {
            const float *fw = f->params + spec->offset + off, *qw = q->params + spec->offset + off;
            TuneRange r = {.at = spec->offset + off, .from = *total, .n = (size_t)span, .span = (size_t)span,
                           .code_at = *n_codes, .grid = tune_refit_grid(fw, span, s)};
            if (s->asymmetric) {
                r.lo = r.grid.minimum;
                r.hi = r.grid.minimum + ((1 << s->bits) - 1) * r.grid.scale;
            } else {
                r.hi = ((1 << (s->bits - 1)) - 1) * r.grid.scale;
                r.lo = -r.hi;
            }
            for (int k = 0; k < span; k++)
                if (span_grid_apply(qw[k], r.grid, s->bits, s->asymmetric) != qw[k]) {
                    qc_error("%s: %s is not on the grid its float weights refit to (the %s quantizer's grids need its "
                             "calibration data): use --quantizer rtn, mse or gptq unweighted",
                             method, spec->name, quantizer_name(s->quantizer));
                    return -1;
                }
            if (t->target == TUNE_SCALES || t->target == TUNE_CLIP) r.n = s->asymmetric ? 2 : 1;
            if (t->target == TUNE_SCALES) *n_codes += (size_t)span;
            if (add_range(t, cap, r) != 0) return -1;
            *total += r.n;
        }
    }
    return 0;
}

/* scales: each span's codes, read off q's weights on the span's grid. */
static int fill_codes(Tuning *t, const GPT *q, size_t n_codes) {
    t->codes = qc_malloc(n_codes * sizeof(int16_t), "scales' codes");
    if (!t->codes) return -1;
    for (int i = 0; i < t->n_ranges; i++) {
        const TuneRange *r = &t->ranges[i];
        const float *w = q->params + r->at;
        for (size_t k = 0; k < r->span; k++) {
            double c = r->grid.scale == 0.0 ? 0.0 : nearbyint((w[k] - (t->asymmetric ? r->grid.minimum : 0.0)) / r->grid.scale);
            t->codes[r->code_at + k] = (int16_t)c;
        }
    }
    return 0;
}

SpanGrid tuning_grid(const Tuning *t, const TuneRange *r) {
    const float *p = t->fit.params + r->from;
    SpanGrid g = {round_to_dtype(r->grid.scale * exp((double)p[0]), t->scale_dtype), 0.0};
    if (t->asymmetric) g.minimum = round_to_dtype(r->grid.minimum + (double)p[1] * r->grid.scale, t->scale_dtype);
    return g;
}

int tuning_init(Tuning *t, TuneTarget target, const GPT *q, const GPT *f, const QuantScheme *s) {
    memset(t, 0, sizeof *t);
    t->target = target;
    t->bits = s->bits;
    t->asymmetric = s->asymmetric;
    t->scale_dtype = s->scale_dtype;
    int cap = 0;
    size_t total = 0, n_codes = 0;
    if (target == TUNE_NORMS) {
        if (s->bits < 32 && (s->scope & SCOPE_OF(ROLE_NORM))) {
            qc_error("normtweak trains the LayerNorms in float, which --scope norm quantizes");
            return -1;
        }
        for (int i = 0; i < q->n_specs; i++) {
            const TensorSpec *spec = &q->specs[i];
            if (spec->role != ROLE_NORM) continue;
            if (add_range(t, &cap, (TuneRange){.at = spec->offset, .from = total, .n = tensor_numel(spec)}) != 0) goto fail;
            total += tensor_numel(spec);
        }
    } else if (target == TUNE_WEIGHTS || target == TUNE_SCALES || target == TUNE_CLIP) {
        const char *method = tune_target_name(target);
        if ((s->bits >= 32 && target != TUNE_WEIGHTS) || !f) {
            qc_error("%s trains the quantized weights' grid: %s", method, !f ? "it needs the float model" : "at 32 bits there is none");
            return -1;
        }
        if (grid_ranges(t, &cap, q, f, s, &total, &n_codes) != 0 || (target == TUNE_SCALES && fill_codes(t, q, n_codes) != 0)) goto fail;
    } else {
        qc_error("nothing of the model to tune");
        return -1;
    }
    if (total == 0) {
        qc_error("%s: the model has nothing to train", tune_target_name(target));
        goto fail;
    }
    t->memory = qc_calloc(4 * total, sizeof(float), "tuned parameters");
    if (!t->memory) goto fail;
    t->fit = (FitParams){.params = t->memory, .grads = t->memory + total, .adam_m = t->memory + 2 * total,
                         .adam_v = t->memory + 3 * total, .num_params = total, .param_grads = 1, .frozen_prefix = -1,
                         .ctx = t, .apply = tuning_apply, .collect = tuning_collect};
    t->float_params = f ? f->params : NULL;
    if (target != TUNE_SCALES && target != TUNE_CLIP) /* scales' and lwc's parameters start at 0: the stored grid */
        for (int r = 0; r < t->n_ranges; r++)
            memcpy(t->fit.params + t->ranges[r].from, q->params + t->ranges[r].at, t->ranges[r].n * sizeof(float));
    return 0;
fail:
    tuning_free(t);
    return -1;
}

void tuning_free(Tuning *t) {
    free(t->codes);
    free(t->ranges);
    free(t->memory);
    memset(t, 0, sizeof *t);
}

void tuning_apply(void *tuning, GPT *q) {
    Tuning *t = tuning;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < t->n_ranges; i++) {
        const TuneRange *r = &t->ranges[i];
        float *p = t->fit.params + r->from, *w = q->params + r->at;
        if (t->target == TUNE_NORMS) {
            memcpy(w, p, r->n * sizeof(float));
            continue;
        }
        if (t->target == TUNE_SCALES) {
            SpanGrid g = tuning_grid(t, r);
            const int16_t *code = t->codes + r->code_at;
            for (size_t k = 0; k < r->span; k++) w[k] = (float)(g.minimum + code[k] * g.scale);
            continue;
        }
        if (t->target == TUNE_CLIP) { /* the codes follow the grid: each float weight rounded onto it */
            SpanGrid g = tuning_grid(t, r);
            const float *fw = t->float_params + r->at;
            for (size_t k = 0; k < r->span; k++) w[k] = span_grid_apply(fw[k], g, t->bits, t->asymmetric);
            continue;
        }
        for (size_t k = 0; k < r->n; k++) {
            /* the latent value stays within one rounding of the grid, so a step back moves a code back */
            if (p[k] > r->hi) p[k] = (float)r->hi;
            if (p[k] < r->lo) p[k] = (float)r->lo;
            w[k] = t->bits >= 32 ? p[k] : span_grid_apply(p[k], r->grid, t->bits, t->asymmetric);
        }
    }
}

const char *tune_target_name(TuneTarget t) {
    for (int m = 0; m < METHOD_COUNT; m++)
        if (method_info[m].tunes == t) return method_info[m].name;
    return "none";
}

/* lwc's straight-through gradients in one span: where w_k's code u_k = (w_k - m) / s rounds
 * inside the grid, w~_k = m + s round(u_k) has dw~/ds = round(u_k) - u_k and dw~/dm = 0 (the
 * rounding passed straight through); where it is clamped to an extreme code c, dw~/ds = c and
 * dw~/dm = 1. With s = round_dtype(s0 e^θ) and m = round_dtype(m0 + μ s0), the rounding to the
 * storage type passed straight through too: dθ = s0 e^θ Σ g_k dw~_k/ds, dμ = s0 Σ g_k dw~_k/dm. */
void lwc_span_grads(const float *w, const float *g, size_t n, SpanGrid stored, double s0e, double s0, int bits, int asymmetric,
                    double *dtheta, double *dmu) {
    double lo = asymmetric ? 0.0 : -(double)((1 << (bits - 1)) - 1), hi = asymmetric ? (double)((1 << bits) - 1) : -lo;
    double gs = 0.0, gm = 0.0;
    if (stored.scale != 0.0)
        for (size_t k = 0; k < n; k++) {
            double u = ((double)w[k] - stored.minimum) / stored.scale, c = nearbyint(u);
            if (c > hi || c < lo) {
                gs += (double)g[k] * (c > hi ? hi : lo);
                gm += g[k];
            } else {
                gs += (double)g[k] * (c - u);
            }
        }
    *dtheta = gs * s0e;
    *dmu = gm * s0;
}

static void clip_collect(Tuning *t, const GPT *q) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < t->n_ranges; i++) {
        const TuneRange *r = &t->ranges[i];
        const float *p = t->fit.params + r->from;
        double dtheta, dmu;
        lwc_span_grads(t->float_params + r->at, q->grads + r->at, r->span, tuning_grid(t, r), r->grid.scale * exp((double)p[0]),
                       r->grid.scale, t->bits, t->asymmetric, &dtheta, &dmu);
        t->fit.grads[r->from] = (float)dtheta;
        if (t->asymmetric) t->fit.grads[r->from + 1] = (float)dmu;
    }
}

void tuning_collect(void *tuning, const GPT *q) {
    Tuning *t = tuning;
    if (t->target == TUNE_CLIP) {
        clip_collect(t, q);
        return;
    }
    if (t->target != TUNE_SCALES) {
        for (int i = 0; i < t->n_ranges; i++)
            memcpy(t->fit.grads + t->ranges[i].from, q->grads + t->ranges[i].at, t->ranges[i].n * sizeof(float));
        return;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < t->n_ranges; i++) {
        const TuneRange *r = &t->ranges[i];
        const float *g = q->grads + r->at, *p = t->fit.params + r->from;
        const int16_t *code = t->codes + r->code_at;
        double gs = 0.0, gm = 0.0;
        for (size_t k = 0; k < r->span; k++) {
            gs += (double)g[k] * code[k];
            gm += g[k];
        }
        t->fit.grads[r->from] = (float)(gs * r->grid.scale * exp((double)p[0]));
        if (t->asymmetric) t->fit.grads[r->from + 1] = (float)(gm * r->grid.scale);
    }
}

int tune_fit(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out) {
    if (!o->scheme) {
        qc_error("%s needs the scheme the model was quantized by", method_name(o->method));
        return -1;
    }
    if (method_tunes(o->method) == TUNE_ROUNDING) return adaround_fit(q, f, corpus, o, out); /* layer by layer, not end to end */
    Tuning t;
    if (tuning_init(&t, method_tunes(o->method), q, f, o->scheme) != 0) return -1;
    int rc = fit_params(q, f, c, &t.fit, corpus, o, out);
    tuning_free(&t);
    return rc;
}
