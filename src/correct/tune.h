/* tune: the methods that train the quantized model's own parameters and store exactly what it
 * stores (0 extra bits; methods.h's tunes column): normtweak trains the LayerNorm weights and
 * biases (float already), qat every quantized weight on its grid by the straight-through
 * estimator, scales each span's stored scale (and minimum) with its integer codes fixed (PEQA), lwc
 * the same scale and minimum with the codes following them (learned clipping, OmniQuant's LWC in
 * log form). Each is a FitParams (experiment.h) over copies of what it trains, so the training
 * loop, its step rules and --steps auto are correction_fit's. */
#ifndef QCORR_TUNE_H
#define QCORR_TUNE_H

#include "correct/experiment.h"
#include "quant/fakequant.h"

/* A run of trained values: q->params[at .. at+n) are params[from .. from+n); qat: one span of
 * the scheme, with its grid (the stored scale and minimum) and its range [lo, hi] (the extreme
 * codes' values). scales: one span of `span` weights at q->params[at..), whose codes are
 * codes[code_at ..), trained through n = 1 (symmetric) or 2 (asymmetric) values: params[from] =
 * θ with scale = round_dtype(grid.scale · e^θ), and params[from+1] = μ with minimum =
 * round_dtype(grid.minimum + μ · grid.scale), both 0 at the start (the quantized model). lwc: the
 * same two values a span, the codes those of the float weights on the stored grid. */
typedef struct {
    size_t at, from, n, span, code_at;
    SpanGrid grid;
    double lo, hi;
} TuneRange;

typedef struct {
    TuneTarget target;
    int bits, asymmetric;
    ScaleDtype scale_dtype;
    int16_t *codes; /* scales: every trained span's codes */
    const float *float_params; /* lwc: the float model's parameters, which the codes follow */
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
/* The grid a span of n float weights gets from the scheme's own fit, without calibration data
 * (rtn: absmax; mse, and gptq's fit: the clip search unweighted): qat's, scales' and adaround's. */
SpanGrid tune_refit_grid(const float *w, int n, const QuantScheme *s);
/* scales: the stored scale and minimum of range r under the current parameters. */
SpanGrid tuning_grid(const Tuning *t, const TuneRange *r);
void tuning_free(Tuning *t);
/* params into q: normtweak copies; qat clamps each value to its range and writes its grid value
 * (code * scale (+ minimum)), the straight-through forward; scales writes each code times its
 * span's stored scale (plus its stored minimum). */
void tuning_apply(void *tuning, GPT *q);
/* grads = q->grads of the trained values: the straight-through estimator for qat (the gradient at
 * the grid value is the latent value's); scales: dθ = Σ_k g_k · code_k · grid.scale · e^θ and
 * dμ = Σ_k g_k · grid.scale (the rounding to the storage type passed straight through). */
void tuning_collect(void *tuning, const GPT *q);
/* lwc: each weight is its float weight rounded onto its span's stored grid (tuning_grid), so the
 * codes follow the scale; the gradients are lwc_span_grads' (straight-through). */
void lwc_span_grads(const float *w, const float *g, size_t n, SpanGrid stored, double s0e, double s0, int bits, int asymmetric,
                    double *dtheta, double *dmu);
/* The method that trains target (its name in the method table). */
const char *tune_target_name(TuneTarget t);

/* Trains the method's target of q in place on the calibration windows (correction_fit's loop; c:
 * the method's empty corrections, for the hook; adaround: adaround_fit's layer-by-layer walk).
 * The validation split is never read. */
int tune_fit(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out);

#endif
