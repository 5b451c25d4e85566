/* test_parity_actcorr: corrections under activation quantization (README: Correction layers under
 * activation quantization; issue 21 item 2) against PyTorch (tools/ref_actcorr.py): an MLP stream
 * correction after every block of the small int3 model reading the quantized or the float stream,
 * float-stored or stored at 4-bit codes (its own products then at the activation bits), and a
 * low-rank term on every block matrix, float or 4-bit: the loss over the compared eval windows
 * (within 1e-5 relative) and the corrections' gradients through the straight-through quantizers.
 * The same cases through the inference path, the prefix cache (the stream entering the first site
 * as the cache holds it, float in float mode, never written) and the sampler's one-token steps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/correct.h"
#include "kernels/ops.h"
#include "nn/evaluate.h"
#include "nn/infer.h"
#include "nn/sample.h"
#include "parity_fixture.h"
#include "quant/fakequant.h"
#include "testutil.h"

#define ACTCORR_EXPECTED "tests/fixtures/actcorr_expected.safetensors"
#define SMALL_QUANT "tests/fixtures/gpt_small_quant3.safetensors"
#define LOSS_REL_TOL 1e-5
#define GRAD_REL_TOL 5e-4

typedef struct {
    SafeTensors st;
    GPT m;
    Vocab vocab;
    int T, V, B;
    int32_t *in, *target;
} Fixture;

static void fixture_load(Fixture *x) {
    memset(x, 0, sizeof *x);
    fixture_open(&x->st, ACTCORR_EXPECTED);
    x->B = (int)fixture_meta_number(&x->st, "eval_windows");
    if (gpt_load(&x->m, &x->vocab, SMALL_QUANT, x->B, NULL) != 0) fail_msg("%s", qc_last_error());
    assert_int_equal(gpt_enable_backward(&x->m), 0);
    x->T = x->m.config.ctx;
    x->V = x->m.config.vocab_size;
    assert_int_equal((int)fixture_meta_number(&x->st, "T"), x->T);
    int32_t *ids = fixture_ids(&x->st, "eval_ids", (size_t)x->B * x->T + 1, x->V);
    /* one id past the windows: the prefix cache reads each window's targets from its ids, the
     * last window's last target being the id after it */
    x->in = malloc(((size_t)x->B * x->T + 1) * sizeof(int32_t));
    x->target = malloc((size_t)x->B * x->T * sizeof(int32_t));
    for (int w = 0; w < x->B; w++)
        for (int t = 0; t < x->T; t++) {
            x->in[w * x->T + t] = ids[w * x->T + t];
            x->target[w * x->T + t] = ids[w * x->T + t + 1];
        }
    x->in[(size_t)x->B * x->T] = ids[(size_t)x->B * x->T];
    free(ids);
}

static void fixture_free(Fixture *x) {
    free(x->in);
    free(x->target);
    gpt_free(&x->m);
    st_free(&x->st);
}

/* "bits=4 kv=0 points=inputs,stream gran=token asym=0 calib=minmax" */
static void parse_spec(const char *spec, ActScheme *a) {
    act_scheme_default(a);
    char points[64] = "", gran[16] = "", calib[32] = "";
    int asym = 0;
    if (sscanf(spec, "bits=%d kv=%d points=%63s gran=%15s asym=%d calib=%31s", &a->bits, &a->kv_bits, points, gran, &asym, calib) != 6)
        fail_msg("malformed scheme spec '%s'", spec);
    a->asymmetric = asym;
    if (act_parse_points(points, &a->points) != 0 || act_parse_granularity(gran, &a->granularity) != 0 || act_parse_calib(calib, a) != 0)
        fail_msg("scheme '%s': %s", spec, qc_last_error());
}

/* One case: the scheme set on the model, the corrections built and loaded (and stored narrow). */
typedef struct {
    char name[16];
    ActScheme scheme;
    Corrections c;
    int *sizes;
    float *mask;
} Case;

