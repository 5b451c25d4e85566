/* evaluate: see evaluate.h. Every window's loss is summed in double in a fixed order (positions
 * within a window, then windows), so evaluating from a prefix cache or from the tokens, in any
 * batch size, gives the same bits as long as the logits are the same. */
#include "nn/evaluate.h"

#include "nn/infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "kernels/ops.h"
#include "nn/actquant.h"
#include "nn/infer.h"

/* A 64-bit hash of n bytes continuing from h, by 8-byte words (a weight buffer hashes in a few
 * milliseconds); not cryptographic: it tells caches apart, it does not defend against forgery. */
static uint64_t hash_words(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t stream_cache_identity(const GPT *m, const int64_t *starts, int n_windows, int first_block) {
    uint64_t h = 0xcbf29ce484222325ull;
    int head[3] = {n_windows, first_block, m->config.ctx};
    h = hash_words(h, head, sizeof head);
    if (act_correction_float(m)) h = hash_words(h, "float stream", 12); /* the cache holds the stream before quantization */
    if (starts) h = hash_words(h, starts, (size_t)n_windows * sizeof *starts);
    return hash_words(h, m->params, m->num_params * sizeof(float));
}

int stream_cache_build(StreamCache *sc, GPT *m, const int32_t *ids, const int64_t *starts, int n_windows, int first_block) {
    memset(sc, 0, sizeof *sc);
    sc->identity = stream_cache_identity(m, starts, n_windows, first_block);
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
        gpt_forward_blocks(m, inputs, nb, T, NULL, first_block + 1); /* no hook: cannot fail */
        /* resid_out: the quantized stream, or the float one where a correction reads it (act_correction_float) */
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

int stream_cache_usable(const StreamCache *sc, const GPT *m, int first_block) {
    return sc && sc->streams && sc->first_block <= first_block && sc->T == m->config.ctx &&
           sc->identity == stream_cache_identity(m, NULL, sc->n_windows, sc->first_block);
}

void stream_cache_gather(const StreamCache *sc, const int *pick, int B, int32_t *targets) {
    size_t w = (size_t)sc->T * sc->C;
    for (int b = 0; b < B; b++) {
        memcpy(sc->batch + (size_t)b * w, sc->streams + (size_t)pick[b] * w, w * sizeof(float));
        memcpy(targets + (size_t)b * sc->T, sc->targets + (size_t)pick[b] * sc->T, (size_t)sc->T * sizeof(int32_t));
    }
}

/* ---------------------------------------------------------------- statistics */

double mean_se(const double *x, int n) {
    if (n < 2) return NAN;
    double mean = 0.0, ss = 0.0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
    return sqrt(ss / (n - 1) / n);
}

double paired_diff_se(const double *a, const double *b, int n) {
    if (n < 2) return NAN;
    double mean = 0.0, ss = 0.0;
    for (int i = 0; i < n; i++) mean += a[i] - b[i];
    mean /= n;
    for (int i = 0; i < n; i++) ss += (a[i] - b[i] - mean) * (a[i] - b[i] - mean);
    return sqrt(ss / (n - 1) / n);
}

static int compare_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

double quantile_sorted_inplace(double *x, long n, double p) {
    if (n < 1) return NAN;
    qsort(x, (size_t)n, sizeof *x, compare_double);
    double h = (n - 1) * p;
    long lo = (long)floor(h);
    if (lo >= n - 1) return x[n - 1];
    return x[lo] + (h - lo) * (x[lo + 1] - x[lo]);
}

/* ---------------------------------------------------------------- evaluation */

int eval_window_count(size_t n, int T) { return n < 2 ? 0 : (int)((n - 1) / (size_t)T); }

/* One batch's logits, forward only: from the tokens of windows [w0, w0+nb), or from the prefix cache. */
static int forward_windows(GPT *m, Inference *inf, const ModelHook *hook, const int32_t *ids, const StreamCache *prefix, int *pick,
                           int32_t *targets, int w0, int nb) {
    int T = m->config.ctx;
    if (prefix) {
        for (int b = 0; b < nb; b++) pick[b] = w0 + b;
        stream_cache_gather(prefix, pick, nb, targets);
        return gpt_infer(m, inf, NULL, prefix->batch, prefix->first_block + 1, nb, T, hook);
    }
    /* windows are contiguous: window i starts at iT, so nb windows are nb*T consecutive ids */
    const int32_t *in = ids + (size_t)w0 * T;
    memcpy(targets, in + 1, (size_t)nb * T * sizeof(int32_t));
    return gpt_infer(m, inf, in, NULL, 0, nb, T, hook);
}

/* log-softmax of one row of logits, in double */
static void log_softmax(double *out, const float *z, int V) {
    double zmax = z[0], sum = 0.0;
    for (int v = 1; v < V; v++) zmax = fmax(zmax, z[v]);
    for (int v = 0; v < V; v++) sum += exp((double)z[v] - zmax);
    double lse = log(sum) + zmax;
    for (int v = 0; v < V; v++) out[v] = z[v] - lse;
}

static int argmax(const float *z, int V) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > z[best]) best = v;
    return best;
}

