/* ops: see ops.h. The layers run in the kernel path chosen for this CPU (kernels.h: the loops
 * themselves are in kernels_ops.h, OpenMP loops over rows or (batch, head) pairs, each output
 * written by one thread, so results do not depend on threads); matrix products go to gemm.c or
 * CBLAS. Each op's forward, backward and naive _ref (the specification the fast path is tested
 * against) are together here, in the order of ops.h. */
#include "kernels/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "kernels/kernels.h"

void embedding_forward(float *out, const int32_t *inputs, const float *wte, const float *wpe, int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const float *tok = wte + (long)inputs[bt] * C;
        const float *pos = wpe + (long)(bt % T) * C;
        float *o = out + (long)bt * C;
        for (int c = 0; c < C; c++) o[c] = tok[c] + pos[c];
    }
}

void embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inputs, int B, int T, int C) {
    /* serial: two rows may share a token, and this pass is a tiny share of the step */
    for (int bt = 0; bt < B * T; bt++) {
        const float *d = dout + (long)bt * C;
        float *tok = dwte + (long)inputs[bt] * C;
        float *pos = dwpe + (long)(bt % T) * C;
        for (int c = 0; c < C; c++) {
            tok[c] += d[c];
            pos[c] += d[c];
        }
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N, int C) {
    kernels()->layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    kernels()->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}

/* Reference: per row in double, the biased variance, eps 1e-5 (PyTorch's default). */
void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N,
                           int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (long)n * C;
        double m = 0.0, v = 0.0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        double s = 1.0 / sqrt(v / C + 1e-5);
        for (int c = 0; c < C; c++) out[(long)n * C + c] = (float)((x[c] - m) * s * weight[c] + bias[c]);
        mean[n] = (float)m;
        rstd[n] = (float)s;
    }
}

/* Reference: from the saved statistics, as the fast path; dinp += (dnorm - mean(dnorm) - norm *
 * mean(dnorm * norm)) * rstd with dnorm = weight * dout, in double. */
void layernorm_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, const float *mean, const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (long)n * C, *d = dout + (long)n * C;
        double m = mean[n], s = rstd[n], dnorm_mean = 0.0, dnorm_norm_mean = 0.0;
        for (int c = 0; c < C; c++) {
            dnorm_mean += (double)weight[c] * d[c];
            dnorm_norm_mean += (double)weight[c] * d[c] * (x[c] - m) * s;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        for (int c = 0; c < C; c++)
            dinp[(long)n * C + c] += (float)(((double)weight[c] * d[c] - dnorm_mean - (x[c] - m) * s * dnorm_norm_mean) * s);
    }
    for (int c = 0; c < C && (dweight || dbias); c++) {
        double gw = 0.0, gb = 0.0;
        for (int n = 0; n < N; n++) {
            gw += (inp[(long)n * C + c] - (double)mean[n]) * rstd[n] * dout[(long)n * C + c];
            gb += dout[(long)n * C + c];
        }
        if (dweight) dweight[c] += (float)gw;
        if (dbias) dbias[c] += (float)gb;
    }
}

