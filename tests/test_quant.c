/* test_quant: the fake quantizers (README: Quantization) — hand-computed outputs for every granularity
 * at 2, 4 and 8 bits (symmetric and asymmetric), every code reachable, idempotence, degenerate
 * rows, group errors, quantize_model's scope and errors, and activation fake-quantization. */
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/ops.h"
#include "quant/quant.h"

/* One thread for the suite (set in main's group setup): each quantize_matrix is a parallel region
 * over a few dozen values, whose barriers on a loaded 2-core machine can each wait a scheduler
 * tick (measured: 10 s with 2 threads, 0.1 s with 1). test_parallel_spans_match_serial runs the parallel path. */
/* use_threads, setup_one_thread and restore_threads: tests/testutil.h */

static int qmax_of(int bits) { return (1 << (bits - 1)) - 1; } /* symmetric: codes -qmax..qmax */
static int levels_of(int bits) { return (1 << bits) - 1; }     /* asymmetric: codes 0..levels */

static QuantScheme scheme(int bits, const char *granularity, int asymmetric) {
    QuantScheme s;
    quant_scheme_default(&s, bits);
    if (parse_granularity(granularity, &s) != 0) fail_msg("parse_granularity(%s): %s", granularity, qc_last_error());
    s.asymmetric = asymmetric;
    return s;
}

/* Exact comparison, element by element (-0 == +0: a code of zero may carry either sign). */
static void assert_floats_equal(const char *what, const float *got, const float *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == want[i]))
            fail_msg("%s: element %zu is %.9g (%a), expected %.9g (%a)", what, i, got[i], got[i], want[i], want[i]);
}

static int count_distinct(const float *x, int n) {
    float *s = malloc((size_t)n * sizeof(float));
    memcpy(s, x, (size_t)n * sizeof(float));
    for (int i = 1; i < n; i++) /* insertion sort: n <= 256 */
        for (int j = i; j > 0 && s[j - 1] > s[j]; j--) {
            float t = s[j]; s[j] = s[j - 1]; s[j - 1] = t;
        }
    int distinct = n > 0;
    for (int i = 1; i < n; i++) distinct += s[i] != s[i - 1];
    free(s);
    return distinct;
}

/* ============================ hand-computed cases ============================ */

/* A 2x4 matrix per bit width; every granularity sees it as 1 span (tensor), 2 (channel: rows) or
 * 4 (group:2). Codes were worked out by hand, in the comments beside each case; the expected
 * value is then the dequantization of that code (README: Quantization): symmetric code * (absmax /
 * qmax), asymmetric lo + code * ((hi - lo) / levels), in double, rounded once to float. Ties (x / scale
 * exactly k + 0.5) are placed only where the scale is a power of two, so the tie is exact in
 * double and nearbyint must round it to the even code. */
typedef struct {
    int bits, asymmetric;
    const char *granularity;
    int codes[8];
    float span[4][2]; /* per span: symmetric {absmax}, asymmetric {lo, hi} */
} HandCase;

static const float W2[8] = {-1.0f, 0.5f, 0.2f, 0.9f, 0.25f, -0.125f, 0.1f, 0.0625f};
static const float W4[8] = {-0.875f, 0.4375f, 0.15625f, 0.8125f, 0.21875f, -0.046875f, 0.0f, 0.078125f};
static const float W8[8] = {-1.0f, 0.3f, 0.2f, 0.9f, 0.9921875f, -0.00390625f, 0.01953125f, 0.25f};

