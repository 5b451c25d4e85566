/* cmd_quantize: `qcorr quantize` — fake-quantizes a float checkpoint's weights and writes the
 * dequantized floats with the scheme in metadata; reports each tensor's relative error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "correct/experiment.h"
#include "io/checkpoint.h"
#include "quant/quant.h"

/* Shared by quantize and correct: the scheme flags; a refused value is named with its flag. */
int parse_scale_dtype_flag(const char *command, const char *text, ScaleDtype *out) {
    /* f64 stays internal: it is no storage format (SCALE_EXACT, for the exact-level tests) */
    if (scale_dtype_parse(text, out) != 0 || *out == SCALE_EXACT)
        return usage_error(command, "--scale-dtype: expected f16, bf16 or f32, got '%s'", text);
    return 0;
}

int parse_act_flags(const char *command, const ActFlags *f, int weight_bits, ActScheme *a) {
    act_scheme_default(a);
    int bits = 0;
    if (f->bits && strcmp(f->bits, "same") == 0) {
        if (weight_bits < 0) return usage_error(command, "--act-bits same follows --bits, which is a list here: give the activation bits");
        if (weight_bits >= 32) return usage_error(command, "--act-bits same: --bits %d quantizes no weights, so there are no bits to follow", weight_bits);
        bits = weight_bits;
    } else if (f->bits) {
        long v;
        if (parse_int("--act-bits", f->bits, 0, 8, &v) != 0) return usage_error(command, "%s (or same)", qc_last_error());
        bits = (int)v;
    }
    unsigned points = bits ? ACT_POINT_INPUTS : 0u;
    if (f->points && act_parse_points(f->points, &points) != 0) return usage_error(command, "--act-points: %s", qc_last_error());
    if (f->kv_bits == 0 && (points & ACT_POINT_KV)) return usage_error(command, "--kv-bits 0 with kv in --act-points");
    int kv = f->kv_bits > 0 ? f->kv_bits : (points & ACT_POINT_KV) ? bits : 0;
    if (f->kv_bits > 0) points |= ACT_POINT_KV;
    if ((points & ~ACT_POINT_KV) && !bits) return usage_error(command, "--act-points %s needs --act-bits", f->points);
    if ((points & ACT_POINT_KV) && !kv) return usage_error(command, "--act-points kv needs --act-bits or --kv-bits");
    const char *needs_act = f->granularity ? "--act-granularity" : f->calib ? "--act-calib" : f->asymmetric ? "--act-asymmetric" : NULL;
    if (needs_act && !points) return usage_error(command, "%s applies when activations are quantized (--act-bits or --kv-bits)", needs_act);
    a->points = points;
    a->bits = (points & ~ACT_POINT_KV) ? bits : 0;
    a->kv_bits = kv;
    a->asymmetric = f->asymmetric;
    if (f->granularity && act_parse_granularity(f->granularity, &a->granularity) != 0)
        return usage_error(command, "--act-granularity: %s", qc_last_error());
    if (f->calib && a->granularity != ACT_STATIC) return usage_error(command, "--act-calib applies to --act-granularity static");
    if (f->calib && act_parse_calib(f->calib, a) != 0) return usage_error(command, "--act-calib: %s", qc_last_error());
    if (act_scheme_check(a) != 0) return usage_error(command, "--act-bits: %s", qc_last_error());
    return 0;
}

int parse_correction_reads_flag(const char *command, const char *text, ActScheme *a) {
    if (!text) return 0;
    if (act_parse_correction_reads(text, &a->correction_float) != 0) return usage_error(command, "--correction-reads: %s", qc_last_error());
    if (a->correction_float && !act_point_bits(a, ACT_POINT_STREAM))
        return usage_error(command, "--correction-reads float: the stream is not quantized (add stream to --act-points); a correction reads the float stream then anyway");
    return 0;
}

