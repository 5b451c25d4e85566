/* test_infer: evaluation's forward-only path (infer.c) gives the training forward's logits bit for
 * bit — from tokens and from a prefix stream, with stream corrections, with per-matrix (lowrank)
 * corrections, with activation quantization, whatever the windows per chunk — and refuses what the
 * training forward refuses. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/infer.h"

/* CTX >= GEMM_MIN_ROWS: a window is a product of its own rows, never a BLAS call (infer.h) */
enum { MAX_B = 5, CTX = 16, LAYERS = 3 };

/* logits of gpt_infer (chunks of `windows`) against gpt_forward's, same model, hook and tokens */
static void compare(GPT *m, const ModelHook *hook, const int32_t *tokens, int B, int windows) {
    size_t n = (size_t)B * CTX * m->config.vocab_size;
    assert_int_equal(gpt_forward(m, tokens, B, CTX, hook), 0);
    float *want = copy_floats(m->logits, n);
    memset(m->logits, 0, n * sizeof(float));
    Inference inf;
    assert_int_equal(inference_init(&inf, m, windows), 0);
    assert_int_equal(gpt_infer(m, &inf, tokens, NULL, 0, B, CTX, hook), 0);
    if (memcmp(want, m->logits, n * sizeof(float)) != 0)
        fail_msg("B %d, %d windows per chunk: logits differ by up to %g", B, windows, max_abs_diff(m->logits, want, n));
    inference_free(&inf);
    free(want);
}

static void random_params(float *p, size_t n, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    fill_normal(p, n, &rng, 0.1f);
}

/* A small model of LAYERS blocks and MAX_B windows of random tokens, from one seed */
static void model_and_tokens(GPT *m, int32_t *tokens, uint64_t seed) {
    small_gpt(m, LAYERS, CTX, MAX_B, seed);
    Rng rng;
    rng_seed(&rng, seed + 1);
    random_tokens(tokens, MAX_B * CTX, m->config.vocab_size, &rng);
}

static void test_infer_matches_forward(void **state) {
    (void)state;
    GPT m;
    int32_t tokens[MAX_B * CTX];
    model_and_tokens(&m, tokens, 11);
    int chunks[] = {1, 2, 3, MAX_B};
    for (int i = 0; i < 4; i++) {
        compare(&m, NULL, tokens, MAX_B, chunks[i]);
        compare(&m, NULL, tokens, 4, chunks[i]);
    }
    /* MLP corrections after blocks 1 and 2 (every 2), with weights that change the stream */
    Corrections c;
    assert_int_equal(stream_corrections(&c, &m.config, 2, 6, MAX_B * CTX, 13), 0);
    random_params(c.params, c.num_params, 14);
    for (int i = 0; i < 4; i++) compare(&m, &c.hook, tokens, MAX_B, chunks[i]);
    /* and with the inputs of every matrix fake-quantized to 4 bits */
    assert_int_equal(gpt_set_act_bits(&m, 4), 0);
    for (int i = 0; i < 4; i++) compare(&m, &c.hook, tokens, MAX_B, chunks[i]);
    assert_int_equal(gpt_set_act_bits(&m, 0), 0);
    corrections_free(&c);
    /* rank-2 terms on every linear layer (lowrank: after_linear) */
    int n_linear = gpt_linear_count(&m.config), sizes[64];
    assert_true(n_linear <= 64);
    for (int i = 0; i < n_linear; i++) sizes[i] = i % 3 ? 2 : 0;
    CorrectionLayout lay = {.kind = KIND_LOWRANK, .linear_sizes = sizes};
    assert_int_equal(corrections_init(&c, &m.config, &lay, MAX_B * CTX, 15), 0);
    random_params(c.params, c.num_params, 16);
    for (int i = 0; i < 4; i++) compare(&m, &c.hook, tokens, MAX_B, chunks[i]);
    corrections_free(&c);
    gpt_free(&m);
}

