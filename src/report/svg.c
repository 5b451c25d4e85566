/* svg: see svg.h. Fixed canvas (760×460), generic "sans-serif" text, a white background (so the
 * charts stay legible in dark-mode viewers), tab10 colours for series and a viridis scale. */
#include "report/svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* ---- text buffer ---- */

void textbuf_append(TextBuf *b, const char *text, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            qc_error("out of memory growing a text buffer to %zu bytes", cap);
            b->failed = 1;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, text, n);
    b->len += n;
    b->data[b->len] = 0;
}

void textbuf_printf(TextBuf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) { textbuf_append(b, small, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        qc_error("out of memory formatting %d bytes of text", n);
        b->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    textbuf_append(b, big, (size_t)n);
    free(big);
}

void textbuf_free(TextBuf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void svg_escape(TextBuf *b, const char *text) {
    for (const char *p = text; *p; p++) {
        switch (*p) {
        case '&': textbuf_append(b, "&amp;", 5); break;
        case '<': textbuf_append(b, "&lt;", 4); break;
        case '>': textbuf_append(b, "&gt;", 4); break;
        case '"': textbuf_append(b, "&quot;", 6); break;
        default: textbuf_append(b, p, 1);
        }
    }
}

/* ---- layout and axes ---- */

enum { WIDTH = 760, HEIGHT = 460, PLOT_LEFT = 80, PLOT_TOP = 50, PLOT_RIGHT = WIDTH - 200, PLOT_BOTTOM = HEIGHT - 70 };

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define PALETTE_SIZE ((int)(sizeof palette / sizeof *palette))

/* An axis: linear, its ends whole multiples of a 1-2-5 step; or logarithmic (log_scale), its
 * ends the data's padded by a few percent of the span (out to a tick when one is near), ticks at
 * m x 10^k for the densest set of mantissas m that gives at most 8 ticks. */
typedef struct {
    double lo, hi, step;
    int decimals; /* for tick labels */
    int log_scale;
} Axis;

static Axis make_axis(double lo, double hi, int target_ticks) {
    Axis a = {0};
    if (!isfinite(lo) || !isfinite(hi)) { lo = 0.0; hi = 1.0; }
    if (!(hi > lo)) {
        double pad = fabs(lo) > 0 ? 0.1 * fabs(lo) : 1.0;
        lo -= pad;
        hi += pad;
    }
    double raw = (hi - lo) / target_ticks, magnitude = pow(10.0, floor(log10(raw))), f = raw / magnitude;
    double nice = f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0;
    a.step = nice * magnitude;
    a.lo = floor(lo / a.step + 1e-9) * a.step;
    a.hi = ceil(hi / a.step - 1e-9) * a.step;
    int d = (int)-floor(log10(a.step) + 1e-9);
    a.decimals = d > 0 ? d : 0;
    return a;
}

static double axis_pos(const Axis *a, double v, double from, double to) {
    if (a->log_scale) return from + log(v / a->lo) / log(a->hi / a->lo) * (to - from);
    return from + (v - a->lo) / (a->hi - a->lo) * (to - from);
}

/* the ticks a log axis may have: m x 10^k */
static const double log_mantissas[] = {1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9};
enum { LOG_MANTISSAS = sizeof log_mantissas / sizeof *log_mantissas };

static Axis make_log_axis(double lo, double hi) {
    Axis a = {0};
    a.log_scale = 1;
    if (!(isfinite(lo) && isfinite(hi) && lo > 0 && hi > 0)) lo = 1.0, hi = 10.0;
    if (hi < 1.2 * lo) { double mid = sqrt(lo * hi); lo = mid / 1.1, hi = mid * 1.1; }
    double span = log(hi / lo);
    a.lo = lo * exp(-0.04 * span);
    a.hi = hi * exp(0.04 * span);
    /* an end close to a tick moves out to it, so that both ends are labelled */
    double below = NAN, above = NAN;
    for (int k = (int)floor(log10(a.lo)) - 1; k <= (int)ceil(log10(a.hi)) + 1; k++)
        for (int m = 0; m < LOG_MANTISSAS; m++) {
            double t = log_mantissas[m] * pow(10.0, k);
            if (t <= a.lo) below = t;
            if (t >= a.hi && isnan(above)) above = t;
        }
    if (log(a.lo / below) < 0.12 * span) a.lo = below;
    if (log(above / a.hi) < 0.12 * span) a.hi = above;
    return a;
}

/* The ticks of a log axis drawn over `pixels` into v (at most max): those of the densest mantissa
 * set whose neighbouring labels stay apart (a label's width, 7 px a character, and a gap). */
static int log_ticks(const Axis *a, double pixels, double *v, int max) {
    static const double sets[][LOG_MANTISSAS] = {{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 5},
                                                 {1, 2, 5}, {1}};
    static const int sizes[] = {12, 9, 4, 3, 1};
    int n = 0;
    for (int s = 0; s < 5; s++) {
        n = 0;
        for (int k = (int)floor(log10(a->lo)); k <= (int)ceil(log10(a->hi)); k++)
            for (int m = 0; m < sizes[s]; m++) {
                double t = sets[s][m] * pow(10.0, k);
                if (t >= a->lo * (1 - 1e-12) && t <= a->hi * (1 + 1e-12) && n < max) v[n++] = t;
            }
        int apart = 1;
        for (int i = 1; i < n && apart; i++) {
            char l0[32], l1[32];
            int w = snprintf(l0, sizeof l0, "%g", v[i - 1]) + snprintf(l1, sizeof l1, "%g", v[i]);
            apart = axis_pos(a, v[i], 0, pixels) - axis_pos(a, v[i - 1], 0, pixels) >= 3.5 * w + 10;
        }
        if (apart) break;
    }
    return n;
}

static void svg_open(TextBuf *out, const char *title) {
    textbuf_printf(out,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                   "font-family=\"sans-serif\" font-size=\"12\">\n",
                   WIDTH, HEIGHT, WIDTH, HEIGHT);
    textbuf_printf(out, "<title>");
    svg_escape(out, title);
    textbuf_printf(out, "</title>\n<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", WIDTH, HEIGHT);
    textbuf_printf(out, "<text x=\"%d\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">", WIDTH / 2);
    svg_escape(out, title);
    textbuf_printf(out, "</text>\n");
}

static int svg_close(TextBuf *out) {
    textbuf_printf(out, "</svg>\n");
    return out->failed ? -1 : 0;
}

static void text_at(TextBuf *out, double x, double y, const char *anchor, const char *extra, const char *text) {
    textbuf_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s%s>", x, y, anchor, extra ? " " : "", extra ? extra : "");
    svg_escape(out, text);
    textbuf_printf(out, "</text>\n");
}

/* The y axis (ticks, grid lines, labels, title) over [top, bottom] at x = left. */
static void draw_y_axis(TextBuf *out, const Axis *a, double left, double right, double top, double bottom, const char *label) {
    int n = (int)lround((a->hi - a->lo) / a->step);
    for (int i = 0; i <= n; i++) {
        double v = a->lo + i * a->step, y = axis_pos(a, v, bottom, top);
        char tick[64];
        snprintf(tick, sizeof tick, "%.*f", a->decimals, fabs(v) < 1e-12 * a->step ? 0.0 : v);
        textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", left, y, right, y);
        textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n", left - 5, y, left, y);
        text_at(out, left - 8, y + 4, "end", NULL, tick);
    }
    textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n", left, top, left, bottom);
    char rotate[96];
    double cy = 0.5 * (top + bottom);
    snprintf(rotate, sizeof rotate, "transform=\"rotate(-90 %.1f %.1f)\"", 22.0, cy);
    text_at(out, 22.0, cy, "middle", rotate, label);
}

/* The x axis (ticks, labels, title) over [left, right] at y = bottom; a log axis gets grid lines
 * too (its ticks are uneven, so the eye needs them). */
static void draw_x_axis(TextBuf *out, const Axis *a, double left, double right, double top, double bottom, const char *label) {
    double v[64];
    int n = 0;
    if (a->log_scale) n = log_ticks(a, right - left, v, 64);
    else
        for (int i = 0; i <= (int)lround((a->hi - a->lo) / a->step) && n < 64; i++) v[n++] = a->lo + i * a->step;
    for (int i = 0; i < n; i++) {
        double x = axis_pos(a, v[i], left, right);
        char tick[64];
        if (a->log_scale) snprintf(tick, sizeof tick, "%g", v[i]);
        else snprintf(tick, sizeof tick, "%.*f", a->decimals, v[i]);
        if (a->log_scale) textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", x, top, x, bottom);
        textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n", x, bottom, x, bottom + 5);
        text_at(out, x, bottom + 19, "middle", NULL, tick);
    }
    textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n", left, bottom, right, bottom);
    text_at(out, 0.5 * (left + right), bottom + 42, "middle", NULL, label);
}

/* ---- the legend: beside the plot, whose right edge leaves it room ---- */

/* Text is measured at LEGEND_CHAR_PX per character (12-px sans-serif runs 6-7 px a character);
 * an entry longer than the widest that fits beside a plot at least MIN_PLOT_WIDTH wide wraps at
 * spaces onto more lines. */
enum { LEGEND_CHAR_PX = 7, LEGEND_MARK = 28, LEGEND_GAP = 20, LEGEND_MARGIN = 12, MIN_PLOT_WIDTH = 400 };
#define LEGEND_MAX_CHARS ((WIDTH - LEGEND_MARGIN - LEGEND_MARK - LEGEND_GAP - PLOT_LEFT - MIN_PLOT_WIDTH) / LEGEND_CHAR_PX)

/* The plot's right edge for a legend of these entries (NULL entries are skipped). */
static double legend_plot_right(const char *const *names, int n) {
    int longest = 0;
    for (int i = 0; i < n; i++)
        if (names[i] && (int)strlen(names[i]) > longest) longest = (int)strlen(names[i]);
    if (longest > LEGEND_MAX_CHARS) longest = LEGEND_MAX_CHARS;
    double right = WIDTH - LEGEND_MARGIN - LEGEND_MARK - LEGEND_GAP - (double)LEGEND_CHAR_PX * longest;
    return right < PLOT_RIGHT ? right : PLOT_RIGHT;
}

/* One entry at (x, y): a line (dashed or not), a dot or a box in `color`, then the name, wrapped;
 * returns the y of the next entry. */
typedef enum { MARK_LINE, MARK_DASHED, MARK_DOT, MARK_BOX } LegendMark;
static double legend_entry(TextBuf *out, double x, double y, const char *name, const char *color, LegendMark mark) {
    if (mark == MARK_BOX)
        textbuf_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"%s\"/>\n", x, y - 9, color);
    else if (mark == MARK_DOT)
        textbuf_printf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\" fill-opacity=\"0.75\"/>\n", x + 11, y - 4, color);
    else
        textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n", x, y - 4,
                       x + 22, y - 4, color, mark == MARK_DASHED ? " stroke-dasharray=\"5 3\"" : "");
    const char *p = name;
    for (;;) {
        size_t len = strlen(p);
        if ((int)len <= LEGEND_MAX_CHARS) {
            text_at(out, x + LEGEND_MARK, y, "start", NULL, p);
            return y + 20;
        }
        int cut = LEGEND_MAX_CHARS;
        while (cut > 0 && p[cut] != ' ') cut--;
        if (cut == 0) cut = LEGEND_MAX_CHARS;
        char line[256];
        snprintf(line, sizeof line, "%.*s", cut, p);
        text_at(out, x + LEGEND_MARK, y, "start", NULL, line);
        p += cut + (p[cut] == ' ');
        y += 15;
    }
}

