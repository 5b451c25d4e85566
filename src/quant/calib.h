/* calib: statistics of what each linear layer reads over calibration token windows, collected in
 * forward order through a model that may change as the walk goes (quantized layer by layer by
 * GPTQ, corrected site by site by bias correction), with the stream entering each block cached so
 * no prefix is recomputed. Takes token windows, not a corpus: the experiment layer draws them. */
#ifndef QCORR_CALIB_H
#define QCORR_CALIB_H

#include <stdint.h>

#include "nn/model.h"

/* One linear layer's input X (rows x in), as the matrix reads it (after activation quantization
 * when that is on), over every position of every calibration window. */
typedef struct {
    int in;               /* columns */
    long n;               /* rows seen */
    double *gram;         /* (in, in) X^T X, both triangles; NULL unless the walk was asked for it */
    double *mean;         /* (in) E[x] per column */
    double *mean_square;  /* (in) E[x^2] per column */
    double *mean_abs;     /* (in) E[|x|] per column */
    double *absmax;       /* (in) max |x| per column (SmoothQuant's statistic, transform.c) */
} CalibStats;

/* Called once per selected linear layer, in forward order, with the statistics of its input as the
 * model (and hook) are at that moment. It may change that layer's weights or what the hook adds
 * to its output: every later layer's statistics see the change. Returns 0 or -1 (error set). */
typedef int (*CalibVisit)(void *ctx, int linear, const CalibStats *stats);

/* Walks m over windows (n_windows, T) of token ids (T <= ctx), in batches of m->max_batch, with
 * hook (may be NULL) active. selected[i] (gpt_linear_count entries) picks the layers to visit;
 * want_gram asks for X^T X as well as the per-column means. Blocks after the last selected layer
 * are not run. */
int calib_walk(GPT *m, const ModelHook *hook, const int32_t *windows, int n_windows, int T, const unsigned char *selected,
               int want_gram, CalibVisit visit, void *ctx);

/* The statistics of rows x (n, in) directly: for tests and for callers that hold X. stats' arrays
 * are allocated (calib_stats_free releases them). */
int calib_stats_from_rows(CalibStats *stats, const float *x, long n, int in, int want_gram);
void calib_stats_free(CalibStats *stats);

#endif
