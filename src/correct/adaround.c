/* adaround: see adaround.h. */
#include "correct/adaround.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "correct/tune.h"
#include "nn/train.h"
#include "quant/calib.h"
#include "quant/quant.h"

#define ZETA 1.1
#define GAMMA (-0.1)

void adaround_default(AdaRoundOptions *o) {
    *o = (AdaRoundOptions){.iters = 1000, .lr = 1e-2, .lambda = 0.01, .beta_start = 20.0, .beta_end = 2.0, .warmup = 0.2};
}

double adaround_reconstruction(const float *wq, const float *w, int rows, int cols, const double *G) {
    size_t n = (size_t)rows * cols;
    double *e = qc_malloc(n * sizeof(double), "adaround error"), *r = qc_malloc(n * sizeof(double), "adaround error");
    if (!e || !r) { free(e); free(r); return NAN; }
    for (size_t k = 0; k < n; k++) e[k] = (double)wq[k] - (double)w[k];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, cols, 1.0, e, cols, G, cols, 0.0, r, cols);
    double sum = 0.0;
    for (size_t k = 0; k < n; k++) sum += e[k] * r[k];
    free(e);
    free(r);
    return sum;
}

/* The rectified sigmoid and whether it is inside (0, 1), where its derivative is not 0. */
static double rect_sigmoid(double v, double *sig, int *inside) {
    *sig = 1.0 / (1.0 + exp(-v));
    double h = *sig * (ZETA - GAMMA) + GAMMA;
    *inside = h > 0.0 && h < 1.0;
    return h < 0.0 ? 0.0 : h > 1.0 ? 1.0 : h;
}

/* The starting point of one matrix: each weight's floor code and V with h(V) = its remainder. */
void adaround_start(const float *w, size_t n, const SpanGrid *grids, int span, int asymmetric, float *below, float *V) {
    for (size_t k = 0; k < n; k++) {
        SpanGrid g = grids[k / (size_t)span];
        if (g.scale == 0.0) { below[k] = 0.0f; V[k] = 0.0f; continue; }
        double x = (w[k] - (asymmetric ? g.minimum : 0.0)) / g.scale, f = floor(x), p = ((x - f) - GAMMA) / (ZETA - GAMMA);
        below[k] = (float)f;
        V[k] = (float)log(p / (1.0 - p));
    }
}

double adaround_objective(const AdaRoundMatrix *a, const float *V, double beta, double lambda, float *grad, float *e, float *r) {
    size_t n = (size_t)a->rows * a->cols;
    int bits = a->bits, asym = a->asymmetric;
    double lo = asym ? 0.0 : -(double)((1 << (bits - 1)) - 1), hi = asym ? (double)((1 << bits) - 1) : (double)((1 << (bits - 1)) - 1);
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < n; k++) {
        SpanGrid g = a->grids[k / (size_t)a->span];
        double sig;
        int inside;
        double code = a->below[k] + rect_sigmoid(V[k], &sig, &inside);
        code = code < lo ? lo : code > hi ? hi : code;
        e[k] = g.scale == 0.0 ? 0.0f : (float)((asym ? g.minimum : 0.0) + code * g.scale - a->w[k]);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->rows, a->cols, a->cols, 1.0f, e, a->cols, a->G, a->cols, 0.0f, r, a->cols);
    double rec = 0.0, reg = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : rec, reg)
    for (size_t k = 0; k < n; k++) {
        SpanGrid g = a->grids[k / (size_t)a->span];
        rec += (double)e[k] * r[k];
        if (g.scale == 0.0) { grad[k] = 0.0f; continue; }
        double sig;
        int inside;
        double h = rect_sigmoid(V[k], &sig, &inside), code = a->below[k] + h;
        double dh = code >= lo && code <= hi ? 2.0 * r[k] * g.scale : 0.0; /* d tr(E G E^T) / dE = 2 E G */
        if (lambda > 0.0) {
            double u = 2.0 * h - 1.0;
            reg += 1.0 - pow(fabs(u), beta);
            dh -= lambda * beta * pow(fabs(u), beta - 1.0) * (u > 0 ? 2.0 : u < 0 ? -2.0 : 0.0);
        }
        grad[k] = inside ? (float)(dh * (ZETA - GAMMA) * sig * (1.0 - sig)) : 0.0f;
    }
    return rec + lambda * reg;
}

