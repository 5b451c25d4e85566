/* experiment: see experiment.h. Correction training never calls the optimizer on the base and
 * runs the base backward with param_grads = 0: its weights cannot change. */
#include "experiment.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "optim.h"
#include "train.h"
#include "util.h"

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
}

int parse_objective(const char *text, Objective *out) {
    if (strcmp(text, "ce") == 0) *out = OBJECTIVE_CE;
    else if (strcmp(text, "kl") == 0) *out = OBJECTIVE_KL;
    else if (strcmp(text, "mse") == 0) *out = OBJECTIVE_MSE;
    else {
        qc_error("--objective: expected ce, kl or mse, got '%s'", text);
        return -1;
    }
    return 0;
}

const char *objective_name(Objective o) { return o == OBJECTIVE_CE ? "ce" : o == OBJECTIVE_KL ? "kl" : "mse"; }

int64_t *calibration_windows(const Corpus *c, long calib_tokens, int T, uint64_t seed, int *n_windows) {
    if (calib_tokens < 1) { qc_error("--calib-tokens %ld must be positive", calib_tokens); return NULL; }
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

static void gather_batch(const Corpus *c, const int64_t *starts, const int *pick, int B, int T, int32_t *inputs, int32_t *targets) {
    for (int b = 0; b < B; b++) {
        const int32_t *src = c->ids + starts[pick[b]];
        memcpy(inputs + (size_t)b * T, src, (size_t)T * sizeof(int32_t));
        if (targets) memcpy(targets + (size_t)b * T, src + 1, (size_t)T * sizeof(int32_t));
    }
}

int stream_cache_build(StreamCache *sc, GPT *m, const int32_t *ids, const int64_t *starts, int n_windows, int first_block) {
    memset(sc, 0, sizeof *sc);
    int T = m->config.ctx, C = m->config.d_model, B = m->max_batch;
    sc->first_block = first_block;
    sc->n_windows = n_windows;
    sc->T = T;
    sc->C = C;
    sc->max_batch = B;
    sc->streams = qc_aligned_alloc((size_t)n_windows * T * C * sizeof(float), "prefix cache");
    sc->targets = qc_malloc((size_t)n_windows * T * sizeof(int32_t), "prefix cache");
    sc->batch = qc_aligned_alloc((size_t)B * T * C * sizeof(float), "prefix cache batch");
    int32_t *inputs = qc_malloc((size_t)B * T * sizeof(int32_t), "batch");
    if (!sc->streams || !sc->targets || !sc->batch || !inputs) {
        free(inputs);
        stream_cache_free(sc);
        return -1;
    }
    for (int w0 = 0; w0 < n_windows; w0 += B) {
        int nb = n_windows - w0 < B ? n_windows - w0 : B;
        for (int b = 0; b < nb; b++) {
            const int32_t *src = ids + (starts ? starts[w0 + b] : (int64_t)(w0 + b) * T);
            memcpy(inputs + (size_t)b * T, src, (size_t)T * sizeof(int32_t));
            memcpy(sc->targets + (size_t)(w0 + b) * T, src + 1, (size_t)T * sizeof(int32_t));
        }
        gpt_forward_blocks(m, inputs, nb, T, NULL, first_block + 1);
        memcpy(sc->streams + (size_t)w0 * T * C, m->layers[first_block].resid_out, (size_t)nb * T * C * sizeof(float));
    }
    free(inputs);
    return 0;
}

void stream_cache_free(StreamCache *sc) {
    free(sc->streams);
    free(sc->targets);
    free(sc->batch);
    memset(sc, 0, sizeof *sc);
}

/* Copies the chosen windows' streams and targets into the cache's batch buffer and targets. */
static void gather_cached(const StreamCache *sc, const int *pick, int B, int32_t *targets) {
    size_t w = (size_t)sc->T * sc->C;
    for (int b = 0; b < B; b++) {
        memcpy(sc->batch + (size_t)b * w, sc->streams + (size_t)pick[b] * w, w * sizeof(float));
        memcpy(targets + (size_t)b * sc->T, sc->targets + (size_t)pick[b] * sc->T, (size_t)sc->T * sizeof(int32_t));
    }
}

double evaluate_loss_cached(GPT *m, const StreamCache *sc, const StreamHook *hook) {
    int T = sc->T, B = sc->max_batch < m->max_batch ? sc->max_batch : m->max_batch;
    int32_t *targets = qc_malloc((size_t)B * T * sizeof(int32_t), "batch");
    int *pick = qc_malloc((size_t)B * sizeof(int), "batch");
    if (!targets || !pick) { free(targets); free(pick); return NAN; }
    double total = 0.0;
    for (int w0 = 0; w0 < sc->n_windows; w0 += B) {
        int nb = sc->n_windows - w0 < B ? sc->n_windows - w0 : B;
        for (int b = 0; b < nb; b++) pick[b] = w0 + b;
        gather_cached(sc, pick, nb, targets);
        gpt_forward_from(m, sc->batch, sc->first_block + 1, nb, T, hook);
        total += crossentropy_forward_backward(NULL, m->logits, targets, nb * T, m->config.vocab_size, 0.0f) * nb * T;
    }
    free(targets);
    free(pick);
    return total / ((double)sc->n_windows * T);
}

/* Forward and backward of one batch from the tokens; returns the objective. */
static double correction_step_objective(GPT *q, GPT *f, Corrections *c, Objective objective, const int32_t *inputs,
                                        const int32_t *targets, int B, int T, const float **mse_targets) {
    int N = B * T, V = q->config.vocab_size, first_block = c->sites[0].block;
    double value;
    if (objective == OBJECTIVE_MSE) {
        gpt_forward_blocks(f, inputs, B, T, NULL, f->config.n_layer);
        for (int j = 0; j < c->n_sites; j++) mse_targets[j] = f->layers[c->sites[j].block].resid_out;
        c->mse_targets = mse_targets;
        c->mse_loss = 0.0;
        gpt_forward_blocks(q, inputs, B, T, &c->hook, q->config.n_layer);
        value = c->mse_loss;
        gpt_backward(q, &c->hook, 0, 0, first_block + 1);
        c->mse_targets = NULL;
        return value;
    }
    gpt_forward(q, inputs, B, T, &c->hook);
    if (objective == OBJECTIVE_CE) {
        value = gpt_loss(q, targets);
    } else {
        gpt_forward(f, inputs, B, T, NULL);
        value = kl_forward_backward(q->dlogits, q->logits, f->logits, N, V, 1.0f / N);
    }
    gpt_backward(q, &c->hook, 1, 0, first_block + 1);
    return value;
}

int correction_train(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, double *objective_out) {
    int T = q->config.ctx, B = o->batch, N = B * T;
    if (B > q->max_batch || (f && B > f->max_batch)) { qc_error("batch %d exceeds the model allocation", B); return -1; }
    if (o->objective != OBJECTIVE_CE && !f) { qc_error("objective %s needs the float model", objective_name(o->objective)); return -1; }
    if (gpt_enable_backward(q) != 0) return -1;
    int n_windows = 0;
    int64_t *starts = calibration_windows(corpus, o->calib_tokens, T, o->seed, &n_windows);
    int32_t *inputs = qc_malloc((size_t)N * sizeof(int32_t), "batch"), *targets = qc_malloc((size_t)N * sizeof(int32_t), "batch");
    int *pick = qc_malloc((size_t)B * sizeof(int), "batch");
    const float **mse_targets = qc_calloc((size_t)c->n_sites, sizeof(float *), "mse targets");
    FILE *log = o->log_path ? fopen(o->log_path, "w") : NULL;
    int rc = -1;
    if (!starts || !inputs || !targets || !pick || !mse_targets) goto done;
    if (o->log_path && !log) { qc_error("%s: cannot write the correction log", o->log_path); goto done; }
    if (log) fprintf(log, "step,objective,lr,grad_norm\n");
    int warmup = o->warmup >= 0 ? o->warmup : (o->steps / 10 < 100 ? o->steps / 10 : 100);
    if (warmup < 1) warmup = 1;
    Rng rng;
    rng_seed(&rng, o->seed ^ 0x5EED5EEDull);
    int first_block = c->sites[0].block;
    const StreamCache *cache = o->objective == OBJECTIVE_CE ? o->calib_cache : NULL;
    if (cache && (cache->first_block != first_block || cache->n_windows != n_windows || cache->max_batch < B)) {
        qc_error("internal: the calibration cache does not match the corrections");
        goto done;
    }
    double recent = 0.0;
    int n_recent = 0;
    for (int step = 0; step < o->steps; step++) {
        for (int b = 0; b < B; b++) pick[b] = (int)rng_below(&rng, (uint64_t)n_windows);
        corrections_zero_grad(c);
        double objective;
        if (cache) { /* the frozen prefix comes from the cache: only blocks after it run */
            gather_cached(cache, pick, B, targets);
            gpt_forward_from(q, cache->batch, first_block + 1, B, T, &c->hook);
            objective = gpt_loss(q, targets);
            gpt_backward(q, &c->hook, 1, 0, first_block + 1);
        } else {
            gather_batch(corpus, starts, pick, B, T, inputs, targets);
            objective = correction_step_objective(q, f, c, o->objective, inputs, targets, B, T, mse_targets);
        }
        if (!isfinite(objective)) {
            qc_error("correction training diverged: objective is %g at step %d (try a lower --lr)", objective, step + 1);
            goto done;
        }
        float lr = lr_schedule(step, o->steps, warmup, o->lr, o->lr / 10.0f);
        double norm = clip_grad_norm(c->grads, c->num_params, o->grad_clip);
        AdamWStep s = {.lr = lr, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = o->weight_decay, .step = step + 1};
        adamw_update(c->params, c->grads, c->adam_m, c->adam_v, c->num_params, 1, &s);
        if (log) fprintf(log, "%d,%.6f,%.6g,%.6f\n", step + 1, objective, lr, norm);
        if (qc_stop_signal) {
            qc_error("interrupted by signal %d at correction step %d", (int)qc_stop_signal, step + 1);
            goto done;
        }
        if (step >= o->steps - 20) {
            recent += objective;
            n_recent++;
        }
        if (!o->quiet && (step + 1 == o->steps || (step + 1) % 50 == 0))
            progress_line(stderr, step + 1 == o->steps, "correct step %d/%d %s %.5f lr %.2e", step + 1, o->steps,
                          objective_name(o->objective), objective, lr);
    }
    if (objective_out) *objective_out = n_recent ? recent / n_recent : NAN;
    rc = 0;
done:
    if (log) fclose(log);
    free(starts);
    free(inputs);
    free(targets);
    free(pick);
    free(mse_targets);
    return rc;
}

int correction_lstsq(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o) {
    if (c->hidden != 0) { qc_error("--method lstsq solves linear corrections only (use --hidden 0)"); return -1; }
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
        int block = s->block;
        memset(gram, 0, (size_t)D * D * sizeof(double));
        memset(rhs, 0, (size_t)D * d * sizeof(double));
        for (int w0 = 0; w0 < n_windows; w0 += B) {
            int nb = n_windows - w0 < B ? n_windows - w0 : B;
            for (int b = 0; b < nb; b++) pick[b] = w0 + b;
            gather_batch(corpus, starts, pick, nb, T, inputs, NULL);
            /* the quantized stream entering site j, earlier sites already corrected */
            gpt_forward_blocks(q, inputs, nb, T, &c->hook, block + 1);
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
            qc_error("lstsq: the normal equations of site %d (after block %d) are singular (LAPACK info %d); raise --ridge", j,
                     block, info);
            goto done;
        }
        /* x + x.A + c with A = rhs[0..d), c = rhs[d]; stored as nn.Linear: weight = A^T */
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++) s->weight[(size_t)b * d + a] = (float)rhs[(size_t)a * d + b];
        for (int b = 0; b < d; b++) s->bias[b] = (float)rhs[(size_t)d * d + b];
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

static void add_number_or_null(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

int add_result_fields(cJSON *o, double lf, double lq, double lc) {
    double rec_l, rec_p;
    int defined = recovery_loss(lf, lq, lc, &rec_l);
    recovery_ppl(lf, lq, lc, &rec_p);
    add_number_or_null(o, "loss_float", lf);
    add_number_or_null(o, "loss_quant", lq);
    add_number_or_null(o, "loss_corrected", lc);
    add_number_or_null(o, "ppl_float", exp(lf));
    add_number_or_null(o, "ppl_quant", exp(lq));
    add_number_or_null(o, "ppl_corrected", exp(lc));
    add_number_or_null(o, "recovery_loss", rec_l);
    add_number_or_null(o, "recovery_ppl", rec_p);
    add_number_or_null(o, "gain_loss", lq - lc);
    return defined;
}
