/* stats: see stats.h. Double precision throughout; the tests check the t quantiles against
 * closed forms and tables, and both rank tests against enumeration and direct binomial sums. */
#include "report/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

double stats_mean(const double *x, int n) {
    if (n <= 0) return NAN;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

double stats_std(const double *x, int n) {
    if (n < 2) return NAN;
    double m = stats_mean(x, n), s = 0.0;
    for (int i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (n - 1));
}

/* Continued fraction of I_x(a, b) (modified Lentz); converges fast for x < (a+1)/(a+b+2). */
static double beta_continued_fraction(double a, double b, double x) {
    const double tiny = 1e-300, eps = 1e-16;
    double qab = a + b, qap = a + 1.0, qam = a - 1.0;
    double c = 1.0, d = 1.0 - qab * x / qap;
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double h = d;
    for (int m = 1; m <= 10000; m++) {
        double m2 = 2.0 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        double delta = d * c;
        h *= delta;
        if (fabs(delta - 1.0) < eps) break;
    }
    return h;
}

double stats_incomplete_beta(double a, double b, double x) {
    if (!(a > 0.0) || !(b > 0.0) || isnan(x)) return NAN;
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    double log_front = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1.0) / (a + b + 2.0)) return exp(log_front) * beta_continued_fraction(a, b, x) / a;
    return 1.0 - exp(log_front) * beta_continued_fraction(b, a, 1.0 - x) / b;
}

double stats_t_cdf(double t, double df) {
    if (isnan(t) || !(df > 0.0)) return NAN;
    if (isinf(t)) return t > 0 ? 1.0 : 0.0;
    double t2 = t * t;
    /* Two equivalent forms; pick the one whose beta argument is not close to 1, so the tail
     * (large |t|) and the centre (small |t|) both keep their precision. */
    double tail;
    if (t2 > df) tail = 0.5 * stats_incomplete_beta(0.5 * df, 0.5, df / (df + t2));
    else tail = 0.5 - 0.5 * stats_incomplete_beta(0.5, 0.5 * df, t2 / (df + t2));
    return t >= 0 ? 1.0 - tail : tail;
}

