/* test_model: the whole GPT's numerics — parameter gradients against finite differences of the
 * loss, the ModelHook's gradient path, frozen backward (param_grads 0, stop_block), KV-cache
 * sampling against the batched forward, bitwise determinism of training, and AdamW / schedule /
 * clipping against hand computations in double. */
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "nn/data.h"
#include "nn/optim.h"
#include "nn/sample.h"
#include "nn/train.h"

/* tiny_model: V 11, ctx 8, C 16, 2 layers, 2 heads; one batch of B x T = 2 x 8 tokens */
enum { BATCH = 2, SEQ = 8, ROWS = BATCH * SEQ, MAX_LAYERS = 4 };

/* ---- finite differences of a float model ----
 * The model runs in float, so its loss carries rounding noise of ~1e-7 (measured: a plain central
 * difference with step 1e-3 errs by up to 6e-5 ~ 1e-7 / 2e-3) that does not shrink with the step.
 * FD_STEP = 3e-2 on weights of std 0.2 brings that noise down to ~5e-6; the O(h^2) truncation
 * error such a large step brings (~1e-3 relative) is cancelled by Richardson extrapolation over h
 * and h/2 ((4 D(h/2) - D(h)) / 3 is exact to O(h^4)): measured, the largest error over ~1000
 * parameters is 7e-6, and the error norm per tensor 1e-4..3e-4 of the gradient's norm.
 * Per element the check allows |analytic - fd| <= MODEL_ATOL + MODEL_RTOL |fd| with MODEL_ATOL
 * = 5e-5 and MODEL_RTOL = 2e-3 (the worst element over 7 seeds uses 0.24 of that bound), and per
 * tensor ||analytic - fd|| <= TENSOR_RTOL ||fd|| = 2e-3 (7x the worst measured). The gradients
 * checked are ~1e-2..1e-1, so a missing or wrong term, which moves a gradient by a good fraction
 * of itself, exceeds the bound by orders of magnitude, and one that is spread thinly over a
 * tensor still fails the norm check. */
#define FD_STEP 3e-2
#define MODEL_ATOL 5e-5
/* J = sum(R * stream) sums 256 values of size ~1 where the loss averages 16: its gradients are
 * ~20x larger and its rounding noise ~10x, so its absolute floor is 10x the loss's. */
#define HOOK_OBJECTIVE_ATOL 5e-4
#define MODEL_RTOL 2e-3
#define TENSOR_RTOL 2e-3

/* ---- threads ----
 * The suite runs on one thread (set in main's group setup): a tiny model's OpenMP barriers cost
 * more than its arithmetic, and on a loaded 2-core machine each one can wait a scheduler tick, so
 * the thousands of forwards of the finite differences would take minutes. The analytic gradients
 * under test are computed with the default thread count, and the determinism test compares 1
 * and 2 threads explicitly. */
/* use_threads, setup_one_thread and restore_threads: tests/testutil.h */

typedef double (*ScalarObjective)(GPT *m, void *ctx);

typedef struct {
    const int32_t *inputs, *targets;
    const ModelHook *hook;
} Batch;

/* The mean cross-entropy of one forward. */
static double batch_loss(GPT *m, void *ctx) {
    Batch *b = ctx;
    gpt_forward(m, b->inputs, BATCH, SEQ, b->hook);
    return gpt_loss(m, b->targets);
}

static double central_difference(GPT *m, size_t i, double h, ScalarObjective f, void *ctx) {
    float saved = m->params[i];
    float up = saved + (float)h, down = saved - (float)h;
    m->params[i] = up;
    double f_up = f(m, ctx);
    m->params[i] = down;
    double f_down = f(m, ctx);
    m->params[i] = saved;
    /* the step actually taken, after rounding to float */
    return (f_up - f_down) / ((double)up - (double)down);
}

static double fd_gradient(GPT *m, size_t i, ScalarObjective f, void *ctx) {
    double coarse = central_difference(m, i, FD_STEP, f, ctx), fine = central_difference(m, i, FD_STEP / 2, f, ctx);
    return (4.0 * fine - coarse) / 3.0;
}

/* Accumulates one tensor's comparison: per element, and in norm over the tensor. */
typedef struct {
    double err2, ref2, worst;
    size_t checked;
} TensorCheck;

static void check_element(const char *what, const TensorSpec *t, size_t k, double analytic, double fd, double atol,
                          TensorCheck *tc) {
    double err = fabs(analytic - fd), bound = atol + MODEL_RTOL * fabs(fd);
    tc->err2 += err * err;
    tc->ref2 += fd * fd;
    tc->worst = fmax(tc->worst, err / bound);
    tc->checked++;
    if (!(err <= bound))
        fail_msg("%s: %s[%zu]: backward %.7g, finite difference %.7g (error %.3g > %.3g)", what, t->name, k, analytic, fd,
                 err, bound);
}

