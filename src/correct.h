/* correct: learned correction layers at the sites of SPEC section 4 — linear x + x.W^T + b or
 * MLP x + gelu(x.W1^T + b1).W2^T + b2 — entering the frozen model through its StreamHook. */
#ifndef QCORR_CORRECT_H
#define QCORR_CORRECT_H

#include <stddef.h>

#include "checkpoint.h"
#include "model.h"
#include "sites.h" /* the site rule: correction_is_site, correction_first_site */

typedef enum { OBJECTIVE_CE, OBJECTIVE_KL, OBJECTIVE_MSE } Objective;

/* One site's parameters; linear sites use weight/bias, MLP sites the fc_/proj_ pairs. */
typedef struct {
    int block;          /* the block this site follows */
    float *weight, *bias;                         /* (d,d), (d) */
    float *fc_weight, *fc_bias, *proj_weight, *proj_bias; /* (h,d), (h), (d,h), (d) */
    /* saved activations (max_rows) */
    const float *input;  /* the stream the site read */
    float *hidden_pre, *hidden, *output;
} CorrectionSite;

typedef struct {
    int d, hidden, every, n_sites, n_layer;
    int site_of_block[256];     /* -1: no site after that block */
    CorrectionSite *sites;
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v; /* one allocation each */
    int max_rows;
    float *act_memory;
    float *dscratch, *dhidden;  /* backward scratch: (rows,d), (rows,h) */
    /* MSE objective: the float model's stream after each site's block (site order) */
    const float *const *mse_targets;
    double mse_loss;            /* summed by the forward hook: mean over sites of per-site MSE */
    StreamHook hook;
} Corrections;

int corrections_init(Corrections *c, const GPTConfig *cfg, int every, int hidden, int max_rows, uint64_t seed);
void corrections_free(Corrections *c);
void corrections_zero_grad(Corrections *c);

/* Checkpoint names: corrections.{j}.weight|bias (linear), corrections.{j}.fc.*, .proj.* (MLP). */
int corrections_tensors(const Corrections *c, StWriteTensor *out, int max_out); /* returns count */
#define CORRECTION_META_COUNT 4
void corrections_to_meta(const Corrections *c, StMeta *out);
/* 1: corrections read from st (metadata + tensors); 0: none in the file; -1: error. */
int corrections_load(Corrections *c, const SafeTensors *st, const GPTConfig *cfg, int max_rows);

/* KL(p_target || softmax(logits)) per row, mean over rows; dlogits (may be NULL) gets its
 * gradient times dloss. target_logits are the float model's. */
double kl_forward_backward(float *dlogits, const float *logits, const float *target_logits, int N, int V, float dloss);

#endif
