/* budget: what a model costs to store (README: Budgets: what a model stores), counted from the
 * tensor table and the scheme alone: each quantized tensor's codes (numel x bits) and one scale
 * (and, asymmetric, one minimum) per span at the scale dtype's width, every other tensor at 32
 * bits, corrections at their stored width. */
#ifndef QCORR_BUDGET_H
#define QCORR_BUDGET_H

#include "correct/correct.h"
#include "quant/quant.h"

typedef struct {
    double codes, scales;      /* the quantized tensors' codes, and their scales and minimums */
    double quantized_weights;  /* how many values are quantized */
    double float_bits;         /* every other tensor, 32 bits a value */
} ModelBits;

/* scheme NULL (or 32 bits): the float model. */
void model_bits(const GPTConfig *cfg, const QuantScheme *scheme, ModelBits *out);
double model_bits_total(const ModelBits *b);
/* (codes + scales) / quantized weights; NaN when nothing is quantized. */
double bits_per_weight(const ModelBits *b);

/* The bits a correction layout stores: its matrices at stored_bits (32: float32; 2..16: per-row
 * integer codes plus one f16 scale a row, as corrections_store_narrow quantizes them), its
 * vectors at 32 bits. */
double correction_storage_bits(const GPTConfig *cfg, const CorrectionLayout *layout, int stored_bits);
/* The same for corrections in memory, at their stored_bits. */
double corrections_storage_bits(const Corrections *c);

#endif
