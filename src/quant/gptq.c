/* gptq: see gptq.h. The weights are held transposed (a column of W is a contiguous row of Wt),
 * in double, in processing order; each value's grid is found by its original column. */
#include "quant/gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "quant/quant.h"

typedef struct {
    int rows, cols, span_cols;  /* span_cols: columns one grid covers in a row (cols for tensor/channel) */
    int grids_per_row;          /* 1 (tensor: all rows share grid 0) or cols / G */
    int tensor;                 /* one grid for the whole matrix */
    int current;                /* group grids fitted when the group starts */
    int *perm;                  /* processing position -> original column */
    double *wt;                 /* (cols, rows): column perm[c] of W, as updated so far */
    double *u;                  /* (cols, cols): upper Cholesky factor of H^-1, processing order */
    SpanGrid *grids;            /* rows * grids_per_row (tensor: 1) */
    const GptqParams *p;
    const double *fit_weight;
    double *fit_weight_full;    /* tensor + weighted mse: the column weights broadcast over rows */
    float *span;                /* current groups: one row's group (G) */
} Gptq;

static void gptq_free(Gptq *g) {
    free(g->perm);
    free(g->wt);
    free(g->u);
    free(g->grids);
    free(g->fit_weight_full);
    free(g->span);
}

typedef struct {
    double diag;
    int col;
} OrderKey;

static int by_descending_diag(const void *a, const void *b) {
    const OrderKey *x = a, *y = b;
    if (x->diag != y->diag) return x->diag > y->diag ? -1 : 1;
    return (x->col > y->col) - (x->col < y->col); /* stable */
}

int gptq_act_order(int *perm, const double *gram, int cols) {
    OrderKey *keys = qc_malloc((size_t)cols * sizeof *keys, "GPTQ order");
    if (!keys) return -1;
    for (int j = 0; j < cols; j++) {
        double d = gram[(size_t)j * cols + j];
        keys[j] = (OrderKey){d == 0.0 ? 1.0 : 2.0 * d, j};
    }
    qsort(keys, (size_t)cols, sizeof *keys, by_descending_diag);
    for (int j = 0; j < cols; j++) perm[j] = keys[j].col;
    free(keys);
    return 0;
}

/* Fits grid (row, group) from a span of values (n) by the scheme's fit. weight: the span's columns' weights or NULL. */
static SpanGrid fit_grid(const Gptq *g, const float *values, int n, const double *weight) {
    const GptqParams *p = g->p;
    if (p->fit_mse) return span_grid_fit_mse(values, n, p->bits, p->asymmetric, p->dtype, weight, NULL);
    return span_grid_fit(values, n, p->bits, p->asymmetric, p->dtype, 1.0);
}

static const double *span_weight(const Gptq *g, int first_col) {
    if (!g->fit_weight || !g->p->fit_mse) return NULL;
    return g->fit_weight + first_col;
}

/* Up-front grids from w (rows, cols) with the dead columns zeroed (wz): every grid unless current. */
static int fit_static_grids(Gptq *g, const float *wz) {
    int rows = g->rows, cols = g->cols;
    if (g->tensor) {
        const double *weight = NULL;
        if (g->fit_weight && g->p->fit_mse) {
            g->fit_weight_full = qc_malloc((size_t)rows * cols * sizeof(double), "GPTQ fit weights");
            if (!g->fit_weight_full) return -1;
            for (int r = 0; r < rows; r++) memcpy(g->fit_weight_full + (size_t)r * cols, g->fit_weight, (size_t)cols * sizeof(double));
            weight = g->fit_weight_full;
        }
        g->grids[0] = fit_grid(g, wz, rows * cols, weight);
        return 0;
    }
    if (g->current) return 0;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < g->grids_per_row; k++)
            g->grids[(size_t)r * g->grids_per_row + k] =
                fit_grid(g, wz + (size_t)r * cols + (size_t)k * g->span_cols, g->span_cols, span_weight(g, k * g->span_cols));
    return 0;
}

static const SpanGrid *grid_of(const Gptq *g, int row, int original_col) {
    if (g->tensor) return &g->grids[0];
    return &g->grids[(size_t)row * g->grids_per_row + original_col / g->span_cols];
}

