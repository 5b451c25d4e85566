/* kernels_ops: the body of ops.h's layers other than the matrix products (LayerNorm, bias
 * sums, attention, GELU, residual, cross-entropy), included once by each kernels_<path>.c after
 * kernels_gemm.h (whose gemm_rows the attention uses). Its loops vectorize with the width of the
 * path's target (omp simd; exp_simd is plain arithmetic so that it vectorizes); sums whose order
 * depends on that width (softmax, LayerNorm statistics) round differently from path to path. */
#include <math.h>

#include "kernels/ops.h"

/* LayerNorm's row sums (mean, variance; the backward's two means) run in vector lanes (omp simd
 * reduction), so they round differently from a sequential sum and from path to path. In order,
 * they left both loops scalar: 4096 rows, one thread, forward 1.15-1.44 ns/float on avx2 and
 * 1.54-2.24 on avx512 at C 64-256, against 0.42-0.45 and 0.36-0.47 in lanes (oneDNN's layer
 * normalization: 0.31-0.34, bench/libs.c); the backward 1.5-2.4x faster. */
static void KERNEL(layernorm_forward)(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N, int C) {
    const float eps = 1e-5f;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (long)n * C;
        /* the mean as x[0] + the mean of x - x[0]: the deviations are small where a row sits far
         * from 0, and so are their sum's rounding errors, which (x - m) * rstd would magnify */
        float shift = x[0], m = 0.0f;
#pragma omp simd reduction(+ : m)
        for (int c = 0; c < C; c++) m += x[c] - shift;
        m = shift + m / C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += d * d;
        }
        v /= C;
        float s = 1.0f / sqrtf(v + eps);
        float *o = out + (long)n * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

/* Sums over rows (bias and LayerNorm parameter gradients), the same bits whatever the thread
 * count: rows go by fixed chunks of SUM_ROWS, each chunk's sums into its own slot of scratch
 * (vectorized along the row, while the chunk's rows stream past), and the slots are then added
 * in chunk order. */
enum { SUM_ROWS = 256 };
static GrowBuffer row_sum_scratch;

static int row_chunks(int N) { return (N + SUM_ROWS - 1) / SUM_ROWS; }
static int chunk_end(int k, int N) { return (k + 1) * SUM_ROWS < N ? (k + 1) * SUM_ROWS : N; }

/* out[c] += the sum over chunks, in order, of part[k * stride + c] */
static void add_chunk_sums(float *out, const float *part, int chunks, size_t stride, int C) {
    for (int c = 0; c < C; c++) {
        float total = 0.0f;
        for (int k = 0; k < chunks; k++) total += part[(size_t)k * stride + c];
        out[c] += total;
    }
}

