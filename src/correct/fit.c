/* fit: fitting corrections to a frozen quantized model on the calibration windows — AdamW
 * training for a fixed number of steps or until the held-out objective stops improving
 * (--steps auto: the held-out windows, their measurement, the stopping rule, the best parameters
 * kept), and the lstsq closed form. What trains is a FitParams: corrections train in place and
 * run the base backward with param_grads = 0 (its weights cannot change); the methods that tune
 * the base's own parameters (tune.c) run it with param_grads = 1 and hand the loop copies. */
#include "correct/experiment.h"

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "nn/optim.h"
#include "nn/train.h"

static void gather_batch(const Corpus *c, const int64_t *starts, const int *pick, int B, int T, int32_t *inputs, int32_t *targets) {
    for (int b = 0; b < B; b++) {
        const int32_t *src = c->ids + starts[pick[b]];
        memcpy(inputs + (size_t)b * T, src, (size_t)T * sizeof(int32_t));
        if (targets) memcpy(targets + (size_t)b * T, src + 1, (size_t)T * sizeof(int32_t));
    }
}

int correction_step_objective(GPT *q, GPT *f, Corrections *c, Objective objective, const int32_t *inputs, const int32_t *targets,
                              int B, int T, int param_grads, int stop, const float **mse_targets, double *value) {
    int N = B * T, V = q->config.vocab_size;
    if (objective == OBJECTIVE_MSE) {
        gpt_forward_blocks(f, inputs, B, T, NULL, f->config.n_layer);
        for (int j = 0; j < c->n_sites; j++) mse_targets[j] = f->layers[c->sites[j].where].resid_out;
        c->mse_targets = mse_targets;
        c->mse_loss = 0.0;
        int rc = gpt_forward_blocks(q, inputs, B, T, &c->hook, q->config.n_layer);
        *value = c->mse_loss;
        if (rc == 0) gpt_backward(q, &c->hook, 0, param_grads, stop);
        c->mse_targets = NULL;
        return rc;
    }
    if (gpt_forward(q, inputs, B, T, &c->hook) != 0) return -1;
    if (objective == OBJECTIVE_CE) {
        *value = gpt_loss(q, targets);
    } else {
        gpt_forward(f, inputs, B, T, NULL);
        *value = kl_forward_backward(q->dlogits, q->logits, f->logits, N, V, 1.0f / N);
    }
    gpt_backward(q, &c->hook, 1, param_grads, stop);
    return 0;
}

void auto_stop_default(AutoStop *a) {
    a->max_steps = 3000;
    a->eval_every = 25;
    a->patience = 8;
    a->min_delta = AUTOSTOP_MIN_DELTA;
    a->heldout_share = 0.125;
    a->schedule = SCHEDULE_PLATEAU;
    a->ema = 0.99;
}

int parse_schedule(const char *text, AutoSchedule *out) {
    if (strcmp(text, "plateau") == 0) *out = SCHEDULE_PLATEAU;
    else if (strcmp(text, "cosine") == 0) *out = SCHEDULE_COSINE;
    else if (strcmp(text, "decay") == 0) *out = SCHEDULE_DECAY;
    else {
        qc_error("schedule '%s' is not plateau, cosine or decay", text);
        return -1;
    }
    return 0;
}

const char *schedule_name(AutoSchedule s) { return s == SCHEDULE_PLATEAU ? "plateau" : s == SCHEDULE_COSINE ? "cosine" : "decay"; }

const char *stop_reason_name(StopReason r) { return r == STOPPED_FIXED ? "fixed" : r == STOPPED_PLATEAU ? "plateau" : "cap"; }

int heldout_window_count(int n_calib, double heldout_share) {
    long h = lround(heldout_share * n_calib);
    return h < 1 ? 1 : h > INT_MAX - n_calib ? INT_MAX - n_calib : (int)h;
}

