/* test_transform: the transforms of README: Transforms in C alone — hand-made SmoothQuant scales
 * and per-channel maxima, the transform names, the float model's loss kept by every transform
 * (training forward and the forward-only path), the rotated stream centered, quantization after a
 * transform (rtn and gptq) and its checkpoint read back with the online transforms on, and the
 * refusals (a width that is no power of two, smoothing without data, malformed metadata). The
 * comparison with PyTorch is test_parity_transform; the gradient through the online transform is
 * test_model's; the kernel is test_ops'. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_file.h"
#include "nn/infer.h"
#include "quant/quant.h"
#include "quant/transform.h"
#include "testutil.h"

enum { B = 3, T = 8, CALIB = 6 };

static double model_loss(GPT *m, const int32_t *inputs, const int32_t *targets) {
    assert_int_equal(gpt_forward(m, inputs, B, T, NULL), 0);
    return gpt_loss(m, targets);
}

/* SmoothQuant's s_j = max|x_j|^a / max|w_j|^(1-a), 1 where either maximum is 0; max |x| of rows */
static void test_smooth_scales_exact(void **state) {
    (void)state;
    const float w[2 * 4] = {1, -2, 0, 3, -0.5f, 1, 0, -12};
    const double act[4] = {4, 8, 5, 0};
    double s[4];
    smooth_scales(s, act, w, 2, 4, 0.5); /* sqrt(4)/sqrt(1), sqrt(8)/sqrt(2), w 0, x 0 */
    assert_true(s[0] == 2.0 && s[1] == 2.0 && s[2] == 1.0 && s[3] == 1.0);
    smooth_scales(s, act, w, 2, 4, 1.0); /* alpha 1: all of max|x| moves */
    assert_true(s[0] == 4.0 && s[1] == 8.0);
    smooth_scales(s, act, w, 2, 4, 0.0); /* alpha 0: 1 / max|w| */
    assert_true(s[0] == 1.0 && s[1] == 0.5);
    const float x[3 * 2] = {1, -3, -2, 0.5f, 0.25f, 2};
    CalibStats st;
    assert_int_equal(calib_stats_from_rows(&st, x, 3, 2, 0), 0);
    assert_true(st.absmax[0] == 2.0 && st.absmax[1] == 3.0);
    calib_stats_free(&st);
}

static void test_transform_names(void **state) {
    (void)state;
    const char *in[] = {"none", "smooth", "online", "rotate", "rotate+smooth", "smooth+rotate", "online+smooth"};
    const char *kinds[] = {"none", "smooth", "online", "rotate", "rotate+smooth", "rotate+smooth", "online+smooth"};
    const char *desc[] = {"none", "smooth:alpha=0.5", "online:seed=0", "rotate:seed=0", "rotate+smooth:seed=0:alpha=0.5",
                          "rotate+smooth:seed=0:alpha=0.5", "online+smooth:seed=0:alpha=0.5"};
    for (int i = 0; i < 7; i++) {
        TransformScheme t;
        transform_default(&t);
        assert_int_equal(transform_parse(in[i], &t), 0);
        char out[96];
        transform_kinds_name(t.kinds, out, sizeof out);
        assert_string_equal(out, kinds[i]);
        transform_describe(&t, out, sizeof out);
        assert_string_equal(out, desc[i]);
        assert_int_equal(transform_needs_calibration(&t), strstr(in[i], "smooth") != NULL);
        assert_int_equal(transform_online_slots(&t) != 0, i >= 2 && strcmp(in[i], "smooth") != 0);
    }
    TransformScheme t;
    transform_default(&t);
    assert_int_equal(transform_parse("spin", &t), -1);
    assert_non_null(strstr(qc_last_error(), "spin"));
    assert_int_equal(transform_parse("+", &t), -1);
    t.kinds = TRANSFORM_ROTATE; /* the stream rotation alone: not a scheme */
    assert_int_equal(transform_check(&t), -1);
    t.kinds = TRANSFORM_SMOOTH;
    t.smooth_alpha = 1.5;
    assert_int_equal(transform_check(&t), -1);
    char names[64];
    transform_online_names(1u << LINEAR_ATTN_PROJ | 1u << LINEAR_MLP_PROJ, names, sizeof names);
    assert_string_equal(names, "attn.c_proj,mlp.c_proj");
}

