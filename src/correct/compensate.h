/* compensate: the closed forms of the per-matrix corrections — the low-rank factors of a matrix's
 * quantization error (LoRC / LQER, activation-aware as L2QER), the bias correction of Nagel et al.
 * 2019 — on one matrix and on every site of a model, and the ranks that spend a parameter budget.
 * Takes token windows, not a corpus: the experiment layer draws them. */
#ifndef QCORR_COMPENSATE_H
#define QCORR_COMPENSATE_H

#include <stdint.h>

#include "correct/correct.h"
#include "nn/model.h"

/* Rank-k factors of E = W - Q (out, in), in double: SVD(E S) = U diag(sigma) V^T with S =
 * diag(scale) (scale NULL: the identity); A = sqrt(sigma_k) V_k^T S^-1 (k, in), B = U_k
 * sqrt(sigma_k) (out, k), so E ~ B A and the layer computes x Q^T + b + (x A^T) B^T: the singular
 * values split evenly between the factors. An input with scale 0 (never active) gets A[:, j] = 0.
 * Signs: each u_i is flipped so that its entry of largest magnitude (the first such) is positive,
 * v_i with it, so the factors are unique where the singular values are distinct. sigma (k, may be
 * NULL) gets the leading singular values of E S. k <= min(out, in). LAPACK's dgesdd; -1 (error
 * set) if it fails. */
int lowrank_factors(float *A, float *B, double *sigma, const float *w, const float *q, int out, int in, int k, const double *scale);

/* delta (out) = (W - Q) mean_x in double: the bias correction, which cancels the mean output error
 * of a layer over inputs whose mean is mean_x (in). */
void bias_correction_delta(float *delta, const float *w, const float *q, int out, int in, const double *mean_x);

/* The ranks of low-rank terms on the linear layers with has_site[i] set (gpt_linear_count
 * entries) whose extra parameters sum(k_i (in_i + out_i)) come as close to budget as this rule
 * gets without exceeding it: every matrix the same k = floor(budget / sum(in_i + out_i)) (capped at
 * min(in_i, out_i)), then, in forward order in one pass, one rank more for each matrix whose
 * (in + out) still fits in what is left. ranks[i] = 0 where no site (or no rank fits). Returns
 * the parameters spent. */
long lowrank_match_ranks(const GPTConfig *cfg, const unsigned char *has_site, long budget, int *ranks);

/* lowrank's closed form on every site of c (lowrank corrections of q, f the float model): each
 * matrix's factors of W_f - W_q at its site's rank. act_scale: S = each input column's mean |x|
 * over the windows (n_windows, T) of token ids, walked in forward order through q with the sites
 * before it already solved (their terms in its input); else S = I and no data is read. */
int lowrank_fit(GPT *q, const GPT *f, Corrections *c, const int32_t *windows, int n_windows, int T, int act_scale);
/* The bias correction on every site of c (bias corrections of q): delta = (W_f - W_q) E[x], E[x]
 * the mean input of the layer over the windows in q with the earlier layers' deltas in place
 * (forward order, so each layer's mean is of the inputs it will see). */
int bias_fit(GPT *q, const GPT *f, Corrections *c, const int32_t *windows, int n_windows, int T);

/* The parameters of the stream correction a low-rank term is matched against: a linear one
 * (d x d weight and d bias) at each site of correction_every `every` (README: Correction layers). */
long stream_linear_params(const GPTConfig *cfg, int every);

#endif