static const HandCase HAND_CASES[] = {
    /* ---- 2 bits on W2 = [[-1, .5, .2, .9], [.25, -.125, .1, .0625]]; sym qmax 1, asym levels 3 ---- */
    /* tensor sym: absmax 1, scale 1: -1 -> -1; .5 is a tie -> 0 (even); .2 -> 0; .9 -> 1;
     * row 1 all |x| <= .25 -> 0. Out: [-1, 0, 0, 1, 0, 0, 0, 0] */
    {2, 0, "tensor", {-1, 0, 0, 1, 0, 0, 0, 0}, {{1.0f}}},
    /* channel sym: row 0 as above; row 1 absmax .25, scale .25: .25 -> 1; -.125/.25 = -.5 tie -> 0;
     * .1/.25 = .4 -> 0; .0625/.25 = .25 -> 0. Out row 1: [.25, 0, 0, 0] */
    {2, 0, "channel", {-1, 0, 0, 1, 1, 0, 0, 0}, {{1.0f}, {0.25f}}},
    /* group:2 sym: [-1, .5] scale 1 -> [-1, 0 (tie)]; [.2, .9] scale .9 -> [.22 -> 0, 1];
     * [.25, -.125] scale .25 -> [1, -.5 tie -> 0]; [.1, .0625] scale .1 -> [1, .625 -> 1] */
    {2, 0, "group:2", {-1, 0, 0, 1, 1, 0, 1, 1}, {{1.0f}, {0.9f}, {0.25f}, {0.1f}}},
    /* tensor asym: lo -1, hi .9, scale 1.9/3 = .6333: (x+1)/scale: 0; 1.5/.633 = 2.37 -> 2;
     * 1.2/.633 = 1.89 -> 2; 3; 1.25/.633 = 1.97 -> 2; .875/.633 = 1.38 -> 1; 1.1/.633 = 1.74 -> 2;
     * 1.0625/.633 = 1.68 -> 2 */
    {2, 1, "tensor", {0, 2, 2, 3, 2, 1, 2, 2}, {{-1.0f, 0.9f}}},
    /* channel asym: row 0 as tensor; row 1 lo -.125, hi .25, scale .375/3 = .125 (exact):
     * .375/.125 = 3; 0; .225/.125 = 1.8 -> 2; .1875/.125 = 1.5 tie -> 2 (even). Out row 1:
     * [.25, -.125, .125, .125] */
    {2, 1, "channel", {0, 2, 2, 3, 3, 0, 2, 2}, {{-1.0f, 0.9f}, {-0.125f, 0.25f}}},
    /* group:2 asym: each pair maps its min to code 0 and its max to code 3, i.e. to itself */
    {2, 1, "group:2", {0, 3, 0, 3, 3, 0, 3, 0}, {{-1.0f, 0.5f}, {0.2f, 0.9f}, {-0.125f, 0.25f}, {0.0625f, 0.1f}}},

    /* ---- 4 bits on W4 = [[-.875, .4375, .15625, .8125], [.21875, -.046875, 0, .078125]];
     * sym qmax 7, asym levels 15 ---- */
    /* tensor sym: absmax .875, scale .125 (exact): x*8 = -7; 3.5 tie -> 4; 1.25 -> 1; 6.5 tie -> 6;
     * 1.75 -> 2; -.375 -> 0; 0; .625 -> 1. Out: [-.875, .5, .125, .75, .25, 0, 0, .125] */
    {4, 0, "tensor", {-7, 4, 1, 6, 2, 0, 0, 1}, {{0.875f}}},
    /* channel sym: row 1 absmax .21875 = 7/32, scale 1/32 (exact): x*32 = 7; -1.5 tie -> -2;
     * 0; 2.5 tie -> 2. Out row 1: [.21875, -.0625, 0, .0625] */
    {4, 0, "channel", {-7, 4, 1, 6, 7, -2, 0, 2}, {{0.875f}, {0.21875f}}},
    /* group:2 sym: [-.875, .4375] scale 1/8 -> [-7, 4 (3.5 tie)]; [.15625, .8125] scale .8125/7:
     * .15625/.11607 = 1.35 -> 1, 7; [.21875, -.046875] scale 1/32 -> [7, -2 (tie)]; [0, .078125]
     * -> [0, 7] */
    {4, 0, "group:2", {-7, 4, 1, 7, 7, -2, 0, 7}, {{0.875f}, {0.8125f}, {0.21875f}, {0.078125f}}},
    /* tensor asym: lo -.875, hi .8125, scale 1.6875/15 = .1125: (x+.875)/.1125: 0; 1.3125 -> 11.67
     * -> 12; 1.03125 -> 9.17 -> 9; 15; 1.09375 -> 9.72 -> 10; .828125 -> 7.36 -> 7; .875 -> 7.78
     * -> 8; .953125 -> 8.47 -> 8 */
    {4, 1, "tensor", {0, 12, 9, 15, 10, 7, 8, 8}, {{-0.875f, 0.8125f}}},
    /* channel asym: row 0 holds the tensor's min and max: as tensor; row 1 lo -.046875, hi .21875,
     * scale (17/64)/15 = 17/960: 15; 0; .046875*960/17 = 2.65 -> 3; .125*960/17 = 7.06 -> 7 */
    {4, 1, "channel", {0, 12, 9, 15, 15, 0, 3, 7}, {{-0.875f, 0.8125f}, {-0.046875f, 0.21875f}}},
    {4, 1, "group:2", {0, 15, 0, 15, 15, 0, 0, 15},
     {{-0.875f, 0.4375f}, {0.15625f, 0.8125f}, {-0.046875f, 0.21875f}, {0.0f, 0.078125f}}},

    /* ---- 8 bits on W8 = [[-1, .3, .2, .9], [127/128, -1/256, 5/256, .25]];
     * sym qmax 127, asym levels 255 ---- */
    /* tensor sym: absmax 1, scale 1/127: x*127 = -127; 38.1 -> 38; 25.4 -> 25; 114.3 -> 114;
     * 126.008 -> 126; -.496 -> 0; 2.48 -> 2; 31.75 -> 32 */
    {8, 0, "tensor", {-127, 38, 25, 114, 126, 0, 2, 32}, {{1.0f}}},
    /* channel sym: row 1 absmax 127/128, scale 1/128 (exact): x*128 = 127; -.5 tie -> 0;
     * 2.5 tie -> 2 (even, not 3); 32. Out row 1: [.9921875, 0, .015625, .25] */
    {8, 0, "channel", {-127, 38, 25, 114, 127, 0, 2, 32}, {{1.0f}, {0.9921875f}}},
    /* group:2 sym: [-1, .3] -> [-127, 38]; [.2, .9] scale .9/127: .2/.9*127 = 28.2 -> 28, 127;
     * [127/128, -1/256] scale 1/128 -> [127, 0 (tie)]; [5/256, .25] scale .25/127:
     * .078125*127 = 9.92 -> 10, 127 */
    {8, 0, "group:2", {-127, 38, 28, 127, 127, 0, 10, 127}, {{1.0f}, {0.9f}, {0.9921875f}, {0.25f}}},
    /* tensor asym: lo -1, hi 127/128, range 255/128, scale 1/128 (exact): (x+1)*128 = 0;
     * 166.4 -> 166; 153.6 -> 154; 243.2 -> 243; 255; (1 - 1/256)*128 = 127.5 tie -> 128 (even);
     * (1 + 5/256)*128 = 130.5 tie -> 130 (even, not 131); 160 */
    {8, 1, "tensor", {0, 166, 154, 243, 255, 128, 130, 160}, {{-1.0f, 0.9921875f}}},
    /* channel asym: row 0 lo -1, hi .9, scale 1.9/255: 1.3/1.9*255 = 174.5 (174.47) -> 174;
     * 1.2/1.9*255 = 161.05 -> 161; row 1 lo -1/256, hi 127/128, scale 1/256 (exact):
     * 255; 0; (5/256 + 1/256)*256 = 6; (.25 + 1/256)*256 = 65 */
    {8, 1, "channel", {0, 174, 161, 255, 255, 0, 6, 65}, {{-1.0f, 0.9f}, {-0.00390625f, 0.9921875f}}},
    {8, 1, "group:2", {0, 255, 0, 255, 255, 0, 0, 255},
     {{-1.0f, 0.3f}, {0.2f, 0.9f}, {-0.00390625f, 0.9921875f}, {0.01953125f, 0.25f}}},
};

static const float *hand_input(int bits) { return bits == 2 ? W2 : bits == 4 ? W4 : W8; }

static int span_of(const char *granularity, int i) {
    if (strcmp(granularity, "tensor") == 0) return 0;
    if (strcmp(granularity, "channel") == 0) return i / 4;
    return i / 2;
}

