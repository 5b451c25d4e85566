/* bench: times the float engine at one model size (README: Speed) — the training step, a
 * correction-training step (base frozen, a site after every block, linear and MLP 64), an
 * evaluation pass, achieved GFLOP/s against the machine's own sgemm peak, and peak RSS. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cjson/cJSON.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/util.h"
#include "correct/correct.h"
#include "correct/experiment.h"
#include "kernels/gemm.h"
#include "kernels/kernels.h"
#include "nn/data.h"
#include "nn/model.h"
#include "nn/optim.h"
#include "nn/train.h"

enum { BATCH = 32, CONTEXT = 128, HEADS = 4, VOCAB = 65, RANDOM_TOKENS = 1 << 20 };

typedef struct {
    int d_model, n_layer;
    int steps, warmup, eval_steps, threads;
    int json, measure_peak, print_kernels;
    const char *data_path;
    uint64_t seed;
} BenchOptions;

/* The floating-point operations of one training step, counted exactly for the matrix products
 * and nothing else (bias adds, LayerNorm, GELU, softmax, cross-entropy, AdamW are ignored).
 * N = B*T rows. A linear layer (N,K)->(N,M) is 2*N*M*K forward and twice that backward (dinp and
 * dweight): per block the four linears are 24*N*C^2, the LM head 2*N*C*V. Attention counts the
 * causal triangle the engine computes, not the full square: query t meets t+1 keys, so QK^T and
 * AV each cost 2*hs*T(T+1)/2 per (batch, head), i.e. B*C*T*(T+1) over all heads; backward does
 * four such products (dV, dP, dQ, dK), twice the forward. Embedding gathers are not products. */
static double forward_flops(int B, int T, int C, int L, int V) {
    double N = (double)B * T;
    double linears = 24.0 * N * C * C;
    double attention = 2.0 * B * (double)C * T * (T + 1.0);
    return L * (linears + attention) + 2.0 * N * C * V;
}
static double training_step_flops(int B, int T, int C, int L, int V) { return 3.0 * forward_flops(B, T, C, L, V); }
/* The correction-training step the bench times (every 1: a site after each block, the first after
 * block 0): the frozen forward with a correction at each site, then backward from the logits: the
 * input gradients of the LM head and of blocks L-1..1 (frozen: no weight gradients; attention's
 * four products) and each correction's input and weight gradients (twice its forward). A linear
 * correction (hidden 0) is 2*N*C^2 forward, an MLP of width h 4*N*C*h. cached: block 0's forward
 * comes from the cache. With the sgemm peak, these say how fast the step could possibly run. */
static double correction_step_flops(int B, int T, int C, int L, int V, int hidden, int cached) {
    double N = (double)B * T;
    double attention = 2.0 * B * (double)C * T * (T + 1.0), linears = 24.0 * N * C * C;
    double site = hidden > 0 ? 4.0 * N * C * hidden : 2.0 * N * C * C;
    double forward = forward_flops(B, T, C, L, V) + L * site - (cached ? linears + attention : 0.0);
    double backward = 2.0 * N * C * V + (L - 1) * (linears + 2.0 * attention) + L * 2.0 * site;
    return forward + backward;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n); sorts v in place. */
static double median(double *v, int n) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double peak_rss_mb(void) {
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0) return NAN;
    return usage.ru_maxrss / 1024.0; /* Linux reports kilobytes */
}

static void set_thread_count(int threads) {
    if (threads <= 0) return;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(threads);
#endif
}

/* The machine's practical sgemm peak: square row-major products of several sizes at the current
 * thread count, best GFLOP/s over a few repeats (the first call of each size warms the caches),
 * in OpenBLAS and in qcorr's own gemm (the kernel path in use); the peak is the better of the
 * two. Both, because either may fall short of the machine on its own: OpenBLAS 0.3.21 runs its
 * SSE3 (Prescott) kernels on a CPU it does not know, such as a 2023 Xeon with AVX-512. */
