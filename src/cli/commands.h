/* commands: one entry point per subcommand; each returns the process exit status
 * (0 ok, 1 runtime error, 2 usage error). */
#ifndef QCORR_COMMANDS_H
#define QCORR_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_correct(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* Shared by quantize and correct. Return 0 or an exit status (message already printed). */
#include "cli/common.h"
#include "correct/experiment.h"
/* The activation flags quantize, correct and sweep share (README: Activation quantization). */
typedef struct {
    const char *bits;        /* "N" (0..8) or "same" (as --bits); NULL: 0 */
    const char *granularity; /* token | tensor | static; NULL: token */
    const char *calib;       /* static: minmax | percentile[:P] | mse; NULL: minmax */
    int asymmetric;
    const char *points;      /* inputs,stream,kv,probs; NULL: inputs */
    int kv_bits;             /* -1: not given (kv in the points follows --act-bits) */
} ActFlags;
#define ACT_FLAGS_INIT {.kv_bits = -1}
#define ACT_ARG_SPECS(f)                                                                                                      \
    {"--act-bits", ARG_STRING, &(f).bits, 0, 0, "activation fake-quantization bits 2..8, or same (as --bits); 0: off"},       \
    {"--act-granularity", ARG_STRING, &(f).granularity, 0, 0, "token (dynamic, a scale per token) | tensor (dynamic, per window) | static (calibrated ranges)"}, \
    {"--act-calib", ARG_STRING, &(f).calib, 0, 0, "static ranges: minmax | percentile[:P] (99.99) | mse (the clip of least squared error)"}, \
    {"--act-asymmetric", ARG_FLAG, &(f).asymmetric, 0, 0, "activations on min/max grids with an integer zero point"},    \
    {"--act-points", ARG_STRING, &(f).points, 0, 0, "where: comma list of inputs (of every matrix), stream (each block's output), kv (keys and values), probs (attention probabilities); default inputs"}, \
    {"--kv-bits", ARG_INT, &(f).kv_bits, 0, 8, "bits of the attention's keys and values (the KV cache); adds kv to the points"}
/* The activation scheme from the flags; weight_bits: --bits (what same follows), or -1 where
 * same is refused (sweep parses same at 8 bits and lets each run's bits replace them). 0, or an
 * exit status (message printed). */
int parse_act_flags(const char *command, const ActFlags *f, int weight_bits, ActScheme *a);
int parse_scheme_flags(const char *command, int bits, const char *granularity, int asymmetric, const char *scope,
                       const ActFlags *act, const char *scale_dtype, QuantScheme *s);
/* --correction-reads quantized|float (NULL: quantized) into a->correction_float; float needs the
 * stream point. 0, or an exit status (message printed). */
int parse_correction_reads_flag(const char *command, const char *text, ActScheme *a);
#define CORRECTION_READS_SPEC(v) \
    {"--correction-reads", ARG_STRING, &(v), 0, 0, "what a stream correction reads under --act-points ...,stream: quantized (the stream as stored, a separate int kernel; default) | float (the block's float output, the stream quantized after the correction: fused into the block's last product)"}
/* "f16" -> SCALE_F16 for --scale-dtype; 0, or an exit status (message printed) */
int parse_scale_dtype_flag(const char *command, const char *text, ScaleDtype *out);
int load_float_checkpoint(const char *command, const char *path, int max_batch, LoadedModel *lm);

/* The quantizer flags quantize and correct share: --quantizer and every quantizer's options
 * (their QuantizerOption lists, quant.h), slot k for the k-th distinct flag of the table
 * (quantizer_flag_option); unused slots have no name, which the parser skips. */
#define QUANTIZER_MAX_FLAGS 12
typedef struct {
    const char *quantizer;                  /* a name of the table */
    const char *text[QUANTIZER_MAX_FLAGS];  /* an option's value (NULL: not given) */
    int given[QUANTIZER_MAX_FLAGS];         /* an option that takes no value */
} QuantizerFlags;
/* The k-th distinct option flag of the quantizer table, in table order, or NULL. */
const QuantizerOption *quantizer_flag_option(int k);
/* "--quantizer" help: the table's names. */
const char *quantizer_flag_help(void);
#define QUANTIZER_FLAG_SPEC(f, k)                                                                                     \
    {quantizer_flag_option(k) ? quantizer_flag_option(k)->flag : NULL,                                               \
     quantizer_flag_option(k) && !quantizer_flag_option(k)->takes_value ? ARG_FLAG : ARG_STRING,                     \
     quantizer_flag_option(k) && !quantizer_flag_option(k)->takes_value ? (void *)&(f).given[k] : (void *)&(f).text[k], \
     0, 0, quantizer_flag_option(k) ? quantizer_flag_option(k)->help : NULL}
