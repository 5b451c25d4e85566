/* experiment: see experiment.h (the training and lstsq fits are fit.c's). Correction training never calls the optimizer on the base and
 * runs the base backward with param_grads = 0: its weights cannot change. */
#include "correct/experiment.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "correct/budget.h"
#include "correct/compensate.h"
#include "correct/tune.h"
#include "kernels/ops.h"
#include "nn/optim.h"
#include "nn/train.h"

void correct_options_default(CorrectOptions *o) {
    memset(o, 0, sizeof *o);
    o->every = 1;
    o->hidden = 0;
    o->objective = OBJECTIVE_CE;
    o->method = METHOD_TRAIN;
    o->steps = 500;
    o->batch = 32;
    o->warmup = -1;
    o->lr = 1e-3f;
    o->weight_decay = 0.0f;
    o->grad_clip = 1.0f;
    o->calib_tokens = 200000;
    o->seed = 42;
    o->ridge = 1e-4;
    o->correction_bits = 32;
    o->rank = RANK_MATCH;
    o->scope = SCOPE_DEFAULT;
}

int parse_objective(const char *text, Objective *out) {
    if (strcmp(text, "ce") == 0) *out = OBJECTIVE_CE;
    else if (strcmp(text, "kl") == 0) *out = OBJECTIVE_KL;
    else if (strcmp(text, "mse") == 0) *out = OBJECTIVE_MSE;
    else {
        qc_error("objective '%s' is not ce, kl or mse", text);
        return -1;
    }
    return 0;
}

const char *objective_name(Objective o) { return o == OBJECTIVE_CE ? "ce" : o == OBJECTIVE_KL ? "kl" : "mse"; }

int64_t *calibration_windows(const Corpus *c, long calib_tokens, int T, uint64_t seed, int *n_windows) {
    if (calib_tokens < 1) { qc_error("a calibration budget of %ld tokens must be positive", calib_tokens); return NULL; }
    if (c->n_train < (size_t)T + 1) { qc_error("%s: train split is shorter than one window of %d", c->path, T + 1); return NULL; }
    long n = (calib_tokens + T - 1) / T;
    int64_t *starts = qc_malloc((size_t)n * sizeof(int64_t), "calibration windows");
    if (!starts) return NULL;
    Rng rng;
    rng_seed(&rng, seed ^ 0xCA11B4A7E5ull);
    for (long i = 0; i < n; i++) starts[i] = (int64_t)rng_below(&rng, c->n_train - (size_t)T);
    *n_windows = (int)n;
    return starts;
}

int32_t *calibration_tokens(const Corpus *c, long calib_tokens, int T, uint64_t seed, int *n_windows) {
    int64_t *starts = calibration_windows(c, calib_tokens, T, seed, n_windows);
    if (!starts) return NULL;
    int32_t *tokens = qc_malloc((size_t)*n_windows * T * sizeof(int32_t), "calibration tokens");
    for (int w = 0; tokens && w < *n_windows; w++) memcpy(tokens + (size_t)w * T, c->ids + starts[w], (size_t)T * sizeof(int32_t));
    free(starts);
    return tokens;
}

int quantize_model_on_corpus(GPT *m, const QuantScheme *s, const Corpus *corpus, long calib_tokens, uint64_t seed,
                             TensorQuantError *errors, int *n_errors) {
    if (!quant_scheme_needs_calibration(s)) return quantize_model(m, s, errors, n_errors);
    if (!corpus) {
        qc_error("the %s quantizer needs calibration data", quantizer_name(s->quantizer));
        return -1;
    }
    int n_windows = 0, T = m->config.ctx;
    int32_t *tokens = calibration_tokens(corpus, calib_tokens, T, seed, &n_windows);
    if (!tokens) return -1;
    int rc = quantize_model_calibrated(m, s, tokens, n_windows, T, errors, n_errors);
    free(tokens);
    return rc;
}

