/* test_parity_quant: the C round-to-nearest quantizer against the PyTorch/numpy reference
 * (tools/ref_quant.py) at every bit width, granularity and scale dtype. The other quantizers and
 * the per-matrix corrections (mse, GPTQ, low-rank, bias) are held to tools/ref_methods.py's
 * fixtures in test_methods_parity.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "parity_fixture.h"
#include "testutil.h"

#define RTN_FIXTURE "tests/fixtures/quant_rtn.safetensors"

/* ============================ round to nearest ============================ */

/* Every matrix of quant_rtn.safetensors at one scale dtype, compared value for value: the
 * reference computes in float64 with the same IEEE operations the README names (the
 * scale, x / scale, rint, code * scale (+ minimum), one rounding to float32), so the only
 * admissible difference is none (measured: 0 of 15,232 values at f64). */
static void check_rtn(const char *dtype) {
    SafeTensors st;
    fixture_open(&st, RTN_FIXTURE);
    QuantScheme probe;
    quant_scheme_default(&probe, 4);
    if (scheme_set_scale_dtype(&probe, dtype) != 0) fail_msg("scale dtype %s: %s", dtype, qc_last_error());
    int group = (int)fixture_meta_number(&st, "group");
    const char *inputs[] = {"normal", "edge"};
    size_t matrices = 0, differ = 0, values = 0;
    double max_abs = 0.0;
    for (int k = 0; k < 2; k++) {
        char name[128];
        snprintf(name, sizeof name, "input.%s", inputs[k]);
        int rows, cols;
        fixture_shape(&st, name, &rows, &cols);
        size_t n = (size_t)rows * cols;
        float *w = fixture_floats(&st, name, n), *out = malloc(n * sizeof(float));
        assert_non_null(out);
        for (int bits = 2; bits <= 8; bits++)
            for (int asym = 0; asym <= 1; asym++)
                for (int g = 0; g < 3; g++) {
                    if (k == 1 && g == 0) continue; /* the edge rows are not quantized as one tensor */
                    QuantScheme s;
                    quant_scheme_default(&s, bits);
                    s.asymmetric = asym;
                    s.granularity = g == 0 ? GRAN_TENSOR : g == 1 ? GRAN_CHANNEL : GRAN_GROUP;
                    s.group = group;
                    assert_int_equal(scheme_set_scale_dtype(&s, dtype), 0);
                    char gran[32];
                    if (g == 2) snprintf(gran, sizeof gran, "group%d", group);
                    else snprintf(gran, sizeof gran, "%s", g == 0 ? "tensor" : "channel");
                    snprintf(name, sizeof name, "q.%s.b%d.%s.%s.%s", inputs[k], bits, asym ? "asym" : "sym", gran, dtype);
                    if (quantize_matrix(out, w, rows, cols, &s) != 0) fail_msg("%s: %s", name, qc_last_error());
                    float *want = fixture_floats(&st, name, n);
                    differ += compare_exact(name, out, want, n, &max_abs);
                    values += n;
                    matrices++;
                    free(want);
                }
        free(w);
        free(out);
    }
    printf("%-7s rtn, scale %s: %zu matrices (bits 2..8, sym/asym, tensor/channel/group:%d), %zu of %zu values differ, "
           "max abs %.3e\n", differ ? "NOT OK" : "OK", dtype, matrices, group, differ, values, max_abs);
    st_free(&st);
    if (differ) fail_msg("round-to-nearest with %s scales differs from the reference in %zu values", dtype, differ);
}

static void test_rtn_exact_scale(void **state) { (void)state; check_rtn("f64"); }
static void test_rtn_f32_scale(void **state) { (void)state; check_rtn("f32"); }
static void test_rtn_f16_scale(void **state) { (void)state; check_rtn("f16"); }
static void test_rtn_bf16_scale(void **state) { (void)state; check_rtn("bf16"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtn_exact_scale),
        cmocka_unit_test(test_rtn_f32_scale),
        cmocka_unit_test(test_rtn_f16_scale),
        cmocka_unit_test(test_rtn_bf16_scale),
    };
    return cmocka_run_group_tests_name("parity_quant", tests, setup_one_thread, restore_threads);
}
