/* methods: the names and properties of every quantizer, correction kind and fitting method, as
 * tables with no dependencies, so the sweep, the records and the report (which never include the
 * model) ask the same table the code that implements them uses. Adding a method is one line here
 * plus its functions; the last column of each table names them and is expanded only beside them. */
#ifndef QCORR_METHODS_H
#define QCORR_METHODS_H

#include <stddef.h>

/* Quantizers: X(id, name, data, gram, ops):
 *   data  1: it always needs calibration data (0: only where an option of its asks for it, as
 *         mse's weighted search does: its ops' needs_data)
 *   gram  1: it needs each matrix input's X^T X, which the calibration walk then gathers
 *   ops   its QuantizerOps (quant.h: the quantize function, the grid of a span from the weights
 *         alone, its options with their flags and metadata keys, their check and description),
 *         defined in the entry's own file (quant/rtn.c, quant/mse.c, quant/gptq.c) */
#define QUANTIZERS(X)                           \
    X(QUANTIZER_RTN, "rtn", 0, 0, rtn_quantizer) \
    X(QUANTIZER_MSE, "mse", 0, 0, mse_quantizer) \
    X(QUANTIZER_GPTQ, "gptq", 1, 1, gptq_quantizer)

/* Where a correction sits: on the residual stream after a block (README: Correction layers), or on
 * one linear layer's output (a per-matrix term). */
typedef enum { PLACE_STREAM, PLACE_LINEAR } Placement;

/* Correction kinds: X(id, name, placement, its functions (correct.c), its closed-form solve or
 * NULL (experiment.c: it needs calibration data)) */
#define CORRECTION_KINDS(X)                                                  \
    X(KIND_NONE, "none", PLACE_STREAM, none_kind, NULL)                      \
    X(KIND_LINEAR, "linear", PLACE_STREAM, linear_kind, correction_lstsq)    \
    X(KIND_MLP, "mlp", PLACE_STREAM, mlp_kind, NULL)                         \
    X(KIND_LOWRANK, "lowrank", PLACE_LINEAR, lowrank_kind, lowrank_solve)    \
    X(KIND_BIAS, "bias", PLACE_LINEAR, bias_kind, bias_solve)

/* What of the quantized model's own parameters a method trains (tune.c), storing exactly what the
 * quantized model stores: nothing, the LayerNorms (float already), every quantized weight on its
 * grid, each span's stored scale (and minimum) with its codes fixed, each span's scale (and
 * minimum) with the codes following it (learned clipping), or each weight's rounding
 * direction (adaround: layer by layer, its own iterations, so it "trains" no AdamW steps). */
typedef enum { TUNE_NONE, TUNE_NORMS, TUNE_WEIGHTS, TUNE_SCALES, TUNE_CLIP, TUNE_ROUNDING } TuneTarget;

/* The options a method takes besides the budgets (bit flags of the takes column): --rank and
 * --lowrank-scale (the size and scaling of per-matrix factors), --init lstsq (a trained linear
 * correction started from the closed form). */
#define TAKES_RANK 1u
#define TAKES_INIT 2u

/* How corrections are fitted: X(id, name, kind (KIND_BY_HIDDEN: linear at hidden 0, else MLP),
 * trains (AdamW steps), solves (the kind's closed form), tunes (the base's own parameters it
 * trains: 0 extra bits), takes (TAKES_* options, 0: none)). A method that solves and trains
 * (lowrank) fine-tunes its closed form only when given steps. */
