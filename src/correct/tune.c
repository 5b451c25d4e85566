/* tune: see tune.h. */
#include "correct/tune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

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

/* The grid a span of float weights gets from the scheme's fit, without calibration data. */
static SpanGrid refit_grid(const float *w, int n, const QuantScheme *s) {
    QuantizerId fit = s->quantizer == QUANTIZER_GPTQ ? s->options.fit : s->quantizer;
    if (fit == QUANTIZER_MSE) return span_grid_fit_mse(w, n, s->bits, s->asymmetric, s->scale_dtype, NULL, NULL);
    return span_grid_fit(w, n, s->bits, s->asymmetric, s->scale_dtype, 1.0);
}

static int qat_ranges(Tuning *t, int *cap, const GPT *q, const GPT *f, const QuantScheme *s, size_t *total) {
    for (int i = 0; i < q->n_specs; i++) {
        const TensorSpec *spec = &q->specs[i];
        if (!(s->scope & SCOPE_OF(spec->role))) continue;
        int rows = spec->cols ? spec->rows : 1, cols = spec->cols ? spec->cols : spec->rows, span = quant_span(s, rows, cols);
        size_t n = tensor_numel(spec);
        for (size_t off = 0; off < n; off += (size_t)span) {
            const float *fw = f->params + spec->offset + off, *qw = q->params + spec->offset + off;
            TuneRange r = {.at = spec->offset + off, .from = *total, .n = (size_t)span, .grid = refit_grid(fw, span, s)};
            if (s->asymmetric) {
                r.lo = r.grid.minimum;
                r.hi = r.grid.minimum + ((1 << s->bits) - 1) * r.grid.scale;
            } else {
                r.hi = ((1 << (s->bits - 1)) - 1) * r.grid.scale;
                r.lo = -r.hi;
            }
            for (int k = 0; k < span; k++)
                if (span_grid_apply(qw[k], r.grid, s->bits, s->asymmetric) != qw[k]) {
                    qc_error("qat: %s is not on the grid its float weights refit to (the %s quantizer's grids need its "
                             "calibration data): use --quantizer rtn, mse or gptq unweighted",
                             spec->name, quantizer_name(s->quantizer));
                    return -1;
                }
            if (add_range(t, cap, r) != 0) return -1;
            *total += (size_t)span;
        }
    }
    return 0;
}

int tuning_init(Tuning *t, TuneTarget target, const GPT *q, const GPT *f, const QuantScheme *s) {
    memset(t, 0, sizeof *t);
    t->target = target;
    t->bits = s->bits;
    t->asymmetric = s->asymmetric;
    int cap = 0;
    size_t total = 0;
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
    } else if (target == TUNE_WEIGHTS) {
        if (s->bits >= 32 || !f) {
            qc_error("qat trains the quantized weights on their grid: %s", !f ? "it needs the float model" : "at 32 bits there is none");
            return -1;
        }
        if (qat_ranges(t, &cap, q, f, s, &total) != 0) goto fail;
    } else {
        qc_error("nothing of the model to tune");
        return -1;
    }
    if (total == 0) {
        qc_error("%s: the model has nothing to train", target == TUNE_NORMS ? "normtweak" : "qat");
        goto fail;
    }
    t->memory = qc_calloc(4 * total, sizeof(float), "tuned parameters");
    if (!t->memory) goto fail;
    t->fit = (FitParams){.params = t->memory, .grads = t->memory + total, .adam_m = t->memory + 2 * total,
                         .adam_v = t->memory + 3 * total, .num_params = total, .param_grads = 1, .frozen_prefix = -1,
                         .ctx = t, .apply = tuning_apply, .collect = tuning_collect};
    for (int r = 0; r < t->n_ranges; r++)
        memcpy(t->fit.params + t->ranges[r].from, q->params + t->ranges[r].at, t->ranges[r].n * sizeof(float));
    return 0;
fail:
    tuning_free(t);
    return -1;
}

void tuning_free(Tuning *t) {
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
        for (size_t k = 0; k < r->n; k++) {
            /* the latent value stays within one rounding of the grid, so a step back moves a code back */
            if (p[k] > r->hi) p[k] = (float)r->hi;
            if (p[k] < r->lo) p[k] = (float)r->lo;
            w[k] = span_grid_apply(p[k], r->grid, t->bits, t->asymmetric);
        }
    }
}

void tuning_collect(void *tuning, const GPT *q) {
    Tuning *t = tuning;
    for (int i = 0; i < t->n_ranges; i++)
        memcpy(t->fit.grads + t->ranges[i].from, q->grads + t->ranges[i].at, t->ranges[i].n * sizeof(float));
}

int tune_fit(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out) {
    if (!o->scheme) {
        qc_error("%s needs the scheme the model was quantized by", method_name(o->method));
        return -1;
    }
    Tuning t;
    if (tuning_init(&t, method_tunes(o->method), q, f, o->scheme) != 0) return -1;
    int rc = fit_params(q, f, c, &t.fit, corpus, o, out);
    tuning_free(&t);
    return rc;
}