/* ---- line plot ---- */

int svg_line_plot(TextBuf *out, const char *title, const char *x_label, const char *y_label, const SvgSeries *series,
                  int n_series) {
    return svg_plot(out, title, x_label, y_label, series, n_series, NULL);
}

int svg_plot(TextBuf *out, const char *title, const char *x_label, const char *y_label, const SvgSeries *series, int n_series,
             const SvgPlotOptions *opt) {
    int log_x = opt && opt->log_x;
    double ref_y = opt && opt->ref_label ? opt->ref_y : NAN;
    /* a point is drawn when finite (and, on a log axis, its x positive) */
#define DRAWN(x, y) (isfinite(x) && isfinite(y) && (!log_x || (x) > 0))
    double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!DRAWN(x, y)) continue;
            x_lo = fmin(x_lo, x), x_hi = fmax(x_hi, x), y_lo = fmin(y_lo, y), y_hi = fmax(y_hi, y);
        }
    int any = isfinite(x_lo);
    if (isfinite(ref_y)) y_lo = fmin(y_lo, ref_y), y_hi = fmax(y_hi, ref_y);
    if (opt && y_hi > y_lo) { /* a little room, so that no point or reference line sits on the frame */
        double pad = 0.03 * (y_hi - y_lo);
        y_lo = y_lo >= 0 && y_lo < pad ? 0.0 : y_lo - pad; /* a quantity that cannot be negative stays so */
        y_hi += pad;
    }
    const char *names[65];
    int n_names = 0;
    for (int s = 0; s < n_series && n_names < 64; s++) names[n_names++] = series[s].name;
    if (isfinite(ref_y) && n_names < 65) names[n_names++] = opt->ref_label;
    double right = legend_plot_right(names, n_names);
    svg_open(out, title);
    Axis ax = log_x ? make_log_axis(x_lo, x_hi) : make_axis(x_lo, x_hi, 6), ay = make_axis(y_lo, y_hi, 6);
    draw_y_axis(out, &ay, PLOT_LEFT, right, PLOT_TOP, PLOT_BOTTOM, y_label);
    draw_x_axis(out, &ax, PLOT_LEFT, right, PLOT_TOP, PLOT_BOTTOM, x_label);
    if (!any) text_at(out, 0.5 * (PLOT_LEFT + right), 0.5 * (PLOT_TOP + PLOT_BOTTOM), "middle", NULL, "no data");
    double legend_x = right + LEGEND_GAP, legend_y = PLOT_TOP + 10;
    if (isfinite(ref_y)) {
        double y = axis_pos(&ay, ref_y, PLOT_BOTTOM, PLOT_TOP);
        textbuf_printf(out, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#444444\" stroke-width=\"1.5\" "
                            "stroke-dasharray=\"8 4\"/>\n", PLOT_LEFT, y, right, y);
        legend_y = legend_entry(out, legend_x, legend_y, opt->ref_label, "#444444", MARK_DASHED);
    }
    for (int s = 0; s < n_series; s++) {
        int color = series[s].color >= 0 ? series[s].color : s;
        const char *stroke = palette[color % PALETTE_SIZE];
        const char *dash = series[s].dashed ? " stroke-dasharray=\"5 3\"" : "";
        if (series[s].markers) { /* a scatter: a dot per point */
            for (int i = 0; i < series[s].n; i++)
                if (DRAWN(series[s].x[i], series[s].y[i]))
                    textbuf_printf(out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\" fill-opacity=\"0.75\"/>\n",
                                   axis_pos(&ax, series[s].x[i], PLOT_LEFT, right), axis_pos(&ay, series[s].y[i], PLOT_BOTTOM, PLOT_TOP),
                                   stroke);
            legend_y = legend_entry(out, legend_x, legend_y, series[s].name, stroke, MARK_DOT);
            continue;
        }
        /* one polyline per run of drawn points; a lone point becomes a dot */
        for (int i = 0; i < series[s].n;) {
            while (i < series[s].n && !DRAWN(series[s].x[i], series[s].y[i])) i++;
            int start = i;
            while (i < series[s].n && DRAWN(series[s].x[i], series[s].y[i])) i++;
            if (i - start == 1) {
                textbuf_printf(out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"/>\n",
                               axis_pos(&ax, series[s].x[start], PLOT_LEFT, right),
                               axis_pos(&ay, series[s].y[start], PLOT_BOTTOM, PLOT_TOP), stroke);
            } else if (i - start > 1) {
                textbuf_printf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"%s points=\"", stroke, dash);
                for (int k = start; k < i; k++)
                    textbuf_printf(out, "%s%.2f,%.2f", k > start ? " " : "", axis_pos(&ax, series[s].x[k], PLOT_LEFT, right),
                                   axis_pos(&ay, series[s].y[k], PLOT_BOTTOM, PLOT_TOP));
                textbuf_printf(out, "\"/>\n");
            }
        }
        legend_y = legend_entry(out, legend_x, legend_y, series[s].name, stroke, series[s].dashed ? MARK_DASHED : MARK_LINE);
    }