int adaround_matrix(const float *w, int rows, int cols, const SpanGrid *grids, int span, int bits, int asymmetric, const double *G,
                    const AdaRoundOptions *o, float *out, AdaRoundStats *stats) {
    size_t n = (size_t)rows * cols;
    double lo = asymmetric ? 0.0 : -(double)((1 << (bits - 1)) - 1), hi = asymmetric ? (double)((1 << bits) - 1) : (double)((1 << (bits - 1)) - 1);
    float *V = qc_malloc(n * sizeof(float), "adaround"), *m = qc_calloc(n, sizeof(float), "adaround"), *v = qc_calloc(n, sizeof(float), "adaround");
    float *e = qc_malloc(n * sizeof(float), "adaround"), *r = qc_malloc(n * sizeof(float), "adaround"), *gf = qc_malloc((size_t)cols * cols * sizeof(float), "adaround");
    float *nearest = qc_malloc(n * sizeof(float), "adaround"), *below = qc_malloc(n * sizeof(float), "adaround"), *grad = qc_malloc(n * sizeof(float), "adaround");
    int rc = -1;
    if (!V || !m || !v || !e || !r || !gf || !nearest || !below || !grad) goto done;
    for (size_t k = 0; k < (size_t)cols * cols; k++) gf[k] = (float)G[k];
    for (size_t k = 0; k < n; k++) nearest[k] = span_grid_apply(w[k], grids[k / (size_t)span], bits, asymmetric);
    adaround_start(w, n, grids, span, asymmetric, below, V);
    AdaRoundMatrix a = {w, rows, cols, grids, span, bits, asymmetric, gf, below};
    int warm = (int)(o->warmup * o->iters);
    for (int t = 0; t < o->iters; t++) {
        double beta = 0.0, lambda = t >= warm ? o->lambda : 0.0; /* the regulariser after the warm-up, beta falling */
        if (t >= warm) {
            double rel = o->iters > warm ? (double)(t - warm) / (double)(o->iters - warm) : 1.0;
            beta = o->beta_end + (o->beta_start - o->beta_end) * (1.0 - rel);
        }
        adaround_objective(&a, V, beta, lambda, grad, e, r);
        double c1 = 1.0 - pow(0.9, t + 1), c2 = 1.0 - pow(0.999, t + 1); /* Adam, bias-corrected */
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < n; k++) {
            m[k] = 0.9f * m[k] + 0.1f * grad[k];
            v[k] = 0.999f * v[k] + 0.001f * grad[k] * grad[k];
            V[k] -= (float)(o->lr * (m[k] / c1) / (sqrt(v[k] / c2) + 1e-8));
        }
    }
    size_t flipped = 0;
    for (size_t k = 0; k < n; k++) { /* hard rounding: up where V >= 0 */
        SpanGrid g = grids[k / (size_t)span];
        if (g.scale == 0.0) { out[k] = nearest[k]; continue; }
        double code = below[k] + (V[k] >= 0.0f ? 1.0 : 0.0);
        code = code < lo ? lo : code > hi ? hi : code;
        out[k] = asymmetric ? (float)(g.minimum + code * g.scale) : (float)(code * g.scale);
        flipped += out[k] != nearest[k];
    }
    double rn = adaround_reconstruction(nearest, w, rows, cols, G), rl = adaround_reconstruction(out, w, rows, cols, G);
    if (!isfinite(rn) || !isfinite(rl)) goto done;
    AdaRoundStats s = {.nearest = rn, .learned = rl, .flipped = (double)flipped / (double)n, .kept_nearest = rl > rn};
    if (s.kept_nearest) {
        memcpy(out, nearest, n * sizeof(float));
        s.learned = rn;
        s.flipped = 0.0;
    }
    if (stats) *stats = s;
    rc = 0;