int parse_scheme_flags(const char *command, int bits, const char *granularity, int asymmetric, const char *scope,
                       const ActFlags *act, const char *scale_dtype, QuantScheme *s) {
    quant_scheme_default(s, bits);
    int rc = parse_scale_dtype_flag(command, scale_dtype, &s->scale_dtype);
    if (rc) return rc;
    s->asymmetric = asymmetric;
    if (parse_granularity(granularity, s) != 0) return usage_error(command, "--granularity: %s", qc_last_error());
    if (parse_scope(scope, &s->scope) != 0) return usage_error(command, "--scope: %s", qc_last_error());
    if (quant_scheme_check(s) != 0) return usage_error(command, "--bits: %s", qc_last_error());
    if ((rc = parse_act_flags(command, act, bits, &s->act))) return rc;
    if (quant_scheme_check(s) != 0) return usage_error(command, "--act-bits: %s", qc_last_error());
    return 0;
}

const QuantizerOption *quantizer_flag_option(int k) {
    for (int q = 0, seen = 0; q < QUANTIZER_COUNT; q++)
        for (const QuantizerOption *const *o = quantizer_ops((QuantizerId)q)->options; o && *o; o++) {
            int first = 1; /* a flag two quantizers share (--mse-weighted) counts once, at the first */
            for (int p = 0; p < q && first; p++) first = !quantizer_option((QuantizerId)p, (*o)->flag);
            if (first && seen++ == k) return *o;
        }
    return NULL;
}

const char *quantizer_flag_help(void) {
    static char help[192];
    char names[128];
    quantizer_names(names, sizeof names);
    snprintf(help, sizeof help, "%s (the quantizer table; options below apply to the one named)", names);
    return help;
}

/* "--damp, --act-order": the option flags given, for messages */
static void flags_given(const QuantizerFlags *f, char *out, size_t size) {
    out[0] = 0;
    for (int k = 0; k < QUANTIZER_MAX_FLAGS && quantizer_flag_option(k); k++)
        if (f->text[k] || f->given[k]) snprintf(out + strlen(out), size - strlen(out), " %s", quantizer_flag_option(k)->flag);
}

int parse_quantizer_flags(const char *command, const QuantizerFlags *f, QuantScheme *s) {
    int q = quantizer_by_name(f->quantizer);
    if (q < 0) {
        char names[128];
        quantizer_names(names, sizeof names);
        return usage_error(command, "--quantizer: expected %s, got '%s'", names, f->quantizer);
    }
    s->quantizer = (QuantizerId)q;
    /* an option of another quantizer is refused, naming those it belongs to */
    for (int k = 0; k < QUANTIZER_MAX_FLAGS && quantizer_flag_option(k); k++) {
        const char *flag = quantizer_flag_option(k)->flag;
        if (!(f->text[k] || f->given[k]) || quantizer_option(s->quantizer, flag)) continue;
        char owners[128] = "";
        for (int p = 0; p < QUANTIZER_COUNT; p++)
            if (quantizer_option((QuantizerId)p, flag))
                snprintf(owners + strlen(owners), sizeof owners - strlen(owners), "%s%s", owners[0] ? " or " : "", quantizer_name((QuantizerId)p));
        return usage_error(command, "%s applies to --quantizer %s, not %s", flag, owners, f->quantizer);
    }
    for (int k = 0; k < QUANTIZER_MAX_FLAGS && quantizer_flag_option(k); k++) {
        if (!(f->text[k] || f->given[k])) continue;
        const QuantizerOption *o = quantizer_option(s->quantizer, quantizer_flag_option(k)->flag);
        if (o->parse(o->flag, f->text[k] ? f->text[k] : "1", s) != 0) return usage_error(command, "%s", qc_last_error());
    }
    /* an option that means nothing beside the others given (--mse-weighted without gptq's mse fit) */
    for (int k = 0; k < QUANTIZER_MAX_FLAGS && quantizer_flag_option(k); k++) {
        const QuantizerOption *o = quantizer_option(s->quantizer, quantizer_flag_option(k)->flag);
        if ((f->text[k] || f->given[k]) && o->applies && !o->applies(s))
            return usage_error(command, "%s does not apply to --quantizer %s with these options (%s)", o->flag, f->quantizer, o->help);
    }
    if (quant_scheme_check(s) != 0) return usage_error(command, "%s", qc_last_error());
    return 0;
}

