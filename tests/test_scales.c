/* test_scales: scales as stored (issue 12 part 1) — rounding to f16, bf16 and f32 (nearest, ties to
 * even, subnormals, saturation instead of infinity), and quantized levels whose scale is the
 * stored one, worked out by hand and checked against numpy's float16 where noted. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "quant/fakequant.h"
#include "quant/quant.h"

static void expect_round(double x, ScaleDtype t, double want) {
    double got = round_to_dtype(x, t);
    if (!(got == want) || signbit(got) != signbit(want))
        fail_msg("round_to_dtype(%.17g, %s) = %.17g (%a), expected %.17g (%a)", x, scale_dtype_name(t), got, got, want, want);
}

static void test_round_to_dtype(void **state) {
    (void)state;
    /* f16: 10 explicit significand bits, normals from 2^-14, subnormals in steps of 2^-24, largest 65504 */
    expect_round(0.9, SCALE_F16, 0.89990234375);            /* 1843 / 2048 */
    expect_round(0.1, SCALE_F16, 0.0999755859375);
    expect_round(1.0 / 3.0, SCALE_F16, 0.333251953125);
    expect_round(1.0 / 127.0, SCALE_F16, 0.00787353515625);  /* 1032 * 2^-17 */
    expect_round(1.0 + 0x1p-11, SCALE_F16, 1.0);             /* a tie: to the even significand */
    expect_round(1.0 + 3 * 0x1p-11, SCALE_F16, 1.0 + 0x1p-9);
    expect_round(65504.0, SCALE_F16, 65504.0);
    expect_round(65519.0, SCALE_F16, 65504.0);               /* rounds down to the largest */
    expect_round(65520.0, SCALE_F16, 65504.0);               /* IEEE would give infinity: saturated */
    expect_round(1e20, SCALE_F16, 65504.0);
    expect_round(-1e20, SCALE_F16, -65504.0);
    expect_round(0x1p-24, SCALE_F16, 0x1p-24);               /* the smallest subnormal */
    expect_round(0x1p-25, SCALE_F16, 0.0);                   /* half of it: a tie, to even (zero) */
    expect_round(3 * 0x1p-26, SCALE_F16, 0x1p-24);
    expect_round(1e-30, SCALE_F16, 0.0);
    expect_round(-1e-30, SCALE_F16, -0.0);
    expect_round(5 * 0x1p-24 + 0x1p-26, SCALE_F16, 5 * 0x1p-24); /* subnormal spacing is fixed */
    expect_round(0.0, SCALE_F16, 0.0);
    /* bf16: 7 explicit bits, float's exponent range */
    expect_round(1.0 / 3.0, SCALE_BF16, 0.333984375);
    expect_round(0.9, SCALE_BF16, 0.8984375);
    expect_round(1e20, SCALE_BF16, 0x1.5ap+66);              /* in range (torch.bfloat16 agrees) */
    expect_round(1e-40, SCALE_BF16, 0x1p-133);                /* a subnormal of bf16 */
    /* f32: what a float cast gives */
    expect_round(0.1, SCALE_F32, (double)0.1f);
    expect_round(1.0 / 3.0, SCALE_F32, (double)(1.0f / 3.0f));
    expect_round(1e39, SCALE_F32, (double)3.40282346638528859812e+38F);
    /* the exact dtype keeps the double */
    expect_round(0.1, SCALE_EXACT, 0.1);
    assert_int_equal(scale_dtype_bits(SCALE_F16), 16);
    assert_int_equal(scale_dtype_bits(SCALE_BF16), 16);
    assert_int_equal(scale_dtype_bits(SCALE_F32), 32);
    ScaleDtype t;
    assert_int_equal(scale_dtype_parse("bf16", &t), 0);
    assert_int_equal(t, SCALE_BF16);
    assert_int_equal(scale_dtype_parse("fp16", &t), -1);
}

/* Levels whose scale is the f16 one, by hand. Each case: bits, asymmetric, the span, and the
 * expected outputs with their derivation. */