static void case_setup(Fixture *x, const char *name, Case *k) {
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name);
    char key[256], scheme[16], reads[16], kind[16];
    int bits;
    snprintf(key, sizeof key, "case.%s", name);
    if (sscanf(fixture_meta(&x->st, key), "%15s %15s %15s %d", scheme, reads, kind, &bits) != 4) fail_msg("malformed %s", key);
    snprintf(key, sizeof key, "scheme.%s", scheme);
    parse_spec(fixture_meta(&x->st, key), &k->scheme);
    assert_int_equal(act_parse_correction_reads(reads, &k->scheme.correction_float), 0);
    assert_int_equal(act_scheme_check(&k->scheme), 0);
    assert_int_equal(gpt_set_act_scheme(&x->m, &k->scheme), 0);
    const GPTConfig *cfg = &x->m.config;
    CorrectionLayout lay = {.kind = KIND_MLP, .every = 1, .size = (int)fixture_meta_number(&x->st, "hidden")};
    if (strcmp(kind, "lowrank") == 0) {
        k->sizes = calloc((size_t)gpt_linear_count(cfg), sizeof(int));
        for (int i = 0; i < cfg->n_layer * LINEARS_PER_BLOCK; i++) k->sizes[i] = (int)fixture_meta_number(&x->st, "rank");
        lay = (CorrectionLayout){.kind = KIND_LOWRANK, .linear_sizes = k->sizes};
    }
    if (corrections_init(&k->c, cfg, &lay, x->B * x->T, 1) != 0) fail_msg("%s", qc_last_error());
    CorrectionTensor t[64];
    int n = corrections_tensors(&k->c, cfg, t, 64);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "weight.%.200s", t[i].name);
        size_t numel = (size_t)t[i].rows * (t[i].cols ? t[i].cols : 1);
        float *w = fixture_floats(&x->st, key, numel);
        memcpy(t[i].data, w, numel * sizeof(float));
        free(w);
    }
    corrections_set_act(&k->c, &k->scheme);
    if (bits < 32) { /* the fixture's matrices are on the stored grid already: storing them changes nothing */
        float *before = malloc(k->c.num_params * sizeof(float));
        memcpy(before, k->c.params, k->c.num_params * sizeof(float));
        corrections_store_narrow(&k->c, bits);
        assert_memory_equal(before, k->c.params, k->c.num_params * sizeof(float));
        free(before);
    }
    for (int j = 0; j < k->c.n_sites; j++) assert_true((k->c.sites[j].quant != NULL) == (bits < 32));
    snprintf(key, sizeof key, "mask.%s", name);
    k->mask = fixture_floats(&x->st, key, (size_t)x->B);
}

static void case_free(Case *k) {
    corrections_free(&k->c);
    free(k->sizes);
    free(k->mask);
}

static double masked_loss(Fixture *x, const Case *k) {
    double sum = 0;
    int n = 0;
    for (int w = 0; w < x->B; w++)
        if (k->mask[w] != 0) {
            sum += crossentropy_forward_backward(NULL, x->m.logits + (size_t)w * x->T * x->V, x->target + (size_t)w * x->T, x->T, x->V, 1.0f);
            n++;
        }
    assert_true(n >= 3);
    return sum / n;
}

static int for_each_case(Fixture *x, const char *list_key, int (*fn)(Fixture *, Case *)) {
    char list[256];
    snprintf(list, sizeof list, "%s", fixture_meta(&x->st, list_key));
    int bad = 0, count = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save), count++) {
        Case k;
        case_setup(x, name, &k);
        bad += fn(x, &k);
        case_free(&k);
    }
    assert_true(count >= 4);
    return bad;
}