long calibration_draw_tokens(long calib_tokens, int T, int autostop, double heldout_share) {
    if (!autostop || calib_tokens < 1) return calib_tokens;
    long n = (calib_tokens + T - 1) / T;
    return (n + heldout_window_count((int)n, heldout_share)) * T;
}

/* The objective over the held-out windows, forward only, in batches of up to Bmax: ce (through
 * the prefix cache when there is one), kl or mse; the mean over every held-out position. */
static int heldout_objective(GPT *q, GPT *f, Corrections *c, const ModelHook *hook, const Corpus *corpus, const CorrectOptions *o,
                             const StreamCache *cache, int first_block, const int64_t *starts, const int *held, int n_held,
                             int Bmax, int32_t *inputs, int32_t *targets, int *pick, const float **mse_targets, double *out) {
    int T = q->config.ctx, V = q->config.vocab_size;
    double sum = 0.0;
    for (int w0 = 0; w0 < n_held; w0 += Bmax) {
        int nb = n_held - w0 < Bmax ? n_held - w0 : Bmax;
        for (int b = 0; b < nb; b++) pick[b] = held[w0 + b];
        double v;
        if (cache) {
            stream_cache_gather(cache, pick, nb, targets);
            if (gpt_forward_from(q, cache->batch, first_block + 1, nb, T, hook) != 0) return -1;
            v = gpt_loss(q, targets);
        } else {
            gather_batch(corpus, starts, pick, nb, T, inputs, targets);
            if (o->objective == OBJECTIVE_MSE) {
                gpt_forward_blocks(f, inputs, nb, T, NULL, f->config.n_layer);
                for (int j = 0; j < c->n_sites; j++) mse_targets[j] = f->layers[c->sites[j].where].resid_out;
                c->mse_targets = mse_targets;
                c->mse_loss = 0.0;
                int rc = gpt_forward_blocks(q, inputs, nb, T, hook, q->config.n_layer);
                c->mse_targets = NULL;
                if (rc != 0) return -1;
                v = c->mse_loss;
            } else {
                if (gpt_forward(q, inputs, nb, T, hook) != 0) return -1;
                if (o->objective == OBJECTIVE_CE) v = gpt_loss(q, targets);
                else {
                    gpt_forward(f, inputs, nb, T, NULL);
                    v = kl_forward_backward(NULL, q->logits, f->logits, nb * T, V, 1.0f);
                }
            }
        }
        sum += v * nb;
    }
    *out = sum / n_held;
    return 0;
}

/* The rate of step `step` under the plateau and decay schedules: a linear warm-up, then the
 * constant rate times lr_scale, and in a cool-down [decay_start, decay_end) a linear fall to 0. */
static float auto_lr(const CorrectOptions *o, int warmup, int step, float lr_scale, int decay_start, int decay_end) {
    if (step < warmup) return o->lr * (float)(step + 1) / (float)warmup;
    if (decay_start >= 0 && step >= decay_start)
        return step >= decay_end ? 0.0f : o->lr * (float)(decay_end - step) / (float)(decay_end - decay_start);
    return o->lr * lr_scale;
}

int correction_train(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, double *objective_out) {
    TrainSummary s;
    int rc = correction_fit(q, f, c, corpus, o, &s);
    if (rc == 0 && objective_out) *objective_out = s.objective;
    return rc;
}

int correction_fit(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out) {
    FitParams p = {.params = c->params, .grads = c->grads, .adam_m = c->adam_m, .adam_v = c->adam_v, .num_params = c->num_params,
                   .frozen_prefix = corrections_frozen_prefix(c)};
    return fit_params(q, f, c, &p, corpus, o, out);
}

/* p->params changed: into the model, where they live there */
static void fit_apply(FitParams *p, GPT *q) {
    if (p->apply) p->apply(p->ctx, q);
}