/* Steps 1-4 of gptq.h: H, dead columns, grids, order, dampening and U. */
static int gptq_setup(Gptq *g, const float *w, int rows, int cols, const double *gram, const GptqParams *p, const double *fit_weight) {
    memset(g, 0, sizeof *g);
    if (p->span_cols < 0 || p->span_cols > cols || (p->span_cols && cols % p->span_cols != 0)) {
        qc_error("GPTQ: a grid of %d columns does not tile rows of %d", p->span_cols, cols);
        return -1;
    }
    g->rows = rows;
    g->cols = cols;
    g->p = p;
    g->fit_weight = fit_weight;
    g->tensor = p->span_cols == 0;
    g->span_cols = p->span_cols ? p->span_cols : cols;
    g->grids_per_row = cols / g->span_cols;
    g->current = !g->tensor && g->span_cols < cols && p->current_groups && !p->act_order;
    size_t n = (size_t)rows * cols;
    g->perm = qc_malloc((size_t)cols * sizeof(int), "GPTQ order");
    g->wt = qc_malloc(n * sizeof(double), "GPTQ weights");
    g->u = qc_calloc((size_t)cols * cols, sizeof(double), "GPTQ Hessian");
    g->grids = qc_calloc(g->tensor ? 1 : (size_t)rows * g->grids_per_row, sizeof(SpanGrid), "GPTQ grids");
    float *wz = qc_malloc(n * sizeof(float), "GPTQ weights");
    if (g->current) g->span = qc_malloc((size_t)g->span_cols * sizeof(float), "GPTQ group");
    if (!g->perm || !g->wt || !g->u || !g->grids || !wz || (g->current && !g->span)) {
        free(wz);
        gptq_free(g);
        return -1;
    }
    /* 1. dead inputs never reach the output: their weights are zeroed, their diagonal set to 1 */
    memcpy(wz, w, n * sizeof(float));
    for (int j = 0; j < cols; j++)
        if (gram[(size_t)j * cols + j] == 0.0)
            for (int r = 0; r < rows; r++) wz[(size_t)r * cols + j] = 0.0f;
    /* 2. grids */
    if (fit_static_grids(g, wz) != 0) {
        free(wz);
        gptq_free(g);
        return -1;
    }
    /* 3. order */
    if (p->act_order) {
        if (gptq_act_order(g->perm, gram, cols) != 0) {
            free(wz);
            gptq_free(g);
            return -1;
        }
    } else {
        for (int j = 0; j < cols; j++) g->perm[j] = j;
    }
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) g->wt[(size_t)c * rows + r] = wz[(size_t)r * cols + g->perm[c]];
    free(wz);
    /* 4. H in processing order, dampened; U from H^-1 */
    double *h = g->u, mean_diag = 0.0;
    for (int a = 0; a < cols; a++)
        for (int b = 0; b < cols; b++) h[(size_t)a * cols + b] = 2.0 * gram[(size_t)g->perm[a] * cols + g->perm[b]];
    for (int a = 0; a < cols; a++) {
        double *d = &h[(size_t)a * cols + a];
        if (*d == 0.0) *d = 1.0;
        mean_diag += *d;
    }
    mean_diag /= cols;
    for (int a = 0; a < cols; a++) h[(size_t)a * cols + a] += p->damp * mean_diag;
    int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', cols, h, cols);
    if (info == 0) info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', cols, h, cols);
    if (info == 0) {
        for (int a = 0; a < cols; a++) /* H^-1 in full: potri leaves the lower triangle untouched */
            for (int b = 0; b < a; b++) h[(size_t)a * cols + b] = h[(size_t)b * cols + a];
        info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', cols, h, cols);
    }
    if (info != 0) {
        qc_error("GPTQ: the Hessian is not positive definite after dampening %g of its mean diagonal (LAPACK info %d)",
                 p->damp, info);
        gptq_free(g);
        return -1;
    }
    for (int a = 0; a < cols; a++)
        for (int b = 0; b < a; b++) h[(size_t)a * cols + b] = 0.0;
    return 0;
}

