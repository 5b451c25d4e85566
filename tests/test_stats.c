/* test_stats: the statistics of the report — t quantiles against closed forms, a table and an
 * independent numeric integration; mean, std and intervals; Wilcoxon against enumeration of every
 * sign assignment; the sign test against a direct binomial sum. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/stats.h"
#include "stats_reference.h"

static void assert_rel(double got, double want, double rel, const char *what) {
    if (!(fabs(got - want) <= rel * fabs(want))) fail_msg("%s: got %.9g, want %.9g (relative tolerance %g)", what, got, want, rel);
}

/* ======================================================================================
 * statistics
 * ====================================================================================== */

static void test_t_quantile_closed_forms(void **state) {
    (void)state;
    const double ps[] = {0.6, 0.75, 0.9, 0.95, 0.975, 0.995, 0.9995};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
        double p = ps[i];
        /* df = 1 (Cauchy): tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p)) */
        assert_rel(stats_t_quantile(p, 1), tan(M_PI * (p - 0.5)), 1e-9, "t quantile df=1");
        assert_rel(stats_t_quantile(p, 2), (2 * p - 1) / sqrt(2 * p * (1 - p)), 1e-9, "t quantile df=2");
        /* df = 4: alpha = 4p(1-p), q = cos(acos(sqrt(alpha)) / 3) / sqrt(alpha), t = 2 sqrt(q - 1) */
        double alpha = 4 * p * (1 - p), q = cos(acos(sqrt(alpha)) / 3.0) / sqrt(alpha);
        assert_rel(stats_t_quantile(p, 4), 2 * sqrt(q - 1), 1e-9, "t quantile df=4");
        /* symmetry */
        assert_rel(stats_t_quantile(1 - p, 7), -stats_t_quantile(p, 7), 1e-12, "t quantile symmetry");
    }
    assert_close(stats_t_quantile(0.975, 2), 4.302653, 1e-6);
    assert_close(stats_t_quantile(0.5, 3), 0.0, 0.0);
    assert_close(stats_t_quantile(0.975, 1e7), 1.959964, 2e-6); /* the normal limit */
    assert_true(isnan(stats_t_quantile(1.0, 3)));
    assert_true(isnan(stats_t_quantile(0.9, 0)));
}

