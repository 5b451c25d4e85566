/* correct: correction layers. Each kind is an entry of CORRECTION_KINDS (methods.h) with its
 * tensors, starting values, forward and backward here; stream kinds sit after blocks at the sites
 * of the README's Correction layers, linear kinds on one matrix's output; all enter the frozen
 * model by its hook. */
#ifndef QCORR_CORRECT_H
#define QCORR_CORRECT_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "nn/actscheme.h"
#include "nn/model.h"
#include "tables/methods.h"
#include "tables/sites.h" /* the site rule: correction_is_site, correction_first_site */

typedef enum { OBJECTIVE_CE, OBJECTIVE_KL, OBJECTIVE_MSE } Objective;

#define SITE_MAX_TENSORS 4

/* How a correction stored at integer codes runs its own products under activation quantization
 * (README: Correction layers under activation quantization): each product's input at the
 * activation bits, symmetric or not as the model's matrix inputs, one grid per token (the model's
 * token and static granularities: a correction has no calibrated ranges) or per window (tensor);
 * straight through in the backward. A site's first input is left as it is where it already lies on
 * the activation grid (the quantized stream it reads, or the quantized input of the matrix it sits
 * on). */
typedef struct {
    int bits;          /* the activation bits of the inputs point */
    int asymmetric;
    int window;        /* rows of one window (the model's ctx) for the tensor granularity; 0: per token */
    int input_on_grid; /* the site's input is already quantized: only the later products' inputs are */
} CorrectionActQuant;

/* One site: where it sits, its tensors in the flat buffers, what its forward saved. */
typedef struct {
    int where;          /* stream kinds: the block it follows; linear kinds: the linear layer (model.h) */
    int in, out, size;  /* input and output widths (both d on the stream); hidden width or rank */
    float *param[SITE_MAX_TENSORS], *grad[SITE_MAX_TENSORS]; /* in the kind's tensor order */
    const float *input; /* stream kinds: the stream the site read in the last forward */
    float *output;      /* stream kinds: the stream after the site, (max_rows, d) */
    float *act;         /* the kind's own saved activations, max_rows rows */
    const CorrectionActQuant *quant; /* NULL: float products (stored at 32 bits, or no activation quantization of the inputs) */
} CorrectionSite;

/* A tensor of a kind's site: its name after the site's prefix and its shape (cols 0: a vector). */
typedef struct {
    const char *suffix;
    int rows, cols;
} SiteTensor;

/* A kind's functions: the last column of CORRECTION_KINDS. */
typedef struct {
    /* the tensors of a site (in, out, size), in the order they lie in the buffers; returns the count */
    int (*tensors)(int in, int out, int size, SiteTensor *t);
    /* floats of saved activations per row, and of backward scratch per row */
    size_t (*act_floats)(int in, int out, int size);
    size_t (*scratch_floats)(int in, int out, int size);
    /* starting values: a fresh site changes nothing (its output term is exactly zero) */
    void (*init)(CorrectionSite *s, Rng *rng);
    /* y (rows, out) += f(x), saving what backward needs in s->act */
    void (*forward)(CorrectionSite *s, float *y, const float *x, int rows);
    /* dx (rows, in) = the input gradient of f (overwritten); s->grad += its parameter gradients */
    void (*backward)(CorrectionSite *s, float *dx, const float *dy, const float *x, int rows, float *scratch);
    /* linear kinds: the size of every site when no option sets it (bias: 1); 0: the method's options do (lowrank: the rank) */
    int fixed_size;
    /* kinds a checkpoint stores folded into the base layer (bias: into its bias vector): adds the
     * site's term to weight (out, in) / bias (out); NULL: stored as the kind's own tensors */
    void (*fold)(const CorrectionSite *s, float *weight, float *bias);
} CorrectionKindOps;

/* A kind's functions, by id. */
const CorrectionKindOps *correction_kind_ops(CorrectionKindId kind);

/* Which sites a set of corrections has and how wide they are. */
typedef struct {
    CorrectionKindId kind;
    int every;                /* stream kinds: a site after every k-th block and after the last */
    int size;                 /* stream kinds: the hidden width (0 for linear) */
    const int *linear_sizes;  /* linear kinds: per linear layer (gpt_linear_count), its size; 0: no site */
} CorrectionLayout;