static int run_windows(GPT *m, const ModelHook *hook, const int32_t *ids, size_t n, const StreamCache *prefix,
                       const EvalReference *ref, Evaluation *out, EvalReference *build) {
    int T = m->config.ctx, V = m->config.vocab_size, nw = eval_window_count(n, T), B = m->max_batch;
    if (nw == 0) { qc_error("the validation split (%zu tokens) is shorter than one window of %d", n, T + 1); return -1; }
    if (prefix && prefix->n_windows != nw) { qc_error("the prefix cache holds %d windows, the split %d", prefix->n_windows, nw); return -1; }
    if (ref && (ref->n_windows != nw || ref->T != T || ref->V != V)) {
        qc_error("the reference was evaluated on %d windows of %d over %d tokens, this model on %d of %d over %d", ref->n_windows,
                 ref->T, ref->V, nw, T, V);
        return -1;
    }
    if (prefix && prefix->max_batch < B) B = prefix->max_batch;
    long positions = (long)nw * T;
    double *window_loss = qc_calloc((size_t)nw, sizeof(double), "window losses");
    double *window_kl = ref ? qc_calloc((size_t)nw, sizeof(double), "window KL") : NULL;
    double *kl = ref ? qc_malloc((size_t)positions * sizeof(double), "KL per position") : NULL;
    int32_t *targets = qc_malloc((size_t)B * T * sizeof(int32_t), "targets");
    int *pick = qc_malloc((size_t)B * sizeof(int), "batch");
    Inference inf = {0};
    long agree = 0;
    int rc = -1;
    if (!window_loss || (ref && (!window_kl || !kl)) || !targets || !pick || inference_init(&inf, m, 0) != 0) goto done;
    for (int w0 = 0; w0 < nw; w0 += B) {
        int nb = nw - w0 < B ? nw - w0 : B;
        if (forward_windows(m, &inf, hook, ids, prefix, pick, targets, w0, nb) != 0) goto done;
        /* the same loss kernel as training, one window (T rows) at a time */
        for (int b = 0; b < nb; b++)
            window_loss[w0 + b] = crossentropy_forward_backward(NULL, m->logits + (size_t)b * T * V, targets + (size_t)b * T, T, V, 0.0f);
        if (build) {
#pragma omp parallel for schedule(static)
            for (long i = 0; i < (long)nb * T; i++) {
                double lp[256];
                const float *z = m->logits + (size_t)i * V;
                log_softmax(lp, z, V);
                memcpy(build->logprobs + ((size_t)w0 * T + i) * V, lp, (size_t)V * sizeof(double));
                build->top[(size_t)w0 * T + i] = (uint8_t)argmax(z, V);
            }
        }
        if (ref) {
            long batch_agree = 0;
#pragma omp parallel for schedule(static) reduction(+ : batch_agree)
            for (long i = 0; i < (long)nb * T; i++) {
                double lq[256];
                const float *z = m->logits + (size_t)i * V;
                const double *lp = ref->logprobs + ((size_t)w0 * T + i) * V;
                log_softmax(lq, z, V);
                double d = 0.0;
                for (int v = 0; v < V; v++) d += exp(lp[v]) * (lp[v] - lq[v]);
                kl[(size_t)w0 * T + i] = d;
                batch_agree += argmax(z, V) == ref->top[(size_t)w0 * T + i];
            }
            agree += batch_agree;
            for (int b = 0; b < nb; b++) {
                double s = 0.0;
                for (int t = 0; t < T; t++) s += kl[(size_t)(w0 + b) * T + t];
                window_kl[w0 + b] = s / T;
            }
        }
    }
    memset(out, 0, sizeof *out);
    out->n_windows = nw;
    out->T = T;
    double total = 0.0;
    for (int w = 0; w < nw; w++) total += window_loss[w];
    out->loss = total / nw;
    if (!isfinite(out->loss)) { /* overflowing logits: no result, whatever the caller goes on to do */
        qc_error("the validation loss is %s: the model's outputs are not finite (weights too large?)", isnan(out->loss) ? "NaN" : "infinite");
        goto done;
    }
    out->loss_se = mean_se(window_loss, nw);
    if (ref) {
        double s = 0.0;
        for (int w = 0; w < nw; w++) s += window_kl[w];
        out->have_reference = 1;
        out->kl_mean = s / nw;
        out->kl_se = mean_se(window_kl, nw);
        out->kl_p99 = quantile_sorted_inplace(kl, positions, 0.99);
        out->top1_agree = (double)agree / positions;
        out->loss_diff = out->loss - ref->loss;
        out->loss_diff_se = paired_diff_se(window_loss, ref->window_loss, nw);
    }
    out->window_loss = window_loss;
    window_loss = NULL;
    rc = 0;
done:
    free(window_loss);
    free(window_kl);
    free(kl);
    free(targets);
    free(pick);
    inference_free(&inf);
    return rc;
}