static void KERNEL(layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    int chunks = row_chunks(N);
    /* per chunk: its dweight sums, then its dbias sums (C each) */
    float *part = dweight || dbias ? grow_buffer(&row_sum_scratch, (size_t)chunks * 2 * C) : NULL;
    if ((dweight || dbias) && !part) { /* no scratch: dinp as usual, then the same sums column by column */
        KERNEL(layernorm_backward)(dinp, NULL, NULL, dout, inp, weight, mean, rstd, N, C);
        for (int c = 0; c < C; c++) {
            float total_w = 0.0f, total_b = 0.0f;
            for (int k = 0; k < chunks; k++) {
                int n1 = chunk_end(k, N);
                float gw = 0.0f, gb = 0.0f;
                for (int n = k * SUM_ROWS; n < n1; n++) {
                    gw += (inp[(long)n * C + c] - mean[n]) * rstd[n] * dout[(long)n * C + c];
                    gb += dout[(long)n * C + c];
                }
                total_w += gw;
                total_b += gb;
            }
            if (dweight) dweight[c] += total_w;
            if (dbias) dbias[c] += total_b;
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int k = 0; k < chunks; k++) {
        float *gw = part ? part + (size_t)k * 2 * C : NULL, *gb = gw ? gw + C : NULL;
        if (gw) memset(gw, 0, (size_t)2 * C * sizeof(float));
        int n1 = chunk_end(k, N);
        for (int n = k * SUM_ROWS; n < n1; n++) {
            const float *x = inp + (long)n * C;
            const float *d = dout + (long)n * C;
            float m = mean[n], s = rstd[n];
            float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
            for (int c = 0; c < C; c++) {
                float norm = (x[c] - m) * s;
                float dnorm = weight[c] * d[c];
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
            }
            dnorm_mean /= C;
            dnorm_norm_mean /= C;
            float *dx = dinp + (long)n * C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                float norm = (x[c] - m) * s;
                float dnorm = weight[c] * d[c];
                dx[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
            if (gw) /* the parameter gradients while the row is in L1 */
#pragma omp simd
                for (int c = 0; c < C; c++) {
                    gw[c] += (x[c] - m) * s * d[c];
                    gb[c] += d[c];
                }
        }
    }
    if (dweight) add_chunk_sums(dweight, part, chunks, (size_t)2 * C, C);
    if (dbias) add_chunk_sums(dbias, part + C, chunks, (size_t)2 * C, C);
}

static void KERNEL(column_sum_add)(float *out, const float *inp, int N, int C) {
    int chunks = row_chunks(N);
    float *part = grow_buffer(&row_sum_scratch, (size_t)chunks * C);
    if (!part) { /* no scratch: the same sums in the same order, one column at a time */
        for (int c = 0; c < C; c++) {
            float total = 0.0f;
            for (int k = 0; k < chunks; k++) {
                int n1 = chunk_end(k, N);
                float acc = 0.0f;
                for (int n = k * SUM_ROWS; n < n1; n++) acc += inp[(long)n * C + c];
                total += acc;
            }
            out[c] += total;
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int k = 0; k < chunks; k++) {
        float *acc = part + (size_t)k * C;
        memset(acc, 0, (size_t)C * sizeof(float));
        int n1 = chunk_end(k, N);
        for (int n = k * SUM_ROWS; n < n1; n++) {
            const float *row = inp + (long)n * C;
#pragma omp simd
            for (int c = 0; c < C; c++) acc[c] += row[c];
        }
    }
    add_chunk_sums(out, part, chunks, (size_t)C, C);
}

/* expf as plain arithmetic (Cody-Waite range reduction, Cephes' degree-6 polynomial, within
 * 2 ulp of expf on [-87, 88]), so `omp simd` loops vectorize it without -ffast-math. Inputs are
 * clamped to that range: below it the result is ~1e-38 instead of 0, which no caller can see.
 * A NaN is computed as -87 (so no NaN reaches the integer conversion) and returned as NaN, so
 * the training loop's anomaly check still sees it. */
static inline float exp_simd(float in) {
    float x = in >= -87.0f ? in : -87.0f; /* false for NaN too */
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { float f; int32_t i; } u = {.f = y};
    u.i += (int32_t)n * (1 << 23); /* n in [-126, 127]: no overflow, no shift of a negative */
    return in == in ? u.f : in;
}

/* dst (hs, T) = the hs columns of src's T rows (stride ld): a head's keys or values transposed,
 * so that q . k over a row block becomes gemm_rows with the keys along contiguous columns */
static void transpose_head(float *dst, const float *src, long ld, int T, int hs) {
    for (int d = 0; d < hs; d++) /* contiguous writes; the T source rows stay in L1 across d */
        for (int t = 0; t < T; t++) dst[(long)d * T + t] = src[(long)t * ld + d];
}

/* ---- attention ---- */

/* Per (batch, head), by blocks of ATT_ROWS query rows: the block's scores against the keys up to
 * its last row (so the products above the diagonal are never computed, apart from the block's
 * own triangle, which is masked), their softmax, and at once the block's output, while its rows
 * are in cache. The products run in gemm_rows; the OpenMP loop is over (batch, head). Each
 * thread needs scratch for a transposed head and (backward) a T x T score gradient; it grows
 * outside the parallel region, at most a few times per process; calls must not overlap (qcorr
 * runs one model step at a time). */
static GrowBuffer attention_scratch;

/* The score columns a row block computes: its keys rounded up to whole 16-wide tiles, at most T
 * (a tile's columns past the keys cost less than a scalar loop over the last few) */
static inline int att_columns(int keys, int T) {
    int whole = (keys + 15) / 16 * 16;
    return whole < T ? whole : T;
}

/* A row's max, sum and dot product in vector accumulators, the lanes then added in order and
 * the last n % VEC_FLOATS elements after them. Not omp simd reductions: GCC keeps those in a
 * stack array whose lanes the scalar remainder updates one by one before reloading it as a vector,
 * a failed store-to-load forwarding per row that cost attention's forward a tenth of its time. */
typedef int32_t vec_mask __attribute__((vector_size(VEC_FLOATS * 4)));
static inline float row_max(const float *x, int n) {
    vec m = {0}; /* read only if n >= VEC_FLOATS, and then first set from x */
    int i = 0;
    if (n >= VEC_FLOATS) {
        m = load_vec(x);
        i = VEC_FLOATS;
    }
    for (; i + VEC_FLOATS <= n; i += VEC_FLOATS) {
        vec v = load_vec(x + i);
        vec_mask greater = v > m; /* (C has no ?: on vectors) */
        m = (vec)(((vec_mask)v & greater) | ((vec_mask)m & ~greater));
    }
    float r = x[0];
    if (n >= VEC_FLOATS)
        for (int l = 0; l < VEC_FLOATS; l++) r = m[l] > r ? m[l] : r;
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}
static inline float row_sum(const float *x, int n) {
    vec acc = {0};
    int i = 0;
    for (; i + VEC_FLOATS <= n; i += VEC_FLOATS) acc += load_vec(x + i);
    float s = 0.0f;
    for (int l = 0; l < VEC_FLOATS; l++) s += acc[l];
    for (; i < n; i++) s += x[i];
    return s;
}
static inline float row_dot(const float *x, const float *y, int n) {
    vec acc = {0};
    int i = 0;
    for (; i + VEC_FLOATS <= n; i += VEC_FLOATS) acc += load_vec(x + i) * load_vec(y + i);
    float s = 0.0f;
    for (int l = 0; l < VEC_FLOATS; l++) s += acc[l];
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

/* kt: hs x T scratch */
static void attention_forward_head(float *out, float *att, const float *qkv, int b, int h, int T, int C, int NH,
                                   float *kt) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    const float *q = qkv + (long)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
    float *p = att + ((long)b * NH + h) * T * T;
    float *y = out + (long)b * T * C + h * hs;
    transpose_head(kt, k, C3, T, hs);
    for (int t0 = 0; t0 < T; t0 += ATT_ROWS) {
        int rows = T - t0 < ATT_ROWS ? T - t0 : ATT_ROWS, keys = t0 + rows;
        /* raw scores q . k of the block's rows against keys [0, keys), computed on whole 16-wide
         * tiles (the columns past keys are above the diagonal: the softmax zeroes them) */
        KERNEL(gemm_rows)(rows, att_columns(keys, T), p + (long)t0 * T, T, q + (long)t0 * C3, C3, 1, kt, T, 0, hs, 0);
        for (int t = t0; t < t0 + rows; t++) { /* softmax of scale * score over keys [0, t] */
            float *row = p + (long)t * T;
            int n = t + 1;
            float maxv = row_max(row, n);
#pragma omp simd
            for (int t2 = 0; t2 < n; t2++) row[t2] = exp_simd((row[t2] - maxv) * scale);
            float inv = 1.0f / row_sum(row, n);
#pragma omp simd
            for (int t2 = 0; t2 < n; t2++) row[t2] *= inv;
            for (int t2 = n; t2 < T; t2++) row[t2] = 0.0f;
        }
        /* y = P v over keys [0, keys) */
        KERNEL(gemm_rows)(rows, hs, y + (long)t0 * C, C, p + (long)t0 * T, T, 1, v, C3, 0, keys, 0);
    }
}

static void KERNEL(attention_forward)(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    size_t per_thread = (size_t)T * (C / NH);
    float *scratch = grow_buffer(&attention_scratch, per_thread * (size_t)omp_get_max_threads());
    if (!scratch) { attention_forward_ref(out, att, qkv, B, T, C, NH); return; }
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++)
        attention_forward_head(out, att, qkv, bh / NH, bh % NH, T, C, NH, scratch + per_thread * omp_get_thread_num());
}

/* ds: T x T scratch, vt: hs x T scratch */
static void attention_backward_head(float *dqkv, const float *dout, const float *qkv, const float *att, int b, int h,
                                    int T, int C, int NH, float *ds, float *vt) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    const float *q = qkv + (long)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
    float *dq = dqkv + (long)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
    const float *p = att + ((long)b * NH + h) * T * T;
    const float *dy = dout + (long)b * T * C + h * hs;
    transpose_head(vt, v, C3, T, hs);
    for (int t0 = 0; t0 < T; t0 += ATT_ROWS) {
        int rows = T - t0 < ATT_ROWS ? T - t0 : ATT_ROWS, keys = t0 + rows;
        /* dP = dY V^T over keys [0, keys) (and up to a whole tile: the columns past keys are
         * never read) */
        KERNEL(gemm_rows)(rows, att_columns(keys, T), ds + (long)t0 * T, T, dy + (long)t0 * C, C, 1, vt, T, 0, hs, 0);
        /* dS = P * (dP - rowsum(P * dP)) * scale, zero above the diagonal up to the block's end */
        for (int t = t0; t < t0 + rows; t++) {
            const float *prow = p + (long)t * T;
            float *drow = ds + (long)t * T;
            int n = t + 1;
            float dot = row_dot(prow, drow, n);
#pragma omp simd
            for (int t2 = 0; t2 < n; t2++) drow[t2] = prow[t2] * (drow[t2] - dot) * scale;
            for (int t2 = n; t2 < keys; t2++) drow[t2] = 0.0f;
        }
        /* dQ = dS K over keys [0, keys) */
        KERNEL(gemm_rows)(rows, hs, dq + (long)t0 * C3, C3, ds + (long)t0 * T, T, 1, k, C3, 0, keys, 0);
    }
    /* dK = dS^T Q and dV = P^T dY: key j is seen by the queries [j, T); by blocks of keys, whose
     * queries start at the block's first key (dS and P are zero above the diagonal there) */
    for (int j0 = 0; j0 < T; j0 += ATT_ROWS) {
        int rows = T - j0 < ATT_ROWS ? T - j0 : ATT_ROWS;
        KERNEL(gemm_rows)(rows, hs, dk + (long)j0 * C3, C3, ds + j0, 1, T, q, C3, j0, T, 0);
        KERNEL(gemm_rows)(rows, hs, dv + (long)j0 * C3, C3, p + j0, 1, T, dy, C, j0, T, 0);
    }
}

static void KERNEL(attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH) {
    size_t per_thread = (size_t)T * T + (size_t)T * (C / NH);
    float *scratch = grow_buffer(&attention_scratch, per_thread * (size_t)omp_get_max_threads());
    if (!scratch) { attention_backward_ref(dqkv, dout, qkv, att, B, T, C, NH); return; }
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        float *mine = scratch + per_thread * omp_get_thread_num();
        attention_backward_head(dqkv, dout, qkv, att, bh / NH, bh % NH, T, C, NH, mine, mine + (size_t)T * T);
    }
}

