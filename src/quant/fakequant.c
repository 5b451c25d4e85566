/* fakequant: see fakequant.h. Storage rounding is done in software on doubles (scaling by powers
 * of two is exact, nearbyint rounds ties to even), so every platform gives the same scales. */
#include "quant/fakequant.h"

#include <float.h>
#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    int bits;
    int mantissa;  /* explicit significand bits */
    int min_exp;   /* exponent of the smallest normal */
    double max;    /* largest finite */
} dtypes[] = {
    [SCALE_F16] = {"f16", 16, 10, -14, 65504.0},
    [SCALE_BF16] = {"bf16", 16, 7, -126, 3.3895313892515355e38},
    [SCALE_F32] = {"f32", 32, 23, -126, FLT_MAX},
    [SCALE_EXACT] = {"f64", 64, 52, -1022, DBL_MAX},
};

int scale_dtype_bits(ScaleDtype t) { return dtypes[t].bits; }
const char *scale_dtype_name(ScaleDtype t) { return dtypes[t].name; }

int scale_dtype_parse(const char *text, ScaleDtype *out) {
    for (int t = 0; t <= SCALE_EXACT; t++)
        if (strcmp(text, dtypes[t].name) == 0) {
            *out = (ScaleDtype)t;
            return 0;
        }
    return -1;
}

double round_to_dtype(double x, ScaleDtype t) {
    if (t == SCALE_EXACT || x == 0.0 || !isfinite(x)) return x;
    double a = fabs(x);
    if (a >= dtypes[t].max) return copysign(dtypes[t].max, x);
    int e;
    frexp(a, &e); /* a = f * 2^e, f in [0.5, 1): the leading bit is 2^(e-1) */
    e -= 1;
    if (e < dtypes[t].min_exp) e = dtypes[t].min_exp; /* subnormal: a fixed quantum */
    double quantum = ldexp(1.0, e - dtypes[t].mantissa);
    double r = nearbyint(a / quantum) * quantum;
    if (r > dtypes[t].max) r = dtypes[t].max; /* rounded up past the largest finite: saturate */
    return copysign(r, x);
}

SpanGrid span_grid_fit(const float *in, int n, int bits, int asymmetric, ScaleDtype dtype, double ratio) {
    SpanGrid g = {0.0, 0.0};
    if (n <= 0) return g;
    if (!asymmetric) {
        double qmax = (double)((1 << (bits - 1)) - 1), absmax = 0.0;
        for (int i = 0; i < n; i++) absmax = fmax(absmax, fabs((double)in[i]));
        g.scale = round_to_dtype((ratio * absmax) / qmax, dtype);
        return g;
    }
    double levels = (double)((1 << bits) - 1), lo = in[0], hi = in[0];
    for (int i = 1; i < n; i++) {
        lo = fmin(lo, in[i]);
        hi = fmax(hi, in[i]);
    }
    /* both from the span's own (clipped) extremes, as ggml's q4_1 does, then each stored */
    g.scale = round_to_dtype((ratio * hi - ratio * lo) / levels, dtype);
    g.minimum = round_to_dtype(ratio * lo, dtype);
    return g;
}

float span_grid_apply(double x, SpanGrid g, int bits, int asymmetric) {
    if (!asymmetric) {
        if (g.scale == 0.0) return 0.0f;
        double qmax = (double)((1 << (bits - 1)) - 1), q = nearbyint(x / g.scale);
        if (q > qmax) q = qmax;
        if (q < -qmax) q = -qmax;
        return (float)(q * g.scale);
    }
    if (g.scale == 0.0) return (float)g.minimum;
    double levels = (double)((1 << bits) - 1), q = nearbyint((x - g.minimum) / g.scale);
    if (q > levels) q = levels;
    if (q < 0) q = 0;
    return (float)(g.minimum + q * g.scale);
}