static void test_hand_computed(void **state) {
    (void)state;
    int seen[9][2][3] = {{{0}}};
    for (size_t c = 0; c < sizeof HAND_CASES / sizeof *HAND_CASES; c++) {
        const HandCase *h = &HAND_CASES[c];
        float want[8], got[8];
        for (int i = 0; i < 8; i++) {
            const float *p = h->span[span_of(h->granularity, i)];
            if (!h->asymmetric) {
                want[i] = (float)(h->codes[i] * ((double)p[0] / qmax_of(h->bits)));
            } else {
                assert_true(h->codes[i] >= 0 && h->codes[i] <= levels_of(h->bits));
                want[i] = (float)(p[0] + h->codes[i] * (((double)p[1] - p[0]) / levels_of(h->bits)));
            }
        }
        QuantScheme s = scheme(h->bits, h->granularity, h->asymmetric);
        s.scale_dtype = SCALE_EXACT; /* the textbook levels; stored scales: test_scales.c */
        char what[96];
        snprintf(what, sizeof what, "%d-bit %s %s", h->bits, h->asymmetric ? "asym" : "sym", h->granularity);
        memset(got, 0xff, sizeof got);
        assert_int_equal(quantize_matrix(got, hand_input(h->bits), 2, 4, &s), 0);
        assert_floats_equal(what, got, want, 8);
        /* in place (out aliasing in) gives the same */
        memcpy(got, hand_input(h->bits), sizeof got);
        assert_int_equal(quantize_matrix(got, got, 2, 4, &s), 0);
        assert_floats_equal(what, got, want, 8);
        int g = strcmp(h->granularity, "tensor") == 0 ? 0 : strcmp(h->granularity, "channel") == 0 ? 1 : 2;
        seen[h->bits][h->asymmetric][g]++;
    }
    for (int b = 2; b <= 8; b += b == 2 ? 2 : 4)
        for (int a = 0; a < 2; a++)
            for (int g = 0; g < 3; g++) assert_int_equal(seen[b][a][g], 1); /* the table is complete */
    /* the exact cases, literally: */
    float out[8];
    QuantScheme s = scheme(2, "tensor", 0);
    s.scale_dtype = SCALE_EXACT;
    assert_int_equal(quantize_matrix(out, W2, 2, 4, &s), 0);
    assert_floats_equal("2-bit sym tensor", out, (const float[]){-1, 0, 0, 1, 0, 0, 0, 0}, 8);
    s = scheme(4, "channel", 0);
    s.scale_dtype = SCALE_EXACT;
    assert_int_equal(quantize_matrix(out, W4, 2, 4, &s), 0);
    assert_floats_equal("4-bit sym channel", out, (const float[]){-0.875f, 0.5f, 0.125f, 0.75f, 0.21875f, -0.0625f, 0, 0.0625f}, 8);
    s = scheme(8, "tensor", 1);
    s.scale_dtype = SCALE_EXACT;
    assert_int_equal(quantize_matrix(out, W8, 2, 4, &s), 0);
    assert_floats_equal("8-bit asym tensor (row 1)", out + 4, (const float[]){0.9921875f, 0.0f, 0.015625f, 0.25f}, 4);
}

/* ============================ every code reachable ============================ */

typedef void (*SpanQuantizer)(float *out, const float *in, int n, int bits, int asymmetric);

/* A span that sits exactly on every level: symmetric k/qmax for k = -qmax..qmax (absmax 1),
 * asymmetric -0.75 + k * (2/levels) for k = 0..levels (lo -0.75, hi 1.25). A correct quantizer
 * maps each onto its own code, so the output has as many distinct values as the format has
 * codes. */
/* The span quantizer with its scale kept exact (no storage rounding): the levels are then the
 * textbook ones, which the exact-level tests below write out by hand. */
static void span_exact(float *out, const float *in, int n, int bits, int asymmetric) {
    quantize_span_ref(out, in, n, bits, asymmetric, SCALE_EXACT);
}

static int reachable_levels(SpanQuantizer q, int bits, int asymmetric) {
    int n = asymmetric ? levels_of(bits) + 1 : 2 * qmax_of(bits) + 1;
    float in[256], out[256];
    for (int k = 0; k < n; k++)
        in[k] = asymmetric ? (float)(-0.75 + k * (2.0 / levels_of(bits))) : (float)((k - qmax_of(bits)) / (double)qmax_of(bits));
    q(out, in, n, bits, asymmetric);
    return count_distinct(out, n);
}

/* What ggml's q2_0 did wrong, in miniature: a clamp one code short of the format's range, so
 * one of its codes can never be emitted (the output stays plausible, only a level is lost). */
static void off_by_one_quantizer(float *out, const float *in, int n, int bits, int asymmetric) {
    span_exact(out, in, n, bits, asymmetric);
    double lo = in[0], hi = in[0];
    for (int i = 1; i < n; i++) { lo = fmin(lo, in[i]); hi = fmax(hi, in[i]); }
    if (asymmetric) {
        double scale = (hi - lo) / levels_of(bits);
        for (int i = 0; i < n; i++) {
            double q = fmin(nearbyint((in[i] - lo) / scale), levels_of(bits) - 1);
            out[i] = (float)(lo + q * scale);
        }
    } else {
        double scale = fmax(fabs(lo), fabs(hi)) / qmax_of(bits);
        for (int i = 0; i < n; i++) {
            double q = fmax(fmin(nearbyint(in[i] / scale), qmax_of(bits)), -qmax_of(bits) + 1);
            out[i] = (float)(q * scale);
        }
    }
}

static void test_every_code_reachable(void **state) {
    (void)state;
    for (int bits = 2; bits <= 8; bits++) {
        int sym = reachable_levels(span_exact, bits, 0), asym = reachable_levels(span_exact, bits, 1);
        if (sym != (1 << bits) - 1) fail_msg("%d-bit symmetric: %d distinct levels reached, expected 2^b-1 = %d", bits, sym, (1 << bits) - 1);
        if (asym != 1 << bits) fail_msg("%d-bit asymmetric: %d distinct levels reached, expected 2^b = %d", bits, asym, 1 << bits);
        /* and each level is the right one: code k dequantizes to the input that sat on it */
        float in[256], out[256];
        int n = 2 * qmax_of(bits) + 1;
        for (int k = 0; k < n; k++) in[k] = (float)((k - qmax_of(bits)) / (double)qmax_of(bits));
        span_exact(out, in, n, bits, 0);
        assert_floats_equal("symmetric levels", out, in, (size_t)n);
        /* the check catches a lost code: the off-by-one quantizer reaches one level fewer */
        assert_int_equal(reachable_levels(off_by_one_quantizer, bits, 0), (1 << bits) - 2);
        assert_int_equal(reachable_levels(off_by_one_quantizer, bits, 1), (1 << bits) - 1);
    }
    /* the same through quantize_matrix at each granularity (rows of 16 = 2^4 codes, 4-bit asym;
     * rows of 15 codes for 4-bit sym, padded to 16 with a repeat of 0) */
    float in[32], out[32];
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 16; k++) in[r * 16 + k] = (float)((r ? -2.0 : -1.0) + k * ((r ? 4.0 : 2.0) / 15.0));
    const char *grans[] = {"channel", "group:16"};
    for (int g = 0; g < 2; g++) {
        QuantScheme s = scheme(4, grans[g], 1);
        assert_int_equal(quantize_matrix(out, in, 2, 16, &s), 0);
        assert_int_equal(count_distinct(out, 16), 16);
        assert_int_equal(count_distinct(out + 16, 16), 16);
    }
}

/* ============================ random data: idempotence and rounding ============================ */

/* 6 x 32 values: rows of very different magnitudes (1e-3 .. 30), a row with one outlier, a row
 * of positives only (asymmetric's offset matters), a row of normals. */