static void finish_tensor(const char *what, const TensorSpec *t, const TensorCheck *tc) {
    double rel = sqrt(tc->err2) / fmax(sqrt(tc->ref2), 1e-12);
    /* a tensor whose reference gradient is ~0 would let a backward that writes nothing pass */
    if (!(sqrt(tc->ref2) > 1e-4)) fail_msg("%s: %s: reference gradient norm %.3g is too small to test", what, t->name, sqrt(tc->ref2));
    if (!(rel <= TENSOR_RTOL)) fail_msg("%s: %s: ||backward - fd|| / ||fd|| = %.3g > %g", what, t->name, rel, TENSOR_RTOL);
#ifdef TEST_VERBOSE
    print_message("  %-34s %4zu checked, |fd| %.2e, rel err %.2e, worst err/bound %.2f\n", t->name, tc->checked,
                  sqrt(tc->ref2 / tc->checked), rel, tc->worst);
#endif
}

/* Checks grads (computed beforehand) against finite differences for the elements of tensor t:
 * all of it when it has at most `all_below` elements, else `sample` random ones. */
static void check_tensor(const char *what, GPT *m, const float *grads, const TensorSpec *t, size_t all_below, int sample,
                         double atol, Rng *rng, ScalarObjective f, void *ctx) {
    size_t n = tensor_numel(t);
    TensorCheck tc = {0};
    if (n <= all_below) {
        for (size_t k = 0; k < n; k++)
            check_element(what, t, k, grads[t->offset + k], fd_gradient(m, t->offset + k, f, ctx), atol, &tc);
    } else {
        for (int s = 0; s < sample; s++) {
            size_t k = (size_t)rng_below(rng, n);
            check_element(what, t, k, grads[t->offset + k], fd_gradient(m, t->offset + k, f, ctx), atol, &tc);
        }
    }
    finish_tensor(what, t, &tc);
}

/* A model ready for backward, with one random batch. */
static void setup_model(GPT *m, int32_t *inputs, int32_t *targets, uint64_t seed) {
    tiny_model(m, BATCH, seed);
    assert_int_equal(gpt_enable_training(m), 0);
    Rng rng;
    rng_seed(&rng, seed + 17);
    random_tokens(inputs, ROWS, m->config.vocab_size, &rng);
    random_tokens(targets, ROWS, m->config.vocab_size, &rng);
}

/* ============================ whole-model gradients ============================ */

/* Every tensor: vectors and the position embedding entirely, 24 random elements of every other
 * matrix: 30 tensors, 827 parameters, the analytic gradients from one gpt_backward(m, NULL, 1, 1,
 * 0) after gpt_zero_grad. */
static void test_model_gradients(void **state) {
    (void)state;
    GPT m;
    int32_t inputs[ROWS], targets[ROWS];
    setup_model(&m, inputs, targets, 1001);
    Batch batch = {inputs, targets, NULL};
    use_threads(default_thread_count());
    gpt_zero_grad(&m);
    batch_loss(&m, &batch);
    gpt_backward(&m, NULL, 1, 1, 0);
    use_threads(1);
    float *grads = copy_floats(m.grads, m.num_params);
    Rng rng;
    rng_seed(&rng, 1002);
    for (int i = 0; i < m.n_specs; i++) check_tensor("model", &m, grads, &m.specs[i], 128, 24, MODEL_ATOL, &rng, batch_loss, &batch);
    free(grads);
    gpt_free(&m);
}

/* The online Hadamard transforms (README: Transforms) at the inputs of attn.c_proj and mlp.c_proj:
 * linear, so the backward is their transpose, not a straight-through estimate; every tensor's
 * gradient against finite differences of the model with them on (its weights left unfolded: the
 * function differs from the plain model's, which makes the check sharper), so a correction or a
 * tuned norm below the transform trains through it. With activation quantization off: exact. */
static void test_online_transform_gradients(void **state) {
    (void)state;
    GPT m;
    int32_t inputs[ROWS], targets[ROWS];
    setup_model(&m, inputs, targets, 1201);
    assert_int_equal(gpt_set_online(&m, 1u << LINEAR_ATTN_PROJ | 1u << LINEAR_MLP_PROJ, 5), 0);
    Batch batch = {inputs, targets, NULL};
    gpt_zero_grad(&m);
    batch_loss(&m, &batch);
    gpt_backward(&m, NULL, 1, 1, 0);
    float *grads = copy_floats(m.grads, m.num_params);
    Rng rng;
    rng_seed(&rng, 1202);
    for (int i = 0; i < m.n_specs; i++) check_tensor("online", &m, grads, &m.specs[i], 128, 24, MODEL_ATOL, &rng, batch_loss, &batch);
    free(grads);
    gpt_free(&m);
}

/* ============================ ModelHook ============================ */

/* y = scale * x + shift[c] after block `block`, into its own buffer (so the model must read the
 * returned pointer, not the block's output); records what backward receives at every block. The
 * shift matters after the last block, where ln_f would undo a pure scale. */