void quantize_span_ref(float *out, const float *in, int n, int bits, int asymmetric, ScaleDtype dtype) {
    SpanGrid g = span_grid_fit(in, n, bits, asymmetric, dtype, 1.0);
    for (int i = 0; i < n; i++) out[i] = span_grid_apply((double)in[i], g, bits, asymmetric);
}

double mse_clip_ratio(int index) { return 1.0 - (MSE_CLIP_LOWEST * index) / (MSE_CLIP_CANDIDATES - 1); }

/* sum_i weight_i (in_i - Q(in_i))^2 in double over the float32 dequantized values */
static double span_grid_error(const float *in, int n, SpanGrid g, int bits, int asymmetric, const double *weight) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        double e = (double)in[i] - (double)span_grid_apply((double)in[i], g, bits, asymmetric);
        sum += (weight ? weight[i] : 1.0) * e * e;
    }
    return sum;
}

SpanGrid span_grid_fit_mse(const float *in, int n, int bits, int asymmetric, ScaleDtype dtype, const double *weight, int *chosen) {
    SpanGrid best = span_grid_fit(in, n, bits, asymmetric, dtype, 1.0);
    double best_error = span_grid_error(in, n, best, bits, asymmetric, weight);
    int best_index = 0;
    for (int k = 1; k < MSE_CLIP_CANDIDATES; k++) {
        SpanGrid g = span_grid_fit(in, n, bits, asymmetric, dtype, mse_clip_ratio(k));
        double e = span_grid_error(in, n, g, bits, asymmetric, weight);
        if (e < best_error) { /* strictly: ties keep the larger ratio */
            best = g;
            best_error = e;
            best_index = k;
        }
    }
    if (chosen) *chosen = best_index;
    return best;
}

int quantize_span_mse_ref(float *out, const float *in, int n, int bits, int asymmetric, ScaleDtype dtype, const double *weight) {
    int chosen = 0;
    SpanGrid g = span_grid_fit_mse(in, n, bits, asymmetric, dtype, weight, &chosen);
    for (int i = 0; i < n; i++) out[i] = span_grid_apply((double)in[i], g, bits, asymmetric);
    return chosen;
}

void quantize_spans(float *out, const float *in, size_t count, int span, int bits, int asymmetric, ScaleDtype dtype) {
#pragma omp parallel for schedule(static)
    for (long off = 0; off < (long)count; off += span) quantize_span_ref(out + off, in + off, span, bits, asymmetric, dtype);
}

static float row_absmax(const float *x, int n) {
    float m = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
    }
    return m;
}

void quantize_activations_ref(float *out, const float *in, int rows, int cols, int bits) {
    float qmax = (float)((1 << (bits - 1)) - 1);
    for (int r = 0; r < rows; r++) {
        const float *x = in + (long)r * cols;
        float *y = out + (long)r * cols;
        float scale = row_absmax(x, cols) / qmax;
        for (int i = 0; i < cols; i++) {
            float q = scale > 0.0f ? nearbyintf(x[i] / scale) : 0.0f;
            if (q > qmax) q = qmax;
            if (q < -qmax) q = -qmax;
            y[i] = q * scale;
        }
    }
}

/* The same arithmetic as the reference, written so the compiler vectorizes it (2-3x the scalar
 * double loop it replaced, 4096 x 1024 at 8 bits, one thread): every operation is an exactly
 * rounded IEEE float operation (division, rint in the default round-to-nearest-even mode, compare,
 * product), so vector lanes give the reference's bits. The zero-scale row is handled apart, and
 * the clamps are plain compares (fminf/fmaxf's NaN rules keep GCC from vectorizing them). The
 * general grid (act_grid_apply) with zero point 0 is this arithmetic: (q - 0) * scale = q * scale. */
void quantize_activations(float *out, const float *in, int rows, int cols, int bits) {
    act_quantize_rows(out, cols, in, cols, rows, cols, bits, 0);
}

