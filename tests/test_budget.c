/* test_budget: model_bits (README: Budgets: what a model stores) against a count made independently
 * from a saved checkpoint — its tensors' names and shapes as the file lists them, and its scheme as
 * the metadata states it — for tensor, channel and group granularity, symmetric and asymmetric, f16
 * and f32 scales, the control arm, and corrections stored as float32 or narrower. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/budget.h"
#include "io/checkpoint.h"
#include "io/model_file.h"
#include "nn/data.h"

/* The bits a checkpoint stores, counted from the file alone: a tensor is quantized when the
 * metadata's scope names its kind (the four block matrices are "linear", lm_head.weight "head");
 * then numel x bits plus one scale (two, asymmetric) per span of the granularity, where a span is
 * the whole tensor, a row, or G weights; every other tensor 32 bits a value, except correction
 * matrices stored narrower (correction_bits): codes plus one 16-bit scale a row. */
static double independent_bits(const SafeTensors *st, double *quantized_weights) {
    const char *bits_text = st_meta(st, "quant_bits"), *gran = st_meta(st, "quant_granularity");
    const char *asym_text = st_meta(st, "quant_asymmetric"), *dtype = st_meta(st, "quant_scale_dtype");
    const char *corr_text = st_meta(st, "correction_bits");
    int bits = bits_text ? atoi(bits_text) : 32, asym = asym_text ? atoi(asym_text) : 0;
    int scale_bits = !dtype ? 64 : strcmp(dtype, "f32") == 0 ? 32 : 16;
    int corr_bits = corr_text ? atoi(corr_text) : 32;
    double total = 0;
    *quantized_weights = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const StTensor *t = &st->tensors[i];
        long rows = t->shape[0], cols = t->ndim == 2 ? t->shape[1] : 1;
        double numel = (double)t->numel;
        const char *n = t->name;
        int is_linear = strstr(n, "transformer.h.") && (strstr(n, "c_attn.weight") || strstr(n, "c_proj.weight") || strstr(n, "c_fc.weight"));
        int is_head = strcmp(n, "lm_head.weight") == 0;
        int is_correction = strncmp(n, "corrections.", 12) == 0 || strstr(n, "lora_");
        if (bits < 32 && (is_linear || is_head)) {
            double spans = strcmp(gran, "tensor") == 0 ? 1 : strcmp(gran, "channel") == 0 ? (double)rows : numel / atoi(gran + 6);
            total += numel * bits + spans * scale_bits * (asym ? 2 : 1);
            *quantized_weights += numel;
        } else if (is_correction && t->ndim == 2 && corr_bits < 32) {
            total += numel * corr_bits + rows * 16.0;
        } else {
            total += 32 * numel;
        }
        (void)cols;
    }
    return total;
}

static void check_file(const char *path, const char *what) {
    SafeTensors st;
    if (st_read(&st, path) != 0) fail_msg("%s", qc_last_error());
    double weights, want = independent_bits(&st, &weights);
    st_free(&st);
    LoadedModel lm;
    if (load_checkpoint(&lm, path, 1) != 0) fail_msg("%s", qc_last_error());
    ModelBits b;
    model_bits(&lm.model.config, lm.quantized ? &lm.scheme : NULL, &b);
    double got = model_bits_total(&b) + (lm.corrected ? corrections_storage_bits(&lm.corrections) : 0);
    if (!(got == want)) fail_msg("%s: model_bits %.0f, counted from the file %.0f", what, got, want);
    if (!(b.quantized_weights == weights)) fail_msg("%s: %.0f quantized weights, the file has %.0f", what, b.quantized_weights, weights);
    if (weights > 0) assert_true(fabs(bits_per_weight(&b) - (b.codes + b.scales) / weights) < 1e-12);
    else assert_true(isnan(bits_per_weight(&b)));
    loaded_model_free(&lm);
}

static void save(const char *path, GPT *m, const Vocab *v, const QuantScheme *s, const Corrections *c) {
    if (save_model(path, m, v, s, c, c ? &(CorrectionProvenance){"train", "ce"} : NULL) != 0) fail_msg("%s", qc_last_error());
}