typedef struct {
    int block;
    float scale;
    float shift[64];
    float *buffer;
    int C;
    int forward_calls[MAX_LAYERS], backward_calls[MAX_LAYERS];
    int backward_rows[MAX_LAYERS];
    float *received[MAX_LAYERS]; /* dx as it reached backward(block), before the hook's own transform */
    const float *inject;         /* added to dx at block `block` in backward (an objective living in the hook) */
} ScaleHook;

static float *scale_forward(void *ctx, int block, float *x, int rows) {
    ScaleHook *h = ctx;
    h->forward_calls[block]++;
    if (block != h->block) return x;
    for (long i = 0; i < (long)rows * h->C; i++) h->buffer[i] = h->scale * x[i] + h->shift[i % h->C];
    return h->buffer;
}

static void scale_backward(void *ctx, int block, float *dx, int rows) {
    ScaleHook *h = ctx;
    h->backward_calls[block]++;
    h->backward_rows[block] = rows;
    memcpy(h->received[block], dx, (size_t)rows * h->C * sizeof(float));
    if (block != h->block) return;
    for (long i = 0; i < (long)rows * h->C; i++) dx[i] = (h->inject ? dx[i] + h->inject[i] : dx[i]) * h->scale;
}

static void scale_hook_init(ScaleHook *h, ModelHook *hook, int block, float scale, int C) {
    memset(h, 0, sizeof *h);
    h->block = block;
    h->scale = scale;
    h->C = C;
    assert_true(C <= 64);
    if (scale != 1.0f)
        for (int c = 0; c < C; c++) h->shift[c] = 0.5f * sinf((float)c); /* fixed, non-trivial */
    h->buffer = calloc((size_t)ROWS * C, sizeof(float));
    for (int l = 0; l < MAX_LAYERS; l++) h->received[l] = calloc((size_t)ROWS * C, sizeof(float));
    *hook = (ModelHook){.ctx = h, .after_block = scale_forward, .after_block_backward = scale_backward};
}

static void scale_hook_free(ScaleHook *h) {
    free(h->buffer);
    for (int l = 0; l < MAX_LAYERS; l++) free(h->received[l]);
}

static void reset_calls(ScaleHook *h) {
    memset(h->forward_calls, 0, sizeof h->forward_calls);
    memset(h->backward_calls, 0, sizeof h->backward_calls);
}

/* The parameters upstream of the hook at `block` (embeddings and blocks 0..block), whose
 * gradients exist only through hook->backward, plus the head, which the hook's forward feeds. */
static void check_through_hook(const char *what, GPT *m, const float *grads, int block, ScalarObjective f, void *ctx) {
    Rng rng;
    rng_seed(&rng, 1100 + (uint64_t)block);
    for (int i = 0; i < m->n_specs; i++) {
        const TensorSpec *t = &m->specs[i];
        if (t->layer > block) continue;
        check_tensor(what, m, grads, t, 16, 12, MODEL_ATOL, &rng, f, ctx);
    }
}

/* scale 1.7 (and a shift) after block 0, then after the last block, whose output is the stream
 * ln_f reads: if gpt_backward skipped hook->backward, every upstream gradient would be off by the
 * factor 1.7. */
static void test_hook_gradient(void **state) {
    (void)state;
    for (int block = 0; block < 2; block++) {
        GPT m;
        int32_t inputs[ROWS], targets[ROWS];
        setup_model(&m, inputs, targets, 1200 + (uint64_t)block);
        ScaleHook h;
        ModelHook hook;
        scale_hook_init(&h, &hook, block, 1.7f, m.config.d_model);
        Batch batch = {inputs, targets, &hook};
        use_threads(default_thread_count());
        gpt_zero_grad(&m);
        double with_hook = batch_loss(&m, &batch);
        for (int l = 0; l < m.config.n_layer; l++) assert_int_equal(h.forward_calls[l], 1);
        gpt_backward(&m, &hook, 1, 1, 0);
        use_threads(1);
        for (int l = 0; l < m.config.n_layer; l++) {
            assert_int_equal(h.backward_calls[l], 1);
            assert_int_equal(h.backward_rows[l], ROWS);
        }
        /* the hook must change the loss, or the test below would prove nothing */
        Batch plain = {inputs, targets, NULL};
        assert_true(fabs(batch_loss(&m, &plain) - with_hook) > 1e-3);
        float *grads = copy_floats(m.grads, m.num_params);
        check_through_hook(block == 0 ? "hook after block 0" : "hook after block 1", &m, grads, block, batch_loss, &batch);
        free(grads);
        scale_hook_free(&h);
        gpt_free(&m);
    }
}

/* An objective that lives entirely in the hook: J = sum(R * stream after block 0), no logits.
 * gpt_backward(from_logits 0) must start from a zero gradient and carry the hook's injection. */