/* Every transform keeps the float model's loss within 1e-5 nats (measured: ~1e-7), on the
 * training forward and the forward-only path, while moving the weights by far more; the rotated
 * LayerNorms are the plain normalization and every stream the blocks read has mean ~0. */
static void test_float_invariance(void **state) {
    (void)state;
    const char *names[] = {"online", "rotate", "smooth", "rotate+smooth", "online+smooth"};
    Rng rng;
    rng_seed(&rng, 3101);
    int32_t inputs[B * T], targets[B * T], calib[CALIB * T];
    for (int k = 0; k < 5; k++) {
        GPT m, f;
        small_gpt(&f, 2, T, CALIB, 3102);
        random_tokens(inputs, B * T, f.config.vocab_size, &rng);
        random_tokens(targets, B * T, f.config.vocab_size, &rng);
        random_tokens(calib, CALIB * T, f.config.vocab_size, &rng);
        assert_int_equal(gpt_clone(&m, &f, CALIB), 0);
        TransformScheme t;
        transform_default(&t);
        assert_int_equal(transform_parse(names[k], &t), 0);
        t.rotate_seed = 2; /* its first stream sign is -1: Q 1 = -1, the stream still centered */
        assert_int_equal(transform_model(&m, &t, calib, CALIB, T), 0);
        double before = model_loss(&f, inputs, targets), after = model_loss(&m, inputs, targets);
        if (!(fabs(after - before) <= 1e-5)) fail_msg("%s: loss %.9f, float %.9f", names[k], after, before);
        double moved = max_abs_diff(m.params, f.params, m.num_params);
        if (!(moved > 0.05)) fail_msg("%s: the weights moved by %.3g only", names[k], moved);
        Inference inf;
        assert_int_equal(inference_init(&inf, &m, 0), 0);
        float *logits = copy_floats(m.logits, (size_t)B * T * m.config.vocab_size);
        assert_int_equal(gpt_infer(&m, &inf, inputs, NULL, 0, B, T, NULL), 0);
        assert_true(max_abs_diff(m.logits, logits, (size_t)B * T * m.config.vocab_size) <= 1e-5);
        inference_free(&inf);
        free(logits);
        if (t.kinds & TRANSFORM_ROTATE) {
            assert_int_equal(gpt_forward(&m, inputs, B, T, NULL), 0);
            for (int l = 0; l < m.config.n_layer; l++)
                for (int r = 0; r < B * T; r++) {
                    double mean = 0, scale = 0;
                    for (int c = 0; c < 16; c++) {
                        mean += m.block_input[l][r * 16 + c];
                        scale += fabs(m.block_input[l][r * 16 + c]);
                    }
                    assert_true(fabs(mean) <= 1e-5 * scale);
                }
            if (!(t.kinds & TRANSFORM_SMOOTH)) {
                LayerParams p = layer_view(&m, m.params, 1);
                for (int c = 0; c < 16; c++) assert_true(p.ln_2_weight[c] == 1.0f && p.ln_2_bias[c] == 0.0f);
            }
        }
        assert_int_equal(gpt_online(&m, LINEAR_MLP_PROJ) != NULL, (t.kinds & TRANSFORM_ONLINE) != 0);
        assert_null(gpt_online(&m, LINEAR_FC));
        gpt_free(&m);
        gpt_free(&f);
    }
}

/* quantize after rotate+smooth (rtn, gptq with activation quantization): the checkpoint written
 * and read back has the scheme's transform and the online transforms on, and the same loss to
 * the bit; metadata that names a rotation without its seed, or a seed without a rotation, is refused. */