static void test_model_bits_from_the_file(void **state) {
    (void)state;
    GPT f;
    small_gpt(&f, 2, 8, 2, 71);
    Vocab v = {.size = f.config.vocab_size};
    for (int i = 0; i < 256; i++) v.id_of[i] = -1;
    for (int i = 0; i < v.size; i++) v.bytes[i] = (uint8_t)('a' + i), v.id_of['a' + i] = (int16_t)i;
    char path[512];
    snprintf(path, sizeof path, "%s/float.safetensors", test_tmpdir());
    save(path, &f, &v, NULL, NULL);
    check_file(path, "float");
    const char *grans[] = {"tensor", "channel", "group:4", "group:8"};
    const ScaleDtype dtypes[] = {SCALE_F16, SCALE_F32, SCALE_BF16};
    int k = 0;
    for (int bits = 2; bits <= 8; bits += 3)
        for (int g = 0; g < 4; g++)
            for (int asym = 0; asym < 2; asym++) {
                GPT q;
                assert_int_equal(gpt_clone(&q, &f, 2), 0);
                QuantScheme s;
                quant_scheme_default(&s, bits);
                assert_int_equal(parse_granularity(grans[g], &s), 0);
                s.asymmetric = asym;
                s.scale_dtype = dtypes[k++ % 3];
                assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
                char what[96];
                snprintf(what, sizeof what, "int%d %s %s %s", bits, grans[g], asym ? "asym" : "sym", scale_dtype_name(s.scale_dtype));
                snprintf(path, sizeof path, "%s/q%d.safetensors", test_tmpdir(), k);
                save(path, &q, &v, &s, NULL);
                check_file(path, what);
                /* with corrections: float32, then stored at 8 and 16 bits */
                for (int hidden = 0; hidden <= 8; hidden += 8)
                    for (int stored = 8; stored <= 32; stored *= 2) {
                        if (stored == 32 && hidden == 8) continue;
                        Corrections c;
                        assert_int_equal(stream_corrections(&c, &q.config, 1, hidden, 16, 72), 0);
                        for (size_t i = 0; i < c.num_params; i++) c.params[i] = 0.01f * (float)(i % 7);
                        if (stored < 32) corrections_store_narrow(&c, stored);
                        snprintf(path, sizeof path, "%s/c%d_%d_%d.safetensors", test_tmpdir(), k, hidden, stored);
                        save(path, &q, &v, &s, &c);
                        snprintf(what, sizeof what, "int%d %s, corrections h%d at %d bits", bits, grans[g], hidden, stored);
                        check_file(path, what);
                        /* the plan (layout) and the object agree */
                        CorrectionLayout lay = {.kind = c.kind, .every = 1, .size = hidden};
                        assert_true(correction_storage_bits(&q.config, &lay, stored) == corrections_storage_bits(&c));
                        corrections_free(&c);
                    }
                gpt_free(&q);
            }
    /* by hand, once: 64x2 at int4 channel f16 — block matrices 2 x (3+1+4+4) x 64 x 64 and the
     * 65 x 64 head: 102,464 weights; codes 4 bits each, one 16-bit scale per row (2 x (192 + 64
     * + 256 + 64) + 65 = 1,217 rows); the rest (embeddings 65x64 + 128x64, LayerNorms, biases)
     * 32 bits each */
    GPTConfig cfg = {.vocab_size = 65, .ctx = 128, .d_model = 64, .n_layer = 2, .n_head = 4};
    QuantScheme s;
    quant_scheme_default(&s, 4);
    ModelBits b;
    model_bits(&cfg, &s, &b);
    assert_true(b.quantized_weights == 2.0 * 12 * 64 * 64 + 65 * 64);
    assert_true(b.codes == 4.0 * b.quantized_weights);
    assert_true(b.scales == 16.0 * (2 * (192 + 64 + 256 + 64) + 65));
    double float_values = 65 * 64 + 128 * 64 + 2 * (4 * 64 + 3 * 64 + 64 + 256 + 64) + 2 * 64 + 65;
    assert_true(b.float_bits == 32.0 * float_values);
    gpt_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_bits_from_the_file),
    };
    return cmocka_run_group_tests_name("budget", tests, setup_one_thread, restore_threads);
}