/* The loss by the training forward, the inference path and (stream corrections) the prefix cache. */
static int loss_case(Fixture *x, Case *k) {
    char key[64];
    snprintf(key, sizeof key, "loss.%s", k->name);
    float *want = fixture_floats(&x->st, key, 1);
    if (gpt_forward(&x->m, x->in, x->B, x->T, &k->c.hook) != 0) fail_msg("%s", qc_last_error());
    size_t nl = (size_t)x->B * x->T * x->V;
    float *logits = malloc(nl * sizeof(float));
    memcpy(logits, x->m.logits, nl * sizeof(float));
    double loss = masked_loss(x, k), rel = fabs(loss - want[0]) / want[0];
    int ok = rel <= LOSS_REL_TOL;
    printf("%-7s loss %-5s C %.7f  PyTorch %.7f  rel %.2e (tol %.0e)\n", ok ? "OK" : "NOT OK", k->name, loss, want[0], rel, LOSS_REL_TOL);
    free(want);
    /* the inference path gives the training forward's logits bit for bit */
    Inference inf;
    assert_int_equal(inference_init(&inf, &x->m, 5), 0);
    assert_int_equal(gpt_infer(&x->m, &inf, x->in, NULL, 0, x->B, x->T, &k->c.hook), 0);
    assert_memory_equal(x->m.logits, logits, nl * sizeof(float));
    int first = corrections_frozen_prefix(&k->c);
    if (kind_info[k->c.kind].placement == PLACE_STREAM && first >= 0) {
        /* the prefix cache: through gpt_forward_from and the inference path, the same logits, the cache untouched */
        StreamCache sc;
        assert_int_equal(stream_cache_build(&sc, &x->m, x->in, NULL, x->B, first), 0);
        size_t ns = (size_t)x->B * x->T * x->m.config.d_model;
        float *copy = malloc(ns * sizeof(float));
        memcpy(copy, sc.streams, ns * sizeof(float));
        int *pick = malloc((size_t)x->B * sizeof(int));
        int32_t *targets = malloc((size_t)x->B * x->T * sizeof(int32_t));
        for (int b = 0; b < x->B; b++) pick[b] = b;
        stream_cache_gather(&sc, pick, x->B, targets);
        assert_int_equal(gpt_forward_from(&x->m, sc.batch, first + 1, x->B, x->T, &k->c.hook), 0);
        assert_memory_equal(x->m.logits, logits, nl * sizeof(float));
        assert_memory_equal(sc.batch, copy, ns * sizeof(float)); /* never quantized in place */
        assert_int_equal(gpt_infer(&x->m, &inf, NULL, sc.batch, first + 1, x->B, x->T, &k->c.hook), 0);
        assert_memory_equal(x->m.logits, logits, nl * sizeof(float));
        assert_memory_equal(sc.streams, copy, ns * sizeof(float));
        /* in float mode the cache holds the block's float output: not on the activation grid */
        if (k->scheme.correction_float) {
            float *q = malloc((size_t)x->T * x->m.config.d_model * sizeof(float));
            act_quantize_rows(q, x->m.config.d_model, sc.streams, x->m.config.d_model, x->T, x->m.config.d_model, k->scheme.bits,
                              k->scheme.asymmetric);
            assert_true(memcmp(q, sc.streams, (size_t)x->T * x->m.config.d_model * sizeof(float)) != 0);
            free(q);
        }
        free(copy);
        free(pick);
        free(targets);
        stream_cache_free(&sc);
    }
    inference_free(&inf);
    /* the sampler's one-token steps: each position's logits as the batched forward's (one window) */
    SampleState s;
    assert_int_equal(sample_state_init(&s, &x->m, &k->c.hook), 0);
    double worst = 0;
    for (int t = 0; t < x->T; t++) {
        const float *l = sample_step(&s, x->in[t]);
        for (int v = 0; v < x->V; v++) worst = fmax(worst, fabs(l[v] - logits[(size_t)t * x->V + v]));
    }
    sample_state_free(&s);
    if (!(worst <= 2e-3)) fail_msg("%s: the sampler's logits differ from the forward's by %g", k->name, worst);
    free(logits);
    return !ok;
}

static void test_actcorr_losses(void **state) {
    (void)state;
    Fixture x;
    fixture_load(&x);
    int bad = for_each_case(&x, "cases", loss_case);
    fixture_free(&x);
    if (bad) fail_msg("%d cases differ from PyTorch", bad);
}

/* The corrections' gradients (the base frozen) through every straight-through quantizer. */
static int grad_case(Fixture *x, Case *k) {
    int32_t *in = malloc((size_t)x->B * x->T * sizeof(int32_t)), *target = malloc((size_t)x->B * x->T * sizeof(int32_t));
    int B = 0, n_grad = (int)fixture_meta_number(&x->st, "grad_windows");
    for (int w = 0; w < x->B && B < n_grad; w++)
        if (k->mask[w] != 0) {
            memcpy(in + (size_t)B * x->T, x->in + (size_t)w * x->T, (size_t)x->T * sizeof(int32_t));
            memcpy(target + (size_t)B * x->T, x->target + (size_t)w * x->T, (size_t)x->T * sizeof(int32_t));
            B++;
        }
    if (gpt_forward(&x->m, in, B, x->T, &k->c.hook) != 0) fail_msg("%s", qc_last_error());
    gpt_loss(&x->m, target);
    corrections_zero_grad(&k->c);
    gpt_backward(&x->m, &k->c.hook, 1, 0, 0);
    CorrectionTensor t[64];
    int n = corrections_tensors(&k->c, &x->m.config, t, 64), bad = 0;
    for (int i = 0; i < n; i++) {
        char key[320];
        snprintf(key, sizeof key, "grad.%.15s.%.200s", k->name, t[i].name);
        size_t numel = (size_t)t[i].rows * (t[i].cols ? t[i].cols : 1);
        float *want = fixture_floats(&x->st, key, numel);
        const float *got = k->c.grads + (t[i].data - k->c.params);
        bad += !compare_floats(key, got, want, numel, 1e-2, GRAD_REL_TOL);
        free(want);
    }
    free(in);
    free(target);
    return bad;
}

static void test_actcorr_gradients(void **state) {
    (void)state;
    Fixture x;
    fixture_load(&x);
    int bad = for_each_case(&x, "grad_cases", grad_case);
    fixture_free(&x);
    if (bad) fail_msg("%d gradient tensors differ from PyTorch", bad);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_actcorr_losses),
        cmocka_unit_test(test_actcorr_gradients),
    };
    return cmocka_run_group_tests_name("parity_actcorr", tests, setup_one_thread, restore_threads);
}