int correct_method_parse(const char *text, CorrectOptions *o) {
    char names[160];
    method_names(names, sizeof names);
    const char *plus = strchr(text, '+');
    o->with_first = 0;
    if (!plus) {
        int m = method_by_name(text);
        if (m < 0) { qc_error("expected %s, or a combination such as lwc+train, got '%s'", names, text); return -1; }
        o->method = (CorrectMethod)m;
        return 0;
    }
    char first[64];
    size_t n = (size_t)(plus - text);
    int a = -1, b = method_by_name(plus + 1);
    if (n < sizeof first) {
        memcpy(first, text, n);
        first[n] = '\0';
        a = method_by_name(first);
    }
    if (a < 0 || b < 0) { qc_error("'%s': a combination is two of %s joined by '+'", text, names); return -1; }
    if (!method_info[a].tunes || method_info[b].tunes || method_info[b].kind == KIND_NONE) {
        qc_error("'%s': a combination is a method that tunes the base (normtweak, qat, scales, lwc, adaround) "
                 "followed by one that adds corrections (train, lstsq, lowrank, bias)", text);
        return -1;
    }
    o->with_first = 1;
    o->first = (CorrectMethod)a;
    o->method = (CorrectMethod)b;
    return 0;
}

int correct_takes_steps(CorrectMethod method, int with_first, CorrectMethod first) {
    const MethodInfo *m = &method_info[method];
    if (!with_first) return m->trains;
    return method_info[first].trains || (m->trains && !m->solves);
}

void correct_method_label(const CorrectOptions *o, char *out, size_t size) {
    if (o->with_first) snprintf(out, size, "%s+%s", method_name(o->first), method_name(o->method));
    else snprintf(out, size, "%s", method_name(o->method));
}

/* A combination's two stages. The first: the same options, its method the first, alone, the
 * steps its own where it trains by AdamW steps (adaround does not). The second: the steps only
 * where it trains and does not solve (train; lstsq, lowrank and bias solve and are not
 * fine-tuned in a combination). */
static CorrectOptions second_options(const CorrectOptions *o) {
    CorrectOptions s = *o;
    if (o->with_first && method_info[o->method].solves) s.steps = 0;
    return s;
}

static CorrectOptions first_options(const CorrectOptions *o) {
    CorrectOptions f = *o;
    f.method = o->first;
    f.with_first = 0;
    if (!method_info[o->first].trains) f.steps = 0;
    f.hidden = 0;
    f.init = INIT_ZERO;
    f.calib_cache = NULL;
    f.log_path = f.heldout_log_path = NULL;
    return f;
}

static int options_check_one(const CorrectOptions *o, const QuantScheme *s);

int transform_model_on_corpus(GPT *m, const TransformScheme *t, const Corpus *corpus, long calib_tokens, uint64_t seed) {
    if (!transform_needs_calibration(t)) return transform_model(m, t, NULL, 0, 0);
    if (!corpus) {
        qc_error("the smooth transform needs calibration data");
        return -1;
    }
    int n_windows = 0, T = m->config.ctx;
    int32_t *tokens = calibration_tokens(corpus, calib_tokens, T, seed, &n_windows);
    if (!tokens) return -1;
    int rc = transform_model(m, t, tokens, n_windows, T);
    free(tokens);
    return rc;
}

/* --correction-reads float: only a stream correction reads the stream (in a combination, the second method's) */
static int correction_reads_check(const CorrectOptions *o, const QuantScheme *s) {
    if (!s->act.correction_float) return 0;
    CorrectionKindId kind = method_kind(o->method, o->hidden);
    if (kind != KIND_NONE && kind_info[kind].placement == PLACE_STREAM && !method_info[o->method].tunes) return 0;
    qc_error("--correction-reads float: --method %s has no stream correction to read the stream (only train and lstsq, which sit after blocks)",
             method_info[o->method].name);
    return -1;
}

int correct_options_check(const CorrectOptions *o, const QuantScheme *s) {
    if (correction_reads_check(o, s) != 0) return -1;
    if (o->with_first) {
        CorrectOptions f = first_options(o);
        CorrectOptions second = second_options(o);
        if (options_check_one(&f, s) != 0 || options_check_one(&second, s) != 0) return -1;
        if (!correct_takes_steps(o->method, 1, o->first) && o->steps != 0) {
            qc_error("--steps: neither %s nor %s takes training steps in a combination", method_name(o->first), method_name(o->method));
            return -1;
        }
        return 0;
    }
    return options_check_one(o, s);
}

