/* compensate: see compensate.h. */
#include "correct/compensate.h"

#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "quant/calib.h"

int lowrank_factors(float *A, float *B, double *sigma, const float *w, const float *q, int out, int in, int k, const double *scale) {
    int m = out < in ? out : in;
    if (k < 1 || k > m) {
        qc_error("rank %d is outside 1..%d, the smaller side of a %d x %d matrix", k, m, out, in);
        return -1;
    }
    double *e = qc_malloc((size_t)out * in * sizeof(double), "low-rank error");
    double *u = qc_malloc((size_t)out * m * sizeof(double), "low-rank SVD");
    double *vt = qc_malloc((size_t)m * in * sizeof(double), "low-rank SVD");
    double *s = qc_malloc((size_t)m * sizeof(double), "low-rank SVD");
    int rc = -1;
    if (!e || !u || !vt || !s) goto done;
    for (int r = 0; r < out; r++)
        for (int c = 0; c < in; c++) {
            size_t i = (size_t)r * in + c;
            e[i] = ((double)w[i] - (double)q[i]) * (scale ? scale[c] : 1.0);
        }
    int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', out, in, e, in, s, u, m, vt, in);
    if (info != 0) {
        qc_error("low-rank: the SVD of a %d x %d quantization error failed (LAPACK info %d)", out, in, info);
        goto done;
    }
    for (int i = 0; i < k; i++) {
        int top = 0;
        for (int r = 1; r < out; r++)
            if (fabs(u[(size_t)r * m + i]) > fabs(u[(size_t)top * m + i])) top = r;
        double sign = u[(size_t)top * m + i] < 0 ? -1.0 : 1.0, root = sqrt(s[i]);
        for (int r = 0; r < out; r++) B[(size_t)r * k + i] = (float)(sign * u[(size_t)r * m + i] * root);
        for (int c = 0; c < in; c++) {
            double undo = scale ? (scale[c] != 0.0 ? 1.0 / scale[c] : 0.0) : 1.0;
            A[(size_t)i * in + c] = (float)(sign * vt[(size_t)i * in + c] * root * undo);
        }
        if (sigma) sigma[i] = s[i];
    }
    rc = 0;
done:
    free(e);
    free(u);
    free(vt);
    free(s);
    return rc;
}

void bias_correction_delta(float *delta, const float *w, const float *q, int out, int in, const double *mean_x) {
    for (int r = 0; r < out; r++) {
        double sum = 0.0;
        for (int c = 0; c < in; c++) sum += ((double)w[(size_t)r * in + c] - (double)q[(size_t)r * in + c]) * mean_x[c];
        delta[r] = (float)sum;
    }
}

long lowrank_match_ranks(const GPTConfig *cfg, const unsigned char *has_site, long budget, int *ranks) {
    int n = gpt_linear_count(cfg);
    long per_rank = 0, spent = 0;
    for (int i = 0; i < n; i++)
        if (has_site[i]) {
            LinearShape sh = gpt_linear_shape(cfg, i);
            per_rank += sh.in + sh.out;
        }
    long k = per_rank > 0 ? budget / per_rank : 0;
    for (int i = 0; i < n; i++) {
        ranks[i] = 0;
        if (!has_site[i]) continue;
        LinearShape sh = gpt_linear_shape(cfg, i);
        long cap = sh.in < sh.out ? sh.in : sh.out;
        ranks[i] = (int)(k < cap ? k : cap);
        spent += (long)ranks[i] * (sh.in + sh.out);
    }
    for (int i = 0; i < n; i++) {
        if (!has_site[i]) continue;
        LinearShape sh = gpt_linear_shape(cfg, i);
        int cap = sh.in < sh.out ? sh.in : sh.out;
        if (ranks[i] < cap && budget - spent >= sh.in + sh.out) {
            ranks[i]++;
            spent += sh.in + sh.out;
        }
    }
    return spent;
}

long stream_linear_params(const GPTConfig *cfg, int every) {
    long d = cfg->d_model;
    return (long)correction_site_count(cfg->n_layer, every) * (d * d + d);
}

/* ---------------------------------------------------------------- on a model */

static int lowrank_site(Corrections *c, GPT *q, const GPT *f, int linear, const double *scale) {
    CorrectionSite *s = &c->sites[c->site_of[linear]];
    Linear lq = gpt_linear(q, linear), lf = gpt_linear(f, linear);
    if (lowrank_factors(s->param[0], s->param[1], NULL, lf.weight, lq.weight, s->out, s->in, s->size, scale) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", qc_last_error());
        qc_error("%s: %s", gpt_linear_shape(&q->config, linear).name, why);
        return -1;
    }
    return 0;
}

typedef struct {
    Corrections *c;
    GPT *q;
    const GPT *f;
} SiteFit;

static int lowrank_visit(void *ctx, int linear, const CalibStats *st) {
    SiteFit *fit = ctx;
    return lowrank_site(fit->c, fit->q, fit->f, linear, st->mean_abs);
}

static int bias_visit(void *ctx, int linear, const CalibStats *st) {
    SiteFit *fit = ctx;
    CorrectionSite *s = &fit->c->sites[fit->c->site_of[linear]];
    Linear lq = gpt_linear(fit->q, linear), lf = gpt_linear(fit->f, linear);
    bias_correction_delta(s->param[0], lf.weight, lq.weight, s->out, s->in, st->mean);
    return 0;
}

/* The walk over c's sites with c's hook on, so each site sees the ones before it. */
static int walk_sites(Corrections *c, GPT *q, const GPT *f, const int32_t *windows, int n_windows, int T, CalibVisit visit) {
    if (!windows) {
        qc_error("%s corrections need calibration data", kind_info[c->kind].name);
        return -1;
    }
    unsigned char *selected = qc_calloc((size_t)c->n_where, 1, "correction sites");
    if (!selected) return -1;
    for (int j = 0; j < c->n_sites; j++) selected[c->sites[j].where] = 1;
    SiteFit fit = {c, q, f};
    int rc = calib_walk(q, &c->hook, windows, n_windows, T, selected, 0, visit, &fit);
    free(selected);
    return rc;
}

static int check_kind(const Corrections *c, CorrectionKindId kind) {
    if (c->kind == kind) return 0;
    qc_error("expected %s corrections, got %s", kind_info[kind].name, kind_info[c->kind].name);
    return -1;
}

int lowrank_fit(GPT *q, const GPT *f, Corrections *c, const int32_t *windows, int n_windows, int T, int act_scale) {
    if (check_kind(c, KIND_LOWRANK) != 0) return -1;
    if (act_scale) return walk_sites(c, q, f, windows, n_windows, T, lowrank_visit);
    for (int j = 0; j < c->n_sites; j++)
        if (lowrank_site(c, q, f, c->sites[j].where, NULL) != 0) return -1;
    return 0;
}

int bias_fit(GPT *q, const GPT *f, Corrections *c, const int32_t *windows, int n_windows, int T) {
    if (check_kind(c, KIND_BIAS) != 0) return -1;
    return walk_sites(c, q, f, windows, n_windows, T, bias_visit);
}