/* current groups: the grids of the group starting at processing position c, from values (G, rows)
 * laid out as wt is (column by column). */
static void fit_current_grids(Gptq *g, int c, const double *values) {
    int rows = g->rows, G = g->span_cols;
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < G; k++) g->span[k] = (float)values[(size_t)k * rows + r];
        g->grids[(size_t)r * g->grids_per_row + c / G] = fit_grid(g, g->span, G, span_weight(g, c));
    }
}

/* Quantizes processing position c (its column as updated) into out; err (rows) = (w - q) / U_cc. */
static void quantize_column(Gptq *g, int c, float *out, double *err) {
    int rows = g->rows, col = g->perm[c];
    const double *w = g->wt + (size_t)c * rows;
    double ucc = g->u[(size_t)c * g->cols + c];
    for (int r = 0; r < rows; r++) {
        float q = span_grid_apply(w[r], *grid_of(g, r, col), g->p->bits, g->p->asymmetric);
        out[(size_t)r * g->cols + col] = q;
        err[r] = (w[r] - (double)q) / ucc;
    }
}

int gptq_quantize_ref(float *out, const float *w, int rows, int cols, const double *gram, const GptqParams *p,
                      const double *fit_weight) {
    Gptq g;
    if (gptq_setup(&g, w, rows, cols, gram, p, fit_weight) != 0) return -1;
    double *err = qc_malloc((size_t)rows * sizeof(double), "GPTQ error");
    if (!err) { gptq_free(&g); return -1; }
    for (int c = 0; c < cols; c++) {
        if (g.current && c % g.span_cols == 0) fit_current_grids(&g, c, g.wt + (size_t)c * rows);
        quantize_column(&g, c, out, err);
        for (int j = c + 1; j < cols; j++) {
            double ucj = g.u[(size_t)c * cols + j];
            double *wj = g.wt + (size_t)j * rows;
            for (int r = 0; r < rows; r++) wj[r] -= err[r] * ucj;
        }
    }
    free(err);
    gptq_free(&g);
    return 0;
}

int gptq_quantize(float *out, const float *w, int rows, int cols, const double *gram, const GptqParams *p, const double *fit_weight) {
    Gptq g;
    if (gptq_setup(&g, w, rows, cols, gram, p, fit_weight) != 0) return -1;
    int block = p->block > 0 ? p->block : 128, G = g.span_cols;
    double *errs = qc_malloc((size_t)block * rows * sizeof(double), "GPTQ errors");
    double *group = g.current ? qc_malloc((size_t)G * rows * sizeof(double), "GPTQ group") : NULL;
    if (!errs || (g.current && !group)) {
        free(errs);
        free(group);
        gptq_free(&g);
        return -1;
    }
    for (int i1 = 0; i1 < cols; i1 += block) {
        int i2 = i1 + block < cols ? i1 + block : cols;
        for (int c = i1; c < i2; c++) {
            if (g.current && c % G == 0) {
                /* the group's weights as the unbatched order has them: inside the block, already
                 * updated; beyond it, minus the block's pending updates so far */
                for (int j = c; j < c + G; j++) {
                    double *v = group + (size_t)(j - c) * rows;
                    memcpy(v, g.wt + (size_t)j * rows, (size_t)rows * sizeof(double));
                    if (j < i2) continue;
                    for (int t = i1; t < c; t++) {
                        double utj = g.u[(size_t)t * cols + j];
                        const double *e = errs + (size_t)(t - i1) * rows;
                        for (int r = 0; r < rows; r++) v[r] -= e[r] * utj;
                    }
                }
                fit_current_grids(&g, c, group);
            }
            double *err = errs + (size_t)(c - i1) * rows;
            quantize_column(&g, c, out, err);
            for (int j = c + 1; j < i2; j++) {
                double ucj = g.u[(size_t)c * cols + j];
                double *wj = g.wt + (size_t)j * rows;
                for (int r = 0; r < rows; r++) wj[r] -= err[r] * ucj;
            }
        }
        if (i2 < cols) /* Wt[i2:] -= U[i1:i2, i2:]^T . errs */
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols - i2, rows, i2 - i1, -1.0, g.u + (size_t)i1 * cols + i2,
                        cols, errs, rows, 1.0, g.wt + (size_t)i2 * rows, rows);
    }
    free(errs);
    free(group);
    gptq_free(&g);
    return 0;
}

