/* stats: the small statistics the report rests on — mean, sample std, Student-t intervals, paired
 * differences, the Wilcoxon signed-rank test and the exact sign test. Plain double arrays in. */
#ifndef QCORR_STATS_H
#define QCORR_STATS_H

/* Arithmetic mean (1/n)·Σx_i; NaN when n = 0. */
double stats_mean(const double *x, int n);

/* Sample standard deviation sqrt(Σ(x_i − mean)² / (n − 1)); NaN when n < 2. */
double stats_std(const double *x, int n);

/* Regularized incomplete beta I_x(a, b) = B(x; a, b) / B(a, b), a, b > 0, 0 <= x <= 1, by the
 * Lentz continued fraction (Numerical Recipes §6.4), using the symmetry
 * I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly. */
double stats_incomplete_beta(double a, double b, double x);

/* Student-t CDF with df > 0 degrees of freedom:
 * F(t) = 1 − ½·I_{df/(df+t²)}(df/2, ½) for t >= 0, and F(−t) = 1 − F(t). */
double stats_t_cdf(double t, double df);

/* Student-t quantile: the t with F(t) = p, 0 < p < 1, by bracketing and bisection on
 * stats_t_cdf to about 1e-12 relative (e.g. t(0.975, 2) = 4.302653). */
double stats_t_quantile(double p, double df);

/* A mean with its spread and two-sided interval: mean ± t((1+level)/2, n−1)·std/√n.
 * std is NaN when n < 2, the interval NaN when n < 2. Non-finite inputs are the caller's job. */
typedef struct {
    int n;
    double mean, std, ci_low, ci_high;
} MeanCI;
MeanCI stats_mean_ci(const double *x, int n, double level);

/* d_i = a_i − b_i into out[0..n). */
void stats_paired_differences(const double *a, const double *b, int n, double *out);

/* |d| at or below this counts as a zero difference (dropped by both tests); two |d| within
 * this relative distance of each other count as tied. */
#define STATS_ZERO_DIFF 1e-12
#define STATS_TIE_REL 1e-9

/* Wilcoxon signed-rank test, two-sided, of "the differences are symmetric about 0".
 * Zero differences are dropped (Wilcoxon's convention); n_used = the rest. The |d| are ranked
 * 1..n_used with average ranks for ties; W+ = Σ ranks of positive differences.
 * - exact (n_used <= 30 and no ties): P(W+ = w) = c_n(w) / 2^n_used, c_n(w) the number of
 *   subsets of {1..n_used} with sum w; p = min(1, 2·min(P(W+ <= w), P(W+ >= w))).
 * - otherwise the normal approximation with tie and continuity correction:
 *   μ = n(n+1)/4, σ² = n(n+1)(2n+1)/24 − Σ(t³ − t)/48 over tie groups of size t,
 *   z = (|W+ − μ| − ½)/σ (0 if negative), p = erfc(z/√2).
 * p is NaN when n_used = 0. */
typedef struct {
    int n_used, n_zero;
    double w_plus;
    double p;
    int exact; /* 1: exact distribution; 0: normal approximation */
} WilcoxonResult;
WilcoxonResult stats_wilcoxon(const double *d, int n);
/* The smallest two-sided p the exact signed-rank test can give over n_used nonzero differences
 * (all of one sign): min(1, 2 / 2^n_used); NaN when n_used < 1. At n_used <= 5 it is 0.0625 or
 * more: no outcome of so few pairs reaches p < 0.05. */
double stats_wilcoxon_smallest_p(int n_used);

/* Exact two-sided sign test: zeros dropped, m = n_pos + n_neg, k = min(n_pos, n_neg),
 * p = min(1, 2·Σ_{i=0..k} C(m, i)/2^m); NaN when m = 0. */
typedef struct {
    int n_pos, n_neg, n_zero;
    double p;
} SignTestResult;
SignTestResult stats_sign_test(const double *d, int n);

/* Everything a paired comparison reports: the means of both sides, the differences a − b with
 * their 95% t-interval, and both tests on the differences. */
typedef struct {
    int n;
    double mean_a, mean_b;
    MeanCI diff;
    WilcoxonResult wilcoxon;
    SignTestResult sign;
} PairedComparison;
/* Fails (-1, error set) only on allocation failure. */
int stats_paired(const double *a, const double *b, int n, PairedComparison *out);

#endif
