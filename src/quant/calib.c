/* calib: see calib.h. Sums are kept in double; X^T X is accumulated batch by batch with dsyrk on a
 * double copy of the rows, so its value does not depend on the batch size beyond summation order. */
#include "quant/calib.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static int stats_alloc(CalibStats *s, int in, int want_gram) {
    memset(s, 0, sizeof *s);
    s->in = in;
    s->mean = qc_calloc((size_t)in, sizeof(double), "calibration statistics");
    s->mean_square = qc_calloc((size_t)in, sizeof(double), "calibration statistics");
    s->mean_abs = qc_calloc((size_t)in, sizeof(double), "calibration statistics");
    s->absmax = qc_calloc((size_t)in, sizeof(double), "calibration statistics");
    if (want_gram) s->gram = qc_calloc((size_t)in * in, sizeof(double), "calibration Gram matrix");
    if (!s->mean || !s->mean_square || !s->mean_abs || !s->absmax || (want_gram && !s->gram)) {
        calib_stats_free(s);
        return -1;
    }
    return 0;
}

void calib_stats_free(CalibStats *s) {
    free(s->gram);
    free(s->mean);
    free(s->mean_square);
    free(s->mean_abs);
    free(s->absmax);
    memset(s, 0, sizeof *s);
}

/* Adds rows x (n, in) to the running sums (means hold sums until stats_finish). scratch: n * in
 * doubles when the Gram matrix is wanted. */
static void stats_add(CalibStats *s, const float *x, long n, double *scratch) {
    int in = s->in;
    for (long r = 0; r < n; r++) {
        const float *row = x + r * in;
        for (int c = 0; c < in; c++) {
            double v = row[c];
            s->mean[c] += v;
            s->mean_square[c] += v * v;
            s->mean_abs[c] += fabs(v);
            if (fabs(v) > s->absmax[c]) s->absmax[c] = fabs(v);
        }
    }
    if (s->gram) {
        for (long k = 0; k < n * in; k++) scratch[k] = x[k];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, in, (int)n, 1.0, scratch, in, 1.0, s->gram, in);
    }
    s->n += n;
}

static void stats_finish(CalibStats *s) {
    int in = s->in;
    double inv = s->n > 0 ? 1.0 / (double)s->n : 0.0;
    for (int c = 0; c < in; c++) {
        s->mean[c] *= inv;
        s->mean_square[c] *= inv;
        s->mean_abs[c] *= inv;
    }
    if (s->gram)
        for (int a = 0; a < in; a++)
            for (int b = 0; b < a; b++) s->gram[(size_t)a * in + b] = s->gram[(size_t)b * in + a];
}

int calib_stats_from_rows(CalibStats *s, const float *x, long n, int in, int want_gram) {
    if (stats_alloc(s, in, want_gram) != 0) return -1;
    double *scratch = want_gram ? qc_malloc((size_t)n * in * sizeof(double), "calibration rows") : NULL;
    if (want_gram && !scratch) {
        calib_stats_free(s);
        return -1;
    }
    stats_add(s, x, n, scratch);
    stats_finish(s);
    free(scratch);
    return 0;
}

/* ---------------------------------------------------------------- the walk */

/* The hook the walk runs: the caller's hook as it is, plus an observer of one linear layer's input. */
typedef struct {
    const ModelHook *inner;
    int target;
    CalibStats *stats;
    double *scratch;
} Observer;

static float *observe_after_block(void *ctx, int block, float *x, int rows) {
    Observer *o = ctx;
    return o->inner->after_block(o->inner->ctx, block, x, rows);
}

static void observe_after_linear(void *ctx, int linear, float *out, const float *in, int rows) {
    Observer *o = ctx;
    if (o->inner && o->inner->after_linear) o->inner->after_linear(o->inner->ctx, linear, out, in, rows);
    if (linear == o->target) stats_add(o->stats, in, rows, o->scratch);
}