static void random_matrix(float *w, Rng *rng) {
    const float mags[6] = {1e-3f, 0.05f, 1.0f, 30.0f, 1.0f, 0.3f};
    for (int r = 0; r < 6; r++) {
        for (int k = 0; k < 32; k++) {
            float *x = &w[r * 32 + k];
            if (r == 1) *x = 0.5f + rng_uniform(rng); /* positives */
            else if (r == 5) *x = rng_normal(rng);
            else *x = (2 * rng_uniform(rng) - 1);
            *x *= mags[r];
        }
    }
    w[4 * 32 + 17] = 25.0f; /* outlier */
}

static const char *GRANULARITIES[] = {"tensor", "channel", "group:1", "group:4", "group:8", "group:32"};

static int span_length(const char *granularity, int cols, int n) {
    if (strcmp(granularity, "tensor") == 0) return n;
    if (strcmp(granularity, "channel") == 0) return cols;
    return atoi(granularity + 6);
}

/* Quantizing a quantized matrix changes nothing, bit for bit (the extreme of each span maps back
 * to itself, so the second pass sees the same scale and lands every value on its own code). Also:
 * each span has at most as many distinct values as the format has codes, and round-to-nearest
 * errs by at most half a step (plus the one float rounding of the dequantized value). */
static void test_idempotent_random(void **state) {
    (void)state;
    enum { ROWS = 6, COLS = 32, N = ROWS * COLS };
    float w[N], once[N], twice[N];
    Rng rng;
    rng_seed(&rng, 4242);
    const ScaleDtype dtypes[] = {SCALE_EXACT, SCALE_F32, SCALE_F16, SCALE_BF16};
    for (int trial = 0; trial < 3; trial++) {
        random_matrix(w, &rng);
        for (int d = 0; d < 4; d++)
            for (int bits = 2; bits <= 8; bits++)
                for (int asym = 0; asym < 2; asym++)
                    for (size_t g = 0; g < sizeof GRANULARITIES / sizeof *GRANULARITIES; g++) {
                        QuantScheme s = scheme(bits, GRANULARITIES[g], asym);
                        s.scale_dtype = dtypes[d];
                        const char *dn = scale_dtype_name(dtypes[d]);
                        assert_int_equal(quantize_matrix(once, w, ROWS, COLS, &s), 0);
                        assert_int_equal(quantize_matrix(twice, once, ROWS, COLS, &s), 0);
                        int span = span_length(GRANULARITIES[g], COLS, N);
                        for (int off = 0; off < N; off += span) {
                            int distinct = count_distinct(once + off, span);
                            if (distinct > (asym ? 1 << bits : (1 << bits) - 1))
                                fail_msg("%d-bit %s %s %s: span at %d has %d distinct values", bits, asym ? "asym" : "sym",
                                         GRANULARITIES[g], dn, off, distinct);
                            /* round to nearest on the grid the stored scale (and minimum) define:
                             * no level of that grid is closer to the input than the one chosen */
                            double lo = w[off], hi = w[off], absmax = 0;
                            for (int i = off; i < off + span; i++) {
                                lo = fmin(lo, w[i]); hi = fmax(hi, w[i]); absmax = fmax(absmax, fabs(w[i]));
                            }
                            double scale = round_to_dtype(asym ? (hi - lo) / levels_of(bits) : absmax / qmax_of(bits), dtypes[d]);
                            double base = asym ? round_to_dtype(lo, dtypes[d]) : 0.0;
                            int q0 = asym ? 0 : -qmax_of(bits), q1 = asym ? levels_of(bits) : qmax_of(bits);
                            /* idempotent wherever the extremes land on the end codes: always when the
                             * stored scale is a normal number of its type and the stored minimum is
                             * off by less than a quarter step. A subnormal f16 scale (spans under
                             * about 6e-5 x qmax), or a bf16 minimum of a span much narrower than its
                             * distance from zero, is so coarse that an extreme lands a code short of
                             * the end and the second pass fits another scale (README) */
                            double min_normal = dtypes[d] == SCALE_F16 ? 0x1p-14 : dtypes[d] == SCALE_EXACT ? 0x1p-1022 : 0x1p-126;
                            int ends_land = !asym || scale == 0 ||
                                            (fabs(lo - base) < 0.25 * scale && fabs(hi - (base + q1 * scale)) < 0.25 * scale);
                            if ((scale == 0 || scale >= min_normal) && ends_land && memcmp(once + off, twice + off, (size_t)span * sizeof(float)) != 0) {
                                int i = off;
                                while (memcmp(&once[i], &twice[i], sizeof(float)) == 0) i++;
                                fail_msg("%d-bit %s %s %s: quantizing twice differs at %d: %a then %a", bits, asym ? "asym" : "sym",
                                         GRANULARITIES[g], dn, i, once[i], twice[i]);
                            }
                            for (int i = off; i < off + span; i++) {
                                double err = fabs((double)once[i] - w[i]), nearest = INFINITY;
                                for (int q = q0; q <= q1; q++) nearest = fmin(nearest, fabs(base + q * scale - w[i]));
                                if (!(err <= nearest * (1 + 1e-12) + 6e-8 * fabs(once[i])))
                                    fail_msg("%d-bit %s %s %s: element %d: |%.9g - %.9g| = %.3g, but a level lies %.3g away", bits,
                                             asym ? "asym" : "sym", GRANULARITIES[g], dn, i, once[i], w[i], err, nearest);
                            }
                        }
                    }
    }
}

/* The threaded loops against a plain serial loop over the README's partition, at 2 threads: every
 * span (every row, for activations) quantized once, in place, none skipped or shared between
 * threads. The output starts as NaN so a span no thread wrote shows. (The old test compared 1
 * with 2 threads of the same loop, which a wrong partition passes.) */
static void test_parallel_spans_match_serial(void **state) {
    (void)state;
#ifndef _OPENMP
    skip_because("built without OpenMP: nothing runs in parallel");
#else
    enum { ROWS = 37, COLS = 96, N = ROWS * COLS };
    float *w = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float)), *want = malloc(N * sizeof(float));
    assert_true(w && got && want);
    Rng rng;
    rng_seed(&rng, 4343);
    fill_normal(w, N, &rng, 0.5f);
    use_threads(2);
    int threads = 0;