typedef struct {
    const int32_t *inputs;
    const ModelHook *hook;
    ScaleHook *h;
    const float *R;
} HookObjective;

static double hook_objective(GPT *m, void *ctx) {
    HookObjective *o = ctx;
    gpt_forward(m, o->inputs, BATCH, SEQ, o->hook);
    double j = 0.0;
    for (long i = 0; i < (long)ROWS * m->config.d_model; i++) j += (double)o->R[i] * o->h->buffer[i];
    return j;
}

static void test_hook_objective_without_logits(void **state) {
    (void)state;
    GPT m;
    int32_t inputs[ROWS], targets[ROWS];
    setup_model(&m, inputs, targets, 1300);
    ScaleHook h;
    ModelHook hook;
    scale_hook_init(&h, &hook, 0, 1.3f, m.config.d_model);
    size_t n = (size_t)ROWS * m.config.d_model;
    float *R = calloc(n, sizeof(float));
    Rng rng;
    rng_seed(&rng, 1301);
    fill_uniform(R, n, &rng, -1, 1);
    /* dJ/d(stream after the hook) = R; the hook adds it, then maps it back through its scale */
    h.inject = R;
    HookObjective obj = {inputs, &hook, &h, R};
    gpt_zero_grad(&m);
    hook_objective(&m, &obj);
    gpt_backward(&m, &hook, 0, 1, 0);
    /* nothing flows from the head: the last block's hook sees exactly zero */
    for (size_t i = 0; i < n; i++) assert_true(h.received[1][i] == 0.0f);
    for (int i = 0; i < m.n_specs; i++) {
        const TensorSpec *t = &m.specs[i];
        int head = t->layer == -1 && !strstr(t->name, "wte") && !strstr(t->name, "wpe");
        if (t->layer != 1 && !head) continue;
        for (size_t k = 0; k < tensor_numel(t); k++) assert_true(m.grads[t->offset + k] == 0.0f);
    }
    float *grads = copy_floats(m.grads, m.num_params);
    h.inject = NULL; /* finite differences run forward only */
    Rng pick;
    rng_seed(&pick, 1302);
    for (int i = 0; i < m.n_specs; i++) {
        const TensorSpec *t = &m.specs[i];
        if (t->layer != 0 && strstr(t->name, "wte") == NULL && strstr(t->name, "wpe") == NULL) continue;
        check_tensor("hook objective", &m, grads, t, 16, 12, HOOK_OBJECTIVE_ATOL, &pick, hook_objective, &obj);
    }
    free(grads);
    free(R);
    scale_hook_free(&h);
    gpt_free(&m);
}

/* ============================ frozen backward ============================ */

#define SENTINEL 777.0f

static int all_equal_to(const float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++)
        if (x[i] != v) return 0;
    return 1;
}

/* tiny_model's sizes with 3 blocks, so that stop_block can leave a hook below the one it keeps. */
static void three_block_model(GPT *m, int32_t *inputs, int32_t *targets, uint64_t seed) {
    GPTConfig cfg = {.vocab_size = 11, .ctx = SEQ, .d_model = 16, .n_layer = 3, .n_head = 2};
    assert_int_equal(gpt_init(m, &cfg, BATCH), 0);
    gpt_init_weights(m, seed);
    for (size_t i = 0; i < m->num_params; i++) m->params[i] *= 10.0f; /* std 0.2, as tiny_model */
    assert_int_equal(gpt_enable_training(m), 0);
    Rng rng;
    rng_seed(&rng, seed + 17);
    random_tokens(inputs, ROWS, cfg.vocab_size, &rng);
    random_tokens(targets, ROWS, cfg.vocab_size, &rng);
}

/* Compares the stream gradients a backward delivered to the hook against the full backward's,
 * and that hooks below stop_block - 1 were not called (model.h: the hook after block
 * stop_block-1 still runs, nothing below it). The arithmetic is the same whatever param_grads
 * and stop_block are, so 1e-6 is rounding slack only; a wrong stream gradient is off by O(1). */
static void check_received(const char *what, const ScaleHook *h, float *const *full_dx, int L, int stop, size_t n) {
    for (int l = 0; l < L; l++) {
        if (l < stop - 1) {
            if (h->backward_calls[l] != 0) fail_msg("%s, stop_block %d: hook backward called at block %d", what, stop, l);
            continue;
        }
        if (h->backward_calls[l] != 1)
            fail_msg("%s, stop_block %d: hook backward called %d times at block %d", what, stop, h->backward_calls[l], l);
        double d = max_rel_diff(h->received[l], full_dx[l], n, 1e-3);
        if (!(d <= 1e-6)) fail_msg("%s, stop_block %d: stream gradient at block %d differs by %g", what, stop, l, d);
    }
}

