/* transform: the activation-quantization methods that change the float model before the quantizer
 * (README: Transforms) — SmoothQuant's per-channel scales migrated from the activations into the
 * weights, and the randomized Hadamard rotations of QuaRot / QuIP#: of the residual stream,
 * folded into the weights on both sides, and online at the inputs of attn.c_proj and mlp.c_proj.
 * Each leaves the float model's function unchanged (to float rounding: tested); the quantizers
 * (rtn, mse, gptq) then run on the transformed model. */
#ifndef QCORR_TRANSFORM_H
#define QCORR_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

/* The parts of a transform (bit flags), applied in this order: rotate (stream), online, smooth. */
enum {
    TRANSFORM_ROTATE = 1u, /* the residual stream by Q = H D H (D: seeded signs), folded */
    TRANSFORM_ONLINE = 2u, /* H D at the inputs of attn.c_proj and mlp.c_proj, online; W D H folded */
    TRANSFORM_SMOOTH = 4u, /* SmoothQuant at the inputs it folds into (LayerNorms, V) */
};

typedef struct {
    unsigned kinds;       /* TRANSFORM_* bits; 0: none */
    double smooth_alpha;  /* SmoothQuant's migration strength alpha in [0, 1] (0.5) */
    uint64_t rotate_seed; /* the seed of every sign the rotations draw (0) */
} TransformScheme;

void transform_default(TransformScheme *t);
/* "none", or '+'-joined parts: "smooth", "online", "rotate" (the stream rotation with the online
 * transforms: "rotate" means both), e.g. "rotate+smooth". Sets kinds only. */
int transform_parse(const char *text, TransformScheme *t);
/* kinds as transform_parse reads them: "none", "smooth", "online", "rotate", "online+smooth",
 * "rotate+smooth" */
void transform_kinds_name(unsigned kinds, char *out, size_t size);
/* With the parameters that apply: "rotate:seed=0", "smooth:alpha=0.5", "rotate+smooth:seed=0:alpha=0.5" */
void transform_describe(const TransformScheme *t, char *out, size_t size);
int transform_check(const TransformScheme *t);
/* Whether it needs calibration windows (smooth: max |x| per channel) */
int transform_needs_calibration(const TransformScheme *t);
/* The block slots with an online transform (gpt_set_online's argument) */
unsigned transform_online_slots(const TransformScheme *t);
/* The names of those slots, "attn.c_proj,mlp.c_proj" ("" for none) */
void transform_online_names(unsigned slots, char *out, size_t size);

/* Applies t to the float model m in place (the online transforms switched on with the weights
 * they fold into); smooth reads the calibration windows (n_windows, T), with activation
 * quantization off. Refuses (nothing changed) a d_model or 4 d_model that is no power of two for
 * a rotation, and smooth without windows. */
int transform_model(GPT *m, const TransformScheme *t, const int32_t *windows, int n_windows, int T);

/* The parts, for tests. */
int rotate_stream(GPT *m, uint64_t seed);
int rotate_online(GPT *m, uint64_t seed);
int smooth_model(GPT *m, double alpha, const int32_t *windows, int n_windows, int T);
/* The stream rotation's D (d_model signs: gpt_online_signs of linear -1). */
void rotation_signs(float *signs, uint64_t seed, int C);
/* SmoothQuant's scales of one matrix's input: s_j = max|x_j|^alpha / max_i |w_ij|^(1 - alpha)
 * for the weight w (rows, cols); 1 where either maximum is 0. */
void smooth_scales(double *s, const double *act_absmax, const float *w, int rows, int cols, double alpha);

#endif