static int options_check_one(const CorrectOptions *o, const QuantScheme *s) {
    const MethodInfo *mi = &method_info[o->method];
    const char *method = mi->name;
    CorrectionKindId kind = method_kind(o->method, o->hidden);
    int fine_tunes = mi->trains && !(mi->solves && o->steps == 0);
    if (mi->tunes && o->hidden != 0)
        qc_error("--method %s trains the model's own parameters and adds no correction, which has no width: use --hidden 0", method);
    else if (method_tunes_grid(o->method) && mi->tunes != TUNE_WEIGHTS && s->bits >= 32) /* qat at 32 bits: the control, plain fine-tuning */
        qc_error("--method %s trains the weights' quantization grid: at --bits 32 there is none", method);
    else if (!method_uses_hidden(o->method) && o->hidden != 0)
        qc_error("--method %s fits %s corrections, which have no width: use --hidden 0", method, kind_info[method_kind(o->method, 0)].name);
    else if (method_fits_weight_error(o->method) && s->bits >= 32)
        qc_error("--method %s fits each matrix's quantization error: at --bits 32 there is none", method);
    else if (kind != KIND_NONE && correction_kind_ops(kind)->fold && (s->scope & SCOPE_OF(ROLE_BIAS)))
        qc_error("--method %s folds into the layers' biases, which --scope bias quantizes", method);
    else if (o->init == INIT_LSTSQ && (!(mi->takes & TAKES_INIT) || kind != KIND_LINEAR))
        qc_error("--init lstsq starts a trained linear correction (--method train --hidden 0)");
    else if (o->steps == STEPS_AUTO && !mi->trains)
        qc_error("--steps auto: --method %s takes no training steps", method);
    else if (o->steps > 0 && !mi->trains)
        qc_error("--steps %d: --method %s takes no training steps", o->steps, method);
    else if (fine_tunes && o->objective == OBJECTIVE_MSE && mi->tunes)
        qc_error("--objective mse compares the streams at correction sites; --method %s has none: use ce or kl", method);
    else if (mi->tunes == TUNE_NORMS && s->bits < 32 && (s->scope & SCOPE_OF(ROLE_NORM)))
        qc_error("--method normtweak trains the LayerNorms in float, which --scope norm quantizes");
    else if (fine_tunes && o->objective == OBJECTIVE_MSE && kind != KIND_NONE && kind_info[kind].placement != PLACE_STREAM)
        qc_error("--objective mse compares the streams after blocks; --method %s sits on linear layers: use ce or kl", method);
    else
        return 0;
    return -1;
}

int correction_layout_for(const CorrectOptions *o, const GPTConfig *cfg, CorrectionLayout *layout, int *linear_sizes) {
    *layout = (CorrectionLayout){.kind = method_kind(o->method, o->hidden), .every = o->every, .size = o->hidden};
    if (kind_info[layout->kind].placement != PLACE_LINEAR) return 0;
    int n = gpt_linear_count(cfg), fixed = correction_kind_ops(layout->kind)->fixed_size;
    unsigned char *quantized = qc_calloc((size_t)n, 1, "correction layout");
    if (!quantized) return -1;
    for (int i = 0; i < n; i++) quantized[i] = (o->scope & SCOPE_OF(i == cfg->n_layer * LINEARS_PER_BLOCK ? ROLE_HEAD : ROLE_LINEAR)) != 0;
    if (!fixed && o->rank == RANK_MATCH) {
        lowrank_match_ranks(cfg, quantized, stream_linear_params(cfg, o->every), linear_sizes);
    } else {
        for (int i = 0; i < n; i++) {
            linear_sizes[i] = quantized[i] ? (fixed ? fixed : o->rank) : 0;
            LinearShape sh = gpt_linear_shape(cfg, i);
            int widest = sh.in < sh.out ? sh.in : sh.out;
            if (!fixed && quantized[i] && o->rank > widest) {
                qc_error("rank %d exceeds min(in, out) = %d of %s", o->rank, widest, sh.name);
                free(quantized);
                return -1;
            }
        }
    }
    free(quantized);
    layout->linear_sizes = linear_sizes;
    return 0;
}

/* The per-matrix kinds' closed forms (compensate.h) on the calibration windows, where they use data. */
static int lowrank_solve(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o) {
    if (!o->lowrank_act_scale) return lowrank_fit(q, f, c, NULL, 0, 0, 0);
    int n_windows = 0, T = q->config.ctx;
    int32_t *tokens = calibration_tokens(corpus, o->calib_tokens, T, o->seed, &n_windows);
    int rc = tokens ? lowrank_fit(q, f, c, tokens, n_windows, T, 1) : -1;
    free(tokens);
    return rc;
}

static int bias_solve(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o) {
    int n_windows = 0, T = q->config.ctx;
    int32_t *tokens = calibration_tokens(corpus, o->calib_tokens, T, o->seed, &n_windows);
    int rc = tokens ? bias_fit(q, f, c, tokens, n_windows, T) : -1;
    free(tokens);
    return rc;
}