#pragma omp parallel
#pragma omp single
    threads = omp_get_num_threads();
    if (threads != 2) fail_msg("a parallel region ran on %d threads, 2 asked for", threads);
    const char *granularities[] = {"tensor", "channel", "group:1", "group:8", "group:32"};
    for (size_t g = 0; g < sizeof granularities / sizeof *granularities; g++)
        for (int asym = 0; asym < 2; asym++) {
            QuantScheme s = scheme(3, granularities[g], asym);
            int span = span_length(granularities[g], COLS, N);
            for (int off = 0; off < N; off += span) quantize_span_ref(want + off, w + off, span, 3, asym, s.scale_dtype);
            for (int i = 0; i < N; i++) got[i] = NAN;
            assert_int_equal(quantize_matrix(got, w, ROWS, COLS, &s), 0);
            for (int i = 0; i < N; i++)
                if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
                    fail_msg("%s %s at 2 threads: element %d (row %d) is %a, the serial loop gives %a", granularities[g],
                             asym ? "asym" : "sym", i, i / COLS, got[i], want[i]);
        }
    quantize_activations_ref(want, w, ROWS, COLS, 4);
    for (int i = 0; i < N; i++) got[i] = NAN;
    quantize_activations(got, w, ROWS, COLS, 4);
    for (int i = 0; i < N; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("activations at 2 threads: element %d (row %d) is %a, the serial loop gives %a", i, i / COLS, got[i], want[i]);
    use_threads(1);
    free(w);
    free(got);
    free(want);
#endif
}

/* ============================ degenerate rows ============================ */

/* All-zero rows and rows of one value: no division by zero. Zeros stay zero at every scale
 * dtype. With the scale kept exact a constant row maps to itself; stored as f16, symmetric gives
 * qmax * f16(c / qmax) (the extreme lands on code qmax) and asymmetric the stored minimum f16(c)
 * (the range is zero, so the scale is zero and every code 0). */
static void test_zero_and_constant_rows(void **state) {
    (void)state;
    const float in[4][8] = {
        {0, 0, 0, 0, 0, 0, 0, 0},
        {0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f, 0.3f},
        {-2.5f, -2.5f, -2.5f, -2.5f, -2.5f, -2.5f, -2.5f, -2.5f},
        {0, 0, 0, 0, 1e-30f, 1e-30f, 1e-30f, 1e-30f}, /* group:4: a zero group and a tiny one */
    };
    float out[32], want[32];
    for (int bits = 2; bits <= 8; bits++)
        for (int asym = 0; asym < 2; asym++)
            for (int d = 0; d < 2; d++) {
                ScaleDtype dtype = d ? SCALE_F16 : SCALE_EXACT;
                for (int i = 0; i < 32; i++) {
                    double c = (&in[0][0])[i];
                    want[i] = d == 0 ? (float)c : asym ? (float)round_to_dtype(c, dtype)
                                                        : (float)(qmax_of(bits) * round_to_dtype(fabs(c) / qmax_of(bits), dtype) * (c < 0 ? -1 : 1));
                }
                const char *grans[] = {"channel", "group:4", "group:8"};
                for (int g = 0; g < 3; g++) {
                    QuantScheme s = scheme(bits, grans[g], asym);
                    s.scale_dtype = dtype;
                    assert_int_equal(quantize_matrix(out, &in[0][0], 4, 8, &s), 0);
                    assert_floats_equal(grans[g], out, want, 32);
                    for (int i = 0; i < 32; i++) assert_true(isfinite(out[i]));
                }
                /* one span of zeros: the whole tensor */
                QuantScheme s = scheme(bits, "tensor", asym);
                s.scale_dtype = dtype;
                assert_int_equal(quantize_matrix(out, &in[0][0], 1, 8, &s), 0);
                assert_floats_equal("zero tensor", out, &in[0][0], 8);
                /* a tensor with a zero row beside non-zero ones: zeros stay exactly zero */
                assert_int_equal(quantize_matrix(out, &in[0][0], 3, 8, &s), 0);
                if (!asym) assert_floats_equal("zero row in a tensor", out, &in[0][0], 8);
                for (int i = 0; i < 24; i++) assert_true(isfinite(out[i]));
            }
    /* spans of one element (group:1): with exact scales every value maps to itself */
    float w[12] = {0, -0.0f, 1e-38f, -3e-39f, 7.0f, -1e20f, 0.1f, 1, 2, 3, -4, 5};
    for (int asym = 0; asym < 2; asym++) {
        QuantScheme s = scheme(3, "group:1", asym);
        s.scale_dtype = SCALE_EXACT;
        assert_int_equal(quantize_matrix(out, w, 2, 6, &s), 0);
        assert_floats_equal("group:1", out, w, 12);
    }
    /* stored as f16 (values from numpy's float16, written out): a scale under half the smallest
     * subnormal (1e-38 / 3) rounds to zero and its span to 0; one beyond 65504 (1e20 / 3)
     * saturates, and the value clamps to -3 * 65504; the rest are 3 * f16(x / 3) symmetric and
     * f16(x) asymmetric */
    QuantScheme s = scheme(3, "group:1", 0);
    assert_int_equal(quantize_matrix(out, w, 2, 6, &s), 0);
    assert_floats_equal("group:1 f16 sym", out,
                        (const float[]){0, 0, 0, 0, 7.001953125f, -196512.0f, 0.0999755859375f, 0.999755859375f, 1.99951171875f, 3.0f,
                                        -3.9990234375f, 5.0009765625f},
                        12);
    s = scheme(3, "group:1", 1);
    assert_int_equal(quantize_matrix(out, w, 2, 6, &s), 0);
    assert_floats_equal("group:1 f16 asym", out, (const float[]){0, -0.0f, 0, -0.0f, 7, -65504, 0.0999755859375f, 1, 2, 3, -4, 5}, 12);
}

/* ============================ errors ============================ */

static void assert_error_names(const char *needle) {
    if (!strstr(qc_last_error(), needle)) fail_msg("error '%s' does not name '%s'", qc_last_error(), needle);
}