#define QUANTIZER_ARG_SPECS(f)                                                                                        \
    {"--quantizer", ARG_STRING, &(f).quantizer, 0, 0, quantizer_flag_help()},                                         \
    QUANTIZER_FLAG_SPEC(f, 0), QUANTIZER_FLAG_SPEC(f, 1), QUANTIZER_FLAG_SPEC(f, 2), QUANTIZER_FLAG_SPEC(f, 3),       \
    QUANTIZER_FLAG_SPEC(f, 4), QUANTIZER_FLAG_SPEC(f, 5), QUANTIZER_FLAG_SPEC(f, 6), QUANTIZER_FLAG_SPEC(f, 7),       \
    QUANTIZER_FLAG_SPEC(f, 8), QUANTIZER_FLAG_SPEC(f, 9), QUANTIZER_FLAG_SPEC(f, 10), QUANTIZER_FLAG_SPEC(f, 11)
/* The transform flags quantize and correct share (README: Transforms). */
typedef struct {
    const char *transform;    /* none | smooth | online | rotate | rotate+smooth | online+smooth */
    const char *smooth_alpha; /* NULL: 0.5 */
    const char *rotate_seed;  /* NULL: 0 */
} TransformFlags;
#define TRANSFORM_ARG_SPECS(f)                                                                                                    \
    {"--transform", ARG_STRING, &(f).transform, 0, 0,                                                                            \
     "none | smooth (SmoothQuant) | online (Hadamard at the c_proj inputs) | rotate (the stream too, and online) | rotate+smooth"}, \
    {"--smooth-alpha", ARG_STRING, &(f).smooth_alpha, 0, 0, "smooth: migration strength alpha in [0, 1] (0.5)"},                \
    {"--rotate-seed", ARG_STRING, &(f).rotate_seed, 0, 0, "online, rotate: seed of the rotations' random signs (0)"}
/* Sets s->transform from the flags; refuses (exit 2) a bad value or a parameter of a part not asked for. */
int parse_transform_flags(const char *command, const TransformFlags *f, QuantScheme *s);
/* Sets s->quantizer and s->options from the flags; refuses (exit 2) a value out of range or an
 * option of another quantizer. */
int parse_quantizer_flags(const char *command, const QuantizerFlags *f, QuantScheme *s);

/* The training-budget flags correct and sweep share: --steps auto's stopping rule and --init.
 * Strings (NULL: the default) so that a flag given without --steps auto can be refused. */
typedef struct {
    const char *max_steps, *eval_every, *patience, *min_delta, *heldout_share, *schedule, *ema, *init;
} AutoStopFlags;
#define AUTOSTOP_ARG_SPECS(f)                                                                                            \
    {"--max-steps", ARG_STRING, &(f).max_steps, 0, 0, "--steps auto: the cap (3000)"},                                    \
    {"--eval-every", ARG_STRING, &(f).eval_every, 0, 0, "--steps auto: steps between held-out measurements (25)"},        \
    {"--patience", ARG_STRING, &(f).patience, 0, 0, "--steps auto: measurements without improvement before a plateau (8)"}, \
    {"--min-delta", ARG_STRING, &(f).min_delta, 0, 0, "--steps auto: the improvement that counts, a share of the held-out gap (0.002)"},      \
    {"--heldout-share", ARG_STRING, &(f).heldout_share, 0, 0, "--steps auto: calibration windows held out (0.125)"},     \
    {"--schedule", ARG_STRING, &(f).schedule, 0, 0, "--steps auto: plateau (constant, lr/10 at the first plateau) | cosine (for --max-steps)"}, \
    {"--ema", ARG_STRING, &(f).ema, 0, 0, "--steps auto: measure and keep the running average of the parameters, weight K a step (0.99, about 100 steps; 0: the last step's)"}, \
    {"--init", ARG_STRING, &(f).init, 0, 0, "train, linear corrections: zero | lstsq (the closed form, then training)"}
/* Fills a (from auto_stop_default) and *init from the flags; refuses (exit 2) a value out of range
 * or a stopping flag without auto (auto: whether --steps is auto). */
int parse_autostop_flags(const char *command, const AutoStopFlags *f, int autostop, AutoStop *a, CorrectionInit *init);

#endif
