/* gptq: GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
 * Pre-trained Transformers") on one matrix, given X^T X of its calibration inputs. */
#ifndef QCORR_GPTQ_H
#define QCORR_GPTQ_H

#include "quant/fakequant.h"

/* What GPTQ needs of a scheme (quant.h's quant_scheme_gptq_params builds it). */
typedef struct {
    int bits, asymmetric;
    ScaleDtype dtype;
    int span_cols;      /* columns one grid covers within a row: cols (channel) or G (group); 0: one grid for the tensor */
    int fit_mse;        /* grids by the mse clip search (fakequant.h) instead of absmax */
    int current_groups; /* group grids fitted when each group starts (ignored with act_order) */
    int act_order;
    double damp;        /* H += damp * mean(diag H) * I */
    int block;          /* columns per lazy batch update */
} GptqParams;

/* out (rows, cols) = GPTQ of w (rows, cols) under p, gram = X^T X (cols, cols, both triangles) of
 * the inputs the matrix reads. fit_weight (cols, or NULL) weights the mse fit's
 * error per column.
 *
 * The specification, in double:
 *  1. H = 2 gram. Dead inputs (H_jj = 0): H_jj = 1 and W[:, j] = 0 (the paper's code does so).
 *  2. Grids (scale, minimum: fakequant.h) fitted by rtn's absmax or the mse clip search, at the
 *     scheme's scale dtype, after the dead columns are zeroed: tensor and channel once, from W;
 *     group:G with groups static (the default) up front from W, per G consecutive columns of a row
 *     in the original order (so act-order keeps the group:G storage layout); with groups current
 *     (no act-order), when column c = kG starts a group, from that group's weights as updated so far.
 *  3. act_order: columns processed by descending diag(H), ties in column order.
 *  4. H += damp * mean(diag H) * I; U = the upper Cholesky factor of H^-1 (H^-1 = U^T U), by LAPACK.
 *  5. Columns in processing order c: q = Q(w_c) on each row's grid; err = (w_c - q) / U_cc; every
 *     later column j: w_j -= err * U_cj.
 * gptq_quantize_ref applies step 5's updates at once, column by column. gptq_quantize batches them
 * (the paper's lazy batch updates): within a block of `block` columns at once, to the columns after
 * the block once per block, by one matrix product; the same sums in another order.
 * Returns 0, or -1 (error set) when H is not positive definite after dampening. */
int gptq_quantize(float *out, const float *w, int rows, int cols, const double *gram, const GptqParams *p, const double *fit_weight);
int gptq_quantize_ref(float *out, const float *w, int rows, int cols, const double *gram, const GptqParams *p,
                      const double *fit_weight);

/* The processing order under act-order: columns by descending diag(H) of H = 2 gram with dead
 * columns at 1, stable. perm (cols). -1 when out of memory. */
int gptq_act_order(int *perm, const double *gram, int cols);

#endif
