/* quant: weight-only fake quantization of a model (README: Quantization). A scheme says what is
 * quantized and how finely; the quantizer (an entry of QUANTIZERS in methods.h: rtn, ...) says how
 * one tensor's values are chosen, given calibration statistics when it needs them. */
#ifndef QCORR_QUANT_H
#define QCORR_QUANT_H

#include <stddef.h>

#include "nn/model.h"
#include "quant/calib.h"
#include "quant/fakequant.h"
#include "quant/gptq.h"
#include "quant/transform.h"
#include "tables/methods.h"

typedef enum { GRAN_TENSOR, GRAN_CHANNEL, GRAN_GROUP } Granularity;

/* Bit flags of TensorRole: which tensors a scheme quantizes. */
#define SCOPE_OF(role) (1u << (role))
#define SCOPE_DEFAULT (SCOPE_OF(ROLE_LINEAR) | SCOPE_OF(ROLE_HEAD))

/* The options of the quantizers that have any (defaults: quant_scheme_default). */
typedef enum { GPTQ_GROUPS_STATIC, GPTQ_GROUPS_CURRENT } GptqGroups;
typedef struct {
    int mse_weighted;    /* mse clip search (the mse quantizer, or gptq's mse fit): each input column's
                            squared error weighted by its calibration E[x^2]; needs calibration data */
    double damp;         /* gptq: H += damp * mean(diag H) * I (0.01) */
    int act_order;       /* gptq: columns in order of descending diag(H) */
    QuantizerId fit;     /* gptq: how each row's or group's grid is fitted: QUANTIZER_RTN or QUANTIZER_MSE */
    GptqGroups groups;   /* gptq, group:G: grids fitted up front from W (static), or each when its
                            group starts from the weights updated so far (current; not with act_order) */
    int block;           /* gptq: columns per lazy batch update (128) */
} QuantizerOptions;

typedef struct {
    int bits;            /* 2..8; 32 = no quantization (the control arm) */
    Granularity granularity;
    int group;           /* G for GRAN_GROUP */
    int asymmetric;      /* 0: symmetric absmax, levels -(2^(b-1)-1)..2^(b-1)-1; 1: min/max, 2^b levels */
    ScaleDtype scale_dtype; /* the type each scale (and minimum) is stored in, and rounded to before use */
    unsigned scope;      /* SCOPE_OF(role) bits */
    ActScheme act;       /* activation quantization (nn/actscheme.h): points, bits, granularity, calibration */
    QuantizerId quantizer;
    QuantizerOptions options;
    TransformScheme transform; /* applied to the float model before the quantizer (transform.h) */
} QuantScheme;

void quant_scheme_default(QuantScheme *s, int bits);
/* "tensor", "channel", "group:G" */
int parse_granularity(const char *text, QuantScheme *s);
/* "linear,head" style list of roles: embedding, norm, bias, linear, head */
int parse_scope(const char *text, unsigned *scope);
/* The parts of a scheme as text, as the metadata stores them. */
void describe_granularity(const QuantScheme *s, char *out, size_t size);
void describe_scope(unsigned scope, char *out, size_t size);
/* The quantizer and its options as one token: "rtn", "mse", "mse:weighted",
 * "gptq:damp=0.01:act-order:fit=mse:groups=current" (defaults left out but damp). */
void describe_quantizer(const QuantScheme *s, char *out, size_t size);
/* One line for records and the README: "int4 sym-absmax channel rtn scope=linear,head act=none",
 * with " transform=rotate:seed=0" (transform_describe) appended when there is one */
void quant_scheme_describe(const QuantScheme *s, char *out, size_t size);
int quant_scheme_check(const QuantScheme *s);
/* The span one scale covers in a tensor of rows x cols (vectors: 1 x n): rows*cols, cols or G. */
int quant_span(const QuantScheme *s, int rows, int cols);

/* Whether a scheme needs calibration data: its transform's smoothing (at any bits), the quantizer's
 * column of the table, or mse weighted by it. */
int quant_scheme_needs_calibration(const QuantScheme *s);

/* What gptq_quantize needs of the scheme, for rows of cols (quant/gptq.c). */
GptqParams quant_scheme_gptq_params(const QuantScheme *s, int cols);

/* A quantizer's function: out (rows x cols) from w, by the scheme's span and bits; stats (the
 * statistics of the matrix's input, calib.h) is NULL where there are none (a tensor that is no
 * linear layer's weight, or no calibration data). */
typedef int (*QuantizeTensorFn)(float *out, const float *w, int rows, int cols, const QuantScheme *s, const CalibStats *stats);