/* Products of GEMM_MIN_ROWS rows or more go to gemm (gemm.h), fewer (sampling one token at a
 * time) to CBLAS. The weight gradient goes to gemm_at_b on the paths whose table says it beat
 * the BLAS there (avx512), to CBLAS elsewhere: on Zen 1 OpenBLAS runs that long-depth product
 * near peak, and a gemm_at_b of ours measured no faster in the whole step. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC, int accumulate) {
    if (N >= GEMM_MIN_ROWS && gemm(N, OC, IC, inp, IC, weight, IC, 1, bias, out, OC, accumulate) == 0) return;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float *o = out + (long)n * OC;
            if (accumulate)
                for (int c = 0; c < OC; c++) o[c] += bias[c];
            else
                memcpy(o, bias, (size_t)OC * sizeof(float));
        }
        accumulate = 1;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC,
                accumulate ? 1.0f : 0.0f, out, OC);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int IC, int OC) {
    if (dinp && !(N >= GEMM_MIN_ROWS && gemm(N, IC, OC, dout, OC, weight, IC, 0, NULL, dinp, IC, 0) == 0))
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, weight, IC, 0.0f, dinp, IC);
    if (dweight && !(N >= GEMM_MIN_ROWS && kernels()->weight_gradient_by_gemm_at_b &&
                     gemm_at_b(OC, IC, N, dout, OC, inp, IC, dweight, IC) == 0))
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dbias) column_sum_add(dbias, dout, N, OC);
}

void matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC, int accumulate) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < IC; i++) acc += (double)inp[(long)n * IC + i] * weight[(long)o * IC + i];
            out[(long)n * OC + o] = (float)(accumulate ? out[(long)n * OC + o] + acc : acc);
        }
}

void matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, int N, int IC, int OC) {
    if (dinp)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < IC; i++) {
                double acc = 0.0;
                for (int o = 0; o < OC; o++) acc += (double)dout[(long)n * OC + o] * weight[(long)o * IC + i];
                dinp[(long)n * IC + i] = (float)acc;
            }
    if (dweight)
        for (int o = 0; o < OC; o++)
            for (int i = 0; i < IC; i++) {
                double acc = 0.0;
                for (int n = 0; n < N; n++) acc += (double)dout[(long)n * OC + o] * inp[(long)n * IC + i];
                dweight[(long)o * IC + i] += (float)acc;
            }
    if (dbias)
        for (int o = 0; o < OC; o++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += dout[(long)n * OC + o];
            dbias[o] += (float)acc;
        }
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    kernels()->attention_forward(out, att, qkv, B, T, C, NH);
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH) {
    kernels()->attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
}

/* Reference: the textbook formulas, full T x T score matrix, softmax with a -inf mask. */
void attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                float *row = att + (((long)b * NH + h) * T + t) * T;
                double scores[T], maxv = -INFINITY, sum = 0.0;
                for (int t2 = 0; t2 < T; t2++) {
                    if (t2 > t) { scores[t2] = -INFINITY; continue; }
                    double s = 0.0;
                    for (int i = 0; i < hs; i++)
                        s += (double)qkv[((long)b * T + t) * 3 * C + h * hs + i] * qkv[((long)b * T + t2) * 3 * C + C + h * hs + i];
                    scores[t2] = s / sqrt((double)hs);
                    if (scores[t2] > maxv) maxv = scores[t2];
                }
                for (int t2 = 0; t2 < T; t2++) sum += t2 <= t ? exp(scores[t2] - maxv) : 0.0;
                for (int t2 = 0; t2 < T; t2++) row[t2] = t2 <= t ? (float)(exp(scores[t2] - maxv) / sum) : 0.0f;
                for (int i = 0; i < hs; i++) {
                    double y = 0.0;
                    for (int t2 = 0; t2 <= t; t2++) y += (double)row[t2] * qkv[((long)b * T + t2) * 3 * C + 2 * C + h * hs + i];
                    out[((long)b * T + t) * C + h * hs + i] = (float)y;
                }
            }
}

void attention_backward_ref(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH) {
    int hs = C / NH;
    double scale = 1.0 / sqrt((double)hs);
    memset(dqkv, 0, (size_t)B * T * 3 * C * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *row = att + (((long)b * NH + h) * T + t) * T;
                const float *dy = dout + ((long)b * T + t) * C + h * hs;
                double datt[T], dot = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    double s = 0.0;
                    for (int i = 0; i < hs; i++) {
                        s += (double)dy[i] * qkv[((long)b * T + t2) * 3 * C + 2 * C + h * hs + i];
                        dqkv[((long)b * T + t2) * 3 * C + 2 * C + h * hs + i] += row[t2] * dy[i];
                    }
                    datt[t2] = s;
                    dot += row[t2] * s;
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    double dpre = row[t2] * (datt[t2] - dot) * scale;
                    for (int i = 0; i < hs; i++) {
                        dqkv[((long)b * T + t) * 3 * C + h * hs + i] += (float)(dpre * qkv[((long)b * T + t2) * 3 * C + C + h * hs + i]);
                        dqkv[((long)b * T + t2) * 3 * C + C + h * hs + i] += (float)(dpre * qkv[((long)b * T + t) * 3 * C + h * hs + i]);
                    }
                }
            }
}