/* ---------------------------------------------------------------- the quantizer table's entry */
/* gptq's options (README: Quantizers): --damp, --act-order, --gptq-fit (the grid of each row or
 * group: by a quantizer that needs only the weights), --gptq-groups (group grids fitted up front
 * or as each group starts) and, with the mse fit, --mse-weighted. */

GptqParams quant_scheme_gptq_params(const QuantScheme *s, int cols) {
    const QuantizerOptions *o = &s->options;
    return (GptqParams){.bits = s->bits,
                        .asymmetric = s->asymmetric,
                        .dtype = s->scale_dtype,
                        .span_cols = s->granularity == GRAN_TENSOR ? 0 : s->granularity == GRAN_GROUP ? s->group : cols,
                        .fit_mse = o->fit == QUANTIZER_MSE,
                        .current_groups = o->groups == GPTQ_GROUPS_CURRENT,
                        .act_order = o->act_order,
                        .damp = o->damp,
                        .block = o->block};
}

/* the matrix from its input's X^T X; a tensor without statistics (no linear layer's weight) by
 * the quantizer gptq fits its grids with */
static int quantize_tensor_gptq(float *out, const float *w, int rows, int cols, const QuantScheme *s, const CalibStats *stats) {
    if (!stats || !stats->gram) return quantizer_ops(s->options.fit)->quantize(out, w, rows, cols, s, stats);
    const double *fit_weight = s->options.mse_weighted ? stats->mean_square : NULL;
    GptqParams p = quant_scheme_gptq_params(s, cols);
    return gptq_quantize(out, w, rows, cols, stats->gram, &p, fit_weight);
}

static SpanGrid gptq_grid(const float *w, int n, const QuantScheme *s) { return quantizer_ops(s->options.fit)->grid_fit(w, n, s); }

static void gptq_defaults(QuantizerOptions *o) {
    o->damp = 0.01;
    o->fit = QUANTIZER_RTN;
    o->groups = GPTQ_GROUPS_STATIC;
    o->block = 128;
}

static int fits_by(QuantizerId q) { return q >= 0 && q < QUANTIZER_COUNT && !quantizer_info[q].needs_data && !quantizer_info[q].needs_gram; }

static int gptq_check(const QuantScheme *s) {
    const QuantizerOptions *o = &s->options;
    if (!(o->damp > 0.0) || !isfinite(o->damp)) { qc_error("GPTQ dampening %g must be positive", o->damp); return -1; }
    if (!fits_by(o->fit)) {
        char names[128];
        quantizer_weight_only_names(names, sizeof names);
        qc_error("GPTQ fits its grids by %s, not %s", names, o->fit >= 0 && o->fit < QUANTIZER_COUNT ? quantizer_name(o->fit) : "?");
        return -1;
    }
    if (o->block < 1) { qc_error("GPTQ block of %d columns must be positive", o->block); return -1; }
    if (o->groups == GPTQ_GROUPS_CURRENT && o->act_order) {
        qc_error("GPTQ with act-order fits group grids up front (static): current groups need the original column order");
        return -1;
    }
    return 0;
}

static void gptq_describe(const QuantScheme *s, char *out, size_t size) {
    const QuantizerOptions *o = &s->options;
    snprintf(out + strlen(out), size - strlen(out), ":damp=%g%s", o->damp, o->act_order ? ":act-order" : "");
    if (!quantizer_is_default(o->fit)) snprintf(out + strlen(out), size - strlen(out), ":fit=%s", quantizer_name(o->fit));
    if (s->granularity == GRAN_GROUP && o->groups == GPTQ_GROUPS_CURRENT) snprintf(out + strlen(out), size - strlen(out), ":groups=current");
    if (o->fit == QUANTIZER_MSE && o->mse_weighted) snprintf(out + strlen(out), size - strlen(out), ":weighted");
}