#undef DRAWN
    return svg_close(out);
}

/* ---- grouped bars ---- */

int svg_bar_chart(TextBuf *out, const char *title, const char *y_label, const char *const *group_labels, int n_groups,
                  const char *const *series_names, int n_series, const double *value, const double *err_low,
                  const double *err_high) {
    double lo = 0.0, hi = 0.0;
    int any = 0;
    for (int i = 0; i < n_groups * n_series; i++) {
        if (!isfinite(value[i])) continue;
        any = 1;
        lo = fmin(lo, value[i]), hi = fmax(hi, value[i]);
        if (err_low && isfinite(err_low[i])) lo = fmin(lo, err_low[i]);
        if (err_high && isfinite(err_high[i])) hi = fmax(hi, err_high[i]);
    }
    double right = legend_plot_right(series_names, n_series);
    svg_open(out, title);
    Axis ay = make_axis(lo, hi, 6);
    draw_y_axis(out, &ay, PLOT_LEFT, right, PLOT_TOP, PLOT_BOTTOM, y_label);
    double y0 = axis_pos(&ay, 0.0, PLOT_BOTTOM, PLOT_TOP);
    double group_w = (right - PLOT_LEFT) / (n_groups > 0 ? n_groups : 1);
    double bar_w = group_w * 0.8 / (n_series > 0 ? n_series : 1);
    for (int g = 0; g < n_groups; g++) {
        double gx = PLOT_LEFT + g * group_w;
        text_at(out, gx + 0.5 * group_w, PLOT_BOTTOM + 19, "middle", NULL, group_labels[g]);
        for (int s = 0; s < n_series; s++) {
            int i = g * n_series + s;
            if (!isfinite(value[i])) continue;
            double x = gx + 0.1 * group_w + s * bar_w, y = axis_pos(&ay, value[i], PLOT_BOTTOM, PLOT_TOP);
            textbuf_printf(out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>\n", x + 1, fmin(y, y0),
                           bar_w - 2, fabs(y0 - y), palette[s % PALETTE_SIZE]);
            if (err_low && err_high && isfinite(err_low[i]) && isfinite(err_high[i])) {
                double cx = x + 0.5 * bar_w, yl = axis_pos(&ay, err_low[i], PLOT_BOTTOM, PLOT_TOP),
                       yh = axis_pos(&ay, err_high[i], PLOT_BOTTOM, PLOT_TOP), cap = fmin(6.0, 0.25 * bar_w);
                textbuf_printf(out,
                               "<path d=\"M%.2f %.2fV%.2fM%.2f %.2fH%.2fM%.2f %.2fH%.2f\" stroke=\"#000000\" stroke-width=\"1.2\" "
                               "fill=\"none\"/>\n",
                               cx, yl, yh, cx - cap, yl, cx + cap, cx - cap, yh, cx + cap);
            }
        }
    }
    textbuf_printf(out, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#000000\"/>\n", PLOT_LEFT, y0, right, y0);
    if (!any) text_at(out, 0.5 * (PLOT_LEFT + right), 0.5 * (PLOT_TOP + PLOT_BOTTOM), "middle", NULL, "no data");
    double legend_y = PLOT_TOP + 10;
    for (int s = 0; s < n_series; s++)
        legend_y = legend_entry(out, right + LEGEND_GAP, legend_y, series_names[s], palette[s % PALETTE_SIZE], MARK_BOX);
    if (err_low && err_high) text_at(out, right + LEGEND_GAP, legend_y + 6, "start", "font-size=\"11\"", "whiskers: 95% CI");
    return svg_close(out);
}

/* ---- heat map ---- */

/* viridis, five stops, linearly interpolated; t in [0, 1] */
static void viridis(double t, int rgb[3]) {
    static const int stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    if (!(t >= 0.0)) t = 0.0;
    if (t > 1.0) t = 1.0;
    double f = t * 4.0;
    int i = (int)f;
    if (i > 3) i = 3;
    double u = f - i;
    for (int k = 0; k < 3; k++) rgb[k] = (int)lround(stops[i][k] + u * (stops[i + 1][k] - stops[i][k]));
}

int svg_heat_map(TextBuf *out, const char *title, const char *x_label, const char *y_label, const char *const *col_labels,
                 int n_cols, const char *const *row_labels, int n_rows, const double *value, const char *value_format,
                 const char *scale_label) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n_rows * n_cols; i++)
        if (isfinite(value[i])) lo = fmin(lo, value[i]), hi = fmax(hi, value[i]);
    svg_open(out, title);
    const double left = 120, top = PLOT_TOP, right = PLOT_RIGHT, bottom = PLOT_BOTTOM;
    double cell_w = (right - left) / (n_cols > 0 ? n_cols : 1), cell_h = (bottom - top) / (n_rows > 0 ? n_rows : 1);
    Axis scale = make_axis(lo, hi, 5);
    for (int r = 0; r < n_rows; r++) {
        double y = top + r * cell_h;
        text_at(out, left - 8, y + 0.5 * cell_h + 4, "end", NULL, row_labels[r]);
        for (int c = 0; c < n_cols; c++) {
            double v = value[r * n_cols + c], x = left + c * cell_w;
            char label[64];
            if (isfinite(v)) {
                int rgb[3];
                viridis((v - scale.lo) / (scale.hi - scale.lo), rgb);
                double luminance = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0;
                textbuf_printf(out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#%02x%02x%02x\" stroke=\"#ffffff\"/>\n",
                               x, y, cell_w, cell_h, rgb[0], rgb[1], rgb[2]);
                snprintf(label, sizeof label, value_format, v);
                char fill[32];
                snprintf(fill, sizeof fill, "fill=\"%s\"", luminance < 0.5 ? "#ffffff" : "#000000");
                text_at(out, x + 0.5 * cell_w, y + 0.5 * cell_h + 4, "middle", fill, label);
            } else {
                textbuf_printf(out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#d9d9d9\" stroke=\"#ffffff\"/>\n", x,
                               y, cell_w, cell_h);
                text_at(out, x + 0.5 * cell_w, y + 0.5 * cell_h + 4, "middle", NULL, "n/a");
            }
        }
    }
    for (int c = 0; c < n_cols; c++) text_at(out, left + (c + 0.5) * cell_w, bottom + 19, "middle", NULL, col_labels[c]);
    text_at(out, 0.5 * (left + right), bottom + 42, "middle", NULL, x_label);
    char rotate[96];
    snprintf(rotate, sizeof rotate, "transform=\"rotate(-90 %.1f %.1f)\"", 22.0, 0.5 * (top + bottom));
    text_at(out, 22.0, 0.5 * (top + bottom), "middle", rotate, y_label);
    /* colour scale: a vertical gradient from scale.lo (bottom) to scale.hi (top) through the
     * viridis stops, ticks at the axis steps */
    const double bar_x = right + 30, bar_w = 18;
    textbuf_printf(out, "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for (int k = 0; k <= 8; k++) {
        int rgb[3];
        viridis(k / 8.0, rgb);
        textbuf_printf(out, "<stop offset=\"%.3f\" stop-color=\"#%02x%02x%02x\"/>", k / 8.0, rgb[0], rgb[1], rgb[2]);
    }
    textbuf_printf(out, "</linearGradient></defs>\n");
    textbuf_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"url(#scale)\" stroke=\"#000000\"/>\n", bar_x, top,
                   bar_w, bottom - top);
    int n_ticks = (int)lround((scale.hi - scale.lo) / scale.step);
    for (int i = 0; i <= n_ticks; i++) {
        double v = scale.lo + i * scale.step, y = axis_pos(&scale, v, bottom, top);
        char tick[64];
        snprintf(tick, sizeof tick, "%.*f", scale.decimals, v);
        textbuf_printf(out, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#000000\"/>\n", bar_x + bar_w, y,
                       bar_x + bar_w + 4, y);
        text_at(out, bar_x + bar_w + 7, y + 4, "start", NULL, tick);
    }
    text_at(out, bar_x + 0.5 * bar_w, top - 10, "middle", NULL, scale_label);
    if (!isfinite(lo)) text_at(out, 0.5 * (left + right), top - 2, "middle", NULL, "no data");
    return svg_close(out);
}