typedef struct {
    CorrectionKindId kind;
    const CorrectionKindOps *ops;
    int d, every, size, n_layer, n_sites;
    int stored_bits;            /* 32: float32; 2..16: rounded as stored by corrections_store_narrow */
    int *site_of;               /* per block (stream kinds) or per linear layer: its site, or -1 */
    int n_where;                /* entries of site_of */
    CorrectionSite *sites;
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v; /* one allocation each */
    int max_rows;               /* rows the saved activations and scratch hold */
    float *act_memory;
    float *dscratch, *kind_scratch; /* backward: the input gradient of a site (max_rows, widest in), the kind's */
    /* MSE objective (stream kinds): the float model's stream after each site's block (site order) */
    const float *const *mse_targets;
    double mse_loss;            /* summed by the forward hook: mean over sites of per-site MSE */
    ModelHook hook;             /* hook.max_rows = max_rows: the model refuses larger batches */
    int ctx;                    /* the model's context: a window of rows (tensor granularity) */
    ActScheme act;              /* the model's activation scheme (corrections_set_act; default: off) */
    CorrectionActQuant quant;   /* what every site's quant points to when on */
} Corrections;

int corrections_init(Corrections *c, const GPTConfig *cfg, const CorrectionLayout *layout, int max_rows, uint64_t seed);
void corrections_free(Corrections *c);
void corrections_zero_grad(Corrections *c);
/* Rounds the corrections to what a checkpoint stores at `bits` (2..16): every matrix per row,
 * symmetric, with an f16 scale a row (the weight quantizer's spans); vectors stay float32. */
void corrections_store_narrow(Corrections *c, int bits);
/* The activation scheme of the model the corrections run in. Stored at integer codes (stored_bits
 * < 32, by corrections_store_narrow or a loaded checkpoint's correction_bits) under a scheme whose
 * inputs point is on, every site's products then read inputs quantized as CorrectionActQuant says
 * (always: a deployed int kernel has no float product); float-stored ones stay float. */
void corrections_set_act(Corrections *c, const ActScheme *a);
/* The block below which the model never changes (the first stream site's block), or -1 when a
 * site sits inside the first block: the prefix a cache may hold. */
int corrections_frozen_prefix(const Corrections *c);
/* The same for a layout, before any corrections exist (the sweep's cache plan). */
int correction_layout_frozen_prefix(const GPTConfig *cfg, const CorrectionLayout *layout);

/* The tensors of a layout as a checkpoint stores them: corrections.{j}.{suffix} for stream kinds,
 * {linear layer}.{suffix} for linear kinds (PEFT's names for lowrank: {matrix}.lora_A.weight,
 * {matrix}.lora_B.weight); none for a kind stored folded into the base (bias). data is NULL here;
 * filled by corrections_tensors. Returns the count, or -1 if more than max. */
typedef struct {
    char name[128];
    int rows, cols;
    float *data;
} CorrectionTensor;
int correction_layout_tensors(const GPTConfig *cfg, const CorrectionLayout *layout, CorrectionTensor *out, int max);
int corrections_tensors(const Corrections *c, const GPTConfig *cfg, CorrectionTensor *out, int max);
/* Parameters a layout adds to a checkpoint (the sum of its stored tensors' sizes: 0 for bias). */
size_t correction_layout_params(const GPTConfig *cfg, const CorrectionLayout *layout);
/* The same for fitted corrections (num_params counts what trains, stored or folded). */
size_t corrections_stored_params(const Corrections *c);
/* Folds every site of a folded kind into m's linear layers (weights and biases); -1 for other kinds. */
int corrections_fold(const Corrections *c, GPT *m);

/* KL(p_target || softmax(logits)) per row, mean over rows; dlogits (may be NULL) gets its
 * gradient times dloss. target_logits are the float model's. */
double kl_forward_backward(float *dlogits, const float *logits, const float *target_logits, int N, int V, float dloss);

#endif