int evaluate_model(GPT *m, const ModelHook *hook, const int32_t *ids, size_t n, const StreamCache *prefix, int prefix_block,
                   const EvalReference *ref, Evaluation *out) {
    memset(out, 0, sizeof *out);
    if (prefix && !stream_cache_usable(prefix, m, prefix_block)) prefix = NULL;
    return run_windows(m, hook, ids, n, prefix, ref, out, NULL);
}

int evaluation_of_reference(Evaluation *e, const EvalReference *ref) {
    Evaluation self = {.n_windows = ref->n_windows, .T = ref->T, .window_loss = ref->window_loss, .loss = ref->loss,
                       .loss_se = mean_se(ref->window_loss, ref->n_windows), .have_reference = 1, .top1_agree = 1.0};
    return evaluation_copy(e, &self);
}

int evaluation_copy(Evaluation *dst, const Evaluation *src) {
    *dst = *src;
    dst->window_loss = qc_malloc((size_t)src->n_windows * sizeof(double), "window losses");
    if (!dst->window_loss) return -1;
    memcpy(dst->window_loss, src->window_loss, (size_t)src->n_windows * sizeof(double));
    return 0;
}

void evaluation_free(Evaluation *e) {
    free(e->window_loss);
    memset(e, 0, sizeof *e);
}

int eval_reference_build(EvalReference *r, GPT *ref, const int32_t *ids, size_t n) {
    memset(r, 0, sizeof *r);
    int T = ref->config.ctx, V = ref->config.vocab_size, nw = eval_window_count(n, T);
    if (nw == 0) { qc_error("the validation split (%zu tokens) is shorter than one window of %d", n, T + 1); return -1; }
    r->n_windows = nw;
    r->T = T;
    r->V = V;
    r->logprobs = qc_aligned_alloc((size_t)nw * T * V * sizeof(double), "reference log-probabilities");
    r->top = qc_malloc((size_t)nw * T, "reference top tokens");
    if (!r->logprobs || !r->top) { eval_reference_free(r); return -1; }
    Evaluation e;
    if (run_windows(ref, NULL, ids, n, NULL, NULL, &e, r) != 0) { eval_reference_free(r); return -1; }
    r->window_loss = e.window_loss;
    r->loss = e.loss;
    return 0;
}

void eval_reference_free(EvalReference *r) {
    free(r->logprobs);
    free(r->top);
    free(r->window_loss);
    memset(r, 0, sizeof *r);
}