static void test_quantized_checkpoint(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 3201);
    int32_t inputs[B * T], targets[B * T], calib[CALIB * T];
    Vocab v;
    const uint8_t bytes[11] = {'\n', ' ', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'};
    vocab_from_bytes(&v, bytes, 11);
    for (int q = 0; q < 2; q++) {
        GPT m;
        small_gpt(&m, 2, T, CALIB, 3202);
        random_tokens(inputs, B * T, m.config.vocab_size, &rng);
        random_tokens(targets, B * T, m.config.vocab_size, &rng);
        random_tokens(calib, CALIB * T, m.config.vocab_size, &rng);
        QuantScheme s;
        quant_scheme_default(&s, 4);
        s.quantizer = q ? QUANTIZER_GPTQ : QUANTIZER_RTN;
        act_scheme_inputs(&s.act, q ? 6 : 0);
        assert_int_equal(transform_parse("rotate+smooth", &s.transform), 0);
        s.transform.rotate_seed = 9;
        s.transform.smooth_alpha = 0.7;
        assert_int_equal(quantize_model(&m, &s, NULL, NULL), -1); /* smoothing needs windows */
        assert_non_null(strstr(qc_last_error(), "smooth"));
        assert_int_equal(quantize_model_calibrated(&m, &s, calib, CALIB, T, NULL, NULL), 0);
        double loss = model_loss(&m, inputs, targets);
        char path[512];
        snprintf(path, sizeof path, "%s/transformed_%d.safetensors", test_tmpdir(), q);
        assert_int_equal(save_model(path, &m, &v, &s, NULL, NULL), 0);
        LoadedModel lm;
        if (load_checkpoint(&lm, path, B) != 0) fail_msg("%s", qc_last_error());
        assert_true(lm.quantized);
        assert_int_equal(lm.scheme.transform.kinds, s.transform.kinds);
        assert_true(lm.scheme.transform.rotate_seed == 9 && lm.scheme.transform.smooth_alpha == 0.7);
        assert_int_equal(lm.model.online_slots, 1u << LINEAR_ATTN_PROJ | 1u << LINEAR_MLP_PROJ);
        assert_true(lm.model.act.scheme.bits == s.act.bits && lm.scheme.act.bits == s.act.bits);
        double reloaded = model_loss(&lm.model, inputs, targets);
        assert_true(reloaded == loss);
        loaded_model_free(&lm);
        gpt_free(&m);
    }
    /* malformed: a rotation without its seed; a seed without a rotation; an unknown part */
    GPT m;
    small_gpt(&m, 1, T, 1, 3203);
    const char *bad[][2] = {{"quant_transform", "rotate"}, {"quant_transform_seed", "3"}, {"quant_transform", "spin"}};
    for (int i = 0; i < 3; i++) {
        QuantScheme s;
        quant_scheme_default(&s, 4);
        StMeta meta[QUANT_META_MAX + 1];
        int n = quant_scheme_to_meta(&s, meta);
        meta[n].key = bad[i][0];
        snprintf(meta[n].value, sizeof meta[n].value, "%s", bad[i][1]);
        char path[512];
        snprintf(path, sizeof path, "%s/bad_transform_%d.safetensors", test_tmpdir(), i);
        assert_int_equal(gpt_save(&m, &v, path, meta, n + 1, NULL, 0), 0);
        LoadedModel lm;
        assert_int_equal(load_checkpoint(&lm, path, 1), -1);
        assert_non_null(strstr(qc_last_error(), "malformed quantization metadata"));
    }
    gpt_free(&m);
}

/* A d_model that is no power of two: refused with the value named, the model unchanged. */
static void test_power_of_two_refused(void **state) {
    (void)state;
    GPTConfig cfg = {.vocab_size = 11, .ctx = T, .d_model = 24, .n_layer = 1, .n_head = 2};
    GPT m;
    assert_int_equal(gpt_init(&m, &cfg, 1), 0);
    gpt_init_weights(&m, 3301);
    float *before = copy_floats(m.params, m.num_params);
    const char *names[] = {"rotate", "online"};
    for (int k = 0; k < 2; k++) {
        TransformScheme t;
        transform_default(&t);
        assert_int_equal(transform_parse(names[k], &t), 0);
        assert_int_equal(transform_model(&m, &t, NULL, 0, 0), -1);
        assert_non_null(strstr(qc_last_error(), "power of two"));
        assert_non_null(strstr(qc_last_error(), "24"));
    }
    assert_int_equal(gpt_set_online(&m, 1u << LINEAR_ATTN_PROJ, 1), -1);
    assert_memory_equal(m.params, before, m.num_params * sizeof(float));
    free(before);
    gpt_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smooth_scales_exact),  cmocka_unit_test(test_transform_names),
        cmocka_unit_test(test_float_invariance),     cmocka_unit_test(test_quantized_checkpoint),
        cmocka_unit_test(test_power_of_two_refused),
    };
    return cmocka_run_group_tests(tests, setup_one_thread, restore_threads);
}
