/* rtn: the quantizer table's first entry (QUANTIZERS in methods.h) — each span rounded to the
 * nearest level of its absmax (or min/max) grid; no data, no options. */
#include "quant/quant.h"

static int quantize_tensor_rtn(float *out, const float *w, int rows, int cols, const QuantScheme *s, const CalibStats *stats) {
    (void)stats;
    quantize_spans(out, w, (size_t)rows * cols, quant_span(s, rows, cols), s->bits, s->asymmetric, s->scale_dtype);
    return 0;
}

static SpanGrid rtn_grid(const float *w, int n, const QuantScheme *s) { return span_grid_fit(w, n, s->bits, s->asymmetric, s->scale_dtype, 1.0); }

const QuantizerOps rtn_quantizer = {.quantize = quantize_tensor_rtn, .grid_fit = rtn_grid};