typedef struct { double openblas, qcorr; } SgemmPeak;
static SgemmPeak measure_sgemm_peak(void) {
    static const int sizes[] = {1024, 1536, 2048};
    enum { REPEATS = 2 };
    int nmax = sizes[sizeof sizes / sizeof *sizes - 1];
    size_t count = (size_t)nmax * nmax;
    float *a = qc_aligned_alloc(count * sizeof(float), "sgemm A");
    float *b = qc_aligned_alloc(count * sizeof(float), "sgemm B");
    float *c = qc_aligned_alloc(count * sizeof(float), "sgemm C");
    SgemmPeak best = {NAN, NAN};
    if (a && b && c) {
        Rng rng;
        rng_seed(&rng, 7);
        for (size_t i = 0; i < count; i++) {
            a[i] = rng_uniform(&rng) - 0.5f;
            b[i] = rng_uniform(&rng) - 0.5f;
            c[i] = 0.0f;
        }
        best.openblas = best.qcorr = 0.0;
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            int n = sizes[s];
            for (int r = 0; r <= REPEATS; r++) /* r == 0: warm-up */
                for (int engine = 0; engine < 2; engine++) {
                    double t0 = now_seconds();
                    if (engine == 0)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
                    else if (gemm(n, n, n, a, n, b, n, 0, NULL, c, n, 0) != 0)
                        continue;
                    double gflops = 2.0 * n * (double)n * n / (now_seconds() - t0) / 1e9;
                    double *slot = engine == 0 ? &best.openblas : &best.qcorr;
                    if (r > 0 && gflops > *slot) *slot = gflops;
                }
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}

typedef struct {
    double step_ms, forward_ms, backward_ms, optimizer_ms; /* medians */
    double best_step_ms;                                   /* fastest step: background load only slows */
    double eval_ms;                                        /* median per forward of B windows */
    /* correction-training steps, hidden 0 and 64: from tokens (the whole frozen forward) and from
     * the prefix cache the sweep uses (only the blocks after the first site run) */
    double corr_ms[2], corr_cached_ms[2];
    double first_loss, last_loss;
} Timings;

/* Times opt->steps training steps after opt->warmup untimed ones, exactly the loop train_model
 * runs: draw windows, forward, loss, zero_grad, backward, clip + AdamW. */
static int time_training(GPT *m, const int32_t *ids, size_t n, const BenchOptions *opt, Timings *out) {
    int B = BATCH, T = CONTEXT, total = opt->warmup + opt->steps;
    int32_t *inputs = qc_malloc((size_t)B * T * sizeof(int32_t), "batch inputs");
    int32_t *targets = qc_malloc((size_t)B * T * sizeof(int32_t), "batch targets");
    double *times = qc_malloc((size_t)4 * (opt->steps > 0 ? opt->steps : 1) * sizeof(double), "timings");
    if (!inputs || !targets || !times) {
        free(inputs); free(targets); free(times);
        return -1;
    }
    double *step_t = times, *forward_t = times + opt->steps, *backward_t = times + 2 * opt->steps,
           *optimizer_t = times + 3 * opt->steps;
    Rng rng;
    rng_seed(&rng, opt->seed);
    int rc = 0;
    for (int step = 0; step < total; step++) {
        double t0 = now_seconds();
        sample_windows(ids, n, B, T, &rng, inputs, targets);
        gpt_forward(m, inputs, B, T, NULL);
        double loss = gpt_loss(m, targets);
        double t1 = now_seconds();
        gpt_zero_grad(m);
        gpt_backward(m, NULL, 1, 1, 0);
        double t2 = now_seconds();
        double norm = gpt_optimizer_step(m, 1e-3f, 0.1f, 1.0f, step + 1);
        double t3 = now_seconds();
        if (!isfinite(loss) || !isfinite(norm)) {
            qc_error("bench: training produced loss %g, gradient norm %g at step %d", loss, norm, step + 1);
            rc = -1;
            break;
        }
        if (step == 0) out->first_loss = loss;
        out->last_loss = loss;
        int k = step - opt->warmup;
        if (k >= 0) {
            step_t[k] = 1e3 * (t3 - t0);
            forward_t[k] = 1e3 * (t1 - t0);
            backward_t[k] = 1e3 * (t2 - t1);
            optimizer_t[k] = 1e3 * (t3 - t2);
        }
    }
    if (rc == 0) {
        out->step_ms = median(step_t, opt->steps);
        out->best_step_ms = step_t[0]; /* median() sorted it */
        out->forward_ms = median(forward_t, opt->steps);
        out->backward_ms = median(backward_t, opt->steps);
        out->optimizer_ms = median(optimizer_t, opt->steps);
    }
    free(inputs);
    free(targets);
    free(times);
    return rc;
}

/* Times the evaluation path (evaluate_loss: forward + cross-entropy, no gradients) one batch of B
 * contiguous windows at a time, walking through ids. It runs after the training steps, which have
 * already touched every buffer, so no untimed batch comes first. */
static int time_eval(GPT *m, const int32_t *ids, size_t n, const BenchOptions *opt, Timings *out) {
    size_t span = (size_t)BATCH * CONTEXT;
    size_t batches = (n - 1) / span;
    if (batches == 0) { qc_error("bench: %zu evaluation tokens are fewer than one batch (%zu)", n, span + 1); return -1; }
    double *times = qc_malloc((size_t)(opt->eval_steps > 0 ? opt->eval_steps : 1) * sizeof(double), "timings");
    if (!times) return -1;
    for (int k = 0; k < opt->eval_steps; k++) {
        const int32_t *at = ids + ((size_t)k % batches) * span;
        double t0 = now_seconds();
        double loss = evaluate_loss(m, at, span + 1, NULL);
        double dt = now_seconds() - t0;
        if (!isfinite(loss)) { qc_error("bench: evaluation loss is %g", loss); free(times); return -1; }
        times[k] = 1e3 * dt;
    }
    out->eval_ms = median(times, opt->eval_steps);
    free(times);
    return 0;
}

static const int CORR_HIDDEN[2] = {0, 64};

/* Times correction-training steps as correction_train runs them: corrections after every block
 * (every 1) of width hidden on the frozen model, objective ce, then clip + AdamW on the
 * corrections only. cached: the stream after the first site's block comes from a StreamCache of
 * the batch's windows (what the sweep does), so only the later blocks run. */
static int time_correction(GPT *m, const int32_t *ids, size_t n, const BenchOptions *opt, int hidden, int cached,
                           double *out_ms) {
    int B = BATCH, T = CONTEXT, total = opt->warmup + opt->steps;
    Corrections c;
    CorrectionLayout layout = {.kind = method_kind(METHOD_TRAIN, hidden), .every = 1, .size = hidden};
    if (corrections_init(&c, &m->config, &layout, B * T, opt->seed) != 0) return -1;
    int first_block = c.sites[0].where;
    int32_t *inputs = qc_malloc((size_t)B * T * sizeof(int32_t), "batch inputs");
    int32_t *targets = qc_malloc((size_t)B * T * sizeof(int32_t), "batch targets");
    int64_t *starts = qc_malloc((size_t)B * sizeof(int64_t), "window starts");
    double *times = qc_malloc((size_t)(opt->steps > 0 ? opt->steps : 1) * sizeof(double), "timings");
    StreamCache sc = {0};
    int rc = -1;
    if (!inputs || !targets || !starts || !times) goto done;
    Rng rng;
    rng_seed(&rng, opt->seed ^ 0xC0227EC7ull);
    if (cached) { /* one batch of windows, cached once, as a sweep caches its calibration set */
        for (int b = 0; b < B; b++) starts[b] = (int64_t)rng_below(&rng, (uint64_t)(n - T - 1));
        if (stream_cache_build(&sc, m, ids, starts, B, first_block) != 0) goto done;
    }
    for (int step = 0; step < total; step++) {
        double t0 = now_seconds();
        corrections_zero_grad(&c);
        if (cached) {
            memcpy(sc.batch, sc.streams, (size_t)B * T * sc.C * sizeof(float));
            memcpy(targets, sc.targets, (size_t)B * T * sizeof(int32_t));
            gpt_forward_from(m, sc.batch, first_block + 1, B, T, &c.hook);
        } else {
            sample_windows(ids, n, B, T, &rng, inputs, targets);
            gpt_forward(m, inputs, B, T, &c.hook);
        }
        double loss = gpt_loss(m, targets);
        gpt_backward(m, &c.hook, 1, 0, first_block + 1);
        clip_grad_norm(c.grads, c.num_params, 1.0f);
        AdamWStep s = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.0f, .step = step + 1};
        adamw_update(c.params, c.grads, c.adam_m, c.adam_v, c.num_params, 1, &s);
        double dt = now_seconds() - t0;
        if (!isfinite(loss)) { qc_error("bench: correction training produced loss %g", loss); goto done; }
        if (step >= opt->warmup) times[step - opt->warmup] = 1e3 * dt;
    }
    *out_ms = median(times, opt->steps);
    rc = 0;
done:
    stream_cache_free(&sc);
    corrections_free(&c);
    free(inputs);
    free(targets);
    free(starts);
    free(times);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench [--size 64x2|128x4|256x6] [--steps N] [--warmup N] [--eval-steps N]\n"
            "             [--threads N] [--data PATH | --random-tokens] [--no-peak] [--seed N] [--json]\n"
            "       bench --kernels   (prints the kernel path in use and those the CPU supports)\n"
            "Times the training step (median ms over --steps after --warmup), an evaluation pass and\n"
            "the machine's sgemm peak at batch %d x context %d, %d heads, vocab %d (random tokens) or\n"
            "the corpus's vocabulary.\n",
            BATCH, CONTEXT, HEADS, VOCAB);
}

