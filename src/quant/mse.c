/* mse: each span's grid from the clip search (fakequant.h: the clip ratio whose levels minimise
 * the span's squared error), with one option, --mse-weighted: each input column's error weighted
 * by its calibration E[x^2], which then needs calibration data. */
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static int quantize_tensor_mse(float *out, const float *w, int rows, int cols, const QuantScheme *s, const CalibStats *stats) {
    int span = quant_span(s, rows, cols);
    const double *column_weight = s->options.mse_weighted && stats ? stats->mean_square : NULL;
    double *weight = NULL; /* a tensor-wide span: the column weights repeated for every row */
    if (column_weight && span > cols) {
        weight = qc_malloc((size_t)span * sizeof(double), "mse weights");
        if (!weight) return -1;
        for (int k = 0; k < span; k++) weight[k] = column_weight[k % cols];
    }
    size_t count = (size_t)rows * cols;
#pragma omp parallel for schedule(dynamic, 4)
    for (long off = 0; off < (long)count; off += span) {
        const double *wt = weight ? weight : column_weight ? column_weight + off % cols : NULL;
        quantize_span_mse_ref(out + off, w + off, span, s->bits, s->asymmetric, s->scale_dtype, wt);
    }
    free(weight);
    return 0;
}

/* the search unweighted: the weights alone */
static SpanGrid mse_grid(const float *w, int n, const QuantScheme *s) {
    return span_grid_fit_mse(w, n, s->bits, s->asymmetric, s->scale_dtype, NULL, NULL);
}

int mse_weighted_parse(const char *name, const char *text, QuantScheme *s) {
    long v;
    if (parse_int(name, text, 0, 1, &v) != 0) return -1;
    s->options.mse_weighted = (int)v;
    return 0;
}
void mse_weighted_format(const QuantScheme *s, char *out, size_t size) { snprintf(out, size, "%d", s->options.mse_weighted); }
static const char *const weighted_examples[] = {"1", NULL};
static const QuantizerOption weighted_option = {"--mse-weighted", 0, "mse search weighted per input column by calibration E[x^2]",
                                                "quant_mse_weighted", NULL, mse_weighted_parse, mse_weighted_format, weighted_examples};

static int mse_needs_data(const QuantScheme *s) { return s->options.mse_weighted; }
static void mse_describe(const QuantScheme *s, char *out, size_t size) {
    if (s->options.mse_weighted) snprintf(out + strlen(out), size - strlen(out), ":weighted");
}

static const QuantizerOption *const mse_options[] = {&weighted_option, NULL};
const QuantizerOps mse_quantizer = {.quantize = quantize_tensor_mse,
                                    .grid_fit = mse_grid,
                                    .needs_data = mse_needs_data,
                                    .describe = mse_describe,
                                    .options = mse_options};