/* param_grads 0 and stop_block k: the stream gradient reaching the hook at each block is the full
 * backward's; no parameter gradient is written when param_grads is 0 (not even on a model that
 * has only gpt_enable_backward, whose m->grads is NULL); with stop_block k and param_grads 1 the
 * gradients of blocks >= k and of the head are the full backward's, those below and the
 * embeddings stay zero. */
static void test_frozen_backward(void **state) {
    (void)state;
    GPT m;
    int32_t inputs[ROWS], targets[ROWS];
    three_block_model(&m, inputs, targets, 1400);
    int C = m.config.d_model, L = m.config.n_layer;
    size_t n = (size_t)ROWS * C, P = m.num_params;
    ScaleHook h;
    ModelHook hook;
    scale_hook_init(&h, &hook, 0, 1.0f, C); /* identity: only the recording matters */
    Batch batch = {inputs, targets, &hook};
    batch_loss(&m, &batch);

    /* full backward: the reference */
    gpt_zero_grad(&m);
    reset_calls(&h);
    gpt_backward(&m, &hook, 1, 1, 0);
    float *full_grads = copy_floats(m.grads, P);
    float *full_dx[MAX_LAYERS];
    for (int l = 0; l < L; l++) full_dx[l] = copy_floats(h.received[l], n);
    for (int l = 0; l < L; l++) assert_true(!all_equal_to(full_dx[l], n, 0.0f));

    char what[64];
    for (int stop = 0; stop < L; stop++)
        for (int param_grads = 0; param_grads <= 1; param_grads++) {
            if (stop == 0 && param_grads == 1) continue; /* the reference itself */
            for (size_t i = 0; i < P; i++) m.grads[i] = SENTINEL;
            if (param_grads) gpt_zero_grad(&m);
            reset_calls(&h);
            gpt_backward(&m, &hook, 1, param_grads, stop);
            snprintf(what, sizeof what, "param_grads %d", param_grads);
            check_received(what, &h, full_dx, L, stop, n);
            if (!param_grads) {
                if (!all_equal_to(m.grads, P, SENTINEL)) fail_msg("param_grads 0 (stop_block %d) wrote a parameter gradient", stop);
                continue;
            }
            for (int i = 0; i < m.n_specs; i++) {
                const TensorSpec *t = &m.specs[i];
                size_t k = tensor_numel(t);
                int skipped = t->layer >= 0 ? t->layer < stop : stop > 0 && (strstr(t->name, "wte") || strstr(t->name, "wpe"));
                if (skipped) {
                    if (!all_equal_to(m.grads + t->offset, k, 0.0f)) fail_msg("stop_block %d wrote %s's gradient", stop, t->name);
                } else {
                    double d = max_rel_diff(m.grads + t->offset, full_grads + t->offset, k, 1e-3);
                    if (!(d <= 1e-6)) fail_msg("stop_block %d: %s's gradient differs by %g", stop, t->name, d);
                }
            }
        }

    /* a frozen copy with backward scratch only: stream gradients flow, no gradient buffer exists */
    GPT frozen;
    assert_int_equal(gpt_clone(&frozen, &m, BATCH), 0);
    assert_int_equal(gpt_enable_backward(&frozen), 0);
    assert_null(frozen.grads);
    for (int stop = 0; stop < L; stop++) {
        batch_loss(&frozen, &batch);
        reset_calls(&h);
        gpt_backward(&frozen, &hook, 1, 0, stop);
        check_received("backward-only model", &h, full_dx, L, stop, n);
    }
    gpt_free(&frozen);

    free(full_grads);
    for (int l = 0; l < L; l++) free(full_dx[l]);
    scale_hook_free(&h);
    gpt_free(&m);
}

/* ============================ KV-cache sampling ============================ */

/* sample_step's logits at position t against gpt_forward's last row for the prefix 0..t (and the
 * full sequence's row t, which causality makes the same). Both run the same float ops in a
 * different order: ~1e-7 relative; 1e-4 leaves room, while any cache slip (a wrong position, a
 * stale key) changes logits by O(1). Values below 1e-2 are held to that absolute floor. */
static void check_sampling(const ModelHook *hook, uint64_t seed) {
    GPT m;
    tiny_model(&m, 1, seed);
    int T = m.config.ctx, V = m.config.vocab_size;
    int32_t tokens[64];
    Rng rng;
    rng_seed(&rng, seed + 1);
    random_tokens(tokens, T, V, &rng);
    SampleState s;
    assert_int_equal(sample_state_init(&s, &m, hook), 0);
    float *full = malloc((size_t)T * V * sizeof(float));
    gpt_forward(&m, tokens, 1, T, hook);
    memcpy(full, m.logits, (size_t)T * V * sizeof(float));
    for (int t = 0; t < T; t++) {
        const float *cached = sample_step(&s, tokens[t]);
        gpt_forward(&m, tokens, 1, t + 1, hook);
        double d = max_rel_diff(cached, m.logits + (size_t)t * V, V, 1e-2);
        if (!(d <= 1e-4)) fail_msg("sample_step at position %d differs from gpt_forward by %g (relative)", t, d);
        d = max_rel_diff(m.logits + (size_t)t * V, full + (size_t)t * V, V, 1e-2);
        if (!(d <= 1e-4)) fail_msg("prefix %d forward differs from the full forward's row by %g", t + 1, d);
    }
    free(full);
    sample_state_free(&s);
    gpt_free(&m);
}

