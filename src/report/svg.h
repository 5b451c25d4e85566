/* svg: a tiny writer of standalone SVG 1.1 charts (line plot, grouped bars with error bars, heat
 * map) that render in a browser and on GitHub: no scripts, no external fonts, xmlns set. */
#ifndef QCORR_SVG_H
#define QCORR_SVG_H

#include <stddef.h>

/* A growing text buffer. On allocation failure `failed` is set (error recorded) and later
 * appends are ignored, so callers check once at the end. */
typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} TextBuf;
void textbuf_printf(TextBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void textbuf_append(TextBuf *b, const char *text, size_t n);
void textbuf_free(TextBuf *b);
/* Appends text with &, <, >, " escaped for XML. */
void svg_escape(TextBuf *b, const char *text);

/* One line of a line plot: points (x[i], y[i]); non-finite points break the line.
 * color: index into the palette, or -1 for the series' own index. */
typedef struct {
    const char *name;
    const double *x, *y;
    int n;
    int color;
    int dashed;
    int markers;   /* 1: each point a dot, no line (a scatter series) */
} SvgSeries;

/* Line plot with axes, ticks, labels and a legend beside it (the plot narrows so that the legend's
 * entries fit; an entry too long even then wraps). Returns 0, or -1 on allocation failure. */
int svg_line_plot(TextBuf *out, const char *title, const char *x_label, const char *y_label, const SvgSeries *series,
                  int n_series);
/* What svg_plot adds to a line plot: x on a log scale (points with x <= 0 are not drawn; ticks at
 * 1-9 x 10^k), and a dashed horizontal reference line at ref_y named ref_label in the legend (ref_label
 * NULL: none). */
typedef struct {
    int log_x;
    double ref_y;
    const char *ref_label;
} SvgPlotOptions;
int svg_plot(TextBuf *out, const char *title, const char *x_label, const char *y_label, const SvgSeries *series, int n_series,
             const SvgPlotOptions *opt);

/* Grouped bar chart: n_groups groups along x, n_series bars per group.
 * value[g * n_series + s]; err_low/err_high the same shape (absolute bounds, NaN: no bar) or NULL.
 * A NaN value leaves its slot empty. */
int svg_bar_chart(TextBuf *out, const char *title, const char *y_label, const char *const *group_labels, int n_groups,
                  const char *const *series_names, int n_series, const double *value, const double *err_low,
                  const double *err_high);

/* Heat map: n_rows × n_cols cells, value[r * n_cols + c] (NaN: empty, grey), a colour scale with
 * ticks labelled scale_label, and each cell labelled with its value printed by value_format
 * (e.g. "%.1f"). Row 0 is drawn at the top. */
int svg_heat_map(TextBuf *out, const char *title, const char *x_label, const char *y_label, const char *const *col_labels,
                 int n_cols, const char *const *row_labels, int n_rows, const double *value, const char *value_format,
                 const char *scale_label);

#endif
