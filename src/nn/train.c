/* train: see train.h. Non-finite losses stop training with the step named, since a NaN that
 * trains on silently wastes hours; the check is one isfinite() per step. */
#include "nn/train.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "kernels/ops.h"
#include "nn/evaluate.h"
#include "nn/optim.h"

void train_options_default(TrainOptions *o) {
    memset(o, 0, sizeof *o);
    o->batch = 32;
    o->steps = 2000;
    o->warmup = -1;
    o->lr = 3e-3f;
    o->min_lr = -1.0f;
    o->weight_decay = 0.1f;
    o->grad_clip = 1.0f;
    o->seed = 42;
}

double gpt_optimizer_step(GPT *m, float lr, float weight_decay, float grad_clip, int step) {
    double norm = clip_grad_norm(m->grads, m->num_params, grad_clip);
    AdamWStep s = {.lr = lr, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = weight_decay, .step = step};
    enum { MAX_SPANS = 4096 };
    size_t offsets[MAX_SPANS], counts[MAX_SPANS];
    unsigned char decay[MAX_SPANS];
    int n = m->n_specs < MAX_SPANS ? m->n_specs : MAX_SPANS; /* 256 layers x 12 + 6 fit */
    for (int i = 0; i < n; i++) {
        offsets[i] = m->specs[i].offset;
        counts[i] = tensor_numel(&m->specs[i]);
        decay[i] = m->specs[i].cols != 0; /* matrices (embeddings included) decay, vectors do not */
    }
    adamw_update_spans(m->params, m->grads, m->adam_m, m->adam_v, offsets, counts, decay, n, &s);
    return norm;
}

void progress_line(FILE *f, int is_final, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (isatty(fileno(f))) fprintf(f, "\r\033[K%s%s", line, is_final ? "\n" : "");
    else fprintf(f, "%s\n", line);
    fflush(f);
}

double evaluate_loss(GPT *m, const int32_t *ids, size_t n, const ModelHook *hook) {
    Evaluation e;
    if (evaluate_model(m, hook, ids, n, NULL, 0, NULL, &e) != 0) return NAN;
    double loss = e.loss;
    evaluation_free(&e);
    return loss;
}

/* The validation loss after `step` steps; NaN, with the error naming the step, when it cannot be
 * computed or is not finite (a model whose outputs overflow is not a result). */
static double validation_loss(GPT *m, const Corpus *c, int step) {
    double loss = evaluate_loss(m, c->ids + c->n_train, c->n_val, NULL);
    if (!isfinite(loss)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("validation after step %d: %s", step, msg);
    }
    return loss;
}