int fit_params(GPT *q, GPT *f, Corrections *c, FitParams *p, const Corpus *corpus, const CorrectOptions *o, TrainSummary *out) {
    int T = q->config.ctx, B = o->batch, autostop = o->steps == STEPS_AUTO;
    const AutoStop *a = &o->autostop;
    int cap = autostop ? a->max_steps : o->steps;
    if (B > q->max_batch || (f && B > f->max_batch)) { qc_error("batch %d exceeds the model allocation", B); return -1; }
    if (o->objective != OBJECTIVE_CE && !f) { qc_error("objective %s needs the float model", objective_name(o->objective)); return -1; }
    if (autostop && (a->max_steps < 1 || a->eval_every < 1 || a->patience < 1 || !(a->min_delta >= 0) || !(a->heldout_share > 0 && a->heldout_share < 1))) {
        qc_error("--steps auto: max steps %d, eval every %d, patience %d, min delta %g, held-out share %g out of range",
                 a->max_steps, a->eval_every, a->patience, a->min_delta, a->heldout_share);
        return -1;
    }
    if ((p->param_grads ? gpt_enable_training(q) : gpt_enable_backward(q)) != 0) return -1;
    int n_windows = 0, n_held = 0;
    int64_t *starts = calibration_windows(corpus, calibration_draw_tokens(o->calib_tokens, T, autostop, a->heldout_share), T,
                                          o->seed, &n_windows);
    /* the held-out evaluation batches as wide as every model allows */
    int Bh = q->max_batch < (f ? f->max_batch : q->max_batch) ? q->max_batch : (f ? f->max_batch : q->max_batch);
    if (o->calib_cache && o->calib_cache->max_batch < Bh) Bh = o->calib_cache->max_batch;
    if (Bh < B) Bh = B;
    int Bbuf = Bh > B ? Bh : B;
    int32_t *inputs = qc_malloc((size_t)Bbuf * T * sizeof(int32_t), "batch"), *targets = qc_malloc((size_t)Bbuf * T * sizeof(int32_t), "batch");
    int *pick = qc_malloc((size_t)Bbuf * sizeof(int), "batch");
    const float **mse_targets = qc_calloc((size_t)c->n_sites, sizeof(float *), "mse targets");
    int *held = NULL; /* --steps auto: the held-out windows' indices */
    float *best_params = NULL, *ema = NULL, *live = NULL; /* ema: the parameters' running average (AutoStop.ema) */
    FILE *log = o->log_path ? fopen(o->log_path, "w") : NULL;
    FILE *hlog = autostop && o->heldout_log_path ? fopen(o->heldout_log_path, "w") : NULL;
    int rc = -1;
    if (!starts || !inputs || !targets || !pick || !mse_targets) goto done;
    if (o->log_path && !log) { qc_error("%s: cannot write the correction log", o->log_path); goto done; }
    if (autostop && o->heldout_log_path && !hlog) { qc_error("%s: cannot write the held-out log", o->heldout_log_path); goto done; }
    if (log) fprintf(log, "step,objective,lr,grad_norm\n");
    if (hlog) fprintf(hlog, "step,heldout_objective,lr,best\n");
    /* the fitted windows: the budget's; under auto the windows drawn after them are held out */
    int n_fit = n_windows;
    if (autostop) {
        n_fit = (int)((o->calib_tokens + T - 1) / T);
        n_held = n_windows - n_fit;
        held = qc_malloc((size_t)n_held * sizeof(int), "held-out windows");
        best_params = qc_malloc(p->num_params * sizeof(float), "best parameters");
        if (a->ema > 0) {
            ema = qc_malloc(p->num_params * sizeof(float), "parameter average");
            live = qc_malloc(p->num_params * sizeof(float), "parameter average");
            if (ema) memcpy(ema, p->params, p->num_params * sizeof(float));
        }
        if (!held || !best_params || (a->ema > 0 && (!ema || !live))) goto done;
        for (int i = 0; i < n_held; i++) held[i] = n_fit + i;
    }
    int warmup = o->warmup >= 0 ? o->warmup : (cap / 10 < 100 ? cap / 10 : 100);
    if (warmup < 1) warmup = 1;
    Rng rng;
    rng_seed(&rng, o->seed ^ 0x5EED5EEDull);
    if (o->objective == OBJECTIVE_MSE && (kind_info[c->kind].placement != PLACE_STREAM || c->n_sites == 0)) {
        qc_error("the mse objective compares streams after blocks: %s corrections have none", kind_info[c->kind].name);
        goto done;
    }
    int first_block = p->frozen_prefix;
    const StreamCache *cache = o->objective == OBJECTIVE_CE && first_block >= 0 ? o->calib_cache : NULL;
    if (cache && (cache->first_block != first_block || cache->max_batch < B ||
                  cache->identity != stream_cache_identity(q, starts, n_windows, first_block))) {
        qc_error("the calibration cache holds other windows, another block or another model than these corrections need");
        goto done;
    }
    /* --steps auto: the float model's held-out objective (kl and mse: 0, their minimum) */
    double h_float = 0.0, delta = 0.0;
    if (autostop && o->objective == OBJECTIVE_CE && f &&
        heldout_objective(f, NULL, c, NULL, corpus, o, NULL, -1, starts, held, n_held, Bh, inputs, targets, pick, mse_targets, &h_float) != 0)
        goto done;
    if (autostop && o->objective == OBJECTIVE_CE && !f) h_float = INFINITY; /* no gap known: the objective's own scale */
    enum { RECENT = 20 }; /* the training objective reported: the mean of the last 20 steps */
    double recent[RECENT], best = INFINITY, ref_best = INFINITY;
    int n_recent = 0, since = 0, decays = 0, best_step = 0, step = 0;
    int decay_start = -1, decay_end = -1; /* schedule decay: the cool-down after the first plateau */
    float lr_scale = 1.0f;
    StopReason why = autostop ? STOPPED_CAP : STOPPED_FIXED;
    for (;; step++) {
        if (autostop && (step % a->eval_every == 0 || step == decay_end)) { /* measure the parameters after `step` steps */
            double h;
            if (ema) { /* measured (and kept) is the average, not the last step's parameters */
                memcpy(live, p->params, p->num_params * sizeof(float));
                memcpy(p->params, ema, p->num_params * sizeof(float));
                fit_apply(p, q);
            }
            int measured = heldout_objective(q, f, c, &c->hook, corpus, o, cache, first_block, starts, held, n_held, Bh, inputs,
                                             targets, pick, mse_targets, &h);
            if (ema) {
                memcpy(p->params, live, p->num_params * sizeof(float));
                fit_apply(p, q);
            }
            if (measured != 0) goto done;
            if (step == 0) { /* the improvement that counts: a share of what there is to win back */
                double gap = h - h_float;
                delta = gap > 0 ? a->min_delta * gap : AUTOSTOP_NO_GAP_DELTA * fabs(h);
            }
            if (!isfinite(h)) {
                qc_error("correction training diverged: held-out objective is %g at step %d (try a lower learning rate)", h, step);
                goto done;
            }
            if (h < best) { /* the best parameters seen, whatever the margin */
                best = h;
                best_step = step;
                memcpy(best_params, ema ? ema : p->params, p->num_params * sizeof(float));
            }
            if (decay_start >= 0) { /* cooling down: it ends where it was set to */
                if (step >= decay_end) why = STOPPED_PLATEAU;
            } else if (h < ref_best - delta || !isfinite(ref_best)) {
                ref_best = h;
                since = 0;
            } else if (++since >= a->patience) {
                if (a->schedule == SCHEDULE_PLATEAU && decays == 0) { /* the first plateau: a tenth of the rate */
                    decays = 1;
                    lr_scale = 0.1f;
                    since = 0;
                } else if (a->schedule == SCHEDULE_DECAY && step < cap) {
                    /* the first plateau: the rate falls linearly to 0 over a quarter of the steps so far
                     * (at least patience measurements), then training stops */
                    int len = step / 4 > a->eval_every * a->patience ? step / 4 : a->eval_every * a->patience;
                    decay_start = step;
                    decay_end = step + len < cap ? step + len : cap;
                } else {
                    why = STOPPED_PLATEAU;
                }
            }
            if (hlog) fprintf(hlog, "%d,%.6f,%.6g,%.6f\n", step, h, auto_lr(o, warmup, step, lr_scale, decay_start, decay_end), best);
            if (why == STOPPED_PLATEAU) break;
        }
        if (step >= cap) break;
        for (int b = 0; b < B; b++) pick[b] = (int)rng_below(&rng, (uint64_t)n_fit);
        memset(p->grads, 0, p->num_params * sizeof(float));
        if (p->param_grads) gpt_zero_grad(q);
        double objective;
        if (cache) { /* the frozen prefix comes from the cache: only blocks after it run */
            stream_cache_gather(cache, pick, B, targets);
            if (gpt_forward_from(q, cache->batch, first_block + 1, B, T, &c->hook) != 0) goto done;
            objective = gpt_loss(q, targets);
            gpt_backward(q, &c->hook, 1, p->param_grads, first_block + 1);
        } else {
            gather_batch(corpus, starts, pick, B, T, inputs, targets);
            if (correction_step_objective(q, f, c, o->objective, inputs, targets, B, T, p->param_grads, first_block + 1,
                                                                 mse_targets, &objective) != 0) goto done;
        }
        if (!isfinite(objective)) {
            qc_error("correction training diverged: objective is %g at step %d (try a lower learning rate)", objective, step + 1);
            goto done;
        }
        if (p->collect) p->collect(p->ctx, q);
        float lr = autostop && a->schedule != SCHEDULE_COSINE ? auto_lr(o, warmup, step, lr_scale, decay_start, decay_end)
                                                              : lr_schedule(step, cap, warmup, o->lr, o->lr / 10.0f);
        double norm = clip_grad_norm(p->grads, p->num_params, o->grad_clip);
        AdamWStep s = {.lr = lr, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = o->weight_decay, .step = step + 1};
        adamw_update(p->params, p->grads, p->adam_m, p->adam_v, p->num_params, 1, &s);
        fit_apply(p, q);
        if (ema) {
            float k = (float)a->ema;
            for (size_t i = 0; i < p->num_params; i++) ema[i] = k * ema[i] + (1.0f - k) * p->params[i];
        }
        if (log) fprintf(log, "%d,%.6f,%.6g,%.6f\n", step + 1, objective, lr, norm);
        if (qc_stop_signal) {
            qc_error("interrupted by signal %d at correction step %d", (int)qc_stop_signal, step + 1);
            goto done;
        }
        recent[n_recent++ % RECENT] = objective;
        if (!o->quiet && (step + 1 == cap || (step + 1) % 50 == 0))
            progress_line(stderr, step + 1 == cap, "correct step %d/%d %s %.5f lr %.2e", step + 1, cap, objective_name(o->objective),
                          objective, lr);
    }
    if (autostop) {
        memcpy(p->params, best_params, p->num_params * sizeof(float));
        fit_apply(p, q);
    }
    out->steps_run = step;
    out->best_step = autostop ? best_step : step;
    out->stopped_by = why;
    out->heldout_objective = autostop ? best : NAN;
    double sum = 0.0; /* in step order */
    int kept = n_recent < RECENT ? n_recent : RECENT;
    for (int i = n_recent - kept; i < n_recent; i++) sum += recent[i % RECENT];
    out->objective = kept ? sum / kept : NAN;
    if (!o->quiet && autostop)
        fprintf(stderr, "correct: %s after %d steps, best held-out %s %.5f at step %d\n", stop_reason_name(why), step,
                objective_name(o->objective), best, best_step);
    rc = 0;
done:
    if (log) fclose(log);
    if (hlog) fclose(hlog);
    free(starts);
    free(inputs);
    free(targets);
    free(pick);
    free(mse_targets);
    free(held);
    free(best_params);
    free(ema);
    free(live);
    return rc;
}