/* From a prefix: block k's output before its hook, as the evaluation's stream cache holds it. */
static void test_infer_from_prefix(void **state) {
    (void)state;
    GPT m;
    int32_t tokens[MAX_B * CTX];
    model_and_tokens(&m, tokens, 21);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &m.config, 1, 0, MAX_B * CTX, 23), 0);
    random_params(c.params, c.num_params, 24);
    size_t n = (size_t)MAX_B * CTX * m.config.vocab_size, nx = (size_t)MAX_B * CTX * m.config.d_model;
    for (int k = 0; k < LAYERS; k++) {
        assert_int_equal(gpt_forward(&m, tokens, MAX_B, CTX, &c.hook), 0);
        float *want = copy_floats(m.logits, n);
        /* the prefix: blocks [0, k] with the hooks of blocks below k (the cache holds the stream
         * before block k's hook, which the forward from it runs) */
        assert_int_equal(gpt_forward_blocks(&m, tokens, MAX_B, CTX, &c.hook, k + 1), 0);
        float *prefix = copy_floats(m.layers[k].resid_out, nx);
        memset(m.logits, 0, n * sizeof(float));
        Inference inf;
        assert_int_equal(inference_init(&inf, &m, 2), 0);
        assert_int_equal(gpt_infer(&m, &inf, NULL, prefix, k + 1, MAX_B, CTX, &c.hook), 0);
        if (memcmp(want, m.logits, n * sizeof(float)) != 0)
            fail_msg("from block %d: logits differ by up to %g", k, max_abs_diff(m.logits, want, n));
        /* the prefix itself is read, never written */
        assert_int_equal(memcmp(prefix, m.layers[k].resid_out, nx * sizeof(float)), 0);
        inference_free(&inf);
        free(prefix);
        free(want);
    }
    corrections_free(&c);
    gpt_free(&m);
}

static void test_infer_refuses(void **state) {
    (void)state;
    GPT m;
    small_gpt(&m, 2, CTX, MAX_B, 31);
    int32_t tokens[(MAX_B + 1) * CTX] = {0};
    Inference inf;
    assert_int_equal(inference_init(&inf, &m, 0), 0);
    assert_true(inf.windows >= 1 && inf.windows <= MAX_B);
    assert_int_equal(gpt_infer(&m, &inf, tokens, NULL, 0, MAX_B + 1, CTX, NULL), -1);
    assert_non_null(strstr(qc_last_error(), "exceeds"));
    Corrections c;
    assert_int_equal(stream_corrections(&c, &m.config, 1, 0, 2 * CTX, 32), 0);
    assert_int_equal(gpt_infer(&m, &inf, tokens, NULL, 0, 3, CTX, &c.hook), -1);
    assert_non_null(strstr(qc_last_error(), "corrections were sized"));
    assert_int_equal(gpt_infer(&m, &inf, tokens, NULL, 0, 2, CTX, &c.hook), 0);
    corrections_free(&c);
    inference_free(&inf);
    gpt_free(&m);
}

/* The scratch is the model's, kept between evaluations (the second Inference gets the same memory,
 * grown when a larger chunk asks); one made while another holds it gets its own, and both give the
 * training forward's logits. */
static void test_infer_scratch_kept(void **state) {
    (void)state;
    GPT m;
    int32_t tokens[MAX_B * CTX];
    model_and_tokens(&m, tokens, 41);
    Inference a, b;
    assert_int_equal(inference_init(&a, &m, 2), 0);
    float *first = a.memory;
    assert_ptr_equal(first, m.infer_memory);
    inference_free(&a);
    assert_ptr_equal(m.infer_memory, first); /* given back, not freed */
    assert_int_equal(inference_init(&a, &m, 1), 0);
    assert_ptr_equal(a.memory, first); /* smaller: the same memory */
    assert_int_equal(inference_init(&b, &m, MAX_B), 0);
    assert_true(b.memory != a.memory && b.owner == NULL); /* held by a: its own */
    size_t n = (size_t)MAX_B * CTX * m.config.vocab_size;
    assert_int_equal(gpt_forward(&m, tokens, MAX_B, CTX, NULL), 0);
    float *want = copy_floats(m.logits, n);
    assert_int_equal(gpt_infer(&m, &b, tokens, NULL, 0, MAX_B, CTX, NULL), 0);
    assert_int_equal(memcmp(want, m.logits, n * sizeof(float)), 0);
    assert_int_equal(gpt_infer(&m, &a, tokens, NULL, 0, MAX_B, CTX, NULL), 0);
    assert_int_equal(memcmp(want, m.logits, n * sizeof(float)), 0);
    inference_free(&b);
    inference_free(&a);
    assert_int_equal(inference_init(&a, &m, MAX_B), 0); /* larger than the model's: grown, then kept */
    assert_ptr_equal(a.memory, m.infer_memory);
    assert_true(m.infer_floats >= (size_t)MAX_B * CTX * m.config.d_model);
    assert_int_equal(gpt_infer(&m, &a, tokens, NULL, 0, MAX_B, CTX, NULL), 0);
    assert_int_equal(memcmp(want, m.logits, n * sizeof(float)), 0);
    inference_free(&a);
    free(want);
    gpt_free(&m);
    assert_null(m.infer_memory);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_matches_forward),
        cmocka_unit_test(test_infer_scratch_kept),
        cmocka_unit_test(test_infer_from_prefix),
        cmocka_unit_test(test_infer_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL); /* the default threads: chunks split across them */
}