int train_model(GPT *m, const Corpus *c, const TrainOptions *o, TrainResult *r) {
    int B = o->batch, T = m->config.ctx, N = B * T;
    if (B > m->max_batch) { qc_error("batch %d exceeds the model's allocation (%d)", B, m->max_batch); return -1; }
    if (corpus_check_windows(c, T) != 0) return -1;
    if (gpt_enable_training(m) != 0) return -1;
    int warmup = o->warmup >= 0 ? o->warmup : (o->steps / 10 < 100 ? o->steps / 10 : 100);
    if (warmup < 1) warmup = 1;
    float min_lr = o->min_lr >= 0 ? o->min_lr : o->lr / 10.0f;
    int32_t *inputs = qc_malloc((size_t)N * sizeof(int32_t), "batch");
    int32_t *targets = qc_malloc((size_t)N * sizeof(int32_t), "batch");
    if (!inputs || !targets) { free(inputs); free(targets); return -1; }
    /* the log appears whole when training ends, or not at all: a kill or a full disk never
     * leaves a cut log beside no checkpoint */
    AtomicFile log_file, *log = NULL;
    if (o->log_path) {
        if (atomic_file_open(&log_file, o->log_path) != 0 ||
            atomic_file_printf(&log_file, "step,loss,lr,grad_norm,tokens_per_s,val_loss\n") != 0) {
            if (log_file.path) atomic_file_discard(&log_file);
            free(inputs);
            free(targets);
            return -1;
        }
        log = &log_file;
    }
    Rng rng;
    rng_seed(&rng, o->seed ^ 0xD1B54A32D192ED03ull);
    double recent[20] = {0}, t_train = 0.0;
    int n_recent = 0, rc = 0;
    double last_print = 0.0;
    for (int step = 0; step < o->steps; step++) {
        double t0 = now_seconds();
        sample_windows(c->ids, c->n_train, B, T, &rng, inputs, targets);
        gpt_forward(m, inputs, B, T, NULL);
        gpt_zero_grad(m);
        double loss = gpt_loss(m, targets);
        if (!isfinite(loss)) {
            qc_error("training diverged: loss is %g at step %d (try a learning rate below %g)", loss, step + 1, (double)o->lr);
            rc = -1;
            break;
        }
        gpt_backward(m, NULL, 1, 1, 0);
        float lr = lr_schedule(step, o->steps, warmup, o->lr, min_lr);
        double norm = gpt_optimizer_step(m, lr, o->weight_decay, o->grad_clip, step + 1);
        if (!isfinite(norm)) {
            qc_error("training diverged: gradient norm is %g at step %d", norm, step + 1);
            rc = -1;
            break;
        }
        double dt = now_seconds() - t0;
        t_train += dt;
        if (o->on_step) o->on_step(o->on_step_ctx, step + 1, o->steps, loss);
        if (qc_stop_signal) {
            qc_error("interrupted by signal %d at step %d: nothing written", (int)qc_stop_signal, step + 1);
            rc = -1;
            break;
        }
        recent[n_recent++ % 20] = loss;
        double val = NAN;
        int last = step + 1 == o->steps;
        if (o->eval_every > 0 && ((step + 1) % o->eval_every == 0) && !last &&
            !isfinite(val = validation_loss(m, c, step + 1))) {
            rc = -1;
            break;
        }
        if (log) {
            char val_text[32] = "";
            if (isfinite(val)) snprintf(val_text, sizeof val_text, "%.6f", val);
            if (atomic_file_printf(log, "%d,%.6f,%.6g,%.6f,%.1f,%s\n", step + 1, loss, lr, norm, N / dt, val_text) != 0) {
                rc = -1;
                break;
            }
        }
        if (!o->quiet) {
            double now = now_seconds();
            if (last || isfinite(val) || now - last_print > (isatty(2) ? 0.2 : 5.0) || step == 0) {
                double eta = t_train / (step + 1) * (o->steps - step - 1);
                char valtext[48] = "";
                if (isfinite(val)) snprintf(valtext, sizeof valtext, " val %.4f", val);
                progress_line(stderr, 0, "step %d/%d loss %.4f lr %.2e %.0f tok/s%s ETA %.0fs", step + 1, o->steps, loss,
                              lr, N / dt, valtext, eta);
                if (isfinite(val) && isatty(2)) fputc('\n', stderr);
                last_print = now;
            }
        }
    }
    if (!o->quiet && isatty(2)) fputc('\n', stderr);
    if (rc == 0) {
        int k = n_recent < 20 ? n_recent : 20;
        double s = 0;
        for (int i = 0; i < k; i++) s += recent[i];
        r->train_loss = k ? s / k : NAN;
        r->steps = o->steps;
        r->seconds = t_train;
        r->tokens_per_second = t_train > 0 ? (double)N * o->steps / t_train : 0;
        r->val_loss = validation_loss(m, c, o->steps);
        /* the checkpoint first, then the log: a log never stands beside no checkpoint */
        if (!isfinite(r->val_loss) || (log && atomic_file_printf(log, "%d,,,,,%.6f\n", o->steps, r->val_loss) != 0) ||
            (o->save && o->save(m, o->save_ctx) != 0) || (log && atomic_file_commit(log) != 0))
            rc = -1;
    }
    if (log) atomic_file_discard(log); /* after a commit: nothing left to remove */
    free(inputs);
    free(targets);
    return rc;
}