/* ---- GELU (tanh approximation), written with the same constants PyTorch uses ---- */
#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* tanh through one exp, so the loops vectorize: tanh(u) = 1 - 2 / (exp(2u) + 1), which
 * reaches exactly +-1 at the clamped limits of exp_simd. */
static inline float tanh_via_exp(float u) { return 1.0f - 2.0f / (exp_simd(2.0f * u) + 1.0f); }

/* GELU's tanh(sqrt(2/pi) (x + 0.044715 x^3)), and GELU and its derivative from x and it */
static inline float gelu_tanh(float x) { return tanh_via_exp(GELU_SCALE * (x + 0.044715f * x * x * x)); }
static inline float gelu_of(float x, float th) { return 0.5f * x * (1.0f + th); }
static inline float gelu_grad(float x, float th) {
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
}

static void KERNEL(gelu_forward)(float *out, const float *inp, long N) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < N; i++) out[i] = gelu_of(inp[i], gelu_tanh(inp[i]));
}

static void KERNEL(gelu_forward_saving)(float *out, float *th, const float *inp, long N) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < N; i++) {
        th[i] = gelu_tanh(inp[i]);
        out[i] = gelu_of(inp[i], th[i]);
    }
}

static void KERNEL(gelu_backward)(float *dinp, const float *inp, const float *dout, long N) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < N; i++) dinp[i] = gelu_grad(inp[i], gelu_tanh(inp[i])) * dout[i];
}