double stats_t_quantile(double p, double df) {
    if (!(p > 0.0 && p < 1.0) || !(df > 0.0)) return NAN;
    if (p == 0.5) return 0.0;
    if (p < 0.5) return -stats_t_quantile(1.0 - p, df);
    double lo = 0.0, hi = 1.0;
    while (stats_t_cdf(hi, df) < p) {
        lo = hi;
        hi *= 2.0;
        if (hi > 1e300) return INFINITY;
    }
    for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (stats_t_cdf(mid, df) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

MeanCI stats_mean_ci(const double *x, int n, double level) {
    MeanCI r = {n, stats_mean(x, n), stats_std(x, n), NAN, NAN};
    if (n >= 2) {
        double half = stats_t_quantile(0.5 + 0.5 * level, n - 1) * r.std / sqrt((double)n);
        r.ci_low = r.mean - half;
        r.ci_high = r.mean + half;
    }
    return r;
}

void stats_paired_differences(const double *a, const double *b, int n, double *out) {
    for (int i = 0; i < n; i++) out[i] = a[i] - b[i];
}

/* one non-zero difference: its size and whether it was positive */
typedef struct {
    double abs;
    int positive;
} SignedAbs;

static int compare_abs(const void *pa, const void *pb) {
    double a = ((const SignedAbs *)pa)->abs, b = ((const SignedAbs *)pb)->abs;
    return (a > b) - (a < b);
}

static int nearly_equal(double a, double b) { return fabs(a - b) <= STATS_TIE_REL * fmax(fabs(a), fabs(b)); }

double stats_wilcoxon_smallest_p(int n_used) { return n_used < 1 ? NAN : fmin(1.0, ldexp(2.0, -n_used)); }

WilcoxonResult stats_wilcoxon(const double *d, int n) {
    WilcoxonResult r = {0, 0, 0.0, NAN, 0};
    SignedAbs *v = malloc(sizeof(SignedAbs) * (size_t)(n > 0 ? n : 1));
    if (!v) return r;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (fabs(d[i]) <= STATS_ZERO_DIFF) { r.n_zero++; continue; }
        v[m].abs = fabs(d[i]);
        v[m].positive = d[i] > 0;
        m++;
    }
    r.n_used = m;
    if (m == 0) { free(v); return r; }
    qsort(v, (size_t)m, sizeof *v, compare_abs);
    /* average ranks over runs of tied |d|; W+ sums the rank of each positive difference */
    double tie_term = 0.0; /* sum of t^3 - t over tie groups */
    int has_ties = 0;
    for (int i = 0; i < m;) {
        int j = i + 1;
        while (j < m && nearly_equal(v[j].abs, v[j - 1].abs)) j++;
        int t = j - i;
        if (t > 1) { has_ties = 1; tie_term += (double)t * t * t - t; }
        double rank = 0.5 * ((i + 1) + j); /* mean of ranks i+1..j */
        for (int k = i; k < j; k++)
            if (v[k].positive) r.w_plus += rank;
        i = j;
    }
    free(v);
    if (m <= 30 && !has_ties) {
        /* exact: counts[s] = number of subsets of {1..m} summing to s (fits a double: <= 2^30) */
        int max_sum = m * (m + 1) / 2;
        double *counts = calloc((size_t)max_sum + 1, sizeof(double));
        if (!counts) return r;
        counts[0] = 1.0;
        for (int k = 1; k <= m; k++)
            for (int s = max_sum; s >= k; s--) counts[s] += counts[s - k];
        int w = (int)lround(r.w_plus);
        double below = 0.0, above = 0.0, total = ldexp(1.0, m);
        for (int s = 0; s <= max_sum; s++) {
            if (s <= w) below += counts[s];
            if (s >= w) above += counts[s];
        }
        free(counts);
        r.p = fmin(1.0, 2.0 * fmin(below, above) / total);
        r.exact = 1;
    } else {
        double mu = m * (m + 1.0) / 4.0;
        double var = m * (m + 1.0) * (2.0 * m + 1.0) / 24.0 - tie_term / 48.0;
        r.exact = 0;
        if (var <= 0.0) { r.p = 1.0; return r; }
        double z = (fabs(r.w_plus - mu) - 0.5) / sqrt(var);
        if (z < 0.0) z = 0.0;
        r.p = fmin(1.0, erfc(z / sqrt(2.0)));
    }
    return r;
}

SignTestResult stats_sign_test(const double *d, int n) {
    SignTestResult r = {0, 0, 0, NAN};
    for (int i = 0; i < n; i++) {
        if (fabs(d[i]) <= STATS_ZERO_DIFF) r.n_zero++;
        else if (d[i] > 0) r.n_pos++;
        else r.n_neg++;
    }
    int m = r.n_pos + r.n_neg, k = r.n_pos < r.n_neg ? r.n_pos : r.n_neg;
    if (m == 0) return r;
    /* C(m, i)/2^m in log space so large m cannot underflow the first terms */
    double tail = 0.0;
    for (int i = 0; i <= k; i++) tail += exp(lgamma(m + 1.0) - lgamma(i + 1.0) - lgamma(m - i + 1.0) - m * log(2.0));
    r.p = fmin(1.0, 2.0 * tail);
    return r;
}

int stats_paired(const double *a, const double *b, int n, PairedComparison *out) {
    memset(out, 0, sizeof *out);
    out->n = n;
    double *d = qc_malloc(sizeof(double) * (size_t)(n > 0 ? n : 1), "paired differences");
    if (!d) return -1;
    stats_paired_differences(a, b, n, d);
    out->mean_a = stats_mean(a, n);
    out->mean_b = stats_mean(b, n);
    out->diff = stats_mean_ci(d, n, 0.95);
    out->wilcoxon = stats_wilcoxon(d, n);
    out->sign = stats_sign_test(d, n);
    free(d);
    return 0;
}
