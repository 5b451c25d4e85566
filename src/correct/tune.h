/* tune: the methods that train the quantized model's own parameters and store exactly what it
 * stores (0 extra bits; methods.h's tunes column): normtweak trains the LayerNorm weights and
 * biases (float already), qat every quantized weight on its grid by the straight-through
 * estimator. Each is a FitParams (experiment.h) over copies of what it trains, so the training
 * loop, its step rules and --steps auto are correction_fit's. */
#ifndef QCORR_TUNE_H
#define QCORR_TUNE_H

#include "correct/experiment.h"
#include "quant/fakequant.h"

/* A run of trained values: q->params[at .. at+n) are params[from .. from+n); qat: one span of
 * the scheme, with its grid (the stored scale and minimum) and its range [lo, hi] (the extreme
 * codes' values). */
typedef struct {
    size_t at, from, n;
    SpanGrid grid;
    double lo, hi;
} TuneRange;

typedef struct {
    TuneTarget target;
    int bits, asymmetric;
    int n_ranges;
    TuneRange *ranges;
    float *memory;  /* params, grads, AdamW m and v */
    FitParams fit;
} Tuning;

/* What target trains of q. normtweak: every ROLE_NORM tensor (refused when the scheme quantizes
 * them). qat: every tensor the scheme quantized, one range a span, its grid refitted from the
 * float model f's weights by the scheme's grid fit (rtn: absmax; mse, and gptq's fit: the clip
 * search unweighted) and kept for the whole training; refused unless every quantized weight of q
 * lies on that grid (a grid fitted on calibration data cannot be refitted from f). params start
 * at q's values, so step 0 is the quantized model. */
int tuning_init(Tuning *t, TuneTarget target, const GPT *q, const GPT *f, const QuantScheme *s);
void tuning_free(Tuning *t);
/* params into q: normtweak copies; qat clamps each value to its range and writes its grid value
 * (code * scale (+ minimum)), the straight-through forward. */
void tuning_apply(void *tuning, GPT *q);
/* grads = q->grads of the trained values: the straight-through estimator for qat (the gradient at
 * the grid value is the latent value's). */
void tuning_collect(void *tuning, const GPT *q);

/* Trains the method's target of q in place on the calibration windows (correction_fit's loop; c:
 * the method's empty corrections, for the hook). The validation split is never read. */
int tune_fit(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out);

#endif
