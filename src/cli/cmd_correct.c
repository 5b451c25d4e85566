/* cmd_correct: `qcorr correct` — one experiment: float loss, quantize, quantized loss, fit the
 * corrections (SGD or lstsq), corrected loss, recovery; writes the corrected checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "correct/budget.h"
#include "correct/experiment.h"
#include "io/checkpoint.h"
#include "nn/train.h"

static void add_number_or_null(cJSON *j, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(j, key, v);
    else cJSON_AddNullToObject(j, key);
}

int cmd_correct(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *granularity = "channel", *scope = "linear,head", *data = NULL;
    const char *objective = "ce", *method = "train", *rank = "match", *lowrank_scale = "none", *scale_dtype = "f16";
    ActFlags actf = ACT_FLAGS_INIT;
    int bits = 4, asymmetric = 0, json = 0, every = 1, hidden = 0, steps = -1, batch = 32, seed = 42;
    const char *steps_text = NULL, *correction_reads = NULL;
    AutoStopFlags af = {0};
    int calib_tokens = 200000, threads = 0, quiet = 0, correction_bits = 32;
    QuantizerFlags qf = {.quantizer = "rtn"};
    TransformFlags tf = {0};
    char method_help[640], method_list[128];
    method_names(method_list, sizeof method_list);
    snprintf(method_help, sizeof method_help,
             "%s: train (AdamW), lstsq (ridge, linear), lowrank (SVD per matrix), bias (bias correction), normtweak (the LayerNorms), "
             "qat (the weights on their grid), scales (each span's stored scale, codes fixed), lwc (the same, codes following: learned clipping), adaround (each weight's rounding, layer by layer); the last five add no bits; T+M: a method that tunes the base, then a correction (lwc+train)",
             method_list);
    double lr = 1e-3, ridge = 1e-4, weight_decay = 0.0;
    ArgSpec specs[] = {
        {"--model", ARG_STRING, &model_path, 0, 0, "float checkpoint"},
        {"--bits", ARG_INT, &bits, -1000, 1000, "weight bits, 2..8 (32: no quantization, the control arm)"},
        {"--granularity", ARG_STRING, &granularity, 0, 0, "tensor | channel | group:G"},
        {"--asymmetric", ARG_FLAG, &asymmetric, 0, 0, "min/max levels instead of symmetric absmax"},
        {"--scope", ARG_STRING, &scope, 0, 0, "tensor kinds to quantize: linear,head[,embedding,norm,bias]"},
        ACT_ARG_SPECS(actf),
        CORRECTION_READS_SPEC(correction_reads),
        {"--scale-dtype", ARG_STRING, &scale_dtype, 0, 0, "storage type of each scale (and minimum): f16 | bf16 | f32"},
        QUANTIZER_ARG_SPECS(qf),
        TRANSFORM_ARG_SPECS(tf),
        {"--every", ARG_INT, &every, -1000000, 1000000, "a correction site after every k-th block (and the last)"},
        {"--hidden", ARG_INT, &hidden, -1000000, 1000000, "0: linear correction; H > 0: MLP of width H"},
        {"--objective", ARG_STRING, &objective, 0, 0, "ce | kl | mse"},
        {"--method", ARG_STRING, &method, 0, 0, method_help},
        {"--rank", ARG_STRING, &rank, 0, 0, "lowrank: k per matrix, or match (the parameters of a linear correction at --every)"},
        {"--lowrank-scale", ARG_STRING, &lowrank_scale, 0, 0, "lowrank: none (SVD of W - Q) | act (of (W - Q) diag(mean |x|), L2QER)"},
        {"--steps", ARG_STRING, &steps_text, 0, 0, "correction training steps, or auto (until the held-out objective stops improving); default 500 for train, 0 for methods that solve"},
        AUTOSTOP_ARG_SPECS(af),
        {"--lr", ARG_FLOAT, &lr, 0, 10, "peak learning rate (warm-up, cosine to lr/10)"},
        {"--weight-decay", ARG_FLOAT, &weight_decay, 0, 10, "AdamW weight decay on the corrections"},
        {"--batch", ARG_INT, &batch, 1, 65536, "windows per step"},
        {"--calib-tokens", ARG_INT, &calib_tokens, 1, 2000000000, "calibration budget in train characters"},
        {"--correction-bits", ARG_INT, &correction_bits, 2, 32, "store the corrections' matrices at 8 or 16 bits (per row, f16 scales); 32: float"},
        {"--ridge", ARG_FLOAT, &ridge, 0, 1e6, "lstsq ridge, relative to the mean diagonal of X^T X"},
        {"--seed", ARG_INT, &seed, 0, 2147483647, "seed of the calibration set, batches and MLP init"},
        {"--out", ARG_STRING, &out, 0, 0, "corrected checkpoint to write (optional)"},
        {"--data", ARG_STRING, &data, 0, 0, "corpus file"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object on stdout"},
        {"--quiet", ARG_FLAG, &quiet, 0, 0, "no progress on stderr"},
    };
    int rc = args_parse("correct", "Quantize a float model and fit correction layers.", specs,
                        sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model_path) return usage_error("correct", "--model is required");
    if (every < 1) return usage_error("correct", "--every %d must be at least 1", every);
    if (hidden < 0) return usage_error("correct", "--hidden %d must be 0 (linear) or a positive MLP width", hidden);
    QuantScheme scheme;
    if ((rc = parse_scheme_flags("correct", bits, granularity, asymmetric, scope, &actf, scale_dtype, &scheme))) return rc;
    if ((rc = parse_correction_reads_flag("correct", correction_reads, &scheme.act))) return rc;
    CorrectOptions o;
    correct_options_default(&o);
    if (parse_objective(objective, &o.objective) != 0) return usage_error("correct", "--objective: %s", qc_last_error());
    if (correct_method_parse(method, &o) != 0) return usage_error("correct", "--method: %s", qc_last_error());
    if ((rc = parse_quantizer_flags("correct", &qf, &scheme))) return rc;
    if ((rc = parse_transform_flags("correct", &tf, &scheme))) return rc;
    const MethodInfo *mi = &method_info[o.method];
    int autostop = steps_text && strcmp(steps_text, "auto") == 0;
    if (steps_text && !autostop) {
        long v;
        if (parse_int("--steps", steps_text, 0, 100000000, &v) != 0) return usage_error("correct", "%s (or auto)", qc_last_error());
        steps = (int)v;
    }
    if ((rc = parse_autostop_flags("correct", &af, autostop, &o.autostop, &o.init))) return rc;
    if (autostop) steps = STEPS_AUTO;
    else if (steps < 0) /* a combination: its first method's 500 where it trains (the correction's own otherwise) */
        steps = o.with_first ? (correct_takes_steps(o.method, 1, o.first) ? 500 : 0) : mi->solves || !mi->trains ? 0 : 500;
    o.hidden = hidden;
    o.steps = steps;
    if (correct_options_check(&o, &scheme) != 0) return usage_error("correct", "%s", qc_last_error());
    /* what the objective names in the result: a stage trained by it */
    int fine_tunes = (mi->trains && !(mi->solves && steps == 0)) || (o.with_first && method_info[o.first].trains);
    int uses_rank = (mi->takes & TAKES_RANK) != 0;
    if (!uses_rank && (strcmp(rank, "match") != 0 || strcmp(lowrank_scale, "none") != 0)) {
        char takers[128] = ""; /* the methods of the table that take them */
        for (int k = 0; k < METHOD_COUNT; k++)
            if (method_info[k].takes & TAKES_RANK) snprintf(takers + strlen(takers), sizeof takers - strlen(takers), "%s%s", takers[0] ? ", " : "", method_info[k].name);
        return usage_error("correct", "%s applies to --method %s, not %s", strcmp(rank, "match") != 0 ? "--rank" : "--lowrank-scale", takers, method);
    }
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
    o.scheme = &scheme;
    o.every = every; o.hidden = hidden; o.steps = steps; o.lr = (float)lr; o.weight_decay = (float)weight_decay;
    if (correction_bits != 32 && correction_bits > 16)
        return usage_error("correct", "--correction-bits %d: expected 2..16 (integer codes) or 32 (float)", correction_bits);
    o.correction_bits = correction_bits;
    o.batch = batch; o.calib_tokens = calib_tokens; o.seed = (uint64_t)seed; o.ridge = ridge; o.quiet = quiet;
    set_threads(threads);
    install_stop_handlers(); /* Ctrl-C stops between steps with a message; nothing half-written */
    if (out && (rc = check_output("correct", "--out", out))) return rc;

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
    GPT *f = &fl.model, q, tfloat;
    Corpus corpus;
    Corrections corr;
    EvalReference ref = {0};
    Evaluation eq = {0};
    CorrectionResult res = {0};
    int have_q = 0, have_corr = 0, have_tf = 0;
    rc = 1;
    if (check_memory(&f->config, batch, 0) != 0 || open_corpus(data, &fl.vocab, &corpus) != 0) goto fail_model;
    if (corpus_check_windows(&corpus, f->config.ctx) != 0) goto fail;
    const int32_t *val = corpus.ids + corpus.n_train;
    double t0 = now_seconds();
    if (eval_reference_build(&ref, f, val, corpus.n_val) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s: %s", model_path, msg);
        goto fail;
    }
    double t_eval = now_seconds() - t0;
    double t1 = now_seconds();
    /* a transform: the float model in the quantized model's basis is what the corrections are fitted
     * against (per-matrix fits read its weights, stream fits its stream); the reference's logits are
     * the same function */
    QuantScheme quantizer_only = scheme;
    if (scheme.transform.kinds) {
        if (gpt_clone(&tfloat, f, batch) != 0) goto fail;
        have_tf = 1;
        if (transform_model_on_corpus(&tfloat, &scheme.transform, &corpus, calib_tokens, (uint64_t)seed) != 0) goto fail;
        f = &tfloat;
        transform_default(&quantizer_only.transform);
    }
    if (gpt_clone(&q, f, batch) != 0) goto fail;
    have_q = 1;
    if (quantize_model_on_corpus(&q, &quantizer_only, &corpus, calib_tokens, (uint64_t)seed, NULL, NULL) != 0) goto fail;
    double t_quant = now_seconds() - t1;
    t1 = now_seconds();
    if (evaluate_model(&q, NULL, val, corpus.n_val, NULL, 0, &ref, &eq) != 0) goto fail;
    t_eval += now_seconds() - t1;
    if (run_correction(&q, f, &corpus, &o, NULL, &ref, &corr, &res) != 0) goto fail;
    have_corr = 1;
    t_eval += res.seconds_eval;
    Outcome oc;
    outcome_compute(&oc, &ref, &eq, &res.eval, &q.config, &scheme, corrections_storage_bits(&corr));
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
        cJSON_AddStringToObject(j, "correction", kind_name(corr.kind));
        cJSON_AddStringToObject(j, "method", method);
        cJSON_AddStringToObject(j, "objective", objective_text);
        add_outcome_fields(j, &oc);
        cJSON_AddBoolToObject(j, "recovery_defined", oc.flag == RECOVERY_OK);
        cJSON_AddStringToObject(j, "quantizer", quantizer_name(scheme.quantizer));
        cJSON_AddNumberToObject(j, "correction_params", (double)corrections_stored_params(&corr));
        cJSON_AddNumberToObject(j, "correction_sites", corr.n_sites);
        cJSON_AddNumberToObject(j, "correction_stored_bits", o.correction_bits);
        if (uses_rank) {
            cJSON *ranks = cJSON_AddArrayToObject(j, "ranks");
            for (int k = 0; k < corr.n_sites; k++) cJSON_AddItemToArray(ranks, cJSON_CreateNumber(corr.sites[k].size));
            cJSON_AddStringToObject(j, "lowrank_scale", lowrank_scale);
        }
        if (autostop) cJSON_AddStringToObject(j, "steps", "auto");
        else cJSON_AddNumberToObject(j, "steps", fine_tunes ? steps : 0);
        cJSON_AddNumberToObject(j, "steps_run", res.train.steps_run);
        cJSON_AddNumberToObject(j, "best_step", res.train.best_step);
        cJSON_AddStringToObject(j, "stopped_by", fine_tunes ? stop_reason_name(res.train.stopped_by) : "none");
        add_number_or_null(j, "heldout_objective", res.train.heldout_objective);
        if (o.with_first) { /* what the combination's first method did */
            cJSON_AddStringToObject(j, "first_method", method_name(o.first));
            cJSON_AddNumberToObject(j, "first_steps_run", res.first.steps_run);
            cJSON_AddStringToObject(j, "first_stopped_by", stop_reason_name(res.first.stopped_by));
            add_number_or_null(j, "first_objective", res.first.objective);
        }
        if (autostop) {
            cJSON_AddNumberToObject(j, "max_steps", o.autostop.max_steps);
            cJSON_AddStringToObject(j, "schedule", schedule_name(o.autostop.schedule));
            cJSON_AddNumberToObject(j, "ema", o.autostop.ema);
        }
        if (o.init == INIT_LSTSQ) cJSON_AddStringToObject(j, "init", "lstsq");
        add_number_or_null(j, "final_objective", res.objective);
        cJSON_AddNumberToObject(j, "calib_tokens", (double)((calib_tokens + q.config.ctx - 1) / q.config.ctx * q.config.ctx));
        cJSON_AddNumberToObject(j, "seconds_quantize", t_quant);
        cJSON_AddNumberToObject(j, "seconds_correct", res.seconds_correct);
        cJSON_AddNumberToObject(j, "seconds_eval", t_eval);
        print_json(j);
    } else {
        printf("scheme     %s\n", desc);
        printf("float      loss %.5f ± %.5f  ppl %.4f  %.0f bits\n", oc.loss_float, oc.loss_se_float, exp(oc.loss_float), oc.model_bits_float);
        printf("quantized  loss %.5f ± %.5f  ppl %.4f  %.0f bits (%.3f a weight)  KL %.5f  top-1 %.4f\n", oc.loss_quant,
               oc.loss_se_quant, exp(oc.loss_quant), oc.model_bits_quant, oc.bits_per_weight, oc.kl_quant, oc.top1_quant);
        printf("corrected  loss %.5f ± %.5f  ppl %.4f  %.0f bits  KL %.5f  top-1 %.4f  (%s, %d sites, %zu parameters, %.0f bits)\n",
               oc.loss_corrected, oc.loss_se_corrected, exp(oc.loss_corrected), oc.model_bits_corrected, oc.kl_corrected,
               oc.top1_corrected, kind_name(corr.kind), corr.n_sites, corrections_stored_params(&corr), oc.correction_bits);
        double gap = oc.loss_quant - oc.loss_float;
        if (oc.flag == RECOVERY_OK)
            printf("recovery   %.1f%% of the loss gap (%.5f ± %.5f nats), %.1f%% of the perplexity gap\n", 100 * oc.recovery_loss, gap,
                   oc.gap_se, 100 * oc.recovery_ppl);
        else
            printf("recovery   %s: the gap is %.5f ± %.5f nats (under %g standard errors, or %g nats); gain %.5f ± %.5f nats\n",
                   recovery_flag_name(oc.flag), gap, oc.gap_se, RECOVERY_MIN_SE, RECOVERY_MIN_GAP, oc.loss_quant - oc.loss_corrected,
                   oc.gain_se);
        printf("time       quantize %.2fs, correct %.2fs, eval %.2fs\n", t_quant, res.seconds_correct, t_eval);
    }
    rc = 0;