int correction_lstsq(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o) {
    if (c->kind != KIND_LINEAR) { qc_error("lstsq solves linear corrections only, not %s", kind_info[c->kind].name); return -1; }
    int T = q->config.ctx, B = o->batch < q->max_batch ? o->batch : q->max_batch, d = c->d, D = d + 1;
    int n_windows = 0;
    int64_t *starts = calibration_windows(corpus, o->calib_tokens, T, o->seed, &n_windows);
    int32_t *inputs = qc_malloc((size_t)B * T * sizeof(int32_t), "batch");
    int *pick = qc_malloc((size_t)B * sizeof(int), "batch");
    size_t rows = (size_t)B * T;
    double *xa = qc_malloc(rows * D * sizeof(double), "lstsq design"), *r = qc_malloc(rows * d * sizeof(double), "lstsq target");
    double *gram = qc_malloc((size_t)D * D * sizeof(double), "lstsq gram"), *rhs = qc_malloc((size_t)D * d * sizeof(double), "lstsq rhs");
    int rc = -1;
    if (!starts || !inputs || !pick || !xa || !r || !gram || !rhs) goto done;
    for (int j = 0; j < c->n_sites; j++) {
        CorrectionSite *s = &c->sites[j];
        int block = s->where;
        memset(gram, 0, (size_t)D * D * sizeof(double));
        memset(rhs, 0, (size_t)D * d * sizeof(double));
        for (int w0 = 0; w0 < n_windows; w0 += B) {
            int nb = n_windows - w0 < B ? n_windows - w0 : B;
            for (int b = 0; b < nb; b++) pick[b] = w0 + b;
            gather_batch(corpus, starts, pick, nb, T, inputs, NULL);
            /* the quantized stream entering site j, earlier sites already corrected */
            if (gpt_forward_blocks(q, inputs, nb, T, &c->hook, block + 1) != 0) goto done;
            gpt_forward_blocks(f, inputs, nb, T, NULL, block + 1);
            const float *x = q->layers[block].resid_out, *y = f->layers[block].resid_out;
            size_t nr = (size_t)nb * T;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < nr; i++) {
                for (int k = 0; k < d; k++) {
                    xa[i * D + k] = x[i * d + k];
                    r[i * d + k] = (double)y[i * d + k] - x[i * d + k];
                }
                xa[i * D + d] = 1.0;
            }
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, (int)nr, 1.0, xa, D, 1.0, gram, D);
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, d, (int)nr, 1.0, xa, D, r, d, 1.0, rhs, d);
        }
        double trace = 0.0;
        for (int k = 0; k < d; k++) trace += gram[(size_t)k * D + k];
        double lambda = o->ridge * trace / d;
        if (lambda <= 0) lambda = 1e-12;
        for (int k = 0; k < d; k++) gram[(size_t)k * D + k] += lambda; /* the bias row is not shrunk */
        int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', D, d, gram, D, rhs, d);
        if (info != 0) {
            qc_error("lstsq: the normal equations of site %d (after block %d) are singular (LAPACK info %d); raise the ridge", j,
                     block, info);
            goto done;
        }
        /* x + x.A + c with A = rhs[0..d), c = rhs[d]; stored as nn.Linear: weight = A^T */
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++) s->param[0][(size_t)b * d + a] = (float)rhs[(size_t)a * d + b];
        for (int b = 0; b < d; b++) s->param[1][b] = (float)rhs[(size_t)d * d + b];
        if (!o->quiet) progress_line(stderr, j + 1 == c->n_sites, "lstsq site %d/%d solved", j + 1, c->n_sites);
    }
    rc = 0;
done:
    free(starts);
    free(inputs);
    free(pick);
    free(xa);
    free(r);
    free(gram);
    free(rhs);
    return rc;
}