done:
    free(V);
    free(m);
    free(v);
    free(e);
    free(r);
    free(gf);
    free(nearest);
    free(below);
    free(grad);
    return rc;
}

typedef struct {
    GPT *q;
    const GPT *f;
    const QuantScheme *s;
    AdaRoundOptions ao;
    int quiet, done, total;
    double nearest, learned;
} Walk;

static const TensorSpec *linear_weight(const GPT *m, int i) {
    char name[80];
    snprintf(name, sizeof name, "%s.weight", gpt_linear_shape(&m->config, i).name);
    return gpt_find_tensor(m, name);
}

static int round_layer(void *ctx, int linear, const CalibStats *st) {
    Walk *wk = ctx;
    const TensorSpec *t = linear_weight(wk->q, linear);
    int rows = t->rows, cols = t->cols, span = quant_span(wk->s, rows, cols), n_spans = (int)(tensor_numel(t) / (size_t)span);
    if (st->in != cols || st->n < 1) { qc_error("adaround: %s: no calibration inputs", t->name); return -1; }
    const float *w = wk->f->params + t->offset;
    SpanGrid *grids = qc_malloc((size_t)n_spans * sizeof(SpanGrid), "adaround grids");
    double *G = qc_malloc((size_t)cols * cols * sizeof(double), "adaround second moment");
    int rc = -1;
    if (grids && G) {
        for (int j = 0; j < n_spans; j++) grids[j] = tune_refit_grid(w + (size_t)j * span, span, wk->s);
        for (size_t k = 0; k < (size_t)cols * cols; k++) G[k] = st->gram[k] / (double)st->n;
        AdaRoundStats s;
        rc = adaround_matrix(w, rows, cols, grids, span, wk->s->bits, wk->s->asymmetric, G, &wk->ao, wk->q->params + t->offset, &s);
        if (rc == 0) {
            wk->nearest += s.nearest;
            wk->learned += s.learned;
            wk->done++;
            if (!wk->quiet)
                progress_line(stderr, wk->done == wk->total, "adaround %d/%d %s: reconstruction %.4g -> %.4g, %.1f%% rounded the other way%s",
                              wk->done, wk->total, t->name, s.nearest, s.learned, 100.0 * s.flipped, s.kept_nearest ? " (nearest kept)" : "");
        }
    }
    free(grids);
    free(G);
    return rc;
}

int adaround_fit(GPT *q, GPT *f, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out) {
    const QuantScheme *s = o->scheme;
    if (!s || s->bits >= 32 || !f) {
        qc_error("adaround rounds the quantized weights anew: %s", !s ? "it needs the scheme" : !f ? "it needs the float model" : "at 32 bits there is none");
        return -1;
    }
    int n_linear = gpt_linear_count(&q->config), T = q->config.ctx, n_windows = 0;
    unsigned char *selected = qc_calloc((size_t)n_linear, 1, "adaround layers");
    int32_t *windows = calibration_tokens(corpus, o->calib_tokens, T, o->seed, &n_windows);
    Walk wk = {.q = q, .f = f, .s = s, .quiet = o->quiet};
    adaround_default(&wk.ao);
    int rc = -1;
    if (selected && windows) {
        for (int i = 0; i < n_linear; i++) {
            const TensorSpec *t = linear_weight(q, i);
            selected[i] = t && (s->scope & SCOPE_OF(t->role)) != 0;
            wk.total += selected[i];
        }
        if (wk.total == 0) qc_error("adaround: the scheme quantizes no matrix");
        else rc = calib_walk(q, NULL, windows, n_windows, T, selected, 1, round_layer, &wk);
    }
    free(selected);
    free(windows);
    if (rc != 0) return -1;
    *out = (TrainSummary){.steps_run = wk.ao.iters, .best_step = wk.ao.iters, .stopped_by = STOPPED_FIXED, .heldout_objective = NAN,
                          .objective = wk.learned};
    return 0;
}
