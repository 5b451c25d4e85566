/* test_quantizer_table: every entry of the quantizer table (QUANTIZERS in methods.h), bare, with
 * each of its options and with each pair of them at the values its table gives them (examples),
 * through quantize -> save -> load -> evaluate, so that a new line is tested without a new test:
 * the checkpoint's scheme (metadata) and weights come back exactly, its evaluation is the
 * quantized model's, and every option is exercised at least once and changes the scheme. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/model_file.h"
#include "nn/train.h"
#include "quant/quant.h"

#define MAX_OPTIONS 16

typedef struct {
    GPT f;
    Vocab vocab;
    int32_t *windows, *eval;
    int n_windows, T, n_eval, cases;
} Bench;

/* The metadata a scheme writes, as one "key=value;" string. */
static void meta_text(const QuantScheme *s, char *out, size_t size) {
    StMeta meta[32];
    int n = quant_scheme_to_meta(s, meta);
    out[0] = 0;
    for (int i = 0; i < n; i++) snprintf(out + strlen(out), size - strlen(out), "%s=%s;", meta[i].key, meta[i].value);
}

/* quantize -> save -> load -> evaluate one scheme */
static void run_case(Bench *b, const QuantScheme *s) {
    char path[600], want[2048], got[2048];
    meta_text(s, want, sizeof want);
    const char *what = want;
    GPT q;
    assert_int_equal(gpt_init(&q, &b->f.config, b->n_windows), 0);
    memcpy(q.params, b->f.params, q.num_params * sizeof(float));
    int data = quant_scheme_needs_calibration(s);
    if (quantize_model_calibrated(&q, s, data ? b->windows : NULL, data ? b->n_windows : 0, b->T, NULL, NULL) != 0)
        fail_msg("%s: quantize: %s", what, qc_last_error());
    size_t changed = 0;
    for (size_t k = 0; k < q.num_params; k++) changed += q.params[k] != b->f.params[k];
    if (changed == 0) fail_msg("%s: quantization changed no weight", what);
    snprintf(path, sizeof path, "%s/case%d.safetensors", test_tmpdir(), b->cases++);
    if (save_model(path, &q, &b->vocab, s, NULL, NULL) != 0) fail_msg("%s: save: %s", what, qc_last_error());
    LoadedModel lm;
    if (load_checkpoint(&lm, path, b->n_windows) != 0) fail_msg("%s: load: %s", what, qc_last_error());
    assert_true(lm.quantized);
    meta_text(&lm.scheme, got, sizeof got);
    if (strcmp(want, got) != 0) fail_msg("scheme written %s, read back %s", want, got);
    if (memcmp(lm.model.params, q.params, q.num_params * sizeof(float)) != 0) fail_msg("%s: the weights read back differ", what);
    double a = evaluate_loss(&q, b->eval, (size_t)b->n_eval, NULL), c = evaluate_loss(&lm.model, b->eval, (size_t)b->n_eval, NULL);
    if (!isfinite(a) || a != c) fail_msg("%s: loss %.17g in memory, %.17g read back", what, a, c);
    loaded_model_free(&lm);
    gpt_free(&q);
}

/* s with option o at value text; 0 where it does not apply to s's other options or the scheme's
 * rules refuse the combination (gptq's current groups with act-order) */
static int with_option(QuantScheme *s, const QuantizerOption *o, const char *text) {
    if (o->parse(o->flag, text, s) != 0) fail_msg("%s %s: %s", o->flag, text, qc_last_error());
    if (o->applies && !o->applies(s)) return 0;
    return quant_scheme_check(s) == 0;
}

static void test_every_quantizer_and_option(void **state) {
    (void)state;
    Bench b = {.n_windows = 4};
    tiny_model(&b.f, b.n_windows, 9101);
    b.T = b.f.config.ctx;
    b.vocab.size = b.f.config.vocab_size;
    for (int i = 0; i < b.vocab.size; i++) b.vocab.bytes[i] = (uint8_t)('a' + i);
    b.n_eval = 4 * b.T + 1;
    b.windows = malloc(sizeof(int32_t) * (size_t)b.n_windows * b.T);
    b.eval = malloc(sizeof(int32_t) * (size_t)b.n_eval);
    assert_non_null(b.windows);
    assert_non_null(b.eval);
    Rng rng;
    rng_seed(&rng, 9102);
    random_tokens(b.windows, b.n_windows * b.T, b.vocab.size, &rng);
    random_tokens(b.eval, b.n_eval, b.vocab.size, &rng);
    for (int q = 0; q < QUANTIZER_COUNT; q++) {
        QuantScheme base;
        quant_scheme_default(&base, 3);
        base.quantizer = (QuantizerId)q;
        base.granularity = GRAN_GROUP, base.group = 8; /* every option means something (gptq's groups) */
        run_case(&b, &base);
        const QuantizerOption *const *opts = quantizer_ops((QuantizerId)q)->options;
        int n = 0, ran[MAX_OPTIONS] = {0};
        while (opts && opts[n]) n++;
        assert_true(n <= MAX_OPTIONS);
        for (int i = 0; i < n; i++)
            for (const char *const *x = opts[i]->examples; x && *x; x++) {
                QuantScheme s = base;
                char before[64], after[64];
                opts[i]->format(&s, before, sizeof before);
                int fine = with_option(&s, opts[i], *x);
                opts[i]->format(&s, after, sizeof after);
                if (strcmp(before, after) == 0) fail_msg("%s: %s %s is its default", quantizer_name((QuantizerId)q), opts[i]->flag, *x);
                if (fine) run_case(&b, &s), ran[i]++;
                for (int j = i + 1; j < n; j++) /* and beside each later option */
                    for (const char *const *y = opts[j]->examples; y && *y; y++) {
                        QuantScheme t = s;
                        if (with_option(&t, opts[j], *y) && (!opts[i]->applies || opts[i]->applies(&t)) && quant_scheme_check(&t) == 0)
                            run_case(&b, &t), ran[i]++, ran[j]++;
                    }
            }
        for (int i = 0; i < n; i++)
            if (!ran[i]) fail_msg("%s: option %s was never exercised (its examples never apply)", quantizer_name((QuantizerId)q), opts[i]->flag);
    }
    print_message("  %d quantizer cases: quantize, save, load, evaluate\n", b.cases);
    free(b.windows);
    free(b.eval);
    gpt_free(&b.f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_quantizer_and_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
