/* report: `qcorr report DIR` — reads DIR/summary.csv (one row per sweep run), writes DIR/report.md
 * (tables with uncertainty, generated conclusions) and SVG plots in DIR/plots/ (README: Report). */
#ifndef QCORR_REPORT_H
#define QCORR_REPORT_H

#include <stddef.h>

#include "report/stats.h"

/* ---- a small CSV reader: header row, comma-separated, fields may be empty, RFC 4180 quoting
 * ("a,b" and "say ""hi""", quoted newlines included), \n or \r\n line ends, blank lines skipped ---- */
typedef struct {
    int n_cols, n_rows;
    char **header;  /* n_cols names */
    char **cells;   /* n_rows × n_cols, row-major, each NUL-terminated */
    int *lines;     /* the 1-based line on which each row starts */
    char *arena;    /* owns every string */
} ReportCsv;

/* Parses text (len bytes); `name` is used in errors ("name line 7: 30 fields, the header has 31").
 * Every row must have the header's field count. */
int report_csv_parse(const char *name, const char *text, size_t len, ReportCsv *csv);
int report_csv_read(const char *path, ReportCsv *csv);
void report_csv_free(ReportCsv *csv);
/* The index of the column called name, or -1. */
int report_csv_column(const ReportCsv *csv, const char *name);
static inline const char *report_csv_cell(const ReportCsv *csv, int row, int col) { return csv->cells[(size_t)row * csv->n_cols + col]; }

/* ---- the numbers `qcorr report --json` prints (recoveries as fractions, not percent) ---- */
#define REPORT_MAX_BITS 16

typedef struct {
    int bits;
    int n_runs;        /* quantized runs at this bit width */
    int n_excluded;    /* of them, left out of recovery statistics (recovery_flag != ok) */
    MeanCI recovery;   /* over the included runs */
    double share_above_80;
    int have_linear_vs_mlp;
    PairedComparison linear_vs_mlp; /* a = mean over MLP widths, b = linear, one pair per matched configuration */
} ReportBits;

typedef struct {
    char report_path[4096];
    int n_rows, n_quant, n_control, n_excluded, n_plots, n_loss_curves;
    int n_bits;
    ReportBits bits[REPORT_MAX_BITS];
} ReportSummary;

/* Reads dir/summary.csv and writes dir/report.md and dir/plots/ *.svg (all atomically).
 * summary may be NULL. -1 with an error naming the file, line and column on failure. */
int report_write(const char *dir, ReportSummary *summary);

#endif