#define CORRECTION_METHODS(X)                                                     \
    X(METHOD_TRAIN, "train", KIND_BY_HIDDEN, 1, 0, TUNE_NONE, TAKES_INIT)          \
    X(METHOD_LSTSQ, "lstsq", KIND_LINEAR, 0, 1, TUNE_NONE, 0)                      \
    X(METHOD_LOWRANK, "lowrank", KIND_LOWRANK, 1, 1, TUNE_NONE, TAKES_RANK)        \
    X(METHOD_BIAS, "bias", KIND_BIAS, 0, 1, TUNE_NONE, 0)                          \
    X(METHOD_NORMTWEAK, "normtweak", KIND_NONE, 1, 0, TUNE_NORMS, 0)               \
    X(METHOD_QAT, "qat", KIND_NONE, 1, 0, TUNE_WEIGHTS, 0)                         \
    X(METHOD_SCALES, "scales", KIND_NONE, 1, 0, TUNE_SCALES, 0)                    \
    X(METHOD_LWC, "lwc", KIND_NONE, 1, 0, TUNE_CLIP, 0)                            \
    X(METHOD_ADAROUND, "adaround", KIND_NONE, 0, 0, TUNE_ROUNDING, 0)              \
    X(METHOD_NONE, "none", KIND_NONE, 0, 0, TUNE_NONE, 0)

#define METHODS_ENUM_ID(id, name, ...) id,
typedef enum { QUANTIZERS(METHODS_ENUM_ID) QUANTIZER_COUNT } QuantizerId;
typedef enum { CORRECTION_KINDS(METHODS_ENUM_ID) KIND_COUNT, KIND_BY_HIDDEN = -1 } CorrectionKindId;
typedef enum { CORRECTION_METHODS(METHODS_ENUM_ID) METHOD_COUNT } CorrectMethod;
#undef METHODS_ENUM_ID

typedef struct {
    const char *name;
    int needs_data, needs_gram;
} QuantizerInfo;
typedef struct {
    const char *name;
    Placement placement;
} CorrectionKindInfo;
typedef struct {
    const char *name;
    CorrectionKindId kind;
    int trains, solves;
    TuneTarget tunes;
    unsigned takes;
} MethodInfo;

extern const QuantizerInfo quantizer_info[QUANTIZER_COUNT];
extern const CorrectionKindInfo kind_info[KIND_COUNT];
extern const MethodInfo method_info[METHOD_COUNT];

/* Names by id. */
const char *quantizer_name(QuantizerId id);
const char *kind_name(CorrectionKindId id);
const char *method_name(CorrectMethod id);
/* Whether quantizer q is the table's first (rtn): the historic default, which run ids and
 * checkpoint metadata leave unnamed. */
int quantizer_is_default(QuantizerId q);
/* Lookups by name: the id, or -1. */
int quantizer_by_name(const char *name);
int kind_by_name(const char *name);
int method_by_name(const char *name);
/* "rtn, mse or gptq": the names of a table for messages. */
void quantizer_names(char *out, size_t size);
void method_names(char *out, size_t size);

/* The kind a method fits at a correction width: its own, or (train) linear at hidden 0, else MLP.
 * The one place where hidden == 0 means "linear". */
CorrectionKindId method_kind(CorrectMethod m, int hidden);
/* Whether the correction-width axis (hidden) means anything for a method, and the site-frequency
 * axis (every): only for corrections on the stream. */
int method_uses_hidden(CorrectMethod m);
int method_uses_every(CorrectMethod m);
/* Whether a method fits anything (not "none": a correction, or the base's own parameters). */
int method_corrects(CorrectMethod m);
/* What of the base a method trains (TUNE_NONE: it adds corrections, or nothing). */
TuneTarget method_tunes(CorrectMethod m);
/* Whether a method trains the weights' grid (qat, scales, lwc, adaround): none at 32 bits, where
 * qat fine-tunes the float matrices (its control arm) and the others have nothing to train. */
int method_tunes_grid(CorrectMethod m);
/* Whether a method fits each quantized matrix's own error (its kind sits on a linear layer): at
 * 32 bits there is nothing for it to fit. */
int method_fits_weight_error(CorrectMethod m);
/* Whether the same training means something on the float model (the sweep's control arm): the
 * stream corrections, normtweak (the float LayerNorms) and qat (the float matrices). */
int method_has_control(CorrectMethod m);

#endif
