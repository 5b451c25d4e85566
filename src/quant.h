/* quant: weight-only fake quantization (quantize, then dequantize to float) with round-to-nearest
 * (ties to even), symmetric absmax or asymmetric min/max, per tensor, per output row or per
 * group of G weights of a row; plus per-token dynamic activation fake-quantization. */
#ifndef QCORR_QUANT_H
#define QCORR_QUANT_H

#include <stddef.h>

#include "checkpoint.h"
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
    unsigned scope;      /* SCOPE_OF(role) bits */
    int act_bits;        /* 0: off; else 2..8, per-token absmax at the input of every quantized matrix */
} QuantScheme;

void quant_scheme_default(QuantScheme *s, int bits);
/* "tensor", "channel", "group:G" */
int parse_granularity(const char *text, QuantScheme *s);
/* "linear,head" style list of roles: embedding, norm, bias, linear, head */
int parse_scope(const char *text, unsigned *scope);
/* One line for records and the README: "int4 sym absmax group:32 scope=linear,head act=none" */
void quant_scheme_describe(const QuantScheme *s, char *out, size_t size);
int quant_scheme_check(const QuantScheme *s);

/* The specification: one scale (and zero) over in[0..n). out may alias in. */
void quantize_span_ref(float *out, const float *in, int n, int bits, int asymmetric);
/* A matrix (rows x cols) by granularity; fails if the group does not divide cols. */
int quantize_matrix(float *out, const float *in, int rows, int cols, const QuantScheme *s);

typedef struct {
    char name[64];
    double rel_error; /* ||W - Q(W)||_F / ||W||_F */
} TensorQuantError;

/* Quantizes every in-scope tensor of m in place. errors (m->n_specs entries, may be NULL) gets
 * one entry per quantized tensor; *n_errors their count. */
int quantize_model(GPT *m, const QuantScheme *s, TensorQuantError *errors, int *n_errors);

/* Per-row dynamic absmax fake quantization of activations (rows x cols), symmetric. */
void quantize_activations(float *out, const float *in, int rows, int cols, int bits);

/* Checkpoint metadata: keys quant_bits, quant_granularity, quant_asymmetric, quant_scope,
 * quant_act_bits and a readable quant_scheme. to_meta fills out[0..QUANT_META_COUNT). */
#define QUANT_META_COUNT 6
void quant_scheme_to_meta(const QuantScheme *s, StMeta *out);
/* 1: the file holds a scheme (read into s); 0: a float checkpoint; -1: malformed metadata. */
int quant_scheme_from_meta(const SafeTensors *st, QuantScheme *s);

#endif