static int parse_args(int argc, char **argv, BenchOptions *o, int *random_tokens) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v;
        int has_value = i + 1 < argc;
        if (strcmp(a, "--json") == 0) o->json = 1;
        else if (strcmp(a, "--no-peak") == 0) o->measure_peak = 0;
        else if (strcmp(a, "--random-tokens") == 0) *random_tokens = 1;
        else if (strcmp(a, "--kernels") == 0) o->print_kernels = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); exit(0); }
        else if (!has_value) { qc_error("%s: unknown flag or missing value", a); return -1; }
        else if (strcmp(a, "--size") == 0) {
            const char *s = argv[++i];
            char tail;
            if (sscanf(s, "%dx%d%c", &o->d_model, &o->n_layer, &tail) != 2 || o->d_model < HEADS ||
                o->d_model % HEADS != 0 || o->n_layer < 1) {
                qc_error("--size %s: expected D_MODELxLAYERS with d_model a multiple of %d, e.g. 128x4", s, HEADS);
                return -1;
            }
        } else if (strcmp(a, "--steps") == 0) {
            if (parse_int(a, argv[++i], 1, 1000000, &v) != 0) return -1;
            o->steps = (int)v;
        } else if (strcmp(a, "--warmup") == 0) {
            if (parse_int(a, argv[++i], 0, 1000000, &v) != 0) return -1;
            o->warmup = (int)v;
        } else if (strcmp(a, "--eval-steps") == 0) {
            if (parse_int(a, argv[++i], 1, 1000000, &v) != 0) return -1;
            o->eval_steps = (int)v;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_int(a, argv[++i], 0, 4096, &v) != 0) return -1;
            o->threads = (int)v;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_int(a, argv[++i], 0, 2147483647, &v) != 0) return -1;
            o->seed = (uint64_t)v;
        } else if (strcmp(a, "--data") == 0) o->data_path = argv[++i];
        else { qc_error("%s: unknown flag", a); return -1; }
    }
    return 0;
}

