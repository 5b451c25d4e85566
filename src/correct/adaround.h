/* adaround: learned rounding (Nagel et al. 2020, "Up or Down? Adaptive Rounding"), layer by layer
 * on the reconstruction of each quantized matrix's output over the calibration inputs, read
 * through the already-rounded prefix. Per weight, the grid value below, floor(w / s), plus a
 * learned h(V) in [0, 1], the rectified sigmoid h = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)
 * (zeta 1.1, gamma -0.1), trained by Adam on
 *     L = tr(E G E^T) + lambda * sum_weights (1 - |2 h - 1|^beta),  E = W~ - W,  G = X^T X / n,
 * the reconstruction term summed over outputs and averaged over input rows (BRECQ's convention),
 * the regulariser off for the first warm-up share of the iterations and then with beta falling
 * linearly from beta_start to beta_end, which drives every h to 0 or 1. At the end each weight
 * rounds up where V >= 0 (h >= 1/2): a code of the starting grid. The grid (scale, minimum) is the
 * one the scheme's fit gives the float weights (rtn's absmax; mse's clip search), kept, so what is
 * stored is what RTN stores: 0 extra bits. A matrix whose learned rounding reconstructs worse
 * than rounding to nearest keeps the nearest (never worse than rtn on the objective it optimises). */
#ifndef QCORR_ADAROUND_H
#define QCORR_ADAROUND_H

#include "correct/experiment.h"
#include "quant/fakequant.h"

typedef struct {
    int iters;                 /* Adam steps per matrix (1000) */
    double lr;                 /* Adam's rate on V (1e-2) */
    double lambda;             /* the regulariser's weight (0.01) */
    double beta_start, beta_end, warmup; /* 20 -> 2, after the first 20% of the iterations */
} AdaRoundOptions;

void adaround_default(AdaRoundOptions *o);

/* What one matrix's rounding did: the reconstruction term tr(E G E^T) of rounding to nearest, of
 * the learned rounding, and the share of weights rounded otherwise than to nearest. */
typedef struct {
    double nearest, learned, flipped;
    int kept_nearest; /* 1 when the learned rounding was worse and the nearest was kept */
} AdaRoundStats;

/* Rounds one (rows x cols) matrix w. grids: one per span of `span` consecutive weights (row-major;
 * a row, a group or the whole tensor), the grid's codes -qmax..qmax (symmetric) or 0..2^b-1 above
 * the minimum (asymmetric); G (cols x cols, double, symmetric): the input's second moment X^T X / n.
 * out: the rounded weights (each code * scale (+ minimum), as span_grid_apply computes). */
int adaround_matrix(const float *w, int rows, int cols, const SpanGrid *grids, int span, int bits, int asymmetric, const double *G,
                    const AdaRoundOptions *o, float *out, AdaRoundStats *stats);

/* One matrix's problem: its float weights w (rows x cols), grids (one per span of `span`
 * weights), bits and symmetry, G (cols x cols, float: X^T X / n) and each weight's floor code. */
typedef struct {
    const float *w;
    int rows, cols;
    const SpanGrid *grids;
    int span, bits, asymmetric;
    const float *G, *below;
} AdaRoundMatrix;

/* below and V at the start: the floor code of each weight and V with h(V) = its remainder, so the
 * soft weights start at the float weights. */
void adaround_start(const float *w, size_t n, const SpanGrid *grids, int span, int asymmetric, float *below, float *V);
/* The objective at V (regulariser weight lambda, exponent beta; lambda 0: the reconstruction
 * alone) and its gradient in V into grad; e, r: scratch of rows x cols. */
double adaround_objective(const AdaRoundMatrix *a, const float *V, double beta, double lambda, float *grad, float *e, float *r);

/* The reconstruction term tr(E G E^T), E = wq - w, in double: what adaround_matrix compares. */
double adaround_reconstruction(const float *wq, const float *w, int rows, int cols, const double *G);

/* Rounds every matrix (linear layers and head) the scheme o->scheme quantized in q anew from the
 * float model f's weights, in forward order, each on the calibration windows' inputs through q as
 * rounded so far; the other tensors stay as q has them. The validation split is never read. */
int adaround_fit(GPT *q, GPT *f, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out);

#endif