typedef int (*SolveFn)(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o);
#define KIND_SOLVE(id, name, place, ops, solve) [id] = solve,
static const SolveFn kind_solve[KIND_COUNT] = {CORRECTION_KINDS(KIND_SOLVE)};
#undef KIND_SOLVE

int run_correction(GPT *q, GPT *f, const Corpus *corpus, const CorrectOptions *o, const StreamCache *val,
                   const EvalReference *ref, Corrections *c, CorrectionResult *r) {
    const MethodInfo *m = &method_info[o->method];
    CorrectionLayout layout;
    int *linear_sizes = qc_calloc((size_t)gpt_linear_count(&q->config), sizeof(int), "correction layout");
    if (!linear_sizes || correction_layout_for(o, &q->config, &layout, linear_sizes) != 0) {
        free(linear_sizes);
        return -1;
    }
    SolveFn solve = kind_solve[layout.kind];
    if (m->solves && !solve) {
        qc_error("method %s needs a closed form, which %s corrections do not have", m->name, kind_info[layout.kind].name);
        free(linear_sizes);
        return -1;
    }
    /* sized for the largest batch any forward of q runs (evaluation may batch more than training) */
    int init = corrections_init(c, &q->config, &layout, q->max_batch * q->config.ctx, o->seed);
    free(linear_sizes);
    if (init != 0) return -1;
    corrections_set_act(c, &q->act.scheme); /* stored narrow, its products run at the activation bits */
    r->objective = NAN;
    r->train = (TrainSummary){.stopped_by = STOPPED_FIXED, .heldout_objective = NAN, .objective = NAN};
    double t0 = now_seconds();
    int rc = 0;
    r->first = (TrainSummary){.stopped_by = STOPPED_FIXED, .heldout_objective = NAN, .objective = NAN};
    CorrectOptions second = second_options(o);
    if (o->with_first) { /* the first method tunes q in place; the correction then fits the tuned model */
        CorrectOptions fo = first_options(o);
        Corrections none;
        CorrectionLayout bare = {.kind = KIND_NONE, .every = 1};
        if (corrections_init(&none, &q->config, &bare, q->max_batch * q->config.ctx, o->seed) != 0) rc = -1;
        else {
            rc = tune_fit(q, f, &none, corpus, &fo, &r->first);
            corrections_free(&none);
        }
        second.calib_cache = NULL; /* built from the quantized model, not the tuned one */
        o = &second;
    }
    /* a method that solves fine-tunes its solution only when asked for steps */
    int trains = m->trains && !(m->solves && o->steps == 0);
    if (o->init == INIT_LSTSQ && !m->solves && layout.kind != KIND_LINEAR) {
        qc_error("--init lstsq starts linear corrections only, not %s", kind_info[layout.kind].name);
        corrections_free(c);
        return -1;
    }
    if (rc == 0 && m->solves) rc = solve(q, f, c, corpus, o);
    else if (rc == 0 && o->init == INIT_LSTSQ) rc = correction_lstsq(q, f, c, corpus, o); /* the closed form as the start */
    if (rc == 0 && (trains || m->tunes)) { /* adaround tunes without AdamW steps of its own */
        rc = m->tunes ? tune_fit(q, f, c, corpus, o, &r->train) : correction_fit(q, f, c, corpus, o, &r->train);
        r->objective = r->train.objective;
    }
    if (rc == 0 && o->correction_bits < 32) corrections_store_narrow(c, o->correction_bits); /* evaluate what is stored */
    r->seconds_correct = now_seconds() - t0;
    if (rc != 0) {
        corrections_free(c);
        return -1;
    }
    double t1 = now_seconds();
    /* a tuned base changed below every block: no prefix of it is cached */
    rc = evaluate_model(q, &c->hook, corpus->ids + corpus->n_train, corpus->n_val, m->tunes || o->with_first ? NULL : val, corrections_frozen_prefix(c), ref,
                        &r->eval);
    r->seconds_eval = now_seconds() - t1;
    if (rc != 0) {
        corrections_free(c);
        return -1;
    }
    return 0;
}

int recovery_loss(double lf, double lq, double lc, double *out) {
    if (!(fabs(lq - lf) >= RECOVERY_MIN_GAP)) { *out = NAN; return 0; }
    *out = (lq - lc) / (lq - lf);
    return 1;
}