void gelu_forward(float *out, const float *inp, long N) { kernels()->gelu_forward(out, inp, N); }

void gelu_forward_saving(float *out, float *th, const float *inp, long N) { kernels()->gelu_forward_saving(out, th, inp, N); }

void gelu_backward(float *dinp, const float *inp, const float *dout, long N) { kernels()->gelu_backward(dinp, inp, dout, N); }

void gelu_backward_saved(float *dinp, const float *inp, const float *th, const float *dout, long N) {
    kernels()->gelu_backward_saved(dinp, inp, th, dout, N);
}

/* Reference: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) and its derivative, in double. */
void gelu_forward_ref(float *out, const float *inp, long N) {
    for (long i = 0; i < N; i++) {
        double x = inp[i];
        out[i] = (float)(0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))));
    }
}

void gelu_backward_ref(float *dinp, const float *inp, const float *dout, long N) {
    for (long i = 0; i < N; i++) {
        double x = inp[i], k = sqrt(2.0 / M_PI), th = tanh(k * (x + 0.044715 * x * x * x));
        double grad = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
        dinp[i] = (float)(grad * dout[i]);
    }
}

void residual_forward(float *out, const float *a, const float *b, long N) { kernels()->residual_forward(out, a, b, N); }

double crossentropy_forward_backward(float *dlogits, const float *logits, const int32_t *targets, int N, int V, float dloss) {
    return kernels()->crossentropy_forward_backward(dlogits, logits, targets, N, V, dloss);
}

/* Reference: a max-shifted softmax per row in double; loss = log-sum-exp - the target's logit. */
double crossentropy_forward_backward_ref(float *dlogits, const float *logits, const int32_t *targets, int N, int V, float dloss) {
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (long)n * V;
        double maxv = z[0], sum = 0.0;
        for (int v = 1; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
        for (int v = 0; v < V; v++) sum += exp(z[v] - maxv);
        total += log(sum) + maxv - z[targets[n]];
        if (dlogits)
            for (int v = 0; v < V; v++) dlogits[(long)n * V + v] = (float)((exp(z[v] - maxv) / sum - (v == targets[n])) * dloss);
    }
    return total / N;
}

void column_sum_add(float *out, const float *inp, int N, int C) { kernels()->column_sum_add(out, inp, N, C); }

void column_sum_add_ref(float *out, const float *inp, int N, int C) {
    for (int c = 0; c < C; c++) {
        double sum = 0.0;
        for (int n = 0; n < N; n++) sum += inp[(long)n * C + c];
        out[c] += (float)sum;
    }
}

void hadamard_forward(float *out, const float *in, const float *signs, long rows, int n) {
    kernels()->hadamard(out, in, signs, rows, n);
}

/* H is symmetric: the transpose of H D is D H, the transform without signs, then the signs */
void hadamard_backward(float *dinp, const float *dout, const float *signs, long rows, int n) {
    kernels()->hadamard(dinp, dout, NULL, rows, n);
    if (signs)
        for (long r = 0; r < rows; r++)
            for (int j = 0; j < n; j++) dinp[r * n + j] *= signs[j];
}

static int popcount_parity(unsigned v) {
    int p = 0;
    for (; v; v &= v - 1) p ^= 1;
    return p;
}

void hadamard_forward_ref(float *out, const float *in, const float *signs, long rows, int n) {
    double scale = 1.0 / sqrt((double)n), *row = malloc((size_t)n * sizeof(double));
    if (!row) return; /* a test's reference: its caller compares and fails */
    for (long r = 0; r < rows; r++) {
        for (int j = 0; j < n; j++) row[j] = (double)in[r * n + j] * (signs ? signs[j] : 1.0f);
        for (int i = 0; i < n; i++) {
            double y = 0.0;
            for (int j = 0; j < n; j++) y += popcount_parity((unsigned)(i & j)) ? -row[j] : row[j];
            out[r * n + i] = (float)(y * scale);
        }
    }
    free(row);
}

int is_power_of_two(long n) { return n >= 1 && (n & (n - 1)) == 0; }