fail:
    evaluation_free(&eq);
    evaluation_free(&res.eval);
    eval_reference_free(&ref);
    corpus_free(&corpus);
fail_model:
    if (have_corr) corrections_free(&corr);
    if (have_q) gpt_free(&q);
    if (have_tf) gpt_free(&tfloat);
    loaded_model_free(&fl);
    return rc ? command_failed("correct") : 0;
}

int parse_autostop_flags(const char *command, const AutoStopFlags *f, int autostop, AutoStop *a, CorrectionInit *init) {
    auto_stop_default(a);
    *init = INIT_ZERO;
    const char *given = f->max_steps ? "--max-steps" : f->eval_every ? "--eval-every" : f->patience ? "--patience"
                      : f->min_delta ? "--min-delta" : f->heldout_share ? "--heldout-share" : f->schedule ? "--schedule"
                      : f->ema ? "--ema" : NULL;
    if (given && !autostop) return usage_error(command, "%s applies to --steps auto", given);
    long v;
    if (f->max_steps) {
        if (parse_int("--max-steps", f->max_steps, 1, 100000000, &v) != 0) return usage_error(command, "%s", qc_last_error());
        a->max_steps = (int)v;
    }
    if (f->eval_every) {
        if (parse_int("--eval-every", f->eval_every, 1, 100000000, &v) != 0) return usage_error(command, "%s", qc_last_error());
        a->eval_every = (int)v;
    }
    if (f->patience) {
        if (parse_int("--patience", f->patience, 1, 1000000, &v) != 0) return usage_error(command, "%s", qc_last_error());
        a->patience = (int)v;
    }
    if (f->min_delta && parse_float("--min-delta", f->min_delta, 0, 1, &a->min_delta) != 0) return usage_error(command, "%s", qc_last_error());
    if (f->heldout_share) {
        if (parse_float("--heldout-share", f->heldout_share, 0, 1, &a->heldout_share) != 0) return usage_error(command, "%s", qc_last_error());
        if (!(a->heldout_share > 0 && a->heldout_share < 1))
            return usage_error(command, "--heldout-share %s must lie strictly between 0 and 1", f->heldout_share);
    }
    if (f->ema) {
        if (parse_float("--ema", f->ema, 0, 1, &a->ema) != 0) return usage_error(command, "%s", qc_last_error());
        if (!(a->ema < 1)) return usage_error(command, "--ema %s must be below 1 (0: off)", f->ema);
    }
    if (f->schedule && parse_schedule(f->schedule, &a->schedule) != 0) return usage_error(command, "--schedule: %s", qc_last_error());
    if (f->init) {
        if (strcmp(f->init, "zero") == 0) *init = INIT_ZERO;
        else if (strcmp(f->init, "lstsq") == 0) *init = INIT_LSTSQ;
        else return usage_error(command, "--init: expected zero or lstsq, got '%s'", f->init);
    }
    return 0;
}