static void test_t_quantile_table(void **state) {
    (void)state;
    /* two-sided 95% critical values, the printed table (3 decimals) */
    static const double table[31] = {0,     12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                     2.201, 2.179,  2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080,
                                     2.074, 2.069,  2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
    for (int df = 1; df <= 30; df++) {
        double t = stats_t_quantile(0.975, df);
        if (fabs(t - table[df]) > 5.01e-4) fail_msg("t(0.975, %d) = %.6f, table %.3f", df, t, table[df]);
        double ref = t_quantile_by_integration(0.975, df);
        if (fabs(t - ref) > 1e-7 * ref) fail_msg("t(0.975, %d) = %.10f, by integration %.10f", df, t, ref);
        /* and the CDF inverts it */
        assert_close(stats_t_cdf(t, df), 0.975, 1e-12);
    }
    assert_close(stats_t_quantile(0.995, 10), 3.169273, 1e-6);
    assert_close(stats_t_quantile(0.95, 5), 2.015048, 1e-6);
    assert_close(stats_t_quantile(0.975, 60), 2.000298, 1e-6);
    assert_close(stats_t_quantile(0.975, 120), 1.979930, 1e-6);
}

static void test_incomplete_beta_identities(void **state) {
    (void)state;
    for (double x = 0.05; x < 1.0; x += 0.1) {
        assert_close(stats_incomplete_beta(1, 1, x), x, 1e-13);
        assert_close(stats_incomplete_beta(3, 1, x), x * x * x, 1e-13);
        assert_close(stats_incomplete_beta(2.5, 4, x), 1 - stats_incomplete_beta(4, 2.5, 1 - x), 1e-13);
    }
    assert_close(stats_incomplete_beta(7, 7, 0.5), 0.5, 1e-13);
    assert_close(stats_incomplete_beta(2, 3, 0.0), 0.0, 0.0);
    assert_close(stats_incomplete_beta(2, 3, 1.0), 1.0, 0.0);
}

static void test_mean_std_ci(void **state) {
    (void)state;
    const double x[] = {2, 4, 4, 4, 5, 5, 7, 9};
    assert_close(stats_mean(x, 8), 5.0, 1e-15);
    assert_close(stats_std(x, 8), sqrt(32.0 / 7.0), 1e-14);
    const double y[] = {1, 2, 3};
    MeanCI m = stats_mean_ci(y, 3, 0.95);
    assert_int_equal(m.n, 3);
    assert_close(m.mean, 2.0, 1e-15);
    assert_close(m.std, 1.0, 1e-15);
    assert_close(m.ci_low, 2.0 - 4.302653 / sqrt(3.0), 1e-6);
    assert_close(m.ci_high, 2.0 + 4.302653 / sqrt(3.0), 1e-6);
    m = stats_mean_ci(y, 1, 0.95);
    assert_true(isnan(m.std) && isnan(m.ci_low) && isnan(m.ci_high));
    assert_true(isnan(stats_mean(y, 0)));
    double a[] = {3, 5, 8}, b[] = {1, 5, 9}, d[3];
    stats_paired_differences(a, b, 3, d);
    assert_close(d[0], 2, 0);
    assert_close(d[1], 0, 0);
    assert_close(d[2], -1, 0);
}

static void test_wilcoxon_exact_against_enumeration(void **state) {
    (void)state;
    /* hand examples */
    const double d1[] = {1.5, -0.3, 2.2, 0.9, -1.1, 3.0, 0.4};
    WilcoxonResult w = stats_wilcoxon(d1, 7);
    assert_int_equal(w.exact, 1);
    assert_int_equal(w.n_used, 7);
    /* ranks of |d|: 0.3→1, 0.4→2, 0.9→3, 1.1→4, 1.5→5, 2.2→6, 3.0→7; W+ = 2+3+5+6+7 = 23 */
    assert_close(w.w_plus, 23, 0);
    assert_close(w.p, wilcoxon_by_enumeration(d1, 7), 1e-15);
    assert_close(w.p, 0.15625, 1e-15); /* 2 * 10/128: 10 subsets of {1..7} sum to <= 28 - 23 */
    /* all ten positive: p = 2 / 2^10 */
    double d2[10];
    for (int i = 0; i < 10; i++) d2[i] = 0.1 * (i + 1);
    assert_close(stats_wilcoxon(d2, 10).p, 2.0 / 1024, 1e-15);
    /* zeros are dropped */
    const double d3[] = {0, 1, 2, -3, 4, 5, 0};
    w = stats_wilcoxon(d3, 7);
    assert_int_equal(w.n_used, 5);
    assert_int_equal(w.n_zero, 2);
    assert_close(w.p, wilcoxon_by_enumeration(d3, 7), 1e-15);
    /* random vectors of every length 1..16 */
    Rng rng;
    rng_seed(&rng, 11);
    for (int n = 1; n <= 16; n++)
        for (int rep = 0; rep < 3; rep++) {
            double d[16];
            for (int i = 0; i < n; i++) d[i] = rng_normal(&rng) + 0.3 * rep;
            w = stats_wilcoxon(d, n);
            assert_int_equal(w.exact, 1);
            double ref = wilcoxon_by_enumeration(d, n);
            if (fabs(w.p - ref) > 1e-14) fail_msg("n=%d: exact p %.15g, enumeration %.15g", n, w.p, ref);
        }
    /* nothing left: no p */
    const double zeros[] = {0, 0};
    assert_true(isnan(stats_wilcoxon(zeros, 2).p));
    /* the smallest p n pairs can give is the test's p when every difference has one sign (by
     * enumeration), so 5 pairs or fewer never reach 0.05 (4: 0.125, the quick preset's runs) */
    for (int n = 1; n <= 12; n++) {
        double d[12];
        for (int i = 0; i < n; i++) d[i] = -0.1 * (i + 1);
        assert_close(stats_wilcoxon_smallest_p(n), wilcoxon_by_enumeration(d, n), 1e-15);
        if ((stats_wilcoxon_smallest_p(n) < 0.05) != (n >= 6)) fail_msg("n = %d: smallest p %g", n, stats_wilcoxon_smallest_p(n));
    }
    assert_close(stats_wilcoxon_smallest_p(4), 0.125, 0);
    assert_true(isnan(stats_wilcoxon_smallest_p(0)));
}

static void test_wilcoxon_ties_and_large_n_use_normal(void **state) {
    (void)state;
    /* |d| = 1,1,1,2,2,3: average ranks 2,2,2,4.5,4.5,6; W+ = 2+2+4.5+4.5+6 = 19; mu = 10.5;
     * sigma^2 = 6*7*13/24 - ((27-3) + (8-2))/48 = 22.125; z = (8.5 - 0.5)/sqrt(22.125) */
    const double d[] = {1, 1, -1, 2, 2, 3};
    WilcoxonResult w = stats_wilcoxon(d, 6);
    assert_int_equal(w.exact, 0);
    assert_close(w.w_plus, 19, 1e-12);
    assert_close(w.p, erfc(8.0 / sqrt(22.125) / sqrt(2.0)), 1e-14);
    /* 40 distinct differences: beyond the exact table, normal without tie term */
    double e[40];
    double w_plus = 0;
    for (int i = 0; i < 40; i++) {
        e[i] = (i % 3 == 0 ? -1.0 : 1.0) * (i + 1);
        if (e[i] > 0) w_plus += i + 1;
    }
    w = stats_wilcoxon(e, 40);
    assert_int_equal(w.exact, 0);
    assert_close(w.w_plus, w_plus, 1e-12);
    double mu = 40 * 41 / 4.0, sigma = sqrt(40 * 41 * 81 / 24.0);
    assert_close(w.p, erfc((fabs(w_plus - mu) - 0.5) / sigma / sqrt(2.0)), 1e-14);
}

static void test_sign_test_binomial(void **state) {
    (void)state;
    const double d[] = {1, 2, 3, 4, 5, -6};
    SignTestResult s = stats_sign_test(d, 6);
    assert_int_equal(s.n_pos, 5);
    assert_int_equal(s.n_neg, 1);
    assert_close(s.p, 2.0 * 7 / 64, 1e-15);
    const double balanced[] = {1, -1, 0, 2, -2};
    s = stats_sign_test(balanced, 5);
    assert_int_equal(s.n_zero, 1);
    assert_close(s.p, 1.0, 0);
    for (int n_pos = 0; n_pos <= 25; n_pos += 3)
        for (int n_neg = 0; n_neg <= 25; n_neg += 4) {
            if (n_pos + n_neg == 0) continue;
            double x[50];
            int n = 0;
            for (int i = 0; i < n_pos; i++) x[n++] = 1.0 + i;
            for (int i = 0; i < n_neg; i++) x[n++] = -1.0 - i;
            assert_rel(stats_sign_test(x, n).p, sign_test_by_binomial(n_pos, n_neg), 1e-12, "sign test p");
        }
    assert_true(isnan(stats_sign_test(balanced + 2, 1).p));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_t_quantile_closed_forms),
        cmocka_unit_test(test_t_quantile_table),
        cmocka_unit_test(test_incomplete_beta_identities),
        cmocka_unit_test(test_mean_std_ci),
        cmocka_unit_test(test_wilcoxon_exact_against_enumeration),
        cmocka_unit_test(test_wilcoxon_ties_and_large_n_use_normal),
        cmocka_unit_test(test_sign_test_binomial),
    };
    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