static void test_group_must_divide_row(void **state) {
    (void)state;
    float in[32] = {1}, out[32];
    QuantScheme s = scheme(4, "group:7", 0);
    qc_clear_error();
    assert_int_equal(quantize_matrix(out, in, 2, 16, &s), -1);
    assert_error_names("group:7");
    assert_error_names("16");
    s = scheme(4, "group:32", 0); /* larger than the row */
    assert_int_equal(quantize_matrix(out, in, 2, 16, &s), -1);
    assert_error_names("group:32");

    /* quantize_model: refused before any tensor changes, naming the group, a tensor and its row */
    GPT m;
    tiny_model(&m, 1, 31);
    float *before = malloc(m.num_params * sizeof(float));
    memcpy(before, m.params, m.num_params * sizeof(float));
    s = scheme(4, "group:7", 0);
    qc_clear_error();
    assert_int_equal(quantize_model(&m, &s, NULL, NULL), -1);
    assert_error_names("group:7");
    assert_error_names("transformer.h.0.attn.c_attn.weight");
    assert_error_names("16");
    assert_memory_equal(m.params, before, m.num_params * sizeof(float));
    /* group:32 divides mlp.c_proj's rows (64) but not the others (16): still nothing changes */
    s = scheme(4, "group:32", 0);
    assert_int_equal(quantize_model(&m, &s, NULL, NULL), -1);
    assert_memory_equal(m.params, before, m.num_params * sizeof(float));
    /* with biases in scope, group:16 divides every tensor but the last one, lm_head.bias (11
     * entries): the check must come before the first change */
    s = scheme(4, "group:16", 0);
    assert_int_equal(parse_scope("linear,bias", &s.scope), 0);
    qc_clear_error();
    assert_int_equal(quantize_model(&m, &s, NULL, NULL), -1);
    assert_error_names("group:16");
    assert_memory_equal(m.params, before, m.num_params * sizeof(float));
    free(before);
    gpt_free(&m);

    /* scheme validation: bits 2..8 or 32; group positive */
    QuantScheme bad;
    quant_scheme_default(&bad, 1);
    assert_int_equal(quant_scheme_check(&bad), -1);
    assert_error_names("1 weight bits");
    for (int b = 9; b <= 33; b += 24) {
        quant_scheme_default(&bad, b);
        assert_int_equal(quant_scheme_check(&bad), -1);
    }
    quant_scheme_default(&bad, 32);
    assert_int_equal(quant_scheme_check(&bad), 0);
    QuantScheme g;
    quant_scheme_default(&g, 4);
    assert_int_equal(parse_granularity("group:0", &g), -1);
    assert_int_equal(parse_granularity("group:", &g), -1);
    assert_int_equal(parse_granularity("group:x", &g), -1);
    assert_int_equal(parse_granularity("row", &g), -1);
    assert_int_equal(parse_granularity("group:12", &g), 0);
    assert_int_equal(g.granularity, GRAN_GROUP);
    assert_int_equal(g.group, 12);
}

/* ============================ quantize_model ============================ */

/* An independent quantization of one tensor: the README's spans, by quantize_span_ref. Vectors are
 * one row (quant.h). */
static void expected_tensor(float *out, const float *in, const TensorSpec *t, const QuantScheme *s) {
    int rows = t->cols ? t->rows : 1, cols = t->cols ? t->cols : t->rows;
    int span = s->granularity == GRAN_TENSOR ? rows * cols : s->granularity == GRAN_CHANNEL ? cols : s->group;
    for (int off = 0; off < rows * cols; off += span) quantize_span_ref(out + off, in + off, span, s->bits, s->asymmetric, s->scale_dtype);
}

static void check_quantize_model(const QuantScheme *s, uint64_t seed) {
    GPT m;
    tiny_model(&m, 1, seed);
    float *before = malloc(m.num_params * sizeof(float)), *want = malloc(m.num_params * sizeof(float));
    memcpy(before, m.params, m.num_params * sizeof(float));
    TensorQuantError *errors = calloc((size_t)m.n_specs, sizeof *errors);
    int n_errors = -1;
    char desc[256];
    quant_scheme_describe(s, desc, sizeof desc);
    if (quantize_model(&m, s, errors, &n_errors) != 0) fail_msg("%s: quantize_model: %s", desc, qc_last_error());
    int k = 0;
    for (int i = 0; i < m.n_specs; i++) {
        const TensorSpec *t = &m.specs[i];
        size_t n = tensor_numel(t);
        const float *got = m.params + t->offset, *was = before + t->offset;
        if (s->bits == 32 || !(s->scope & SCOPE_OF(t->role))) {
            if (memcmp(got, was, n * sizeof(float)) != 0) fail_msg("%s: out-of-scope %s changed", desc, t->name);
            continue;
        }
        expected_tensor(want + t->offset, was, t, s);
        if (memcmp(got, want + t->offset, n * sizeof(float)) != 0) fail_msg("%s: %s differs from its spans quantized one by one", desc, t->name);
        if (memcmp(got, was, n * sizeof(float)) == 0) fail_msg("%s: in-scope %s did not change", desc, t->name);
        /* relative Frobenius error, summed independently (long double, reverse order) */
        long double num = 0, den = 0;
        for (size_t j = n; j-- > 0;) {
            long double d = (long double)got[j] - was[j];
            num += d * d;
            den += (long double)was[j] * was[j];
        }
        if (k >= n_errors) fail_msg("%s: %d error entries, %s missing", desc, n_errors, t->name);
        if (strcmp(errors[k].name, t->name) != 0) fail_msg("%s: error entry %d is %s, expected %s", desc, k, errors[k].name, t->name);
        double rel = (double)sqrtl(num / den);
        assert_true(rel > 0);
        if (!(fabs(errors[k].rel_error - rel) <= 1e-12 * rel))
            fail_msg("%s: %s rel_error %.15g, independent %.15g", desc, t->name, errors[k].rel_error, rel);
        k++;
    }
    assert_int_equal(n_errors, k);
    assert_int_equal(m.act.scheme.bits, s->act.bits); /* the control arm (32 bits) keeps them too */
    free(errors);
    free(before);
    free(want);
    gpt_free(&m);
}

static void test_quantize_model_scope(void **state) {
    (void)state;
    QuantScheme s = scheme(4, "channel", 0); /* the default: linear + head */
    check_quantize_model(&s, 41);
    s = scheme(2, "tensor", 1);
    check_quantize_model(&s, 42);
    s = scheme(3, "group:8", 0);
    check_quantize_model(&s, 43);
    s = scheme(8, "channel", 1);
    assert_int_equal(parse_scope("embedding,bias", &s.scope), 0);
    check_quantize_model(&s, 44);
    s = scheme(5, "tensor", 0);
    assert_int_equal(parse_scope("norm", &s.scope), 0);
    act_scheme_inputs(&s.act, 6);
    check_quantize_model(&s, 45);
    s = scheme(32, "channel", 0); /* the control arm: no weight changes, no errors reported, act bits kept */
    act_scheme_inputs(&s.act, 4);
    check_quantize_model(&s, 46);
    /* the default scope: the four matrices of each block and the head, 2 * 4 + 1 tensors */
    GPT m;
    tiny_model(&m, 1, 47);
    int n = 0;
    s = scheme(4, "channel", 0);
    assert_int_equal(quantize_model(&m, &s, NULL, &n), 0);
    assert_int_equal(n, 2 * 4 + 1);
    gpt_free(&m);
}

/* Vectors (norms, biases) are quantized as one row (quant.h), so a group size that divides their
 * length must be accepted with them in scope: tiny_model's norms have 16 entries, group:4
 * divides them. */