static void test_sampling_cache(void **state) {
    (void)state;
    check_sampling(NULL, 1500);
    /* with a hook: sample_step must apply it where gpt_forward does */
    ScaleHook h;
    ModelHook hook;
    scale_hook_init(&h, &hook, 0, 1.7f, 16);
    check_sampling(&hook, 1501);
    scale_hook_free(&h);
}

/* ============================ determinism ============================ */

typedef struct {
    float *params, *initial;
    size_t n;
    double losses[16];
    int steps;
    double val_loss;
} TrainRun;

enum { DET_STEPS = 6 };

/* Trains a small model from a fixed seed and returns its parameters and per-step losses (from the
 * CSV log, printed with 6 decimals). */
static void train_run(const Corpus *c, int threads, TrainRun *run) {
    use_threads(threads);
    GPTConfig cfg = {.vocab_size = c->vocab.size, .ctx = 16, .d_model = 32, .n_layer = 2, .n_head = 2};
    GPT m;
    assert_int_equal(gpt_init(&m, &cfg, 4), 0);
    gpt_init_weights(&m, 7);
    assert_int_equal(gpt_enable_training(&m), 0);
    run->initial = copy_floats(m.params, m.num_params);
    TrainOptions o;
    train_options_default(&o);
    o.batch = 4;
    o.steps = DET_STEPS;
    o.warmup = 2;
    o.quiet = 1;
    o.seed = 99;
    char log_path[512];
    snprintf(log_path, sizeof log_path, "%s/determinism-%d.csv", test_tmpdir(), threads);
    o.log_path = log_path;
    TrainResult r;
    assert_int_equal(train_model(&m, c, &o, &r), 0);
    run->n = m.num_params;
    run->params = copy_floats(m.params, m.num_params);
    run->val_loss = r.val_loss;
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    char line[256];
    run->steps = 0;
    while (fgets(line, sizeof line, f)) {
        int step;
        double loss;
        if (sscanf(line, "%d,%lf,", &step, &loss) == 2 && step >= 1 && step <= DET_STEPS && run->steps < 16)
            run->losses[run->steps++] = loss;
    }
    fclose(f);
    assert_int_equal(run->steps, DET_STEPS);
    gpt_free(&m);
}

/* A non-finite value reaching the loss stops training at once with the step named, instead of
 * training on silently: here a NaN planted in one embedding row that the corpus uses. */
static void test_nonfinite_loss_stops_training(void **state) {
    (void)state;
    const char *path = write_test_corpus("anomaly.txt", 2000, "abcdefgh\n", 7);
    Corpus c;
    assert_int_equal(corpus_load(&c, path, NULL), 0);
    GPTConfig cfg = {.vocab_size = c.vocab.size, .ctx = 8, .d_model = 16, .n_layer = 1, .n_head = 2};
    GPT m;
    assert_int_equal(gpt_init(&m, &cfg, 4), 0);
    gpt_init_weights(&m, 3);
    for (int v = 0; v < cfg.vocab_size; v++) m.params[m.specs[0].offset + (size_t)v * cfg.d_model] = NAN; /* wte */
    TrainOptions o;
    train_options_default(&o);
    o.batch = 4;
    o.steps = 5;
    o.quiet = 1;
    TrainResult r;
    qc_clear_error();
    assert_int_equal(train_model(&m, &c, &o, &r), -1);
    assert_non_null(strstr(qc_last_error(), "step 1"));
    assert_non_null(strstr(qc_last_error(), "nan"));
    gpt_free(&m);
    corpus_free(&c);
}

static void test_determinism(void **state) {
    (void)state;
    const char *path = write_test_corpus("determinism.txt", 4000, "abcdefgh ,.\n", 31);
    Corpus c;
    assert_int_equal(corpus_load(&c, path, NULL), 0);
    TrainRun a, b, one;
    /* same seed, same threads: bit for bit */
    train_run(&c, 2, &a);
    train_run(&c, 2, &b);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.params, b.params, a.n * sizeof(float));
    /* training must have moved the weights (by ~lr per step), or the comparisons prove little */
    assert_true(max_abs_diff(a.params, a.initial, a.n) > 1e-3);
    /* 1 thread against 2: the BLAS may sum in another order, so equal to rounding, not bitwise */
    train_run(&c, 1, &one);
    for (int s = 0; s < DET_STEPS; s++)
        if (!(fabs(one.losses[s] - a.losses[s]) <= 1e-5))
            fail_msg("step %d: loss %.6f with 1 thread, %.6f with 2", s + 1, one.losses[s], a.losses[s]);
    assert_close(one.val_loss, a.val_loss, 1e-5);
    use_threads(1);
    TrainRun *runs[] = {&a, &b, &one};
    for (int i = 0; i < 3; i++) {
        free(runs[i]->params);
        free(runs[i]->initial);
    }
    corpus_free(&c);
}