ActGrid act_grid(float lo, float hi, int bits, int asymmetric) {
    ActGrid g;
    if (!asymmetric) {
        float a = fabsf(lo) > fabsf(hi) ? fabsf(lo) : fabsf(hi);
        g.qmax = (float)((1 << (bits - 1)) - 1);
        g.qmin = -g.qmax;
        g.scale = a / g.qmax;
        g.zero = 0.0f;
        return g;
    }
    lo = lo < 0.0f ? lo : 0.0f;
    hi = hi > 0.0f ? hi : 0.0f;
    g.qmin = 0.0f;
    g.qmax = (float)((1 << bits) - 1);
    g.scale = (hi - lo) / g.qmax;
    g.zero = 0.0f;
    if (g.scale > 0.0f) {
        float z = nearbyintf(-lo / g.scale);
        g.zero = z < 0.0f ? 0.0f : z > g.qmax ? g.qmax : z;
    }
    return g;
}

/* Symmetric grids skip the zero point (q + 0 would turn a -0 code into +0: quantize_activations_ref's
 * bits are kept, signed zeros included). */
float act_grid_value(float x, ActGrid g) {
    if (!(g.scale > 0.0f)) return 0.0f;
    float q = nearbyintf(x / g.scale);
    if (g.qmin < 0.0f) {
        q = q > g.qmax ? g.qmax : q < g.qmin ? g.qmin : q;
        return q * g.scale;
    }
    q += g.zero;
    if (q > g.qmax) q = g.qmax;
    if (q < g.qmin) q = g.qmin;
    return (q - g.zero) * g.scale;
}

void act_grid_apply(float *out, const float *in, long n, ActGrid g) {
    if (!(g.scale > 0.0f)) {
        memset(out, 0, (size_t)n * sizeof(float));
        return;
    }
    float scale = g.scale, zero = g.zero, qmin = g.qmin, qmax = g.qmax;
    if (qmin < 0.0f) {
        for (long i = 0; i < n; i++) {
            float q = rintf(in[i] / scale);
            q = q > qmax ? qmax : q;
            q = q < qmin ? qmin : q;
            out[i] = q * scale;
        }
        return;
    }
    for (long i = 0; i < n; i++) {
        float q = rintf(in[i] / scale) + zero;
        q = q > qmax ? qmax : q;
        q = q < qmin ? qmin : q;
        out[i] = (q - zero) * scale;
    }
}

void act_range(const float *x, long n, float *lo, float *hi) {
    float a = x[0], b = x[0];
    for (long i = 1; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
}

void act_quantize_rows(float *out, long ldo, const float *in, long ldi, int rows, int cols, int bits, int asymmetric) {
#pragma omp parallel for schedule(static) if ((long)rows * cols >= 32768)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (long)r * ldi;
        float lo, hi;
        if (asymmetric) {
            act_range(x, cols, &lo, &hi);
        } else {
            lo = 0.0f;
            hi = row_absmax(x, cols);
        }
        act_grid_apply(out + (long)r * ldo, x, cols, act_grid(lo, hi, bits, asymmetric));
    }
}

void act_quantize_fixed(float *out, long ldo, const float *in, long ldi, int rows, int cols, ActGrid g) {
#pragma omp parallel for schedule(static) if ((long)rows * cols >= 32768)
    for (int r = 0; r < rows; r++) act_grid_apply(out + (long)r * ldo, in + (long)r * ldi, cols, g);
}

void act_quantize_block(float *out, long ldo, const float *in, long ldi, int rows, int cols, int bits, int asymmetric) {
    float lo, hi;
    act_range(in, cols, &lo, &hi);
    for (int r = 1; r < rows; r++) {
        float a, b;
        act_range(in + (long)r * ldi, cols, &a, &b);
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
    }
    act_quantize_fixed(out, ldo, in, ldi, rows, cols, act_grid(lo, hi, bits, asymmetric));
}