static void test_group_with_vectors_in_scope(void **state) {
    (void)state;
    QuantScheme s = scheme(4, "group:4", 0);
    assert_int_equal(parse_scope("linear,norm", &s.scope), 0);
    check_quantize_model(&s, 48);
    /* and a group that does not divide a vector is refused naming that vector and its length */
    GPT m;
    tiny_model(&m, 1, 49);
    s = scheme(4, "group:16", 0);
    assert_int_equal(parse_scope("linear,bias", &s.scope), 0);
    qc_clear_error();
    assert_int_equal(quantize_model(&m, &s, NULL, NULL), -1);
    assert_error_names("lm_head.bias");
    assert_error_names("11");
    gpt_free(&m);
}

/* ============================ activations ============================ */

static void test_quantize_activations_per_row(void **state) {
    (void)state;
    enum { R = 5, C = 12 };
    float in[R * C], out[R * C], want[R * C];
    Rng rng;
    rng_seed(&rng, 51);
    const float mags[R] = {1e-3f, 1.0f, 100.0f, 0.0f, 1.0f};
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) in[r * C + c] = mags[r] * (2 * rng_uniform(&rng) - 1);
    in[4 * C + 3] = 50.0f; /* an outlier only flattens its own row */
    for (int bits = 2; bits <= 8; bits++) {
        quantize_activations(out, in, R, C, bits);
        quantize_activations_ref(want, in, R, C, bits);
        assert_memory_equal(out, want, sizeof out);
        /* per row: the 1e-3 row keeps several levels (per tensor it would be all zero) */
        if (bits >= 3) assert_true(count_distinct(out, C) >= 3);
        for (int c = 0; c < C; c++) assert_true(out[3 * C + c] == 0.0f);
    }
    /* the 2-bit hand case: row [-1, .5, .2, .9] -> [-1, 0, 0, 1]; row [.25, -.125, .1, .0625]
     * -> [.25, 0, 0, 0] (its own absmax, symmetric only) */
    quantize_activations(out, W2, 2, 4, 2);
    assert_floats_equal("activations, 2 bits", out, (const float[]){-1, 0, 0, 1, 0.25f, 0, 0, 0}, 8);
}

/* The fast activation quantizer gives the reference's bits: on odd shapes, on values that sit
 * exactly half-way between two codes (ties go to the even code), on zero rows, at 1 and 2 threads. */
static void test_activation_fast_path_matches_reference(void **state) {
    (void)state;
    enum { R = 131, C = 301 }; /* R * C above the threading threshold of the fast path */
    float *in = malloc(R * C * sizeof(float)), *fast = malloc(R * C * sizeof(float)), *ref = malloc(R * C * sizeof(float));
    Rng rng;
    rng_seed(&rng, 65);
    for (int bits = 2; bits <= 8; bits++) {
        int qmax = (1 << (bits - 1)) - 1;
        for (int r = 0; r < R; r++) {
            float step = ldexpf(1.0f, r % 7 - 3); /* a power of two: the scale absmax/qmax is exact */
            float *x = in + r * C;
            for (int c = 0; c < C; c++) x[c] = step * qmax * (2 * rng_uniform(&rng) - 1);
            x[0] = step * qmax; /* the absmax */
            for (int c = 1; c < C; c += 3) x[c] = step * ((int)rng_below(&rng, (uint64_t)(2 * qmax)) - qmax + 0.5f); /* ties */
            if (r == 5) memset(x, 0, C * sizeof(float));
        }
        quantize_activations_ref(ref, in, R, C, bits);
        for (int threads = 1; threads <= 2; threads++) {
            use_threads(threads);
            memset(fast, 0xff, R * C * sizeof(float));
            quantize_activations(fast, in, R, C, bits);
            if (memcmp(fast, ref, R * C * sizeof(float)) != 0)
                fail_msg("%d bits, %d threads: the fast activation quantizer differs from the reference (max %g)", bits, threads,
                         max_abs_diff(fast, ref, R * C));
        }
        use_threads(1);
    }
    /* a tie really goes to the even code: 2.5 steps -> 2, 3.5 -> 4, -0.5 -> 0 (4 bits, qmax 7) */
    float x[4] = {7.0f, 2.5f, 3.5f, -0.5f}, y[4];
    quantize_activations(y, x, 1, 4, 4);
    assert_floats_equal("ties to even", y, (const float[]){7.0f, 2.0f, 4.0f, -0.0f}, 4);
    free(in);
    free(fast);
    free(ref);
}

/* A batch and the model's logits, plain and with act_bits. */
enum { ACT_B = 2, ACT_T = 8, ACT_N = ACT_B * ACT_T };

/* One matmul of the forward recomputed from its saved input: out (N,OC) ?= x0 + Q(in).W^T + b. */
static void check_matmul_site(const char *what, const float *got, const float *residual, const float *in, const float *w,
                              const float *b, int N, int IC, int OC, int bits) {
    float *qin = malloc((size_t)N * IC * sizeof(float)), *want = malloc((size_t)N * OC * sizeof(float));
    quantize_activations(qin, in, N, IC, bits);
    if (residual) memcpy(want, residual, (size_t)N * OC * sizeof(float));
    matmul_forward_ref(want, qin, w, b, N, IC, OC, residual != NULL);
    /* the fast product against the naive loop: the same sums in another order, ~1e-5 relative
     * to the 1e-2 floor; a missing activation quantization moves the result by a fraction of a
     * quantization step (>1e-2), a thousand times more */
    double d = max_rel_diff(got, want, (size_t)N * OC, 1e-2);
    if (!(d <= 1e-4)) fail_msg("act_bits %d: %s does not read the quantized input (rel diff %g)", bits, what, d);
    free(qin);
    free(want);
}

