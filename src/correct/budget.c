/* budget: see budget.h. */
#include "correct/budget.h"

#include <math.h>
#include <stdlib.h>

void model_bits(const GPTConfig *cfg, const QuantScheme *scheme, ModelBits *out) {
    *out = (ModelBits){0};
    /* the tensor table without allocating a model: the same walk gpt_init makes */
    int V = cfg->vocab_size, P = cfg->ctx, C = cfg->d_model;
    int quantized = scheme && scheme->bits < 32;
    int per_span = quantized ? scale_dtype_bits(scheme->scale_dtype) * (scheme->asymmetric ? 2 : 1) : 0;
#define COUNT(field, name, r, c, role)                                                                 \
    {                                                                                                  \
        int rows = (c) != 0 ? (r) : 1, cols = (c) != 0 ? (c) : (r);                                            \
        double n = (double)rows * cols;                                                                \
        if (quantized && (scheme->scope & SCOPE_OF(role))) {                                           \
            out->codes += n * scheme->bits;                                                            \
            out->scales += n / quant_span(scheme, rows, cols) * per_span;                              \
            out->quantized_weights += n;                                                               \
        } else {                                                                                       \
            out->float_bits += 32.0 * n;                                                               \
        }                                                                                              \
    }
    GPT_EMBEDDING_TENSORS(COUNT)
    for (int l = 0; l < cfg->n_layer; l++) { GPT_LAYER_TENSORS(COUNT) }
    GPT_HEAD_TENSORS(COUNT)
#undef COUNT
    (void)V; (void)P; (void)C;
}

double model_bits_total(const ModelBits *b) { return b->codes + b->scales + b->float_bits; }

double bits_per_weight(const ModelBits *b) { return b->quantized_weights > 0 ? (b->codes + b->scales) / b->quantized_weights : NAN; }

/* one correction tensor: a matrix at stored_bits with an f16 scale a row, or float32 */
static double tensor_bits(int rows, int cols, int stored_bits) {
    double count = (double)rows * (cols ? cols : 1);
    if (cols && stored_bits < 32) return count * stored_bits + (double)rows * scale_dtype_bits(SCALE_F16);
    return 32.0 * count;
}

double corrections_storage_bits(const Corrections *c) {
    double bits = 0.0;
    if (c->ops->fold) return 0.0; /* stored folded into the base's own tensors: nothing of its own */
    for (int j = 0; j < c->n_sites; j++) {
        SiteTensor t[SITE_MAX_TENSORS];
        int k = c->ops->tensors(c->sites[j].in, c->sites[j].out, c->sites[j].size, t);
        for (int i = 0; i < k; i++) bits += tensor_bits(t[i].rows, t[i].cols, c->stored_bits);
    }
    return bits;
}

double correction_storage_bits(const GPTConfig *cfg, const CorrectionLayout *layout, int stored_bits) {
    int max = 4 * gpt_linear_count(cfg) + 4 * cfg->n_layer;
    CorrectionTensor *t = malloc((size_t)max * sizeof *t);
    if (!t) return NAN;
    int n = correction_layout_tensors(cfg, layout, t, max);
    double bits = n < 0 ? NAN : 0.0;
    for (int i = 0; i < n; i++) bits += tensor_bits(t[i].rows, t[i].cols, stored_bits);
    free(t);
    return bits;
}
