/* fakequant: the float-only fake-quantization kernels (quantize, then dequantize back to float) —
 * round-to-nearest spans of weights with their scale rounded to its storage type, and per-token
 * activation quantization. No model, no scheme: the quantizers (quant.c) and the model call these. */
#ifndef QCORR_FAKEQUANT_H
#define QCORR_FAKEQUANT_H

#include <stddef.h>

/* The storage type of a scale (and of an asymmetric minimum). SCALE_EXACT keeps the double the
 * scale was computed in (no storage rounding: no real format is that cheap). */
typedef enum { SCALE_F16, SCALE_BF16, SCALE_F32, SCALE_EXACT } ScaleDtype;

/* Bits one stored scale takes (64 for SCALE_EXACT). */
int scale_dtype_bits(ScaleDtype t);
const char *scale_dtype_name(ScaleDtype t); /* "f16", "bf16", "f32", "f64" */
/* -1 (no message) when the text names no dtype. */
int scale_dtype_parse(const char *text, ScaleDtype *out);
/* x rounded to the nearest value of type t (ties to even). Finite values beyond the type's range
 * saturate to its largest finite value: a scale never becomes infinite. */
double round_to_dtype(double x, ScaleDtype t);

/* The specification of weight quantization: one scale (and, asymmetric, one minimum) over
 * in[0..n), computed in double from the span's extremes, each rounded to its dtype, then used.
 * Symmetric absmax: scale = absmax / (2^(b-1)-1), codes -(2^(b-1)-1)..2^(b-1)-1; asymmetric:
 * min = lo, scale = (hi - lo) / (2^b - 1), codes 0..2^b-1. Codes are round((x - min) / scale),
 * ties to even, clamped to the codes (a scale rounded down can push the extreme one code past
 * the last: it is clamped); each dequantized value code * scale (+ min) is rounded once to
 * float. A scale that rounds to zero (a span of one value, or tinier than the dtype's smallest
 * subnormal) stores every code as 0: the span becomes zero, or its stored minimum. out may alias in. */
void quantize_span_ref(float *out, const float *in, int n, int bits, int asymmetric, ScaleDtype dtype);
/* The grid of one span, split from quantize_span_ref so a quantizer can fit it once and apply it
 * value by value (GPTQ) or try several (the clip search): scale and minimum (0 when symmetric),
 * both already rounded to their dtype. ratio clips the range before the fit: symmetric scale =
 * round((ratio * absmax) / qmax); asymmetric minimum = round(ratio * min), scale =
 * round((ratio * max - minimum) / (2^b - 1)), so the top code lands on the clipped maximum from
 * the minimum as stored. ratio 1 is quantize_span_ref's grid exactly. */
typedef struct {
    double scale, minimum;
} SpanGrid;
SpanGrid span_grid_fit(const float *in, int n, int bits, int asymmetric, ScaleDtype dtype, double ratio);
/* One value on a grid: code = round(x / scale) (ties to even), clamped, dequantized, rounded once to
 * float; a zero scale gives code 0 (0, or the minimum). */
float span_grid_apply(double x, SpanGrid g, int bits, int asymmetric);

/* The mse quantizer's clip search (as llama.cpp's k-quants and AWQ's clip search): candidate
 * ratio_k = 1 - 0.5 k / 99, k = 0..99 (1.0 down to 0.5, linear); the span is quantized with each
 * grid and the one of least sum_i weight_i (x_i - Q(x_i))^2 wins (float32 Q, summed in double;
 * weight NULL: all 1). Ties keep the larger ratio, so k = 0, round-to-nearest, stays unless another
 * is strictly better: never a larger (weighted) error than RTN. *chosen (may be NULL) gets k. */
#define MSE_CLIP_CANDIDATES 100
#define MSE_CLIP_LOWEST 0.5
double mse_clip_ratio(int index);
SpanGrid span_grid_fit_mse(const float *in, int n, int bits, int asymmetric, ScaleDtype dtype, const double *weight, int *chosen);
/* The specification of the mse quantizer on one span (weight: n values or NULL); returns k. out may
 * alias in. */
int quantize_span_mse_ref(float *out, const float *in, int n, int bits, int asymmetric, ScaleDtype dtype, const double *weight);

/* A matrix (rows x cols) cut into spans of `span` consecutive weights (span divides rows*cols
 * and each span lies in a row, or covers whole rows), each quantized by quantize_span_ref;
 * spans are independent, so threads split them with no effect on the result. */
void quantize_spans(float *out, const float *in, size_t count, int span, int bits, int asymmetric, ScaleDtype dtype);

/* Activations: per row, symmetric absmax, computed entirely in float32 (scale = absmax / qmax,
 * code = round(x / scale) ties to even, value = code * scale), as a dynamic per-token int-b
 * kernel would. The _ref is the specification; the fast version gives the same bits. */
void quantize_activations_ref(float *out, const float *in, int rows, int cols, int bits);
void quantize_activations(float *out, const float *in, int rows, int cols, int bits);

/* The general activation grid (README: Activation quantization), float32 throughout as an int-b
 * kernel computes it, from a range [lo, hi]. Symmetric: a = max(|lo|, |hi|), scale = a / qmax,
 * codes -qmax..qmax (qmax = 2^(b-1)-1), zero point 0 — quantize_activations' grid exactly.
 * Asymmetric: the range widened to hold 0 (lo = min(lo, 0), hi = max(hi, 0), as PyTorch's
 * observers do, so 0 stays exact), scale = (hi - lo) / (2^b - 1), integer zero point
 * z = clamp(rint(-lo / scale), 0, 2^b - 1), codes 0..2^b-1. A value: q = clamp(rint(x / scale) + z)
 * (ties to even), dequantized (q - z) * scale; a zero scale gives 0. */
typedef struct {
    float scale, zero, qmin, qmax;
} ActGrid;
ActGrid act_grid(float lo, float hi, int bits, int asymmetric);
/* The specification of one value; act_grid_apply gives the same bits over n values (out may alias in). */
float act_grid_value(float x, ActGrid g);
void act_grid_apply(float *out, const float *in, long n, ActGrid g);
/* The range of n values: min and max (symmetric grids only use max(|lo|, |hi|)). n >= 1. */
void act_range(const float *x, long n, float *lo, float *hi);
/* Per row (per token): rows of cols at strides ldo / ldi, each on the grid of its own range; out
 * may alias in (ldo == ldi). Threads split the rows when there are many. */
void act_quantize_rows(float *out, long ldo, const float *in, long ldi, int rows, int cols, int bits, int asymmetric);
/* One grid over all rows (a tensor): its range over every value, or the given one (static). */
void act_quantize_block(float *out, long ldo, const float *in, long ldi, int rows, int cols, int bits, int asymmetric);
void act_quantize_fixed(float *out, long ldo, const float *in, long ldi, int rows, int cols, ActGrid g);

#endif
