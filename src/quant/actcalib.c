/* actcalib: see actcalib.h. */
#include "quant/actcalib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "quant/fakequant.h"

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

int act_calib_keep(uint64_t index, uint64_t total) {
    return total <= (uint64_t)ACT_CALIB_VALUES || splitmix64(index) % total < (uint64_t)ACT_CALIB_VALUES;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* 0-based index of the value of nearest rank ceil(p/100 n) */
static long rank_index(double p, long n) {
    long k = (long)ceil(p / 100.0 * (double)n) - 1;
    return k < 0 ? 0 : k > n - 1 ? n - 1 : k;
}

/* sum of (x - Q(x))^2 over the values, on grid g (in chunks through the fast apply: the same bits) */
static double grid_error(const float *v, long n, ActGrid g) {
    float buf[1024];
    double e = 0.0;
    for (long i0 = 0; i0 < n; i0 += 1024) {
        long k = n - i0 < 1024 ? n - i0 : 1024;
        act_grid_apply(buf, v + i0, k, g);
        for (long i = 0; i < k; i++) {
            double d = (double)v[i0 + i] - (double)buf[i];
            e += d * d;
        }
    }
    return e;
}

void act_range_calibrate(const ActScheme *a, int bits, float *v, long n, float all_lo, float all_hi, float *lo, float *hi) {
    int asym = a->asymmetric;
    float absmax = fabsf(all_lo) > fabsf(all_hi) ? fabsf(all_lo) : fabsf(all_hi);
    if (a->calib == ACT_CALIB_MINMAX) {
        *lo = asym ? all_lo : -absmax;
        *hi = asym ? all_hi : absmax;
        return;
    }
    if (a->calib == ACT_CALIB_PERCENTILE) {
        if (!asym)
            for (long i = 0; i < n; i++) v[i] = fabsf(v[i]);
        qsort(v, (size_t)n, sizeof *v, cmp_float);
        if (!asym) {
            *hi = v[rank_index(a->percentile, n)];
            *lo = -*hi;
        } else {
            *hi = v[rank_index(a->percentile, n)];
            *lo = v[rank_index(100.0 - a->percentile, n)];
        }
        return;
    }
    double best = INFINITY;
    for (int k = 0; k < MSE_CLIP_CANDIDATES; k++) {
        double ratio = mse_clip_ratio(k);
        float l = asym ? (float)(ratio * (double)all_lo) : -(float)(ratio * (double)absmax);
        float h = asym ? (float)(ratio * (double)all_hi) : (float)(ratio * (double)absmax);
        double e = grid_error(v, n, act_grid(l, h, bits, asym));
        if (e < best) { /* strictly: ties keep the larger ratio */
            best = e;
            *lo = l;
            *hi = h;
        }
    }
}

/* ---------------------------------------------------------------- the walk */

typedef struct {
    int on;
    uint64_t total, seen;
    float lo, hi;
    float *kept;
    long n_kept, cap;
} SiteObservation;

typedef struct {
    SiteObservation *sites;
    int failed;
} Observer;

static void observe(void *ctx, int site, const float *x, int rows, int cols, long ld, int triangle) {
    Observer *o = ctx;
    SiteObservation *s = &o->sites[site];
    if (!s->on || o->failed) return;
    for (int r = 0; r < rows; r++) {
        const float *row = x + (long)r * ld;
        int n = triangle > 0 ? r % triangle + 1 : cols;
        if (s->n_kept + n > s->cap) {
            long cap = s->cap * 2 > s->n_kept + n ? s->cap * 2 : s->n_kept + n;
            float *grown = realloc(s->kept, (size_t)cap * sizeof(float));
            if (!grown) {
                qc_error("out of memory for the calibration values of activation site %d", site);
                o->failed = 1;
                return;
            }
            s->kept = grown;
            s->cap = cap;
        }
        for (int i = 0; i < n; i++) {
            float v = row[i];
            if (s->seen == 0) s->lo = s->hi = v;
            s->lo = v < s->lo ? v : s->lo;
            s->hi = v > s->hi ? v : s->hi;
            if (act_calib_keep(s->seen, s->total)) s->kept[s->n_kept++] = v;
            s->seen++;
        }
    }
}

int act_calibrate(GPT *m, const int32_t *windows, int n_windows, int T) {
    const GPTConfig *cfg = &m->config;
    const ActScheme *a = &m->act.scheme;
    int L = cfg->n_layer, C = cfg->d_model, NH = cfg->n_head, n_sites = act_site_count(L), B = m->max_batch;
    if (!m->act.ranges) { qc_error("internal: calibrating the ranges of a scheme that is not static"); return -1; }
    if (n_windows < 1 || T < 1 || T > cfg->ctx) {
        qc_error("static activation ranges need at least one calibration window of 1..%d tokens (got %d of %d)", cfg->ctx, n_windows, T);
        return -1;
    }
    Observer o = {qc_calloc((size_t)n_sites, sizeof(SiteObservation), "activation calibration"), 0};
    float *ranges = qc_calloc((size_t)n_sites * 2, sizeof(float), "static activation ranges");
    int rc = -1;
    if (!o.sites || !ranges) goto done;
    for (int site = 0; site < n_sites; site++) {
        SiteObservation *s = &o.sites[site];
        unsigned point = act_site_point(L, site);
        s->on = act_point_bits(a, point) > 0;
        uint64_t per_window;
        if (point == ACT_POINT_PROBS) per_window = (uint64_t)NH * T * (T + 1) / 2;
        else if (point == ACT_POINT_INPUTS) {
            int slot = site % ACT_SITES_PER_BLOCK, linear = site == L * ACT_SITES_PER_BLOCK ? L * LINEARS_PER_BLOCK : site / ACT_SITES_PER_BLOCK * LINEARS_PER_BLOCK + slot;
            per_window = (uint64_t)T * gpt_linear_shape(cfg, linear).in;
        } else per_window = (uint64_t)T * C;
        s->total = per_window * (uint64_t)n_windows;
    }
    m->act.observe = observe;
    m->act.observe_ctx = &o;
    for (int w0 = 0; w0 < n_windows && !o.failed; w0 += B) {
        int nb = n_windows - w0 < B ? n_windows - w0 : B;
        if (gpt_forward(m, windows + (size_t)w0 * T, nb, T, NULL) != 0) goto stop;
        if (qc_stop_signal) {
            qc_error("interrupted by signal %d during activation calibration", (int)qc_stop_signal);
            goto stop;
        }
    }
    if (o.failed) goto stop;
    for (int site = 0; site < n_sites; site++) {
        SiteObservation *s = &o.sites[site];
        if (!s->on) continue;
        int bits = act_point_bits(a, act_site_point(L, site));
        act_range_calibrate(a, bits, s->kept, s->n_kept, s->lo, s->hi, &ranges[2 * site], &ranges[2 * site + 1]);
    }
    rc = 0;
stop:
    m->act.observe = NULL;
    m->act.observe_ctx = NULL;
    if (rc == 0) rc = gpt_set_act_ranges(m, ranges);
done:
    for (int site = 0; o.sites && site < n_sites; site++) free(o.sites[site].kept);
    free(o.sites);
    free(ranges);
    return rc;
}
