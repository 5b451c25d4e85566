/* stats_reference: the statistics computed the slow, obvious way, with no code shared with
 * src/report/stats.c — the t quantile by integrating the density, Wilcoxon by enumerating every sign
 * assignment, the sign test by summing the binomial — for test_stats and test_report to check
 * against. Static inline: each suite uses some of them. */
#ifndef QCORR_TESTS_STATS_REFERENCE_H
#define QCORR_TESTS_STATS_REFERENCE_H

#include <math.h>

#include "testutil.h"

/* Student-t CDF by Simpson integration of the density from 0 to t (no incomplete beta). */
static inline double t_cdf_by_integration(double t, double df) {
    const int n = 4000; /* even */
    double c = exp(lgamma(0.5 * (df + 1)) - lgamma(0.5 * df)) / sqrt(df * M_PI);
    double h = t / n, sum = 0.0;
    for (int i = 0; i <= n; i++) {
        double x = i * h, f = c * pow(1.0 + x * x / df, -0.5 * (df + 1));
        sum += (i == 0 || i == n) ? f : (i % 2 ? 4 * f : 2 * f);
    }
    return 0.5 + sum * h / 3.0;
}

static inline double t_quantile_by_integration(double p, double df) {
    double lo = 0.0, hi = 200.0;
    for (int i = 0; i < 60; i++) {
        double mid = 0.5 * (lo + hi);
        if (t_cdf_by_integration(mid, df) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* Two-sided Wilcoxon p by enumerating all 2^m sign assignments of the ranks (no ties assumed). */
static inline double wilcoxon_by_enumeration(const double *d, int n) {
    double v[32];
    int m = 0;
    for (int i = 0; i < n; i++)
        if (d[i] != 0.0) v[m++] = d[i];
    assert_true(m <= 24);
    int rank[32];
    double w = 0.0;
    for (int i = 0; i < m; i++) {
        rank[i] = 1;
        for (int j = 0; j < m; j++) {
            assert_true(j == i || fabs(v[j]) != fabs(v[i])); /* the reference assumes no ties */
            if (fabs(v[j]) < fabs(v[i])) rank[i]++;
        }
        if (v[i] > 0) w += rank[i];
    }
    long below = 0, above = 0;
    for (long mask = 0; mask < (1L << m); mask++) {
        int s = 0;
        for (int i = 0; i < m; i++)
            if (mask >> i & 1) s += rank[i];
        if (s <= w) below++;
        if (s >= w) above++;
    }
    double p = 2.0 * (below < above ? below : above) / (double)(1L << m);
    return p > 1.0 ? 1.0 : p;
}

/* Two-sided sign test by summing binomial(n, 1/2) probabilities directly. */
static inline double sign_test_by_binomial(int n_pos, int n_neg) {
    int n = n_pos + n_neg, k = n_pos < n_neg ? n_pos : n_neg;
    double sum = 0.0;
    for (int i = 0; i <= k; i++) {
        double c = 1.0;
        for (int j = 1; j <= i; j++) c = c * (n - i + j) / j;
        sum += c;
    }
    double p = 2.0 * sum / pow(2.0, n);
    return p > 1.0 ? 1.0 : p;
}

#endif