int recovery_ppl(double lf, double lq, double lc, double *out) {
    if (!(fabs(lq - lf) >= RECOVERY_MIN_GAP)) { *out = NAN; return 0; }
    *out = (exp(lq) - exp(lc)) / (exp(lq) - exp(lf));
    return 1;
}

const char *recovery_flag_name(RecoveryFlag f) {
    return f == RECOVERY_OK ? "ok" : f == RECOVERY_UNRESOLVED ? "unresolved" : "undefined";
}

RecoveryFlag recovery_flag_of(double gap, double gap_se) {
    if (!(fabs(gap) >= RECOVERY_MIN_GAP)) return RECOVERY_UNDEFINED;
    if (!(fabs(gap) >= RECOVERY_MIN_SE * gap_se)) return RECOVERY_UNRESOLVED;
    return RECOVERY_OK;
}

void outcome_compute(Outcome *o, const EvalReference *f, const Evaluation *q, const Evaluation *c, const GPTConfig *cfg,
                     const QuantScheme *scheme, double correction_bits) {
    int n = f->n_windows;
    memset(o, 0, sizeof *o);
    o->loss_float = f->loss;
    o->loss_quant = q->loss;
    o->loss_corrected = c->loss;
    o->loss_se_float = mean_se(f->window_loss, n);
    o->loss_se_quant = q->loss_se;
    o->loss_se_corrected = c->loss_se;
    o->gap_se = paired_diff_se(q->window_loss, f->window_loss, n);
    o->gain_se = paired_diff_se(q->window_loss, c->window_loss, n);
    o->flag = recovery_flag_of(o->loss_quant - o->loss_float, o->gap_se);
    recovery_loss(o->loss_float, o->loss_quant, o->loss_corrected, &o->recovery_loss);
    recovery_ppl(o->loss_float, o->loss_quant, o->loss_corrected, &o->recovery_ppl);
    if (o->flag != RECOVERY_OK) o->recovery_loss = o->recovery_ppl = NAN;
    o->kl_quant = q->have_reference ? q->kl_mean : NAN;
    o->kl_corrected = c->have_reference ? c->kl_mean : NAN;
    o->top1_quant = q->have_reference ? q->top1_agree : NAN;
    o->top1_corrected = c->have_reference ? c->top1_agree : NAN;
    ModelBits fb, qb;
    model_bits(cfg, NULL, &fb);
    model_bits(cfg, scheme, &qb);
    o->model_bits_float = model_bits_total(&fb);
    o->model_bits_quant = model_bits_total(&qb);
    o->bits_per_weight = bits_per_weight(&qb);
    o->correction_bits = correction_bits;
    o->model_bits_corrected = o->model_bits_quant + o->correction_bits;
}

static void add_number_or_null(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

void add_outcome_fields(cJSON *o, const Outcome *out) {
    add_number_or_null(o, "loss_float", out->loss_float);
    add_number_or_null(o, "loss_quant", out->loss_quant);
    add_number_or_null(o, "loss_corrected", out->loss_corrected);
    add_number_or_null(o, "ppl_float", exp(out->loss_float));
    add_number_or_null(o, "ppl_quant", exp(out->loss_quant));
    add_number_or_null(o, "ppl_corrected", exp(out->loss_corrected));
    add_number_or_null(o, "recovery_loss", out->recovery_loss);
    add_number_or_null(o, "recovery_ppl", out->recovery_ppl);
    cJSON_AddStringToObject(o, "recovery_flag", recovery_flag_name(out->flag));
    add_number_or_null(o, "gain_loss", out->loss_quant - out->loss_corrected);
    add_number_or_null(o, "loss_se_float", out->loss_se_float);
    add_number_or_null(o, "loss_se_quant", out->loss_se_quant);
    add_number_or_null(o, "loss_se_corrected", out->loss_se_corrected);
    add_number_or_null(o, "gap_se", out->gap_se);
    add_number_or_null(o, "gain_se", out->gain_se);
    add_number_or_null(o, "kl_quant", out->kl_quant);
    add_number_or_null(o, "kl_corrected", out->kl_corrected);
    add_number_or_null(o, "top1_quant", out->top1_quant);
    add_number_or_null(o, "top1_corrected", out->top1_corrected);
    add_number_or_null(o, "model_bits_float", out->model_bits_float);
    add_number_or_null(o, "model_bits_quant", out->model_bits_quant);
    add_number_or_null(o, "model_bits_corrected", out->model_bits_corrected);
    add_number_or_null(o, "correction_bits", out->correction_bits);
    add_number_or_null(o, "bits_per_weight", out->bits_per_weight);
}