/* ============================ optimizer ============================ */

/* AdamW (torch.optim.AdamW with betas 0.9/0.95, eps 1e-8) for one element, in double. */
static double adamw_reference(double p, double g, double *m, double *v, double lr, double wd, int step) {
    *m = 0.9 * *m + 0.1 * g;
    *v = 0.95 * *v + 0.05 * g * g;
    double m_hat = *m / (1.0 - pow(0.9, step)), v_hat = *v / (1.0 - pow(0.95, step));
    return p * (1.0 - lr * wd) - lr * m_hat / (sqrt(v_hat) + 1e-8);
}

/* One gpt_optimizer_step at step 3 (bias corrections not 1) with non-zero moments, against the
 * double computation for every parameter: matrices decay, vectors do not. Float rounding: a few
 * ulps of p (4e-7 |p|) plus ~2e-6 of the step (1-0.9f, 1-0.95f and the powf bias corrections are
 * each off by ~2.4e-7 in float), so the bound is 4e-7 |p| + 1e-5 lr; a missing decay
 * (lr*wd*|p| = 1e-3 |p|), a missing bias correction (a factor ~3 on the step) or a wrong eps
 * (eps/sqrt(v) >= 1e-3 of the step for eps >= 1e-6) misses by 10x or more. */
static void test_adamw_step(void **state) {
    (void)state;
    GPT m;
    tiny_model(&m, 1, 1600);
    assert_int_equal(gpt_enable_training(&m), 0);
    size_t P = m.num_params;
    Rng rng;
    rng_seed(&rng, 1601);
    fill_uniform(m.grads, P, &rng, -1e-3f, 1e-3f); /* global norm ~0.05: below the clip */
    fill_uniform(m.adam_m, P, &rng, -1e-3f, 1e-3f);
    fill_uniform(m.adam_v, P, &rng, 0.0f, 1e-6f);
    float *p0 = copy_floats(m.params, P), *g0 = copy_floats(m.grads, P);
    float *m0 = copy_floats(m.adam_m, P), *v0 = copy_floats(m.adam_v, P);
    const double lr = 1e-2, wd = 0.1;
    double norm = gpt_optimizer_step(&m, (float)lr, (float)wd, 1.0f, 3);
    double want_norm = 0.0;
    for (size_t i = 0; i < P; i++) want_norm += (double)g0[i] * g0[i];
    assert_close(norm, sqrt(want_norm), 1e-9 + 1e-6 * sqrt(want_norm));
    assert_true(norm < 1.0);
    for (int t = 0; t < m.n_specs; t++) {
        const TensorSpec *spec = &m.specs[t];
        double decay = spec->cols != 0 ? wd : 0.0; /* weight decay on matrices only (README: Float model and training) */
        for (size_t k = 0; k < tensor_numel(spec); k++) {
            size_t i = spec->offset + k;
            double mm = m0[i], vv = v0[i];
            double want = adamw_reference(p0[i], g0[i], &mm, &vv, lr, decay, 3);
            if (!(fabs(m.params[i] - want) <= 4e-7 * fabs(want) + 1e-5 * lr))
                fail_msg("%s[%zu]: AdamW gives %.9g, double reference %.9g", spec->name, k, m.params[i], want);
            if (!(fabs(m.adam_m[i] - mm) <= 1e-6 * fabs(mm) + 1e-10)) fail_msg("%s[%zu]: first moment %.9g, want %.9g", spec->name, k, m.adam_m[i], mm);
            if (!(fabs(m.adam_v[i] - vv) <= 1e-6 * fabs(vv) + 1e-13)) fail_msg("%s[%zu]: second moment %.9g, want %.9g", spec->name, k, m.adam_v[i], vv);
        }
    }

    /* with clipping: gradients of norm > 1 are scaled to norm 1 before the update */
    memcpy(m.params, p0, P * sizeof(float));
    memcpy(m.adam_m, m0, P * sizeof(float));
    memcpy(m.adam_v, v0, P * sizeof(float));
    for (size_t i = 0; i < P; i++) m.grads[i] = g0[i] * 100.0f;
    norm = gpt_optimizer_step(&m, (float)lr, (float)wd, 1.0f, 3);
    assert_close(norm, 100.0 * sqrt(want_norm), 1e-5 * 100.0 * sqrt(want_norm));
    for (size_t i = 0; i < P; i += 97) {
        const TensorSpec *spec = NULL;
        for (int t = 0; t < m.n_specs; t++)
            if (m.specs[t].offset <= i && i < m.specs[t].offset + tensor_numel(&m.specs[t])) spec = &m.specs[t];
        double mm = m0[i], vv = v0[i];
        double g = (double)g0[i] * 100.0 / (norm + 1e-6);
        double want = adamw_reference(p0[i], g, &mm, &vv, lr, spec->cols != 0 ? wd : 0.0, 3);
        if (!(fabs(m.params[i] - want) <= 4e-7 * fabs(want) + 1e-5 * lr))
            fail_msg("clipped: %s: AdamW gives %.9g, double reference %.9g", spec->name, m.params[i], want);
    }
    free(p0); free(g0); free(m0); free(v0);
    gpt_free(&m);
}