int calib_walk(GPT *m, const ModelHook *hook, const int32_t *windows, int n_windows, int T, const unsigned char *selected,
               int want_gram, CalibVisit visit, void *ctx) {
    const GPTConfig *cfg = &m->config;
    int L = cfg->n_layer, C = cfg->d_model, B = m->max_batch, n_linear = gpt_linear_count(cfg);
    if (n_windows < 1 || T < 1 || T > cfg->ctx) {
        qc_error("calibration needs at least one window of 1..%d tokens (got %d of %d)", cfg->ctx, n_windows, T);
        return -1;
    }
    int last = -1, widest = 0;
    for (int i = 0; i < n_linear; i++)
        if (selected[i]) {
            last = i;
            LinearShape sh = gpt_linear_shape(cfg, i);
            if (sh.in > widest) widest = sh.in;
        }
    if (last < 0) return 0;
    size_t window_floats = (size_t)T * C;
    float *cache = qc_aligned_alloc((size_t)n_windows * window_floats * sizeof(float), "calibration stream cache");
    double *scratch = want_gram ? qc_malloc((size_t)B * T * widest * sizeof(double), "calibration rows") : NULL;
    CalibStats stats = {0};
    int rc = -1, have_stats = 0;
    if (!cache || (want_gram && !scratch)) goto done;
    Observer obs = {hook, -1, &stats, scratch};
    ModelHook observer = {.ctx = &obs, .max_rows = hook ? hook->max_rows : 0, .after_linear = observe_after_linear};
    if (hook && hook->after_block) observer.after_block = observe_after_block;
    /* the stream entering block 0: the embedding, for every window */
    for (int w0 = 0; w0 < n_windows; w0 += B) {
        int nb = n_windows - w0 < B ? n_windows - w0 : B;
        if (gpt_forward_blocks(m, windows + (size_t)w0 * T, nb, T, &observer, 0) != 0) goto done;
        memcpy(cache + (size_t)w0 * window_floats, m->final_stream, (size_t)nb * window_floats * sizeof(float));
    }
    int last_block = last / LINEARS_PER_BLOCK; /* the head's index gives L */
    for (int l = 0; l <= last_block; l++) {
        for (int i = l * LINEARS_PER_BLOCK; i < (l + 1) * LINEARS_PER_BLOCK && i < n_linear; i++) {
            if (!selected[i]) continue;
            LinearShape sh = gpt_linear_shape(cfg, i);
            if (have_stats) calib_stats_free(&stats);
            if (stats_alloc(&stats, sh.in, want_gram) != 0) goto done;
            have_stats = 1;
            obs.target = i;
            for (int w0 = 0; w0 < n_windows; w0 += B) {
                int nb = n_windows - w0 < B ? n_windows - w0 : B;
                float *x = cache + (size_t)w0 * window_floats;
                /* the block as far as the layer: what comes after it cannot change what it reads */
                int f = l < L ? gpt_forward_block_until(m, x, l, i % LINEARS_PER_BLOCK, nb, T, &observer)
                              : gpt_forward_head(m, x, nb, T, &observer);
                if (f != 0) goto done;
            }
            obs.target = -1;
            stats_finish(&stats);
            if (visit(ctx, i, &stats) != 0) goto done;
            if (qc_stop_signal) {
                qc_error("interrupted by signal %d during calibration", (int)qc_stop_signal);
                goto done;
            }
        }
        if (l < L && l < last_block) /* the cache moves on to the stream entering block l + 1, as the block now is */
            for (int w0 = 0; w0 < n_windows; w0 += B) {
                int nb = n_windows - w0 < B ? n_windows - w0 : B;
                float *x = cache + (size_t)w0 * window_floats;
                if (gpt_forward_range(m, x, l, l + 1, nb, T, &observer) != 0) goto done;
                memmove(x, m->final_stream, (size_t)nb * window_floats * sizeof(float));
            }
    }
    rc = 0;
done:
    if (have_stats) calib_stats_free(&stats);
    free(cache);
    free(scratch);
    return rc;
}
