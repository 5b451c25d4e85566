/* cmd_quantize: `qcorr quantize` — fake-quantizes a float checkpoint's weights and writes the
 * dequantized floats with the scheme in metadata; reports each tensor's relative error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../checkpoint.h"
#include "../quant.h"
#include "../util.h"
#include "args.h"
#include "commands.h"
#include "common.h"

/* Shared by quantize and correct: the scheme flags; a refused value is named with its flag. */
int parse_scale_dtype_flag(const char *command, const char *text, ScaleDtype *out) {
    /* f64 stays internal: it is no storage format (SCALE_EXACT, for the exact-level tests) */
    if (scale_dtype_parse(text, out) != 0 || *out == SCALE_EXACT)
        return usage_error(command, "--scale-dtype: expected f16, bf16 or f32, got '%s'", text);
    return 0;
}

int parse_scheme_flags(const char *command, int bits, const char *granularity, int asymmetric, const char *scope,
                       int act_bits, const char *scale_dtype, QuantScheme *s) {
    quant_scheme_default(s, bits);
    int rc = parse_scale_dtype_flag(command, scale_dtype, &s->scale_dtype);
    if (rc) return rc;
    s->asymmetric = asymmetric;
    s->act_bits = act_bits;
    if (parse_granularity(granularity, s) != 0) return usage_error(command, "--granularity: %s", qc_last_error());
    if (parse_scope(scope, &s->scope) != 0) return usage_error(command, "--scope: %s", qc_last_error());
    QuantScheme only_bits = *s;
    only_bits.act_bits = 0;
    if (quant_scheme_check(&only_bits) != 0) return usage_error(command, "--bits: %s", qc_last_error());
    if (quant_scheme_check(s) != 0) return usage_error(command, "--act-bits: %s", qc_last_error());
    return 0;
}

/* Loads a float checkpoint for commands that must start from one. */
int load_float_checkpoint(const char *command, const char *path, int max_batch, LoadedModel *lm) {
    if (load_checkpoint(lm, path, max_batch) != 0) return command_failed(command);
    if (lm->quantized || lm->corrected) {
        fprintf(stderr, "qcorr %s: --model %s is a %s checkpoint; this command needs the float model\n", command, path,
                lm->corrected ? "corrected" : "quantized");
        loaded_model_free(lm);
        return 2;
    }
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *granularity = "channel", *scope = "linear,head";
    const char *scale_dtype = "f16";
    int bits = 4, asymmetric = 0, act_bits = 0, json = 0;
    ArgSpec specs[] = {
        {"--model", ARG_STRING, &model_path, 0, 0, "float checkpoint"},
        {"--bits", ARG_INT, &bits, 2, 32, "weight bits, 2..8 (32: no quantization)"},
        {"--granularity", ARG_STRING, &granularity, 0, 0, "tensor | channel | group:G"},
        {"--asymmetric", ARG_FLAG, &asymmetric, 0, 0, "min/max levels instead of symmetric absmax"},
        {"--scope", ARG_STRING, &scope, 0, 0, "tensor kinds to quantize: linear,head[,embedding,norm,bias]"},
        {"--act-bits", ARG_INT, &act_bits, 0, 8, "activation fake-quantization bits (0: off)"},
        {"--scale-dtype", ARG_STRING, &scale_dtype, 0, 0, "storage type of each scale (and minimum): f16 | bf16 | f32"},
        {"--out", ARG_STRING, &out, 0, 0, "quantized checkpoint to write"},
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object on stdout"},
    };
    int rc = args_parse("quantize", "Fake-quantize a float checkpoint (SPEC section 3).", specs, sizeof specs / sizeof *specs,
                        argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model_path || !out) return usage_error("quantize", "--model and --out are required");
    QuantScheme scheme;
    if ((rc = parse_scheme_flags("quantize", bits, granularity, asymmetric, scope, act_bits, scale_dtype, &scheme))) return rc;
    LoadedModel lm;
    if ((rc = load_float_checkpoint("quantize", model_path, 1, &lm))) return rc;
    TensorQuantError *errors = qc_calloc((size_t)lm.model.n_specs, sizeof *errors, "error table");
    int n_errors = 0;
    if (!errors || quantize_model(&lm.model, &scheme, errors, &n_errors) != 0 ||
        save_model(out, &lm.model, &lm.vocab, &scheme, NULL, NULL) != 0) {
        free(errors);
        loaded_model_free(&lm);
        return command_failed("quantize");
    }
    char desc[256];
    quant_scheme_describe(&scheme, desc, sizeof desc);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddStringToObject(j, "scheme", desc);
        cJSON *t = cJSON_AddObjectToObject(j, "rel_error");
        for (int i = 0; i < n_errors; i++) cJSON_AddNumberToObject(t, errors[i].name, errors[i].rel_error);
        print_json(j);
    } else {
        printf("%s -> %s (%s)\n", model_path, out, desc);
        for (int i = 0; i < n_errors; i++) printf("  %-40s rel. error %.5f\n", errors[i].name, errors[i].rel_error);
    }
    free(errors);
    loaded_model_free(&lm);
    return 0;
}