int parse_transform_flags(const char *command, const TransformFlags *f, QuantScheme *s) {
    TransformScheme *t = &s->transform;
    transform_default(t);
    if (f->transform && transform_parse(f->transform, t) != 0) return usage_error(command, "--transform: %s", qc_last_error());
    if (f->smooth_alpha) {
        if (!(t->kinds & TRANSFORM_SMOOTH)) return usage_error(command, "--smooth-alpha applies to a --transform with smooth");
        if (parse_float("--smooth-alpha", f->smooth_alpha, 0.0, 1.0, &t->smooth_alpha) != 0) return usage_error(command, "%s", qc_last_error());
    }
    if (f->rotate_seed) {
        if (!(t->kinds & (TRANSFORM_ROTATE | TRANSFORM_ONLINE)))
            return usage_error(command, "--rotate-seed applies to a --transform with online or rotate");
        long v;
        if (parse_int("--rotate-seed", f->rotate_seed, 0, 2147483647, &v) != 0) return usage_error(command, "%s", qc_last_error());
        t->rotate_seed = (uint64_t)v;
    }
    return 0;
}

/* Loads a float checkpoint for commands that must start from one. */
int load_float_checkpoint(const char *command, const char *path, int max_batch, LoadedModel *lm) {
    if (load_checkpoint(lm, path, max_batch) != 0) return command_failed(command);
    if (lm->quantized || lm->corrected || lm->scheme.transform.kinds) {
        fprintf(stderr, "qcorr %s: --model %s is a %s checkpoint; this command needs the float model\n", command, path,
                lm->corrected ? "corrected" : lm->quantized ? "quantized" : "transformed");
        loaded_model_free(lm);
        return 2;
    }
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *granularity = "channel", *scope = "linear,head", *data = NULL;
    int bits = 4, asymmetric = 0, json = 0, calib_tokens = 200000, seed = 42, threads = 0;
    QuantizerFlags qf = {.quantizer = "rtn"};
    ActFlags af = ACT_FLAGS_INIT;
    TransformFlags tf = {0};
    const char *scale_dtype = "f16";
    ArgSpec specs[] = {
        {"--model", ARG_STRING, &model_path, 0, 0, "float checkpoint"},
        {"--bits", ARG_INT, &bits, 2, 32, "weight bits, 2..8 (32: no quantization)"},
        {"--granularity", ARG_STRING, &granularity, 0, 0, "tensor | channel | group:G"},
        {"--asymmetric", ARG_FLAG, &asymmetric, 0, 0, "min/max levels instead of symmetric absmax"},
        {"--scope", ARG_STRING, &scope, 0, 0, "tensor kinds to quantize: linear,head[,embedding,norm,bias]"},
        ACT_ARG_SPECS(af),
        {"--scale-dtype", ARG_STRING, &scale_dtype, 0, 0, "storage type of each scale (and minimum): f16 | bf16 | f32"},
        QUANTIZER_ARG_SPECS(qf),
        TRANSFORM_ARG_SPECS(tf),
        {"--data", ARG_STRING, &data, 0, 0, "corpus the calibration windows come from (quantizers that need data)"},
        {"--calib-tokens", ARG_INT, &calib_tokens, 1, 2000000000, "calibration budget in train characters"},
        {"--seed", ARG_INT, &seed, 0, 2147483647, "seed of the calibration windows (as correct draws them)"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--out", ARG_STRING, &out, 0, 0, "quantized checkpoint to write"},
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object on stdout"},
    };
    int rc = args_parse("quantize", "Fake-quantize a float checkpoint.", specs, sizeof specs / sizeof *specs,
                        argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model_path || !out) return usage_error("quantize", "--model and --out are required");
    QuantScheme scheme;
    if ((rc = parse_scheme_flags("quantize", bits, granularity, asymmetric, scope, &af, scale_dtype, &scheme))) return rc;
    if ((rc = parse_quantizer_flags("quantize", &qf, &scheme))) return rc;
    if ((rc = parse_transform_flags("quantize", &tf, &scheme))) return rc;
    int calibrate = quant_scheme_needs_calibration(&scheme);
    char corpus_path[4096];
    if (calibrate && corpus_find(data, corpus_path, sizeof corpus_path) != 0) {
        if (transform_needs_calibration(&scheme.transform))
            return usage_error("quantize", "--transform %s needs calibration data: %s", tf.transform, qc_last_error());
        QuantScheme weights_only = scheme;
        act_scheme_default(&weights_only.act);
        if (!quant_scheme_needs_calibration(&weights_only))
            return usage_error("quantize", "--act-granularity static needs calibration data: %s", qc_last_error());
        char given[256];
        flags_given(&qf, given, sizeof given);
        return usage_error("quantize", "--quantizer %s%s needs calibration data: %s", qf.quantizer, given, qc_last_error());
    }
    if ((rc = check_output("quantize", "--out", out))) return rc;
    set_threads(threads);
    install_stop_handlers();
    int batch = calibrate ? 32 : 1; /* windows per calibration forward */
    LoadedModel lm;
    if ((rc = load_float_checkpoint("quantize", model_path, batch, &lm))) return rc;
    Corpus corpus;
    int have_corpus = 0;
    if (calibrate) {
        if (corpus_load(&corpus, corpus_path, &lm.vocab) != 0) {
            loaded_model_free(&lm);
            return command_failed("quantize");
        }
        have_corpus = 1;
    }
    TensorQuantError *errors = qc_calloc((size_t)lm.model.n_specs, sizeof *errors, "error table");
    int n_errors = 0;
    double t0 = now_seconds();
    rc = !errors || quantize_model_on_corpus(&lm.model, &scheme, have_corpus ? &corpus : NULL, calib_tokens, (uint64_t)seed, errors,
                                             &n_errors) != 0 ||
         save_model(out, &lm.model, &lm.vocab, &scheme, NULL, NULL) != 0;
    double seconds = now_seconds() - t0;
    if (have_corpus) corpus_free(&corpus);
    if (rc) {
        free(errors);
        loaded_model_free(&lm);
        return command_failed("quantize");
    }
    char desc[256];
    quant_scheme_describe(&scheme, desc, sizeof desc);
    int T = lm.model.config.ctx;
    long calib_used = calibrate ? (calib_tokens + T - 1) / T * (long)T : 0;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddStringToObject(j, "scheme", desc);
        cJSON_AddStringToObject(j, "quantizer", quantizer_name(scheme.quantizer));
        cJSON_AddNumberToObject(j, "calib_tokens", (double)calib_used);
        cJSON_AddNumberToObject(j, "seconds_quantize", seconds);
        cJSON *t = cJSON_AddObjectToObject(j, "rel_error");
        for (int i = 0; i < n_errors; i++) cJSON_AddNumberToObject(t, errors[i].name, errors[i].rel_error);
        print_json(j);
    } else {
        printf("%s -> %s (%s)\n", model_path, out, desc);
        if (calibrate) printf("  calibrated on %ld characters (seed %d), %.2fs\n", calib_used, seed, seconds);
        for (int i = 0; i < n_errors; i++) printf("  %-40s rel. error %.5f\n", errors[i].name, errors[i].rel_error);
    }
    free(errors);
    loaded_model_free(&lm);
    return 0;
}
