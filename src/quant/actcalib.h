/* actcalib: the static activation ranges (README: Activation quantization), calibrated once on
 * the calibration windows (never the validation split): one pass of the forward through the model
 * as it is (its weights quantized), every activation left float, each site on observing what it
 * would quantize; then each site's range by the scheme's rule (minmax, percentile, mse). */
#ifndef QCORR_ACTCALIB_H
#define QCORR_ACTCALIB_H

#include <stdint.h>

#include "nn/model.h"

/* Percentile and mse read at most about this many values of a site: beyond it, the value with
 * flat index v (in forward order over the windows, rows, columns; the causal part of each
 * probability row) is kept iff splitmix64(v) mod N < ACT_CALIB_VALUES, N the site's count. The
 * minimum and maximum always see every value. */
#define ACT_CALIB_VALUES (1L << 20)
int act_calib_keep(uint64_t index, uint64_t total);

/* Calibrates m's static ranges (m->act.scheme static, set) on windows (n_windows, T) of token ids,
 * in batches of m->max_batch; m->act's ranges are then set. */
int act_calibrate(GPT *m, const int32_t *windows, int n_windows, int T);

/* One site's range [lo, hi] by the scheme's rule from its kept values (n >= 1; reordered) and the
 * extremes of all of them: minmax [min, max]; percentile p by nearest rank on the sorted values
 * (the value of rank ceil(p/100 n)): symmetric [-a, a] with a that of |x|, asymmetric [x of rank
 * ceil((100-p)/100 n), x of rank ceil(p/100 n)]; mse: of the clipped ranges ratio_k [min, max]
 * (symmetric ratio_k [-a, a], a = max(|min|, |max|)), ratio_k = mse_clip_ratio(k), k = 0..99, the
 * one of least sum of squared errors over the kept values (ties keep the larger). */
void act_range_calibrate(const ActScheme *a, int bits, float *values, long n, float all_lo, float all_hi, float *lo, float *hi);

#endif
