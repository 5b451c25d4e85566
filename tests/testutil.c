/* testutil: see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "base/omp_compat.h"
#include "nn/data.h"
#include "nn/optim.h"
#include "nn/train.h"

void fill_uniform(float *x, size_t n, Rng *rng, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * rng_uniform(rng);
}

void fill_normal(float *x, size_t n, Rng *rng, float std) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(rng);
}

double max_rel_diff(const float *a, const float *b, size_t n, double floor) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), floor);
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

double max_abs_diff(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

void tiny_model(GPT *m, int max_batch, uint64_t seed) { small_gpt(m, 2, 8, max_batch, seed); }

float *copy_floats(const float *x, size_t n) {
    float *p = malloc(n * sizeof(float));
    assert_non_null(p);
    memcpy(p, x, n * sizeof(float));
    return p;
}

void random_tokens(int32_t *t, int n, int V, Rng *rng) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)rng_below(rng, (uint64_t)V);
}

void small_gpt(GPT *m, int n_layer, int ctx, int max_batch, uint64_t seed) {
    GPTConfig cfg = {.vocab_size = 11, .ctx = ctx, .d_model = 16, .n_layer = n_layer, .n_head = 2};
    assert_int_equal(gpt_init(m, &cfg, max_batch), 0);
    gpt_init_weights(m, seed);
    /* non-trivial norms and biases, so their gradients are exercised too */
    Rng rng;
    rng_seed(&rng, seed + 1);
    for (int i = 0; i < m->n_specs; i++) {
        const TensorSpec *t = &m->specs[i];
        float *w = m->params + t->offset;
        size_t n = tensor_numel(t);
        if (t->role == ROLE_NORM || t->role == ROLE_BIAS)
            for (size_t k = 0; k < n; k++) w[k] += 0.1f * rng_normal(&rng);
        else
            for (size_t k = 0; k < n; k++) w[k] *= 10.0f; /* std 0.2: activations well away from 0 */
    }
}

const char *test_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/qcorr-test-XXXXXX");
        if (!mkdtemp(dir)) fail_msg("mkdtemp failed");
    }
    return dir;
}

void skip_reason(const char *test, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("skip - %s: ", test);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

const char *test_corpus_path(void) {
    static char path[4096];
    if (corpus_find(NULL, path, sizeof path) != 0) return NULL;
    return access(path, R_OK) == 0 ? path : NULL;
}

const char *write_test_corpus(const char *name, size_t n, const char *alphabet, uint64_t seed) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    char *text = malloc(n);
    Rng rng;
    rng_seed(&rng, seed);
    size_t k = strlen(alphabet);
    for (size_t i = 0; i < n; i++) text[i] = alphabet[rng_below(&rng, k)];
    assert_int_equal(write_file_atomic(path, text, n), 0);
    free(text);
    return path;
}

static int default_threads = 1;

void use_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int setup_one_thread(void **state) {
    (void)state;
    default_threads = omp_get_max_threads();
    use_threads(1);
    return 0;
}

int default_thread_count(void) { return default_threads; }

int restore_threads(void **state) {
    (void)state;
    use_threads(default_thread_count());
    return 0;
}

int stream_corrections(Corrections *c, const GPTConfig *cfg, int every, int hidden, int max_rows, uint64_t seed) {
    CorrectionLayout layout = {.kind = method_kind(METHOD_TRAIN, hidden), .every = every, .size = hidden};
    return corrections_init(c, cfg, &layout, max_rows, seed);
}

const char *lexicon_corpus_path(void) {
    static const char *words[] = {"the", "king", "queen", "shall", "speak", "of", "love", "and", "death", "my", "lord",
                                  "what", "is", "thy", "name", "good", "night", "sweet", "prince", "to", "be", "or", "not"};
    static char path[4096];
    if (path[0]) return path;
    size_t n = 300000, k = 0, nw = sizeof words / sizeof *words;
    char *text = malloc(n + 64);
    assert_non_null(text);
    Rng rng;
    rng_seed(&rng, 501);
    while (k < n) {
        const char *w = words[rng_below(&rng, nw)];
        size_t len = strlen(w);
        memcpy(text + k, w, len);
        k += len;
        text[k++] = rng_below(&rng, 8) == 0 ? '\n' : ' ';
    }
    snprintf(path, sizeof path, "%s/lexicon.txt", test_tmpdir());
    assert_int_equal(write_file_atomic(path, text, n), 0);
    free(text);
    return path;
}