static int damp_parse(const char *name, const char *text, QuantScheme *s) {
    double v;
    if (parse_float(name, text, -1e300, 1e300, &v) != 0) return -1;
    if (!(v > 0.0) || !isfinite(v)) { qc_error("%s %s must be positive (a fraction of the mean diagonal of H)", name, text); return -1; }
    s->options.damp = v;
    return 0;
}
static void damp_format(const QuantScheme *s, char *out, size_t size) { snprintf(out, size, "%.17g", s->options.damp); }
static const char *const damp_examples[] = {"0.1", NULL};
static const QuantizerOption damp_option = {"--damp", 1, "gptq: dampening, a fraction of the mean diagonal of H (0.01)", "quant_gptq_damp",
                                            NULL, damp_parse, damp_format, damp_examples};

static int act_order_parse(const char *name, const char *text, QuantScheme *s) {
    long v;
    if (parse_int(name, text, 0, 1, &v) != 0) return -1;
    s->options.act_order = (int)v;
    return 0;
}
static void act_order_format(const QuantScheme *s, char *out, size_t size) { snprintf(out, size, "%d", s->options.act_order); }
static const char *const act_order_examples[] = {"1", NULL};
static const QuantizerOption act_order_option = {"--act-order", 0, "gptq: columns in order of descending diag(H)", "quant_gptq_act_order",
                                                 NULL, act_order_parse, act_order_format, act_order_examples};

static int fit_parse(const char *name, const char *text, QuantScheme *s) {
    int q = quantizer_by_name(text);
    if (q < 0 || !fits_by((QuantizerId)q)) {
        char names[128];
        quantizer_weight_only_names(names, sizeof names);
        qc_error("%s: expected %s, got '%s'", name, names, text);
        return -1;
    }
    s->options.fit = (QuantizerId)q;
    return 0;
}
static void fit_format(const QuantScheme *s, char *out, size_t size) { snprintf(out, size, "%s", quantizer_name(s->options.fit)); }
static const char *const fit_examples[] = {"mse", NULL};
static const QuantizerOption fit_option = {"--gptq-fit", 1, "gptq: each row's/group's grid by rtn (absmax) or mse (clip search)", "quant_gptq_fit",
                                           NULL, fit_parse, fit_format, fit_examples};

static int groups_parse(const char *name, const char *text, QuantScheme *s) {
    if (strcmp(text, "static") != 0 && strcmp(text, "current") != 0) {
        qc_error("%s: expected static or current, got '%s'", name, text);
        return -1;
    }
    s->options.groups = strcmp(text, "current") == 0 ? GPTQ_GROUPS_CURRENT : GPTQ_GROUPS_STATIC;
    return 0;
}
static void groups_format(const QuantScheme *s, char *out, size_t size) {
    snprintf(out, size, "%s", s->options.groups == GPTQ_GROUPS_CURRENT ? "current" : "static");
}
static const char *const groups_examples[] = {"current", NULL};
static const QuantizerOption groups_option = {"--gptq-groups", 1, "gptq, group:G: grids static (up front from W) or current", "quant_gptq_groups",
                                              NULL, groups_parse, groups_format, groups_examples};

/* --mse-weighted, as mse has it, where gptq fits its grids by mse */
static int weighted_applies(const QuantScheme *s) { return s->options.fit == QUANTIZER_MSE; }
static const char *const weighted_examples[] = {"1", NULL};
static const QuantizerOption weighted_option = {"--mse-weighted", 0, "gptq --gptq-fit mse: the search weighted by calibration E[x^2]",
                                                "quant_mse_weighted", weighted_applies, mse_weighted_parse, mse_weighted_format, weighted_examples};

static const QuantizerOption *const gptq_options[] = {&damp_option, &act_order_option, &fit_option, &groups_option, &weighted_option, NULL};
const QuantizerOps gptq_quantizer = {.quantize = quantize_tensor_gptq,
                                     .grid_fit = gptq_grid,
                                     .defaults = gptq_defaults,
                                     .check = gptq_check,
                                     .describe = gptq_describe,
                                     .options = gptq_options};
