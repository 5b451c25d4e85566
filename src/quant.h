/* quant: weight-only fake quantization of a model (SPEC section 3). A scheme says what is
 * quantized and how finely; the quantizer (an entry of QUANTIZERS in methods.h: rtn, ...) says how
 * one tensor's values are chosen, given calibration statistics when it needs them. */
#ifndef QCORR_QUANT_H
#define QCORR_QUANT_H

#include <stddef.h>

#include "fakequant.h"
#include "methods.h"
#include "model.h"

typedef enum { GRAN_TENSOR, GRAN_CHANNEL, GRAN_GROUP } Granularity;

/* Bit flags of TensorRole: which tensors a scheme quantizes. */
#define SCOPE_OF(role) (1u << (role))
#define SCOPE_DEFAULT (SCOPE_OF(ROLE_LINEAR) | SCOPE_OF(ROLE_HEAD))

typedef struct {
    int bits;            /* 2..8; 32 = no quantization (the control arm) */
    Granularity granularity;
    int group;           /* G for GRAN_GROUP */
    int asymmetric;      /* 0: symmetric absmax, levels -(2^(b-1)-1)..2^(b-1)-1; 1: min/max, 2^b levels */
    ScaleDtype scale_dtype; /* the type each scale (and minimum) is stored in, and rounded to before use */
    unsigned scope;      /* SCOPE_OF(role) bits */
    int act_bits;        /* 0: off; else 2..8, per-token absmax at the input of every quantized matrix */
    QuantizerId quantizer;
} QuantScheme;

void quant_scheme_default(QuantScheme *s, int bits);
/* "tensor", "channel", "group:G" */
int parse_granularity(const char *text, QuantScheme *s);
/* "linear,head" style list of roles: embedding, norm, bias, linear, head */
int parse_scope(const char *text, unsigned *scope);
/* The parts of a scheme as text, as the metadata stores them. */
void describe_granularity(const QuantScheme *s, char *out, size_t size);
void describe_scope(unsigned scope, char *out, size_t size);
/* One line for records and the README: "int4 sym-absmax channel rtn scope=linear,head act=none" */
void quant_scheme_describe(const QuantScheme *s, char *out, size_t size);
int quant_scheme_check(const QuantScheme *s);
/* The span one scale covers in a tensor of rows x cols (vectors: 1 x n): rows*cols, cols or G. */
int quant_span(const QuantScheme *s, int rows, int cols);

/* Calibration statistics of one linear layer's input (what the matrix reads), for quantizers that
 * use data. Not used by rtn. */
typedef struct {
    int in;            /* columns */
    long n;            /* rows seen */
    double *gram;      /* (in, in): X^T X over the rows */
} CalibStats;

/* A quantizer's function (the last column of QUANTIZERS): out (rows x cols) from w, by the
 * scheme's span and bits; stats is NULL for quantizers that need no calibration data. */
typedef int (*QuantizeTensorFn)(float *out, const float *w, int rows, int cols, const QuantScheme *s, const CalibStats *stats);

/* A matrix (rows x cols) by the scheme's quantizer and granularity; fails if the group does not
 * divide cols. out may alias in. */
int quantize_matrix(float *out, const float *in, int rows, int cols, const QuantScheme *s);

typedef struct {
    char name[64];
    double rel_error; /* ||W - Q(W)||_F / ||W||_F */
} TensorQuantError;

/* Quantizes every in-scope tensor of m in place. errors (m->n_specs entries, may be NULL) gets
 * one entry per quantized tensor; *n_errors their count. The scheme's quantizer must not need
 * calibration data (those run through the experiment layer, which has the data). */
int quantize_model(GPT *m, const QuantScheme *s, TensorQuantError *errors, int *n_errors);

#endif