static void expect_span(const char *what, int bits, int asym, ScaleDtype t, const float *in, const float *want, int n) {
    float out[16];
    quantize_span_ref(out, in, n, bits, asym, t);
    for (int i = 0; i < n; i++)
        if (!(out[i] == want[i])) fail_msg("%s: element %d is %.9g (%a), expected %.9g (%a)", what, i, out[i], out[i], want[i], want[i]);
}

static void test_f16_levels_by_hand(void **state) {
    (void)state;
    /* 2-bit sym [.2, .9]: scale f16(.9 / 1) = .89990234375; .2 / .8999 = .22 -> 0; .9 / .8999
     * = 1.0001 -> 1 -> .89990234375 (exact: the scale was .9) */
    expect_span("2-bit sym", 2, 0, SCALE_F16, (const float[]){0.2f, 0.9f}, (const float[]){0.0f, 0.89990234375f}, 2);
    /* 8-bit sym [-1, .3]: scale f16(1 / 127) = 1032 * 2^-17 = .00787353515625; -1 / s = -127.006
     * -> -127 -> -.99993896484375; .3 / s = 38.102 -> 38 -> .2991943359375 */
    expect_span("8-bit sym", 8, 0, SCALE_F16, (const float[]){-1.0f, 0.3f}, (const float[]){-0.99993896484375f, 0.2991943359375f}, 2);
    /* 4-bit sym [-.875, .4375]: scale .125 is an f16 number: the exact levels, a tie 3.5 -> 4 */
    expect_span("4-bit sym", 4, 0, SCALE_F16, (const float[]){-0.875f, 0.4375f}, (const float[]){-0.875f, 0.5f}, 2);
    /* 2-bit asym [.1, .9, .5]: scale f16(.8 / 3 = .2667) = .2666015625, min f16(.1) = .0999755859375;
     * codes (x - min) / s: 0; 3.0008 -> 3 -> .0999755859375 + 3 * .2666015625 = .8997802734375;
     * 1.5004 -> 2 -> .6331787109375 */
    expect_span("2-bit asym", 2, 1, SCALE_F16, (const float[]){0.1f, 0.9f, 0.5f},
                (const float[]){0.0999755859375f, 0.8997802734375f, 0.6331787109375f}, 3);
    /* f32 scales: 2-bit sym [.2, .9] -> scale (float).9 = .89999997615814209, .9 maps to it */
    expect_span("2-bit sym f32", 2, 0, SCALE_F32, (const float[]){0.2f, 0.9f}, (const float[]){0.0f, 0.9f}, 2);
    /* bf16: 2-bit sym [.2, .9]: scale .8984375, .9 / s = 1.0017 -> 1 */
    expect_span("2-bit sym bf16", 2, 0, SCALE_BF16, (const float[]){0.2f, 0.9f}, (const float[]){0.0f, 0.8984375f}, 2);
}

/* A scheme's default stores its scales as f16, and says so in its description and metadata. */
static void test_default_is_f16(void **state) {
    (void)state;
    QuantScheme s;
    quant_scheme_default(&s, 4);
    assert_int_equal(s.scale_dtype, SCALE_F16);
    char d[256];
    quant_scheme_describe(&s, d, sizeof d);
    if (!strstr(d, "scale=f16")) fail_msg("description '%s' does not name the scale dtype", d);
    /* through quantize_matrix: a row whose absmax/qmax is not an f16 number gets f16's levels */
    float w[4] = {0.9f, -0.45f, 0.2f, 0.0f}, out[4];
    quantize_matrix(out, w, 1, 4, &s);
    double scale = round_to_dtype(0.9 / 7, SCALE_F16);
    assert_true(out[0] == (float)(7 * scale));
    assert_true(out[0] != 0.9f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_to_dtype),
        cmocka_unit_test(test_f16_levels_by_hand),
        cmocka_unit_test(test_default_is_f16),
    };
    return cmocka_run_group_tests_name("scales", tests, setup_one_thread, restore_threads);
}