/* Linear warm-up to lr over `warmup` steps, then cosine to min_lr at `total`. */
static void test_lr_schedule(void **state) {
    (void)state;
    const float lr = 3e-3f, min_lr = 3e-4f;
    const int warmup = 10, total = 110;
    assert_close(lr_schedule(0, total, warmup, lr, min_lr), lr / warmup, 1e-9);
    assert_close(lr_schedule(4, total, warmup, lr, min_lr), lr * 5 / warmup, 1e-9);
    assert_close(lr_schedule(warmup - 1, total, warmup, lr, min_lr), lr, 1e-9);
    assert_close(lr_schedule(warmup, total, warmup, lr, min_lr), lr, 1e-9);
    assert_close(lr_schedule(warmup + (total - warmup) / 2, total, warmup, lr, min_lr), (lr + min_lr) / 2, 1e-9);
    assert_close(lr_schedule(warmup + (total - warmup) / 4, total, warmup, lr, min_lr),
                 min_lr + 0.5 * (1 + cos(M_PI / 4)) * (lr - min_lr), 1e-9);
    assert_close(lr_schedule(total, total, warmup, lr, min_lr), min_lr, 1e-9);
    assert_close(lr_schedule(total + 50, total, warmup, lr, min_lr), min_lr, 1e-9);
    /* rises during warm-up, never rises after it */
    for (int s = 1; s < total + 5; s++) {
        float prev = lr_schedule(s - 1, total, warmup, lr, min_lr), cur = lr_schedule(s, total, warmup, lr, min_lr);
        if (s < warmup) assert_true(cur > prev);
        else assert_true(cur <= prev);
    }
}

/* The global norm in double across chunk boundaries; clipping to max_norm keeps the direction;
 * below max_norm or with max_norm <= 0 nothing changes; the norm does not depend on threads. */
static void test_clip_grad_norm(void **state) {
    (void)state;
    const size_t n = 40000; /* two full 16384-float chunks and a partial one */
    float *g = malloc(n * sizeof(float)), *g0 = malloc(n * sizeof(float));
    Rng rng;
    rng_seed(&rng, 1700);
    fill_uniform(g0, n, &rng, -1, 1);
    double want = 0.0;
    for (size_t i = 0; i < n; i++) want += (double)g0[i] * g0[i];
    want = sqrt(want); /* ~115 */

    memcpy(g, g0, n * sizeof(float));
    double norm = clip_grad_norm(g, n, 1.0f);
    assert_close(norm, want, 1e-9 * want);
    double after = 0.0;
    for (size_t i = 0; i < n; i++) after += (double)g[i] * g[i];
    assert_close(sqrt(after), 1.0, 1e-5);
    /* every element scaled by the same factor, 1/(norm + 1e-6) as torch's clip_grad_norm_ */
    for (size_t i = 0; i < n; i += 1013) assert_close(g[i], g0[i] / (norm + 1e-6), 1e-6 * fabs(g0[i] / norm) + 1e-9);

    memcpy(g, g0, n * sizeof(float));
    assert_close(clip_grad_norm(g, n, 1000.0f), want, 1e-9 * want);
    assert_memory_equal(g, g0, n * sizeof(float));
    assert_close(clip_grad_norm(g, n, 0.0f), want, 1e-9 * want);
    assert_memory_equal(g, g0, n * sizeof(float));

    /* documented as independent of the thread count: bit for bit */
    double one = clip_grad_norm(g, n, 0.0f);
    use_threads(2);
    double two = clip_grad_norm(g, n, 0.0f);
    use_threads(1);
    assert_true(one == two);
    free(g);
    free(g0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_gradients),
        cmocka_unit_test(test_hook_gradient),
        cmocka_unit_test(test_hook_objective_without_logits),
        cmocka_unit_test(test_frozen_backward),
        cmocka_unit_test(test_sampling_cache),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_adamw_step),
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_clip_grad_norm),
        cmocka_unit_test(test_nonfinite_loss_stops_training),
        cmocka_unit_test(test_online_transform_gradients),
    };
    return cmocka_run_group_tests_name("model", tests, setup_one_thread, restore_threads);
}