static void KERNEL(gelu_backward_saved)(float *dinp, const float *inp, const float *th, const float *dout, long N) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < N; i++) dinp[i] = gelu_grad(inp[i], th[i]) * dout[i];
}

static void KERNEL(residual_forward)(float *out, const float *a, const float *b, long N) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < N; i++) out[i] = a[i] + b[i];
}

static double KERNEL(crossentropy_forward_backward)(float *dlogits, const float *logits, const int32_t *targets, int N, int V, float dloss) {
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int n = 0; n < N; n++) {
        const float *z = logits + (long)n * V;
        float maxv = z[0];
#pragma omp simd reduction(max : maxv)
        for (int v = 1; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
        /* exp_simd in float (within 2 ulp of expf), the sum in double */
        double sum = 0.0;
        if (dlogits) {
            float *d = dlogits + (long)n * V;
#pragma omp simd reduction(+ : sum)
            for (int v = 0; v < V; v++) {
                d[v] = exp_simd(z[v] - maxv);
                sum += d[v];
            }
            float scale = (float)(dloss / sum);
#pragma omp simd
            for (int v = 0; v < V; v++) d[v] *= scale;
            d[targets[n]] -= dloss;
        } else {
#pragma omp simd reduction(+ : sum)
            for (int v = 0; v < V; v++) sum += exp_simd(z[v] - maxv);
        }
        total += log(sum) + maxv - z[targets[n]];
    }
    return total / N;
}