static void test_act_bits_forward(void **state) {
    (void)state;
    GPT m;
    tiny_model(&m, ACT_B, 61);
    int C = m.config.d_model, V = m.config.vocab_size, L = m.config.n_layer;
    int32_t tokens[ACT_N];
    Rng rng;
    rng_seed(&rng, 62);
    for (int i = 0; i < ACT_N; i++) tokens[i] = (int32_t)rng_below(&rng, (uint64_t)V);
    size_t nl = (size_t)ACT_N * V;
    float *plain = malloc(nl * sizeof(float));
    gpt_forward(&m, tokens, ACT_B, ACT_T, NULL);
    memcpy(plain, m.logits, nl * sizeof(float));
    double diff2 = 0;
    for (int bits = 2; bits <= 8; bits += 6) {
        assert_int_equal(gpt_set_act_bits(&m, bits), 0);
        gpt_forward(&m, tokens, ACT_B, ACT_T, NULL);
        double d = max_abs_diff(m.logits, plain, nl);
        if (!(d > 1e-3)) fail_msg("act_bits %d: logits differ from plain by only %g", bits, d);
        if (bits == 2) diff2 = d;
        else assert_true(d < diff2); /* 8 bits is closer to float than 2 */
        /* each of the five quantized matrices reads the quantized input */
        GlobalParams g = global_view(&m, m.params);
        for (int l = 0; l < L; l++) {
            LayerParams p = layer_view(&m, m.params, l);
            LayerActivations *a = &m.layers[l];
            check_matmul_site("attn.c_attn", a->qkv, NULL, a->ln_1, p.attn_weight, p.attn_bias, ACT_N, C, 3 * C, bits);
            check_matmul_site("attn.c_proj", a->resid_mid, m.block_input[l], a->atty, p.attn_proj_weight, p.attn_proj_bias, ACT_N, C, C, bits);
            check_matmul_site("mlp.c_fc", a->fch, NULL, a->ln_2, p.fc_weight, p.fc_bias, ACT_N, C, 4 * C, bits);
            check_matmul_site("mlp.c_proj", a->resid_out, a->resid_mid, a->fch_gelu, p.mlp_proj_weight, p.mlp_proj_bias, ACT_N, 4 * C, C, bits);
        }
        check_matmul_site("lm_head", m.logits, NULL, m.ln_f, g.lm_head_weight, g.lm_head_bias, ACT_N, C, V, bits);
    }
    /* off again: bit for bit the plain forward */
    assert_int_equal(gpt_set_act_bits(&m, 0), 0);
    gpt_forward(&m, tokens, ACT_B, ACT_T, NULL);
    assert_memory_equal(m.logits, plain, nl * sizeof(float));
    /* quantize_model with act_bits 0 leaves the activations alone too */
    QuantScheme s = scheme(32, "channel", 0);
    assert_int_equal(quantize_model(&m, &s, NULL, NULL), 0);
    gpt_forward(&m, tokens, ACT_B, ACT_T, NULL);
    assert_memory_equal(m.logits, plain, nl * sizeof(float));
    /* a clone carries act_bits */
    assert_int_equal(gpt_set_act_bits(&m, 4), 0);
    gpt_forward(&m, tokens, ACT_B, ACT_T, NULL);
    memcpy(plain, m.logits, nl * sizeof(float));
    GPT clone;
    assert_int_equal(gpt_clone(&clone, &m, ACT_B), 0);
    assert_int_equal(clone.act.scheme.bits, 4);
    gpt_forward(&clone, tokens, ACT_B, ACT_T, NULL);
    assert_memory_equal(clone.logits, plain, nl * sizeof(float));
    gpt_free(&clone);
    free(plain);
    gpt_free(&m);
}

/* Training with activation quantization on is quantization-aware training with a straight-through
 * estimator: a weight gradient is dout^T . Q(in), from the input the matrix read (not from the
 * unquantized input, as it once was), and the input gradient passes through Q unchanged. */
static void test_act_bits_weight_gradients(void **state) {
    (void)state;
    GPT m;
    tiny_model(&m, ACT_B, 63);
    assert_int_equal(gpt_enable_training(&m), 0);
    int C = m.config.d_model, V = m.config.vocab_size;
    int32_t tokens[ACT_N], targets[ACT_N];
    Rng rng;
    rng_seed(&rng, 64);
    random_tokens(tokens, ACT_N, V, &rng);
    random_tokens(targets, ACT_N, V, &rng);
    assert_int_equal(gpt_set_act_bits(&m, 3), 0);
    assert_int_equal(gpt_forward(&m, tokens, ACT_B, ACT_T, NULL), 0);
    gpt_loss(&m, targets);
    gpt_zero_grad(&m);
    gpt_backward(&m, NULL, 1, 1, 0);
    GlobalParams g = global_view(&m, m.params), dg = global_view(&m, m.grads);
    float *qin = malloc((size_t)ACT_N * C * sizeof(float)), *want = calloc((size_t)V * C, sizeof(float));
    float *plain = calloc((size_t)V * C, sizeof(float)), *din = malloc((size_t)ACT_N * C * sizeof(float));
    float *want_din = malloc((size_t)ACT_N * C * sizeof(float));
    quantize_activations_ref(qin, m.ln_f, ACT_N, C, 3);
    matmul_backward_ref(want_din, want, NULL, m.dlogits, qin, g.lm_head_weight, ACT_N, C, V);
    matmul_backward_ref(NULL, plain, NULL, m.dlogits, m.ln_f, g.lm_head_weight, ACT_N, C, V);
    double d = max_rel_diff(dg.lm_head_weight, want, (size_t)V * C, 1e-3);
    if (!(d <= 1e-4)) fail_msg("lm_head weight gradient is not dlogits^T . Q(ln_f): rel diff %g", d);
    /* the check can tell: the gradient from the unquantized input is far off */
    assert_true(max_rel_diff(plain, want, (size_t)V * C, 1e-3) > 1e-2);
    /* straight through: the input gradient is dlogits . W whatever Q did */
    linear_backward(&m, NULL, m.config.n_layer * LINEARS_PER_BLOCK, din, NULL, NULL, m.dlogits, m.ln_f, ACT_N);
    assert_true(max_rel_diff(din, want_din, (size_t)ACT_N * C, 1e-3) <= 1e-4);
    free(qin);
    free(want);
    free(plain);
    free(din);
    free(want_din);
    gpt_free(&m);
}

/* ============================ metadata ============================ */

static void test_scheme_describe(void **state) {
    (void)state;
    QuantScheme s = scheme(4, "group:32", 1);
    act_scheme_inputs(&s.act, 8);
    char d[256];
    quant_scheme_describe(&s, d, sizeof d);
    assert_non_null(strstr(d, "int4"));
    assert_non_null(strstr(d, "group:32"));
    assert_non_null(strstr(d, "asym"));
    assert_non_null(strstr(d, "linear,head"));
    assert_non_null(strstr(d, "int8"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_computed),
        cmocka_unit_test(test_every_code_reachable),
        cmocka_unit_test(test_idempotent_random),
        cmocka_unit_test(test_parallel_spans_match_serial),
        cmocka_unit_test(test_zero_and_constant_rows),
        cmocka_unit_test(test_group_must_divide_row),
        cmocka_unit_test(test_quantize_model_scope),
        cmocka_unit_test(test_group_with_vectors_in_scope),
        cmocka_unit_test(test_quantize_activations_per_row),
        cmocka_unit_test(test_activation_fast_path_matches_reference),
        cmocka_unit_test(test_act_bits_forward),
        cmocka_unit_test(test_act_bits_weight_gradients),
        cmocka_unit_test(test_scheme_describe),
    };
    return cmocka_run_group_tests_name("quant", tests, setup_one_thread, restore_threads);
}