const char *learnable_corpus_path(void) {
    const char *real = test_corpus_path();
    return real ? real : lexicon_corpus_path();
}

void train_briefly(GPT *m, const Corpus *c, int steps, uint64_t seed) {
    assert_int_equal(gpt_enable_training(m), 0);
    int B = m->max_batch, T = m->config.ctx;
    int32_t *inputs = malloc((size_t)B * T * sizeof(int32_t)), *targets = malloc((size_t)B * T * sizeof(int32_t));
    Rng rng;
    rng_seed(&rng, seed);
    for (int step = 0; step < steps; step++) {
        sample_windows(c->ids, c->n_train, B, T, &rng, inputs, targets);
        gpt_zero_grad(m);
        gpt_forward(m, inputs, B, T, NULL);
        gpt_loss(m, targets);
        gpt_backward(m, NULL, 1, 1, 0);
        gpt_optimizer_step(m, lr_schedule(step, steps, 10, 1e-2f, 1e-3f), 0.0f, 1.0f, step + 1);
    }
    free(inputs);
    free(targets);
}

void corpus_model(GPT *m, const Corpus *corpus, int L, int max_batch, uint64_t seed) {
    GPTConfig cfg = {.vocab_size = corpus->vocab.size, .ctx = 16, .d_model = 16, .n_layer = L, .n_head = 2};
    assert_int_equal(gpt_init(m, &cfg, max_batch), 0);
    gpt_init_weights(m, seed);
    for (size_t i = 0; i < m->num_params; i++) m->params[i] *= 5.0f;
}

void unreadable_validation(Corpus *c, GuardedSplit *g) {
    long page = sysconf(_SC_PAGESIZE);
    size_t train_bytes = c->n_train * sizeof(int32_t), val_bytes = c->n_val * sizeof(int32_t);
    g->lead = ((train_bytes + (size_t)page - 1) / (size_t)page) * (size_t)page;
    g->total = g->lead + ((val_bytes + (size_t)page - 1) / (size_t)page) * (size_t)page;
    g->base = mmap(NULL, g->total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->base != MAP_FAILED);
    int32_t *ids = (int32_t *)(g->base + g->lead - train_bytes); /* ids + n_train is page-aligned */
    memcpy(ids, c->ids, train_bytes + val_bytes);
    g->own = c->ids;
    c->ids = ids;
    assert_int_equal(mprotect(g->base + g->lead, g->total - g->lead, PROT_NONE), 0);
}

void readable_validation(Corpus *c, GuardedSplit *g) {
    assert_int_equal(mprotect(g->base + g->lead, g->total - g->lead, PROT_READ | PROT_WRITE), 0);
    c->ids = g->own;
    munmap(g->base, g->total);
}

double train_from_tokens_and_cache(GPT *q, GPT *f, Corrections *plain, Corrections *cached, const Corpus *corpus,
                                   CorrectOptions *o, int first, StreamCache *calib, int64_t **starts) {
    assert_int_equal(correction_train(q, f, plain, corpus, o, NULL), 0);
    int n_windows = 0;
    *starts = calibration_windows(corpus, o->calib_tokens, q->config.ctx, o->seed, &n_windows);
    assert_non_null(*starts);
    assert_int_equal(stream_cache_build(calib, q, corpus->ids, *starts, n_windows, first), 0);
    o->calib_cache = calib;
    assert_int_equal(correction_train(q, f, cached, corpus, o, NULL), 0);
    double d2 = 0, p2 = 0;
    for (size_t i = 0; i < plain->num_params; i++) {
        double d = (double)cached->params[i] - plain->params[i];
        d2 += d * d;
        p2 += (double)plain->params[i] * plain->params[i];
    }
    return sqrt(d2 / p2);
}

int same_file_bytes(const char *pa, const char *pb) {
    size_t na, nb;
    uint8_t *a = read_file(pa, &na), *b = read_file(pb, &nb);
    assert_non_null(a);
    assert_non_null(b);
    int same = na == nb && memcmp(a, b, na) == 0;
    free(a);
    free(b);
    return same;
}