static void KERNEL(exp_array)(float *out, const float *in, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) out[i] = exp_simd(in[i]);
}

/* The fast Walsh-Hadamard transform (Sylvester order, H_ij = (-1)^popcount(i & j) / sqrt(n)) of
 * each row of signs . in: log2(n) stages of butterflies (a + b, a - b) in place, then one multiply
 * by 1/sqrt(n). Only additions and subtractions in a fixed order before the scale, so every path
 * (whatever its vector width, with or without FMA) gives the same bits. Rows go to threads. */
static void KERNEL(hadamard)(float *out, const float *in, const float *signs, long rows, int n) {
    float scale = (float)(1.0 / sqrt((double)n));
#pragma omp parallel for schedule(static) if (rows * n >= 32768)
    for (long r = 0; r < rows; r++) {
        const float *x = in + r * n;
        float *v = out + r * n;
        if (signs) {
#pragma omp simd
            for (int j = 0; j < n; j++) v[j] = x[j] * signs[j];
        } else if (v != x) {
            memcpy(v, x, (size_t)n * sizeof(float));
        }
        for (int h = 1; h < n; h <<= 1)
            for (int i = 0; i < n; i += 2 * h) {
                float *lo = v + i, *hi = v + i + h;
#pragma omp simd
                for (int j = 0; j < h; j++) {
                    float a = lo[j], b = hi[j];
                    lo[j] = a + b;
                    hi[j] = a - b;
                }
            }
#pragma omp simd
        for (int j = 0; j < n; j++) v[j] *= scale;
    }
}

/* The path's table. KERNEL_WEIGHT_GRADIENT: 1 where gemm_at_b beat the BLAS at the weight
 * gradient on the path's CPUs (kernels_<path>.c says where that was measured). */
const KernelTable KERNEL_TABLE = {
    .name = KERNEL_PATH_NAME,
    .gemm = KERNEL(gemm),
    .gemm_rows = KERNEL(gemm_rows),
    .gemm_at_b = KERNEL(gemm_at_b),
    .weight_gradient_by_gemm_at_b = KERNEL_WEIGHT_GRADIENT,
    .layernorm_forward = KERNEL(layernorm_forward),
    .layernorm_backward = KERNEL(layernorm_backward),
    .column_sum_add = KERNEL(column_sum_add),
    .attention_forward = KERNEL(attention_forward),
    .attention_backward = KERNEL(attention_backward),
    .gelu_forward = KERNEL(gelu_forward),
    .gelu_backward = KERNEL(gelu_backward),
    .gelu_forward_saving = KERNEL(gelu_forward_saving),
    .gelu_backward_saved = KERNEL(gelu_backward_saved),
    .residual_forward = KERNEL(residual_forward),
    .crossentropy_forward_backward = KERNEL(crossentropy_forward_backward),
    .exp_array = KERNEL(exp_array),
    .hadamard = KERNEL(hadamard),
};
