/* actscheme: what activation fake quantization does (README: Activation quantization) — which
 * points of the forward are quantized (the inputs of every matrix, the residual stream at each
 * block's output, the attention's keys and values, its probabilities), to how many bits, what one
 * scale covers (a token, a window's whole tensor, or a range calibrated once), symmetric or not,
 * and how static ranges are calibrated; as one struct a quantization scheme holds, with its text
 * forms (flags, metadata, the scheme's description). The model's state (ActState) lives here too;
 * the forward's functions are in actquant.h. */
#ifndef QCORR_ACTSCHEME_H
#define QCORR_ACTSCHEME_H

#include <stddef.h>

/* What one scale covers: a token's row (dynamic), a window's whole tensor (dynamic: the T rows of
 * one window, as a batch-1 prefill kernel sees it), or a range calibrated once (static). */
typedef enum { ACT_TOKEN, ACT_TENSOR, ACT_STATIC } ActGranularity;
/* How a static range is calibrated from the values a point took over the calibration windows. */
typedef enum { ACT_CALIB_MINMAX, ACT_CALIB_PERCENTILE, ACT_CALIB_MSE } ActCalib;

#define ACT_POINT_INPUTS 1u /* the input of every matrix (the four of each block and the head) */
#define ACT_POINT_STREAM 2u /* the residual stream each block passes on (its output) */
#define ACT_POINT_KV 4u     /* the attention's keys and values (what a KV cache holds) */
#define ACT_POINT_PROBS 8u  /* the attention probabilities (softmax output) */
#define ACT_POINTS_ALL 15u
#define ACT_PERCENTILE_DEFAULT 99.99

typedef struct {
    int bits;           /* inputs, stream and probs: 0 when none of them is on, else 2..8 */
    int kv_bits;        /* keys and values: 0 (off) or 2..8 */
    unsigned points;    /* the points on: ACT_POINT_KV iff kv_bits, the others iff bits */
    ActGranularity granularity;
    int asymmetric;     /* min/max with an integer zero point instead of symmetric absmax */
    ActCalib calib;     /* static only */
    double percentile;  /* ACT_CALIB_PERCENTILE: p in [50, 100] */
    /* What a stream correction reads (README: Correction layers under activation quantization):
     * 0, quantized: the stream as the block wrote it at the activation bits, y = Q(x) + f(Q(x)) (a
     * separate int kernel reading the stored stream); 1, float: the block's float output, the
     * stream quantized after the correction, y = Q(x + f(x)) (a correction fused into the epilogue
     * of the block's last matrix product). Needs the stream point; without a correction at a
     * block, both give the same bits. */
    int correction_float;
} ActScheme;

/* Off: no point, per token, symmetric, minmax, 99.99. */
void act_scheme_default(ActScheme *a);
/* The old scheme (quant_act_bits alone): per-token symmetric at the matrices' inputs (0: off). */
void act_scheme_inputs(ActScheme *a, int bits);
int act_scheme_on(const ActScheme *a);
/* The bits of one point (0: off). */
int act_point_bits(const ActScheme *a, unsigned point);
int act_scheme_check(const ActScheme *a);

/* Text forms, as flags and metadata spell them. -1 with a message naming the text on a bad one. */
int act_parse_granularity(const char *text, ActGranularity *out);
const char *act_granularity_name(ActGranularity g);
/* "minmax", "percentile" (99.99), "percentile:P", "mse" */
int act_parse_calib(const char *text, ActScheme *a);
void act_describe_calib(const ActScheme *a, char *out, size_t size);
/* "inputs,stream,kv,probs" (any non-empty subset, any order) */
int act_parse_points(const char *text, unsigned *out);
void act_describe_points(unsigned points, char *out, size_t size);
/* "quantized" (0) or "float" (1): ActScheme.correction_float */
int act_parse_correction_reads(const char *text, int *out);
const char *act_correction_reads_name(int correction_float);
/* The act= part of a scheme's description: "none"; "int4" (the old per-token symmetric inputs);
 * else ':'-joined parts: "int8:tensor", "int4:static-mse:asym:inputs,stream,kv,probs",
 * "int8:inputs,kv:kv=int4", "kv=int4" (keys and values only); ":reads-float" last when a stream
 * correction reads the float stream. */
void act_scheme_describe(const ActScheme *a, char *out, size_t size);

/* The static ranges' sites: per block the inputs of its four matrices (GPT_BLOCK_LINEARS order),
 * its output stream, its keys, values and probabilities; then the head's input. */
enum { ACT_SITE_STREAM = 4, ACT_SITE_KEY, ACT_SITE_VALUE, ACT_SITE_PROBS, ACT_SITES_PER_BLOCK };
int act_site_count(int n_layer);
/* Its tensor name in a checkpoint: "transformer.h.1.mlp.c_fc.input_range", "lm_head.input_range",
 * "transformer.h.1.output_range", "transformer.h.1.attn.key_range" (.value_range, .probs_range). */
void act_site_name(int n_layer, int site, char *out, size_t size);
/* The point a site belongs to. */
unsigned act_site_point(int n_layer, int site);

/* Called in calibration instead of quantizing (the forward then runs float): the values of a
 * site, rows of cols at stride ld; triangle > 0: row r holds only its first (r % triangle) + 1
 * values (causal probabilities of windows of `triangle` positions). */
typedef void (*ActObserveFn)(void *ctx, int site, const float *x, int rows, int cols, long ld, int triangle);

/* The model's activation quantization (GPT.act): the scheme, its static ranges and scratch. */
typedef struct {
    ActScheme scheme;
    float *ranges;      /* (act_site_count, 2): [lo, hi] of each site, static only (NULL otherwise) */
    int calibrated;     /* static: the ranges were calibrated or loaded (a forward refuses before) */
    float *scratch;     /* (max rows, 4C): what a matrix reads */
    float *probs;       /* (L, max_batch, NH, ctx, ctx): the quantized probabilities the training forward keeps */
    float *stream;      /* correction_float: (L, max_batch * ctx, C), the quantized stream each block
                         * passes on (its float output stays in resid_out, which a correction read) */
    int window;         /* rows of one window (the tensor granularity's unit), set by each forward */
    ActObserveFn observe;
    void *observe_ctx;
} ActState;

#endif
