/* cmd_correct: `qcorr correct` — one experiment: float loss, quantize, quantized loss, fit the
 * corrections (SGD or lstsq), corrected loss, recovery; writes the corrected checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../checkpoint.h"
#include "../experiment.h"
#include "../train.h"
#include "../util.h"
#include "args.h"
#include "commands.h"
#include "common.h"

static void add_number_or_null(cJSON *j, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(j, key, v);
    else cJSON_AddNullToObject(j, key);
}

int cmd_correct(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *granularity = "channel", *scope = "linear,head", *data = NULL;
    const char *objective = "ce", *method = "train", *rank = "match", *lowrank_scale = "none";
    int bits = 4, asymmetric = 0, act_bits = 0, json = 0, every = 1, hidden = 0, steps = -1, batch = 32, seed = 42;
    int calib_tokens = 200000, threads = 0, quiet = 0;
    QuantizerFlags qf = {.quantizer = "rtn"};
    char method_help[256], method_list[128];
    method_names(method_list, sizeof method_list);
    snprintf(method_help, sizeof method_help, "%s: train (AdamW), lstsq (ridge, linear), lowrank (SVD per matrix), bias (bias correction)",
             method_list);
    double lr = 1e-3, ridge = 1e-4, weight_decay = 0.0;
    ArgSpec specs[] = {
        {"--model", ARG_STRING, &model_path, 0, 0, "float checkpoint"},
        {"--bits", ARG_INT, &bits, -1000, 1000, "weight bits, 2..8 (32: no quantization, the control arm)"},
        {"--granularity", ARG_STRING, &granularity, 0, 0, "tensor | channel | group:G"},
        {"--asymmetric", ARG_FLAG, &asymmetric, 0, 0, "min/max levels instead of symmetric absmax"},
        {"--scope", ARG_STRING, &scope, 0, 0, "tensor kinds to quantize: linear,head[,embedding,norm,bias]"},
        {"--act-bits", ARG_INT, &act_bits, -1000, 1000, "activation fake-quantization bits (0: off)"},
        QUANTIZER_ARG_SPECS(qf),
        {"--every", ARG_INT, &every, -1000000, 1000000, "a correction site after every k-th block (and the last)"},
        {"--hidden", ARG_INT, &hidden, -1000000, 1000000, "0: linear correction; H > 0: MLP of width H"},
        {"--objective", ARG_STRING, &objective, 0, 0, "ce | kl | mse"},
        {"--method", ARG_STRING, &method, 0, 0, method_help},
        {"--rank", ARG_STRING, &rank, 0, 0, "lowrank: k per matrix, or match (the parameters of a linear correction at --every)"},
        {"--lowrank-scale", ARG_STRING, &lowrank_scale, 0, 0, "lowrank: none (SVD of W - Q) | act (of (W - Q) diag(mean |x|), L2QER)"},
        {"--steps", ARG_INT, &steps, -1, 100000000, "correction training steps (-1: 500 for train, 0 for methods that solve)"},
        {"--lr", ARG_FLOAT, &lr, 0, 10, "peak learning rate (warm-up, cosine to lr/10)"},
        {"--weight-decay", ARG_FLOAT, &weight_decay, 0, 10, "AdamW weight decay on the corrections"},
        {"--batch", ARG_INT, &batch, 1, 65536, "windows per step"},
        {"--calib-tokens", ARG_INT, &calib_tokens, 1, 2000000000, "calibration budget in train characters"},
        {"--ridge", ARG_FLOAT, &ridge, 0, 1e6, "lstsq ridge, relative to the mean diagonal of X^T X"},
        {"--seed", ARG_INT, &seed, 0, 2147483647, "seed of the calibration set, batches and MLP init"},
        {"--out", ARG_STRING, &out, 0, 0, "corrected checkpoint to write (optional)"},
        {"--data", ARG_STRING, &data, 0, 0, "corpus file"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object on stdout"},
        {"--quiet", ARG_FLAG, &quiet, 0, 0, "no progress on stderr"},
    };
    int rc = args_parse("correct", "Quantize a float model and fit correction layers (SPEC sections 3-5).", specs,
                        sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model_path) return usage_error("correct", "--model is required");
    if (every < 1) return usage_error("correct", "--every %d must be at least 1", every);
    if (hidden < 0) return usage_error("correct", "--hidden %d must be 0 (linear) or a positive MLP width", hidden);
    QuantScheme scheme;
    if ((rc = parse_scheme_flags("correct", bits, granularity, asymmetric, scope, act_bits, &scheme))) return rc;
    CorrectOptions o;
    correct_options_default(&o);
    if (parse_objective(objective, &o.objective) != 0) return usage_error("correct", "--objective: %s", qc_last_error());
    int m = method_by_name(method);
    if (m < 0) {
        char names[128];
        method_names(names, sizeof names);
        return usage_error("correct", "--method: expected %s, got '%s'", names, method);
    }
    o.method = (CorrectMethod)m;
    if ((rc = parse_quantizer_flags("correct", &qf, &scheme))) return rc;
    const MethodInfo *mi = &method_info[o.method];
    CorrectionKindId kind = method_kind(o.method, hidden);
    if (!method_uses_hidden(o.method) && hidden != 0)
        return usage_error("correct", "--method %s fits %s corrections, which have no width: use --hidden 0", method,
                           kind_info[method_kind(o.method, 0)].name);
    if (method_fits_weight_error(o.method) && scheme.bits >= 32)
        return usage_error("correct", "--method %s fits each matrix's quantization error: at --bits 32 there is none", method);
    if (correction_kind_ops(kind)->fold && (scheme.scope & SCOPE_OF(ROLE_BIAS)))
        return usage_error("correct", "--method %s folds into the layers' biases, which --scope bias quantizes", method);
    if (steps < 0) steps = mi->solves ? 0 : 500;
    int fine_tunes = mi->trains && !(mi->solves && steps == 0);
    if (fine_tunes && o.objective == OBJECTIVE_MSE && kind_info[kind].placement != PLACE_STREAM)
        return usage_error("correct", "--objective mse compares the streams after blocks; --method %s sits on linear layers: use ce or kl",
                           method);
    int uses_rank = o.method == METHOD_LOWRANK;
    if (!uses_rank && (strcmp(rank, "match") != 0 || strcmp(lowrank_scale, "none") != 0))
        return usage_error("correct", "%s applies to --method lowrank, not %s", strcmp(rank, "match") != 0 ? "--rank" : "--lowrank-scale", method);
    if (strcmp(rank, "match") == 0) {
        o.rank = RANK_MATCH;
    } else {
        long k;
        if (parse_int("--rank", rank, 1, 1 << 20, &k) != 0) return usage_error("correct", "%s (or match)", qc_last_error());
        o.rank = (int)k;
    }
    if (strcmp(lowrank_scale, "none") != 0 && strcmp(lowrank_scale, "act") != 0)
        return usage_error("correct", "--lowrank-scale: expected none or act, got '%s'", lowrank_scale);
    o.lowrank_act_scale = strcmp(lowrank_scale, "act") == 0;
    o.scope = scheme.scope;
    o.every = every; o.hidden = hidden; o.steps = steps; o.lr = (float)lr; o.weight_decay = (float)weight_decay;
    o.batch = batch; o.calib_tokens = calib_tokens; o.seed = (uint64_t)seed; o.ridge = ridge; o.quiet = quiet;
    set_threads(threads);
    install_stop_handlers(); /* Ctrl-C stops between steps with a message; nothing half-written */
    if (out && check_writable(out) != 0) return command_failed("correct");

    LoadedModel fl;
    if ((rc = load_float_checkpoint("correct", model_path, batch, &fl))) return rc;
    { /* a layout the model cannot hold (a rank beyond a matrix) is a usage error, found before any work */
        CorrectionLayout layout;
        int *sizes = qc_calloc((size_t)gpt_linear_count(&fl.model.config), sizeof(int), "correction layout");
        int bad = !sizes || correction_layout_for(&o, &fl.model.config, &layout, sizes) != 0;
        free(sizes);
        if (bad) {
            loaded_model_free(&fl);
            return usage_error("correct", "--rank: %s", qc_last_error());
        }
    }
    GPT *f = &fl.model, q;
    Corpus corpus;
    Corrections corr;
    int have_q = 0, have_corr = 0;
    rc = 1;
    if (check_memory(&f->config, batch, 0) != 0 || open_corpus(data, &fl.vocab, &corpus) != 0) goto fail_model;
    double t0 = now_seconds();
    double loss_f = evaluate_loss(f, corpus.ids + corpus.n_train, corpus.n_val, NULL);
    double t_eval = now_seconds() - t0;
    if (!isfinite(loss_f)) { qc_error("%s: validation split is shorter than one window", corpus.path); goto fail; }
    if (gpt_clone(&q, f, batch) != 0) goto fail;
    have_q = 1;
    double t1 = now_seconds();
    if (quantize_model_on_corpus(&q, &scheme, &corpus, calib_tokens, (uint64_t)seed, NULL, NULL) != 0) goto fail;
    double t_quant = now_seconds() - t1;
    double loss_q = evaluate_loss(&q, corpus.ids + corpus.n_train, corpus.n_val, NULL);
    CorrectionResult res;
    if (run_correction(&q, f, &corpus, &o, NULL, &corr, &res) != 0) goto fail;
    have_corr = 1;
    double loss_c = res.loss_corrected, objective_value = res.objective, t_correct = res.seconds_correct;
    t_eval += res.seconds_eval;
    double rec_loss, rec_ppl;
    int defined = recovery_loss(loss_f, loss_q, loss_c, &rec_loss);
    recovery_ppl(loss_f, loss_q, loss_c, &rec_ppl);
    const char *objective_text = fine_tunes ? objective : method;
    char desc[256];
    quant_scheme_describe(&scheme, desc, sizeof desc);
    if (out && save_model(out, &q, &fl.vocab, &scheme, &corr, &(CorrectionProvenance){method, objective_text}) != 0) goto fail;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model_path);
        if (out) cJSON_AddStringToObject(j, "out", out);
        cJSON_AddStringToObject(j, "scheme", desc);
        cJSON_AddNumberToObject(j, "bits", scheme.bits);
        cJSON_AddNumberToObject(j, "every", every);
        cJSON_AddNumberToObject(j, "hidden", hidden);
        cJSON_AddStringToObject(j, "method", method);
        cJSON_AddStringToObject(j, "objective", objective_text);
        add_result_fields(j, loss_f, loss_q, loss_c);
        cJSON_AddBoolToObject(j, "recovery_defined", defined);
        cJSON_AddStringToObject(j, "quantizer", quantizer_name(scheme.quantizer));
        cJSON_AddStringToObject(j, "correction_kind", kind_info[corr.kind].name);
        cJSON_AddNumberToObject(j, "correction_params", (double)corrections_stored_params(&corr));
        cJSON_AddNumberToObject(j, "correction_sites", corr.n_sites);
        if (uses_rank) {
            cJSON *ranks = cJSON_AddArrayToObject(j, "ranks");
            for (int k = 0; k < corr.n_sites; k++) cJSON_AddItemToArray(ranks, cJSON_CreateNumber(corr.sites[k].size));
            cJSON_AddStringToObject(j, "lowrank_scale", lowrank_scale);
        }
        cJSON_AddNumberToObject(j, "steps", fine_tunes ? steps : 0);
        add_number_or_null(j, "final_objective", objective_value);
        cJSON_AddNumberToObject(j, "calib_tokens", (double)((calib_tokens + q.config.ctx - 1) / q.config.ctx * q.config.ctx));
        cJSON_AddNumberToObject(j, "seconds_quantize", t_quant);
        cJSON_AddNumberToObject(j, "seconds_correct", t_correct);
        cJSON_AddNumberToObject(j, "seconds_eval", t_eval);
        print_json(j);
    } else {
        printf("scheme     %s\n", desc);
        printf("float      loss %.5f  ppl %.4f\n", loss_f, exp(loss_f));
        printf("quantized  loss %.5f  ppl %.4f\n", loss_q, exp(loss_q));
        printf("corrected  loss %.5f  ppl %.4f  (%s, %d sites, %zu parameters stored)\n", loss_c, exp(loss_c),
               kind_info[corr.kind].name, corr.n_sites, corrections_stored_params(&corr));
        if (defined) printf("recovery   %.1f%% of the loss gap, %.1f%% of the perplexity gap\n", 100 * rec_loss, 100 * rec_ppl);
        else printf("recovery   undefined: |loss_quant - loss_float| < %g nats; gain %.5f nats\n", RECOVERY_MIN_GAP, loss_q - loss_c);
        printf("time       quantize %.2fs, correct %.2fs, eval %.2fs\n", t_quant, t_correct, t_eval);
    }
    rc = 0;
fail:
    corpus_free(&corpus);
fail_model:
    if (have_corr) corrections_free(&corr);
    if (have_q) gpt_free(&q);
    loaded_model_free(&fl);
    return rc ? command_failed("correct") : 0;
}