int main(int argc, char **argv) {
    BenchOptions opt = {.d_model = 128, .n_layer = 4, .steps = 10, .warmup = 2, .eval_steps = 5, .threads = 2,
                        .measure_peak = 1, .seed = 1234};
    int random_tokens = 0;
    if (parse_args(argc, argv, &opt, &random_tokens) != 0) {
        fprintf(stderr, "bench: %s\n", qc_last_error());
        usage(stderr);
        return 2;
    }
    if (kernels_init_from_env() != 0) {
        fprintf(stderr, "bench: %s\n", qc_last_error());
        return 1;
    }
    if (opt.print_kernels) {
        printf("%s (this CPU supports %s)\n", kernels_name(), kernels_supported_list());
        return 0;
    }
    set_thread_count(opt.threads);

    /* token source: the corpus (train split for steps, validation split for eval), else uniform random ids */
    Corpus corpus;
    memset(&corpus, 0, sizeof corpus);
    int have_corpus = 0, vocab = VOCAB;
    char path[4096];
    if (!random_tokens && corpus_find(opt.data_path, path, sizeof path) == 0 && corpus_load(&corpus, path, NULL) == 0)
        have_corpus = 1;
    else if (!random_tokens)
        fprintf(stderr, "bench: %s; using random tokens\n", qc_last_error());
    int32_t *random_ids = NULL;
    const int32_t *train_ids, *eval_ids;
    size_t n_train, n_eval;
    if (have_corpus) {
        vocab = corpus.vocab.size;
        train_ids = corpus.ids;
        n_train = corpus.n_train;
        eval_ids = corpus.ids + corpus.n_train;
        n_eval = corpus.n_val;
    } else {
        random_ids = qc_malloc(RANDOM_TOKENS * sizeof(int32_t), "random tokens");
        if (!random_ids) { fprintf(stderr, "bench: %s\n", qc_last_error()); return 1; }
        Rng rng;
        rng_seed(&rng, opt.seed ^ 0x9E3779B97F4A7C15ull);
        for (int i = 0; i < RANDOM_TOKENS; i++) random_ids[i] = (int32_t)rng_below(&rng, VOCAB);
        train_ids = eval_ids = random_ids;
        n_train = n_eval = RANDOM_TOKENS;
    }

    GPTConfig cfg = {.vocab_size = vocab, .ctx = CONTEXT, .d_model = opt.d_model, .n_layer = opt.n_layer, .n_head = HEADS};
    GPT model;
    Timings t;
    memset(&t, 0, sizeof t);
    if (gpt_init(&model, &cfg, BATCH) != 0 || gpt_enable_training(&model) != 0) {
        fprintf(stderr, "bench: %s\n", qc_last_error());
        return 1;
    }
    gpt_init_weights(&model, opt.seed);
    int failed = time_training(&model, train_ids, n_train, &opt, &t) != 0 || time_eval(&model, eval_ids, n_eval, &opt, &t) != 0;
    for (int k = 0; k < 2 && !failed; k++)
        failed = time_correction(&model, train_ids, n_train, &opt, CORR_HIDDEN[k], 0, &t.corr_ms[k]) != 0 ||
                 time_correction(&model, train_ids, n_train, &opt, CORR_HIDDEN[k], 1, &t.corr_cached_ms[k]) != 0;
    if (failed) {
        fprintf(stderr, "bench: %s\n", qc_last_error());
        return 1;
    }
    /* read before the sgemm measurement, whose 48 MB of matrices are not the model's */
    double rss_mb = peak_rss_mb();
    size_t params = model.num_params;
    gpt_free(&model);
    SgemmPeak peaks = opt.measure_peak ? measure_sgemm_peak() : (SgemmPeak){NAN, NAN};
    double peak = peaks.openblas > peaks.qcorr ? peaks.openblas : peaks.qcorr;

    double tokens = (double)BATCH * CONTEXT;
    double flops = training_step_flops(BATCH, CONTEXT, opt.d_model, opt.n_layer, vocab);
    double train_tps = tokens / (t.step_ms / 1e3);
    double eval_tps = tokens / (t.eval_ms / 1e3);
    double gflops = flops / (t.step_ms / 1e3) / 1e9;
    double eval_gflops = forward_flops(BATCH, CONTEXT, opt.d_model, opt.n_layer, vocab) / (t.eval_ms / 1e3) / 1e9;
    double peak_fraction = gflops / peak;
    char size[32];
    snprintf(size, sizeof size, "%dx%d", opt.d_model, opt.n_layer);

    if (opt.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "engine", "qcorr");
        cJSON_AddStringToObject(o, "size", size);
        cJSON_AddNumberToObject(o, "d_model", opt.d_model);
        cJSON_AddNumberToObject(o, "n_layer", opt.n_layer);
        cJSON_AddNumberToObject(o, "n_head", HEADS);
        cJSON_AddNumberToObject(o, "vocab", vocab);
        cJSON_AddNumberToObject(o, "batch", BATCH);
        cJSON_AddNumberToObject(o, "ctx", CONTEXT);
        cJSON_AddNumberToObject(o, "params", (double)params);
        cJSON_AddNumberToObject(o, "threads", opt.threads);
#ifdef OPENBLAS_VERSION
        cJSON_AddStringToObject(o, "openblas_core", openblas_get_corename());
#endif
        cJSON_AddStringToObject(o, "kernels", kernels_name());
        cJSON_AddStringToObject(o, "tokens", have_corpus ? "corpus" : "random");
        cJSON_AddNumberToObject(o, "steps", opt.steps);
        cJSON_AddNumberToObject(o, "warmup", opt.warmup);
        cJSON_AddNumberToObject(o, "step_ms", t.step_ms);
        cJSON_AddNumberToObject(o, "best_step_ms", t.best_step_ms);
        cJSON_AddNumberToObject(o, "forward_ms", t.forward_ms);
        cJSON_AddNumberToObject(o, "backward_ms", t.backward_ms);
        cJSON_AddNumberToObject(o, "optimizer_ms", t.optimizer_ms);
        cJSON_AddNumberToObject(o, "train_tokens_per_s", train_tps);
        cJSON_AddNumberToObject(o, "eval_ms", t.eval_ms);
        cJSON_AddNumberToObject(o, "eval_tokens_per_s", eval_tps);
        for (int k = 0; k < 2; k++) {
            char key[64];
            snprintf(key, sizeof key, "corr_h%d_ms", CORR_HIDDEN[k]);
            cJSON_AddNumberToObject(o, key, t.corr_ms[k]);
            snprintf(key, sizeof key, "corr_h%d_tokens_per_s", CORR_HIDDEN[k]);
            cJSON_AddNumberToObject(o, key, tokens / (t.corr_ms[k] / 1e3));
            snprintf(key, sizeof key, "corr_cached_h%d_ms", CORR_HIDDEN[k]);
            cJSON_AddNumberToObject(o, key, t.corr_cached_ms[k]);
            snprintf(key, sizeof key, "corr_cached_h%d_tokens_per_s", CORR_HIDDEN[k]);
            cJSON_AddNumberToObject(o, key, tokens / (t.corr_cached_ms[k] / 1e3));
            for (int cached = 0; cached <= 1; cached++) {
                snprintf(key, sizeof key, cached ? "corr_cached_h%d_gflop" : "corr_h%d_gflop", CORR_HIDDEN[k]);
                cJSON_AddNumberToObject(o, key, correction_step_flops(BATCH, CONTEXT, opt.d_model, opt.n_layer, vocab,
                                                                      CORR_HIDDEN[k], cached) / 1e9);
            }
        }
        cJSON_AddNumberToObject(o, "step_gflop", flops / 1e9);
        cJSON_AddNumberToObject(o, "train_gflops", gflops);
        cJSON_AddNumberToObject(o, "eval_gflops", eval_gflops);
        cJSON_AddNumberToObject(o, "eval_gflop", forward_flops(BATCH, CONTEXT, opt.d_model, opt.n_layer, vocab) / 1e9);
        if (opt.measure_peak) {
            cJSON_AddNumberToObject(o, "sgemm_peak_gflops", peak);
            cJSON_AddNumberToObject(o, "openblas_sgemm_gflops", peaks.openblas);
            cJSON_AddNumberToObject(o, "qcorr_sgemm_gflops", peaks.qcorr);
            cJSON_AddNumberToObject(o, "peak_fraction", peak_fraction);
        }
        cJSON_AddNumberToObject(o, "peak_rss_mb", rss_mb);
        cJSON_AddNumberToObject(o, "first_loss", t.first_loss);
        cJSON_AddNumberToObject(o, "last_loss", t.last_loss);
        char *text = cJSON_PrintUnformatted(o);
        if (text) printf("%s\n", text);
        cJSON_free(text);
        cJSON_Delete(o);
    } else {
        printf("qcorr %-6s kernels %s\n", size, kernels_name());
        printf("qcorr %-6s train %7.1f ms/step %9.0f tok/s (fwd %.1f bwd %.1f opt %.1f ms) | eval %9.0f tok/s | "
               "%.1f GFLOP/s",
               size, t.step_ms, train_tps, t.forward_ms, t.backward_ms, t.optimizer_ms, eval_tps, gflops);
        if (opt.measure_peak)
            printf(" = %.0f%% of sgemm peak %.1f (OpenBLAS %.1f, qcorr %.1f)", 100.0 * peak_fraction, peak, peaks.openblas,
                   peaks.qcorr);
        printf(" | peak RSS %.0f MB\n", rss_mb);
        printf("qcorr %-6s correction step h0 %.1f ms (cached prefix %.1f), h64 %.1f ms (cached prefix %.1f)\n", size,
               t.corr_ms[0], t.corr_cached_ms[0], t.corr_ms[1], t.corr_cached_ms[1]);
    }
    fflush(stdout);
    corpus_free(&corpus);
    free(random_ids);
    return 0;
}
