/* model_file: any qcorr checkpoint — float, quantized or corrected — read into one LoadedModel and
 * written with its quantization scheme and corrections; the metadata keys of both live here. */
#ifndef QCORR_MODEL_FILE_H
#define QCORR_MODEL_FILE_H

#include "correct/correct.h"
#include "io/checkpoint.h"
#include "quant/quant.h"

/* Checkpoint metadata of a scheme: quant_bits, quant_granularity, quant_asymmetric, quant_scope,
 * quant_act_bits and, where the activation scheme is more than per-token inputs, quant_act_points,
 * quant_kv_bits, quant_act_granularity, quant_act_asymmetric, quant_act_calib; quant_scheme (readable), and quant_scale_dtype and quant_quantizer when they
 * differ from the defaults files had before they existed (f64 scales, rtn), then the quantizer's
 * options (quant_gptq_*, quant_mse_weighted) when it has any, then the transform when there is one:
 * quant_transform (its parts, "rotate+smooth"), quant_transform_seed and quant_online (the slots
 * whose online transform the loader switches back on, "attn.c_proj,mlp.c_proj") where it rotates,
 * quant_smooth_alpha where it smooths. Returns the count. */
#define QUANT_META_MAX 23
int quant_scheme_to_meta(const QuantScheme *s, StMeta *out);
/* 1: the file holds a scheme (read into s); 0: a float checkpoint; -1: malformed metadata. */
int quant_scheme_from_meta(const SafeTensors *st, QuantScheme *s);

/* How a correction was fitted, for the checkpoint (correction_method, correction_objective). */
typedef struct {
    const char *method;     /* "train", "lstsq", ... */
    const char *objective;  /* "ce", "kl", "mse", or the method's name for closed forms */
} CorrectionProvenance;

/* Any qcorr checkpoint, ready for eval and sample. */
typedef struct {
    GPT model;
    Vocab vocab;
    QuantScheme scheme;
    int quantized;      /* the file carries a quantization scheme */
    Corrections corrections;
    int corrected;      /* the file carries correction layers */
} LoadedModel;

/* Refuses (error names the sizes) a model whose buffers would not fit in physical memory. */
int check_memory(const GPTConfig *cfg, int batch, int training);
int load_checkpoint(LoadedModel *lm, const char *path, int max_batch);
/* load_checkpoint on a parsed file, which stays the caller's. */
int load_checkpoint_from(LoadedModel *lm, const SafeTensors *st, int max_batch);
const ModelHook *loaded_hook(LoadedModel *lm);
void loaded_model_free(LoadedModel *lm);

/* Writes a quantized model (scheme may be NULL: a float model) with its corrections (NULL: none).
 * A kind stored folded (bias) is added into a copy of the model's tensors: the file is then a
 * plain quantized checkpoint (correction_folded names the kind), which eval reads as any other. */
int save_model(const char *path, const GPT *m, const Vocab *vocab, const QuantScheme *scheme, const Corrections *c,
               const CorrectionProvenance *how);

#endif