/* One option of a quantizer: its flag (quantize and correct take every quantizer's flags; a flag
 * of another quantizer is refused) and its checkpoint metadata key, both read by parse. */
typedef struct {
    const char *flag;          /* "--damp" */
    int takes_value;           /* 0: a flag with no value, parsed as "1" (metadata: "0" or "1") */
    const char *help;
    const char *meta_key;      /* "quant_gptq_damp" */
    /* whether it means anything given the scheme's other options (NULL: always); it is written
     * to the metadata, and may be given, only then */
    int (*applies)(const QuantScheme *s);
    /* sets it from text; the message names `name` (the flag or the key) and the value */
    int (*parse)(const char *name, const char *text, QuantScheme *s);
    /* its value as the metadata stores it */
    void (*format)(const QuantScheme *s, char *out, size_t size);
    /* values a test tries it at (quantize, save, load, evaluate), NULL-terminated */
    const char *const *examples;
} QuantizerOption;

/* A quantizer's functions: the last column of QUANTIZERS, defined in the entry's own file. */
typedef struct {
    QuantizeTensorFn quantize;
    /* the grid of one span of n weights it fits from the weights alone (qat and scales refit it) */
    SpanGrid (*grid_fit)(const float *w, int n, const QuantScheme *s);
    /* its options' defaults in s->options (NULL: all zero) */
    void (*defaults)(QuantizerOptions *o);
    /* whether an option asks for calibration data the table's column does not (NULL: no) */
    int (*needs_data)(const QuantScheme *s);
    /* its options' rules, qc_error naming the value (NULL: none) */
    int (*check)(const QuantScheme *s);
    /* appends its options to its name in describe_quantizer (":damp=0.01") (NULL: nothing) */
    void (*describe)(const QuantScheme *s, char *out, size_t size);
    const QuantizerOption *const *options; /* NULL-terminated (NULL: none) */
} QuantizerOps;

#define QUANTIZER_DECLARE_OPS(id, name, data, gram, ops) extern const QuantizerOps ops;
QUANTIZERS(QUANTIZER_DECLARE_OPS)
#undef QUANTIZER_DECLARE_OPS
/* --mse-weighted's parse and format (mse.c), which gptq's option of the same name shares. */
int mse_weighted_parse(const char *name, const char *text, QuantScheme *s);
void mse_weighted_format(const QuantScheme *s, char *out, size_t size);
/* The functions of quantizer q. */
const QuantizerOps *quantizer_ops(QuantizerId q);
/* The option of quantizer q with this flag, or NULL. */
const QuantizerOption *quantizer_option(QuantizerId q, const char *flag);
/* The quantizers whose grids come from the weights alone (no data, no X^T X): "rtn or mse". */
void quantizer_weight_only_names(char *out, size_t size);

/* A matrix (rows x cols) by the scheme's quantizer and granularity; fails if the group does not
 * divide cols, or if the quantizer needs calibration data. out may alias in. */
int quantize_matrix(float *out, const float *in, int rows, int cols, const QuantScheme *s);
/* The same given the statistics of the matrix's input (NULL: none; gptq then refuses). */
int quantize_matrix_calibrated(float *out, const float *in, int rows, int cols, const QuantScheme *s, const CalibStats *stats);

typedef struct {
    char name[64];
    double rel_error; /* ||W - Q(W)||_F / ||W||_F */
} TensorQuantError;

/* Quantizes every in-scope tensor of m in place. errors (m->n_specs entries, may be NULL) gets
 * one entry per quantized tensor; *n_errors their count. The scheme's quantizer must not need
 * calibration data (those run through the experiment layer, which has the data). */
int quantize_model(GPT *m, const QuantScheme *s, TensorQuantError *errors, int *n_errors);
/* Any quantizer, after the scheme's transform (transform_model: smooth from the same windows) of
 * the float model: the tensors that are no linear layer's weight first (as quantize_model, with the
 * statistics-free form of the quantizer: gptq falls back to its fit, rtn or mse unweighted), then
 * the in-scope linear layers in forward order, each from the statistics of its input over the
 * calibration windows (n_windows, T) of token ids, as the model quantized so far computes it (with
 * activation quantization when the scheme has it). windows may be NULL when the quantizer needs no
 * data: then this is quantize_model. */
int quantize_model_calibrated(GPT *m, const QuantScheme *s, const int32_t *windows, int n_windows, int T,
                              TensorQuantError *errors, int *n_errors);

#endif
