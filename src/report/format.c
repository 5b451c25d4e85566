/* report/format: how numbers appear in report.md — percentages, intervals, p-values, nats and
 * the "mean ± std (n)" cell — so every table prints a statistic the same way; and the one label of a
 * quantizer with its transform. */
#include "report/parts.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void put_pct(TextBuf *t, double fraction, int decimals) {
    if (isfinite(fraction)) textbuf_printf(t, "%.*f", decimals, 100.0 * fraction);
    else textbuf_printf(t, "n/a");
}
/* "72.3 ± 4.1" (percent); the ± part is dropped when std is undefined (n < 2) */
void put_mean_std(TextBuf *t, const MeanCI *m) {
    put_pct(t, m->mean, 1);
    if (isfinite(m->std)) {
        textbuf_printf(t, " ± ");
        put_pct(t, m->std, 1);
    }
}
void put_ci(TextBuf *t, double lo, double hi, int decimals) {
    if (!isfinite(lo) || !isfinite(hi)) { textbuf_printf(t, "n/a"); return; }
    textbuf_printf(t, "[");
    put_pct(t, lo, decimals);
    textbuf_printf(t, ", ");
    put_pct(t, hi, decimals);
    textbuf_printf(t, "]");
}
void put_interval(TextBuf *t, double lo, double hi, const char *num_fmt) {
    if (!isfinite(lo) || !isfinite(hi)) { textbuf_printf(t, "n/a"); return; }
    textbuf_printf(t, "[");
    textbuf_printf(t, num_fmt, lo);
    textbuf_printf(t, ", ");
    textbuf_printf(t, num_fmt, hi);
    textbuf_printf(t, "]");
}
void put_p(TextBuf *t, double p) {
    if (isfinite(p)) textbuf_printf(t, "%.3g", p);
    else textbuf_printf(t, "n/a");
}
void put_nats(TextBuf *t, double v) {
    if (isfinite(v)) textbuf_printf(t, "%.4f", v);
    else textbuf_printf(t, "n/a");
}
void put_nats_ci(TextBuf *t, const MeanCI *m) {
    put_nats(t, m->mean);
    if (isfinite(m->ci_low)) textbuf_printf(t, " [%.4f, %.4f]", m->ci_low, m->ci_high);
    textbuf_printf(t, " (n=%d)", m->n);
}
/* the cell of a factor table: "72.3 ± 4.1 (n=12)" */
void put_cell(TextBuf *t, const MeanCI *m) {
    if (m->n == 0) { textbuf_printf(t, " – |"); return; }
    textbuf_printf(t, " ");
    put_mean_std(t, m);
    textbuf_printf(t, " (n=%d) |", m->n);
}
void put_wilcoxon(TextBuf *t, const WilcoxonResult *w) {
    put_p(t, w->p);
    if (isfinite(w->p)) textbuf_printf(t, " (%s)", w->exact ? "exact" : "normal");
}
void put_sign(TextBuf *t, const SignTestResult *s) {
    put_p(t, s->p);
    textbuf_printf(t, " (%d+/%d−)", s->n_pos, s->n_neg);
}

void put_rank_tests(TextBuf *t, const PairedComparison *pc) {
    put_wilcoxon(t, &pc->wilcoxon);
    textbuf_printf(t, " | ");
    put_sign(t, &pc->sign);
}
const char *kind_label(int hidden, char *buf, size_t size) {
    if (hidden == 0) snprintf(buf, size, "linear (h=0)");
    else snprintf(buf, size, "MLP (h=%d)", hidden);
    return buf;
}

void put_gap(TextBuf *t, double mean, double se) {
    if (!isfinite(mean)) textbuf_printf(t, "n/a");
    else if (fabs(mean) >= 1e-3) textbuf_printf(t, "%.4f", mean);
    else textbuf_printf(t, "%.1e", mean);
    textbuf_printf(t, " ± ");
    if (!isfinite(se)) textbuf_printf(t, "n/a");
    else if (se >= 1e-3) textbuf_printf(t, "%.4f", se);
    else textbuf_printf(t, "%.1e", se);
}

void method_with_storage(const Run *r, char *out, size_t size) {
    long b = r->rec.correction_stored_bits;
    const char *m = r->rec.method ? r->rec.method : "";
    if (b != SCHEMA_NO_INTEGER && b < 32) snprintf(out, size, "%s @%ld-bit", m, b);
    else snprintf(out, size, "%s", m);
}

void quantizer_with_transform(const Run *r, char *out, size_t size) {
    const char *q = r->rec.quantizer ? r->rec.quantizer : "", *t = strstr(r->rec.scheme, " transform=");
    if (!t) {
        snprintf(out, size, "%s", q);
        return;
    }
    t += strlen(" transform=");
    snprintf(out, size, "%s+%.*s", q, (int)strcspn(t, " :"), t);
}
