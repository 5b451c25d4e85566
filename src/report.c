/* report: see report.h. One pass reads and checks summary.csv into Run records; each section then
 * selects runs, computes its statistics with stats.c, appends a markdown table and, for the
 * comparisons the conclusions rest on, appends one sentence generated from the numbers. */
#include "report.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sites.h"
#include "svg.h"
#include "util.h"

/* ======================================================================================
 * CSV
 * ====================================================================================== */

/* "3" or, once the header is known, "3 (seed)" */
static const char *column_label(char *buf, size_t size, char *const *fields, int n_cols, int field_no) {
    if (n_cols > 0 && field_no <= n_cols) snprintf(buf, size, "%d (%.100s)", field_no, fields[field_no - 1]);
    else snprintf(buf, size, "%d", field_no);
    return buf;
}

int report_csv_parse(const char *name, const char *text, size_t len, ReportCsv *csv) {
    memset(csv, 0, sizeof *csv);
    /* unquoting never lengthens a field and every field but the last consumes a separator, so
     * the text's length plus one terminator bounds the arena */
    char *arena = qc_malloc(len + 2, "CSV fields");
    if (!arena) return -1;
    char *out = arena;
    char **fields = NULL;
    int *lines = NULL;
    size_t n_fields = 0, cap_fields = 0, n_lines = 0, cap_lines = 0;
    size_t pos = 0;
    int line = 1, n_cols = -1;
    while (pos < len) {
        int record_line = line;
        size_t record_start = n_fields;
        int field_no = 0;
        for (;;) {
            field_no++;
            char *field = out;
            if (pos < len && text[pos] == '"') {
                int quote_line = line;
                pos++;
                for (;;) {
                    if (pos >= len) {
                        char label[128];
                        qc_error("%s line %d, column %s: quoted field is never closed", name, quote_line,
                                 column_label(label, sizeof label, fields, n_cols, field_no));
                        goto fail;
                    }
                    char c = text[pos];
                    if (c == '"') {
                        if (pos + 1 < len && text[pos + 1] == '"') {
                            *out++ = '"';
                            pos += 2;
                            continue;
                        }
                        pos++;
                        break;
                    }
                    if (c == '\n') line++;
                    *out++ = c;
                    pos++;
                }
                if (pos < len && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r') {
                    char label[128];
                    qc_error("%s line %d, column %s: unexpected '%c' after a closing quote", name, line,
                             column_label(label, sizeof label, fields, n_cols, field_no), text[pos]);
                    goto fail;
                }
            } else {
                while (pos < len && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r') *out++ = text[pos++];
            }
            *out++ = 0;
            if (n_fields == cap_fields) {
                cap_fields = cap_fields ? 2 * cap_fields : 256;
                char **grown = realloc(fields, cap_fields * sizeof *fields);
                if (!grown) { qc_error("%s: out of memory reading fields", name); goto fail; }
                fields = grown;
            }
            fields[n_fields++] = field;
            if (pos < len && text[pos] == ',') {
                pos++;
                continue;
            }
            if (pos < len && text[pos] == '\r') pos++;
            if (pos < len && text[pos] == '\n') pos++;
            line++;
            break;
        }
        int count = (int)(n_fields - record_start);
        if (count == 1 && fields[record_start][0] == 0) { /* a blank line */
            n_fields = record_start;
            continue;
        }
        if (n_cols < 0) {
            n_cols = count;
            continue;
        }
        if (count != n_cols) {
            qc_error("%s line %d: %d fields, but the header has %d", name, record_line, count, n_cols);
            goto fail;
        }
        if (n_lines == cap_lines) {
            cap_lines = cap_lines ? 2 * cap_lines : 64;
            int *grown = realloc(lines, cap_lines * sizeof *lines);
            if (!grown) { qc_error("%s: out of memory reading rows", name); goto fail; }
            lines = grown;
        }
        lines[n_lines++] = record_line;
    }
    if (n_cols < 0) {
        qc_error("%s: empty file (no header row)", name);
        goto fail;
    }
    csv->n_cols = n_cols;
    csv->n_rows = (int)n_lines;
    csv->header = fields;
    csv->cells = fields + n_cols;
    csv->lines = lines;
    csv->arena = arena;
    return 0;
fail:
    free(fields);
    free(lines);
    free(arena);
    return -1;
}

int report_csv_read(const char *path, ReportCsv *csv) {
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text) return -1;
    int rc = report_csv_parse(path, (const char *)text, size, csv);
    free(text);
    return rc;
}

void report_csv_free(ReportCsv *csv) {
    free(csv->header);
    free(csv->lines);
    free(csv->arena);
    memset(csv, 0, sizeof *csv);
}

int report_csv_column(const ReportCsv *csv, const char *name) {
    for (int c = 0; c < csv->n_cols; c++)
        if (strcmp(csv->header[c], name) == 0) return c;
    return -1;
}

/* ======================================================================================
 * runs
 * ====================================================================================== */

enum {
    COL_SEED, COL_SIZE, COL_D_MODEL, COL_N_LAYER, COL_BITS, COL_SCHEME, COL_EVERY, COL_HIDDEN, COL_METHOD,
    COL_OBJECTIVE, COL_ARM, COL_LOSS_FLOAT, COL_LOSS_QUANT, COL_LOSS_CORRECTED, COL_PPL_FLOAT, COL_PPL_QUANT,
    COL_PPL_CORRECTED, COL_RECOVERY_LOSS, COL_RECOVERY_PPL, COL_RECOVERY_FLAG, COL_GAIN_LOSS, COL_CALIB_TOKENS,
    N_USED_COLUMNS
};
/* the columns of summary.csv the report reads (the others — run_id, timings, ... — are ignored) */
static const char *const used_columns[N_USED_COLUMNS] = {
    "seed", "size", "d_model", "n_layer", "bits", "scheme", "every", "hidden", "method",
    "objective", "arm", "loss_float", "loss_quant", "loss_corrected", "ppl_float", "ppl_quant",
    "ppl_corrected", "recovery_loss", "recovery_ppl", "recovery_flag", "gain_loss", "calib_tokens"};

typedef struct {
    int line;
    long seed, calib_tokens; /* calib_tokens -1 when empty */
    int bits, every, hidden;
    int size;                /* index into Report.sizes */
    const char *scheme, *method, *objective, *flag;
    int control;             /* arm = control */
    int recovery_ok;         /* recovery_flag = ok and recovery_loss finite */
    double loss_float, loss_quant, loss_corrected, ppl_float, ppl_quant, ppl_corrected, recovery, recovery_ppl, gain;
} Run;

typedef struct {
    const char *name; /* "128x4" */
    int d_model, n_layer;
} SizeLevel;

#define MAX_LEVELS 256
#define MAX_PLOTS 64

typedef struct {
    const char *dir;
    char csv_path[4096];
    ReportCsv csv;
    Run *runs;
    int n_runs, n_control, n_quant;
    /* the grid: distinct values of each factor, sorted */
    int bits[MAX_LEVELS], n_bits; /* quantized arm only */
    SizeLevel sizes[MAX_LEVELS];
    int n_sizes;
    int every[MAX_LEVELS], n_every;
    int hidden[MAX_LEVELS], n_hidden;
    long seeds[MAX_LEVELS], calibs[MAX_LEVELS];
    int n_seeds, n_calibs;
    const char *methods[MAX_LEVELS], *objectives[MAX_LEVELS], *schemes[MAX_LEVELS];
    int n_methods, n_objectives, n_schemes;
    /* scratch, n_runs each */
    double *a, *b, *c;
    TextBuf head, conclusions, body;
    char plots[MAX_PLOTS][128];
    int n_plots, n_loss_curves;
    ReportSummary *summary;
} Report;

static int add_int_level(int *levels, int *n, int v, const char *what) {
    for (int i = 0; i < *n; i++)
        if (levels[i] == v) return 0;
    if (*n >= MAX_LEVELS) { qc_error("summary.csv: more than %d distinct values of %s", MAX_LEVELS, what); return -1; }
    levels[(*n)++] = v;
    return 0;
}
static int add_long_level(long *levels, int *n, long v, const char *what) {
    for (int i = 0; i < *n; i++)
        if (levels[i] == v) return 0;
    if (*n >= MAX_LEVELS) { qc_error("summary.csv: more than %d distinct values of %s", MAX_LEVELS, what); return -1; }
    levels[(*n)++] = v;
    return 0;
}
static int add_string_level(const char **levels, int *n, const char *v, const char *what) {
    for (int i = 0; i < *n; i++)
        if (strcmp(levels[i], v) == 0) return 0;
    if (*n >= MAX_LEVELS) { qc_error("summary.csv: more than %d distinct values of %s", MAX_LEVELS, what); return -1; }
    levels[(*n)++] = v;
    return 0;
}
static int compare_int(const void *pa, const void *pb) { int a = *(const int *)pa, b = *(const int *)pb; return (a > b) - (a < b); }
static int compare_long(const void *pa, const void *pb) { long a = *(const long *)pa, b = *(const long *)pb; return (a > b) - (a < b); }
static int compare_string(const void *pa, const void *pb) { return strcmp(*(const char *const *)pa, *(const char *const *)pb); }
static int compare_size(const void *pa, const void *pb) {
    const SizeLevel *a = pa, *b = pb;
    if (a->d_model != b->d_model) return (a->d_model > b->d_model) - (a->d_model < b->d_model);
    if (a->n_layer != b->n_layer) return (a->n_layer > b->n_layer) - (a->n_layer < b->n_layer);
    return strcmp(a->name, b->name);
}

/* Field parsers: errors name the file, line and column. Empty fields: NaN / -1 unless required. */
static int field_long(const Report *rep, int row, int col, int required, long min, long max, long *out) {
    const char *text = report_csv_cell(&rep->csv, row, col);
    const char *name = rep->csv.header[col];
    if (!text[0]) {
        if (required) { qc_error("%s line %d, column %s: empty, but every run needs it", rep->csv_path, rep->csv.lines[row], name); return -1; }
        *out = -1;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || end == text) { qc_error("%s line %d, column %s: '%s' is not an integer", rep->csv_path, rep->csv.lines[row], name, text); return -1; }
    if (v < min || v > max) {
        qc_error("%s line %d, column %s: %ld is outside %ld..%ld", rep->csv_path, rep->csv.lines[row], name, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int field_double(const Report *rep, int row, int col, double *out) {
    const char *text = report_csv_cell(&rep->csv, row, col);
    if (!text[0]) { *out = NAN; return 0; }
    char *end;
    double v = strtod(text, &end);
    if (*end || end == text) {
        qc_error("%s line %d, column %s: '%s' is not a number", rep->csv_path, rep->csv.lines[row], rep->csv.header[col], text);
        return -1;
    }
    *out = v;
    return 0;
}

static int load_runs(Report *rep) {
    snprintf(rep->csv_path, sizeof rep->csv_path, "%s/summary.csv", rep->dir);
    if (report_csv_read(rep->csv_path, &rep->csv) != 0) return -1;
    int col[N_USED_COLUMNS];
    for (int k = 0; k < N_USED_COLUMNS; k++) {
        col[k] = report_csv_column(&rep->csv, used_columns[k]);
        if (col[k] < 0) { qc_error("%s line 1: the header has no column '%s'", rep->csv_path, used_columns[k]); return -1; }
    }
    if (rep->csv.n_rows == 0) { qc_error("%s: no runs (only a header row)", rep->csv_path); return -1; }
    int n = rep->csv.n_rows;
    rep->runs = qc_calloc((size_t)n, sizeof *rep->runs, "report runs");
    rep->a = qc_malloc(sizeof(double) * (size_t)n, "report scratch");
    rep->b = qc_malloc(sizeof(double) * (size_t)n, "report scratch");
    rep->c = qc_malloc(sizeof(double) * (size_t)n, "report scratch");
    if (!rep->runs || !rep->a || !rep->b || !rep->c) return -1;
    for (int i = 0; i < n; i++) {
        Run *r = &rep->runs[i];
        long v, d_model, n_layer;
        r->line = rep->csv.lines[i];
        if (field_long(rep, i, col[COL_SEED], 1, LONG_MIN, LONG_MAX, &r->seed)) return -1;
        if (field_long(rep, i, col[COL_BITS], 1, 1, 64, &v)) return -1;
        r->bits = (int)v;
        if (field_long(rep, i, col[COL_EVERY], 1, 1, 1000000, &v)) return -1;
        r->every = (int)v;
        if (field_long(rep, i, col[COL_HIDDEN], 1, 0, 100000000, &v)) return -1;
        r->hidden = (int)v;
        if (field_long(rep, i, col[COL_CALIB_TOKENS], 0, 0, LONG_MAX, &r->calib_tokens)) return -1;
        if (field_long(rep, i, col[COL_D_MODEL], 0, 1, 1000000, &d_model)) return -1;
        if (field_long(rep, i, col[COL_N_LAYER], 0, 1, 1000000, &n_layer)) return -1;
        const char *size = report_csv_cell(&rep->csv, i, col[COL_SIZE]);
        if (!size[0]) { qc_error("%s line %d, column size: empty, but every run needs it", rep->csv_path, r->line); return -1; }
        int parsed_d, parsed_l;
        if (d_model < 0 || n_layer < 0) {
            if (sscanf(size, "%dx%d", &parsed_d, &parsed_l) == 2) {
                if (d_model < 0) d_model = parsed_d;
                if (n_layer < 0) n_layer = parsed_l;
            }
        }
        const char *arm = report_csv_cell(&rep->csv, i, col[COL_ARM]);
        if (strcmp(arm, "control") == 0) r->control = 1;
        else if (strcmp(arm, "quant") != 0) {
            qc_error("%s line %d, column arm: '%s' is neither quant nor control", rep->csv_path, r->line, arm);
            return -1;
        }
        r->scheme = report_csv_cell(&rep->csv, i, col[COL_SCHEME]);
        r->method = report_csv_cell(&rep->csv, i, col[COL_METHOD]);
        r->objective = report_csv_cell(&rep->csv, i, col[COL_OBJECTIVE]);
        r->flag = report_csv_cell(&rep->csv, i, col[COL_RECOVERY_FLAG]);
        if (field_double(rep, i, col[COL_LOSS_FLOAT], &r->loss_float) || field_double(rep, i, col[COL_LOSS_QUANT], &r->loss_quant) ||
            field_double(rep, i, col[COL_LOSS_CORRECTED], &r->loss_corrected) || field_double(rep, i, col[COL_PPL_FLOAT], &r->ppl_float) ||
            field_double(rep, i, col[COL_PPL_QUANT], &r->ppl_quant) || field_double(rep, i, col[COL_PPL_CORRECTED], &r->ppl_corrected) ||
            field_double(rep, i, col[COL_RECOVERY_LOSS], &r->recovery) || field_double(rep, i, col[COL_RECOVERY_PPL], &r->recovery_ppl) ||
            field_double(rep, i, col[COL_GAIN_LOSS], &r->gain))
            return -1;
        if (!isfinite(r->gain)) r->gain = r->loss_quant - r->loss_corrected;
        r->recovery_ok = strcmp(r->flag, "ok") == 0 && isfinite(r->recovery);
        /* factor levels */
        int s;
        for (s = 0; s < rep->n_sizes; s++)
            if (strcmp(rep->sizes[s].name, size) == 0) break;
        if (s == rep->n_sizes) {
            if (s >= MAX_LEVELS) { qc_error("%s: more than %d model sizes", rep->csv_path, MAX_LEVELS); return -1; }
            rep->sizes[s] = (SizeLevel){size, (int)d_model, (int)n_layer};
            rep->n_sizes++;
        }
        if (r->control) rep->n_control++;
        else {
            rep->n_quant++;
            if (add_int_level(rep->bits, &rep->n_bits, r->bits, "bits")) return -1;
        }
        if (add_int_level(rep->every, &rep->n_every, r->every, "every") || add_int_level(rep->hidden, &rep->n_hidden, r->hidden, "hidden") ||
            add_long_level(rep->seeds, &rep->n_seeds, r->seed, "seed") ||
            (r->calib_tokens >= 0 && add_long_level(rep->calibs, &rep->n_calibs, r->calib_tokens, "calib_tokens")) ||
            add_string_level(rep->methods, &rep->n_methods, r->method, "method") ||
            add_string_level(rep->objectives, &rep->n_objectives, r->objective, "objective") ||
            add_string_level(rep->schemes, &rep->n_schemes, r->scheme, "scheme"))
            return -1;
    }
    rep->n_runs = n;
    qsort(rep->bits, (size_t)rep->n_bits, sizeof(int), compare_int);
    qsort(rep->every, (size_t)rep->n_every, sizeof(int), compare_int);
    qsort(rep->hidden, (size_t)rep->n_hidden, sizeof(int), compare_int);
    qsort(rep->seeds, (size_t)rep->n_seeds, sizeof(long), compare_long);
    qsort(rep->calibs, (size_t)rep->n_calibs, sizeof(long), compare_long);
    qsort(rep->methods, (size_t)rep->n_methods, sizeof(char *), compare_string);
    qsort(rep->objectives, (size_t)rep->n_objectives, sizeof(char *), compare_string);
    qsort(rep->schemes, (size_t)rep->n_schemes, sizeof(char *), compare_string);
    /* sort the size levels, then point each run at its level's new index */
    qsort(rep->sizes, (size_t)rep->n_sizes, sizeof(SizeLevel), compare_size);
    for (int i = 0; i < n; i++) {
        const char *size = report_csv_cell(&rep->csv, i, col[COL_SIZE]);
        for (int s = 0; s < rep->n_sizes; s++)
            if (strcmp(rep->sizes[s].name, size) == 0) rep->runs[i].size = s;
    }
    return 0;
}

/* ======================================================================================
 * selection and pairing
 * ====================================================================================== */

enum { KIND_ANY = -1, KIND_LINEAR = 0, KIND_MLP = 1 };

/* Which quantized runs a cell holds; -1 / NULL: any value. */
typedef struct {
    int bits, size, every, hidden, kind;
    const char *method, *objective;
} Select;

static Select select_bits(int bits) { return (Select){bits, -1, -1, -1, KIND_ANY, NULL, NULL}; }

static int run_selected(const Run *r, const Select *s) {
    if (r->control) return 0;
    if (s->bits >= 0 && r->bits != s->bits) return 0;
    if (s->size >= 0 && r->size != s->size) return 0;
    if (s->every >= 0 && r->every != s->every) return 0;
    if (s->hidden >= 0 && r->hidden != s->hidden) return 0;
    if (s->kind == KIND_LINEAR && r->hidden != 0) return 0;
    if (s->kind == KIND_MLP && r->hidden == 0) return 0;
    if (s->method && strcmp(r->method, s->method) != 0) return 0;
    if (s->objective && strcmp(r->objective, s->objective) != 0) return 0;
    return 1;
}

/* The recoveries (fractions) of the selected runs whose recovery is defined. */
static int collect_recovery(const Report *rep, const Select *s, double *out) {
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++)
        if (run_selected(&rep->runs[i], s) && rep->runs[i].recovery_ok) out[n++] = rep->runs[i].recovery;
    return n;
}

static MeanCI recovery_stats(Report *rep, const Select *s) { return stats_mean_ci(rep->a, collect_recovery(rep, s, rep->a), 0.95); }

/* Same replication unit and model: seed, model size, correct_every, bits, scheme, calibration. */
static int same_base(const Run *x, const Run *y) {
    return x->seed == y->seed && x->size == y->size && x->every == y->every && x->bits == y->bits && x->calib_tokens == y->calib_tokens &&
           strcmp(x->scheme, y->scheme) == 0;
}

/* A method "has both kinds" when it ran linear and MLP corrections (lstsq is linear only). */
static int method_has_both_kinds(const Report *rep, const char *method) {
    int linear = 0, mlp = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (r->control || strcmp(r->method, method) != 0) continue;
        if (r->hidden == 0) linear = 1;
        else mlp = 1;
    }
    return linear && mlp;
}

/* Linear-vs-MLP pairs at `bits`: one pair per linear run with a defined recovery whose matched
 * configuration (same_base + method + objective) has MLP runs with defined recoveries of width
 * `hidden` (or of any width, averaged, when hidden < 0). a[] = MLP, b[] = linear. */
static int linear_mlp_pairs(const Report *rep, int bits, int hidden, double *a, double *b) {
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *lin = &rep->runs[i];
        if (lin->control || lin->bits != bits || lin->hidden != 0 || !lin->recovery_ok || !method_has_both_kinds(rep, lin->method)) continue;
        double sum = 0.0;
        int count = 0;
        for (int j = 0; j < rep->n_runs; j++) {
            const Run *m = &rep->runs[j];
            if (m->control || m->hidden == 0 || !m->recovery_ok || (hidden >= 0 && m->hidden != hidden)) continue;
            if (!same_base(lin, m) || strcmp(lin->method, m->method) != 0 || strcmp(lin->objective, m->objective) != 0) continue;
            sum += m->recovery;
            count++;
        }
        if (count == 0) continue;
        a[n] = sum / count;
        b[n] = lin->recovery;
        n++;
    }
    return n;
}

/* Whether any quantized run at this width has a defined recovery; widths without one get no
 * comparison sentences (there is nothing to compare). */
static int bits_has_recovery(const Report *rep, int bits) {
    for (int i = 0; i < rep->n_runs; i++)
        if (!rep->runs[i].control && rep->runs[i].bits == bits && rep->runs[i].recovery_ok) return 1;
    return 0;
}

/* ======================================================================================
 * formatting
 * ====================================================================================== */

static void put_pct(TextBuf *t, double fraction, int decimals) {
    if (isfinite(fraction)) textbuf_printf(t, "%.*f", decimals, 100.0 * fraction);
    else textbuf_printf(t, "n/a");
}
/* "72.3 ± 4.1" (percent); the ± part is dropped when std is undefined (n < 2) */
static void put_mean_std(TextBuf *t, const MeanCI *m) {
    put_pct(t, m->mean, 1);
    if (isfinite(m->std)) {
        textbuf_printf(t, " ± ");
        put_pct(t, m->std, 1);
    }
}
static void put_ci(TextBuf *t, double lo, double hi, int decimals) {
    if (!isfinite(lo) || !isfinite(hi)) { textbuf_printf(t, "n/a"); return; }
    textbuf_printf(t, "[");
    put_pct(t, lo, decimals);
    textbuf_printf(t, ", ");
    put_pct(t, hi, decimals);
    textbuf_printf(t, "]");
}
static void put_p(TextBuf *t, double p) {
    if (isfinite(p)) textbuf_printf(t, "%.3g", p);
    else textbuf_printf(t, "n/a");
}
static void put_nats(TextBuf *t, double v) {
    if (isfinite(v)) textbuf_printf(t, "%.4f", v);
    else textbuf_printf(t, "n/a");
}
static void put_nats_ci(TextBuf *t, const MeanCI *m) {
    put_nats(t, m->mean);
    if (isfinite(m->ci_low)) textbuf_printf(t, " [%.4f, %.4f]", m->ci_low, m->ci_high);
    textbuf_printf(t, " (n=%d)", m->n);
}
/* the cell of a factor table: "72.3 ± 4.1 (n=12)" */
static void put_cell(TextBuf *t, const MeanCI *m) {
    if (m->n == 0) { textbuf_printf(t, " – |"); return; }
    textbuf_printf(t, " ");
    put_mean_std(t, m);
    textbuf_printf(t, " (n=%d) |", m->n);
}
static void put_wilcoxon(TextBuf *t, const WilcoxonResult *w) {
    put_p(t, w->p);
    if (isfinite(w->p)) textbuf_printf(t, " (%s)", w->exact ? "exact" : "normal");
}
static void put_sign(TextBuf *t, const SignTestResult *s) {
    put_p(t, s->p);
    textbuf_printf(t, " (%d+/%d−)", s->n_pos, s->n_neg);
}
static const char *kind_label(int hidden, char *buf, size_t size) {
    if (hidden == 0) snprintf(buf, size, "linear (h=0)");
    else snprintf(buf, size, "MLP (h=%d)", hidden);
    return buf;
}

/* ======================================================================================
 * plots
 * ====================================================================================== */

static int write_plot(Report *rep, const char *file, TextBuf *svg) {
    if (svg->failed) return -1;
    char path[4400];
    snprintf(path, sizeof path, "%s/plots/%s", rep->dir, file);
    if (write_file_atomic(path, svg->data, svg->len) != 0) return -1;
    if (rep->n_plots < MAX_PLOTS) snprintf(rep->plots[rep->n_plots++], sizeof rep->plots[0], "%s", file);
    return 0;
}

static void embed_plot(Report *rep, const char *file, const char *alt) { textbuf_printf(&rep->body, "\n![%s](plots/%s)\n", alt, file); }

/* ======================================================================================
 * sections
 * ====================================================================================== */

static int count_excluded(const Report *rep, int bits) {
    int k = 0;
    for (int i = 0; i < rep->n_runs; i++)
        if (!rep->runs[i].control && (bits < 0 || rep->runs[i].bits == bits) && !rep->runs[i].recovery_ok) k++;
    return k;
}

/* The sites of correct_every e in an L-block model (SPEC section 4: after block i when
 * (i+1) % e == 0, and after the last block), as a bit mask; 0 when L is too deep for it. */
static uint64_t site_mask(int every, int n_layer) {
    if (n_layer < 1 || n_layer > 64 || every < 1) return 0;
    uint64_t mask = 0;
    for (int i = 0; i < n_layer; i++)
        if (correction_is_site(i, n_layer, every)) mask |= (uint64_t)1 << i;
    return mask;
}

/* Names the correct_every values that place the same sites at some model size (every >= layers
 * leaves one site, after the last block): their runs are one configuration measured twice, and
 * a reader comparing frequencies should know it. */
static void coinciding_every_note(TextBuf *t, const Report *rep) {
    for (int z = 0; z < rep->n_sizes; z++)
        for (int a = 0; a < rep->n_every; a++) {
            uint64_t ma = site_mask(rep->every[a], rep->sizes[z].n_layer);
            int first = 1, earlier = 0;
            for (int b = 0; b < a; b++) earlier |= ma && site_mask(rep->every[b], rep->sizes[z].n_layer) == ma;
            if (earlier) continue; /* reported with the first value of its set */
            for (int b = a + 1; b < rep->n_every; b++) {
                if (!ma || site_mask(rep->every[b], rep->sizes[z].n_layer) != ma) continue;
                if (first) textbuf_printf(t, " (at %s, correct_every %d", rep->sizes[z].name, rep->every[a]);
                textbuf_printf(t, " and %d", rep->every[b]);
                first = 0;
            }
            if (!first)
                textbuf_printf(t, " place the same correction sites, so those runs repeat one configuration and their "
                                  "recoveries coincide)");
        }
}

static void write_header(Report *rep) {
    TextBuf *t = &rep->head;
    textbuf_printf(t, "# qcorr report\n\n");
    textbuf_printf(t, "Generated by `qcorr report` from `%s` alone: %d runs (%d quantized, %d in the control arm). ", rep->csv_path,
                   rep->n_runs, rep->n_quant, rep->n_control);
    textbuf_printf(t, "Recovery = (loss_quant − loss_corrected) / (loss_quant − loss_float) in validation loss (nats), in percent; "
                      "over 100%% means the corrected model beats the float one.\n\n");
    textbuf_printf(t, "**Grid** (distinct values of each factor):\n\n");
    textbuf_printf(t, "- seeds (the replication unit): ");
    for (int i = 0; i < rep->n_seeds; i++) textbuf_printf(t, "%s%ld", i ? ", " : "", rep->seeds[i]);
    textbuf_printf(t, " (%d)\n- bits: ", rep->n_seeds);
    for (int i = 0; i < rep->n_bits; i++) textbuf_printf(t, "%s%d", i ? ", " : "", rep->bits[i]);
    if (rep->n_control) textbuf_printf(t, " (and 32 = unquantized, the control arm)");
    textbuf_printf(t, "\n- model size (d_model x layers): ");
    for (int i = 0; i < rep->n_sizes; i++) textbuf_printf(t, "%s%s", i ? ", " : "", rep->sizes[i].name);
    textbuf_printf(t, "\n- correct_every: ");
    for (int i = 0; i < rep->n_every; i++) textbuf_printf(t, "%s%d", i ? ", " : "", rep->every[i]);
    coinciding_every_note(t, rep);
    textbuf_printf(t, "\n- correction hidden size: ");
    for (int i = 0; i < rep->n_hidden; i++) textbuf_printf(t, "%s%d%s", i ? ", " : "", rep->hidden[i], rep->hidden[i] == 0 ? " (linear)" : "");
    textbuf_printf(t, "\n- method: ");
    for (int i = 0; i < rep->n_methods; i++) textbuf_printf(t, "%s%s", i ? ", " : "", rep->methods[i][0] ? rep->methods[i] : "(empty)");
    textbuf_printf(t, "\n- objective: ");
    for (int i = 0; i < rep->n_objectives; i++) textbuf_printf(t, "%s%s", i ? ", " : "", rep->objectives[i][0] ? rep->objectives[i] : "(empty)");
    if (rep->n_calibs) {
        textbuf_printf(t, "\n- calibration tokens: ");
        for (int i = 0; i < rep->n_calibs; i++) textbuf_printf(t, "%s%ld", i ? ", " : "", rep->calibs[i]);
    }
    textbuf_printf(t, "\n\n**Quantization schemes**:\n\n");
    for (int i = 0; i < rep->n_schemes; i++) textbuf_printf(t, "- `%s`\n", rep->schemes[i][0] ? rep->schemes[i] : "(empty)");
    /* how to reproduce: the sweep's own command line, from its manifest */
    char manifest[4200];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", rep->dir);
    size_t size;
    uint8_t *text = read_file(manifest, &size);
    qc_clear_error();
    if (text) {
        cJSON *j = cJSON_Parse((const char *)text);
        const cJSON *command = j ? cJSON_GetObjectItemCaseSensitive(j, "command") : NULL;
        TextBuf line = {0};
        if (cJSON_IsString(command) && command->valuestring[0]) {
            textbuf_printf(&line, "%s", command->valuestring);
        } else if (cJSON_IsArray(command)) {
            const cJSON *arg;
            int k = 0;
            cJSON_ArrayForEach(arg, command) if (cJSON_IsString(arg)) textbuf_printf(&line, "%s%s", k++ ? " " : "", arg->valuestring);
        }
        if (line.len && !line.failed && !strchr(line.data, '`'))
            textbuf_printf(t, "\n**Reproduce / cite**: the runs came from `%s` (recorded in `manifest.json`); "
                              "`qcorr report %s` rebuilds this report from its `summary.csv`.\n", line.data, rep->dir);
        textbuf_free(&line);
        cJSON_Delete(j);
        free(text);
    }
    textbuf_printf(t, "\n**Statistics.** Each cell pools the runs it names; \"mean ± std\" is over those runs, the 95%% CI is "
                      "mean ± t(0.975, n−1)·std/√n (Student t), and n counts runs unless a table says otherwise. Runs that "
                      "share a seed share a float model, so intervals over pooled runs are descriptive; seeds are the "
                      "replication unit of the configuration tables (mean ± std over seeds). Paired comparisons use one "
                      "difference per matched configuration, its 95%% t-interval, the Wilcoxon signed-rank test (exact "
                      "distribution when at most 30 non-zero differences and no ties, otherwise the normal approximation "
                      "with tie and continuity correction; zero differences dropped) and the exact two-sided sign test. "
                      "p-values are not corrected for multiple comparisons.\n");
    int excluded = count_excluded(rep, -1);
    if (excluded) {
        /* one line per flag value, so an unexpected flag is visible rather than folded in */
        const char *flags[MAX_LEVELS];
        int n_flags = 0;
        for (int i = 0; i < rep->n_runs; i++)
            if (!rep->runs[i].control && !rep->runs[i].recovery_ok) add_string_level(flags, &n_flags, rep->runs[i].flag, "recovery_flag");
        qc_clear_error();
        textbuf_printf(t, "\n**Note: %d run%s excluded from the recovery statistics** (never averaged in):", excluded, excluded == 1 ? "" : "s");
        for (int f = 0; f < n_flags; f++) {
            int k = 0;
            for (int i = 0; i < rep->n_runs; i++)
                if (!rep->runs[i].control && !rep->runs[i].recovery_ok && strcmp(rep->runs[i].flag, flags[f]) == 0) k++;
            const char *sep = f ? ";" : "";
            if (strcmp(flags[f], "undefined") == 0) textbuf_printf(t, "%s %d with loss gap below 1e-4 (recovery_flag = undefined)", sep, k);
            else if (strcmp(flags[f], "ok") == 0) textbuf_printf(t, "%s %d with recovery_flag = ok but no recovery value", sep, k);
            else textbuf_printf(t, "%s %d with recovery_flag = %s", sep, k, flags[f][0] ? flags[f] : "(empty)");
        }
        textbuf_printf(t, ". Their perplexities still count in section 2.\n");
    }
}

/* 1. recovery by bit width */
static void section_by_bits(Report *rep) {
    TextBuf *t = &rep->body;
    textbuf_printf(t, "\n## 1. Recovery by bit width\n\n");
    textbuf_printf(t, "| bits | n | mean ± std (%%) | 95%% CI (%%) | runs > 80%% (%%) | excluded |\n|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++) {
        int bits = rep->bits[k];
        Select s = select_bits(bits);
        int n = collect_recovery(rep, &s, rep->a);
        MeanCI m = stats_mean_ci(rep->a, n, 0.95);
        int above = 0;
        for (int i = 0; i < n; i++) above += rep->a[i] > 0.8;
        double share = n ? (double)above / n : NAN;
        int excluded = count_excluded(rep, bits);
        textbuf_printf(t, "| %d | %d | ", bits, n);
        put_mean_std(t, &m);
        textbuf_printf(t, " | ");
        put_ci(t, m.ci_low, m.ci_high, 1);
        textbuf_printf(t, " | ");
        put_pct(t, share, 1);
        textbuf_printf(t, " | %d |\n", excluded);
        if (rep->summary && k < REPORT_MAX_BITS) {
            ReportBits *rb = &rep->summary->bits[rep->summary->n_bits++];
            rb->bits = bits;
            rb->n_runs = n + excluded;
            rb->n_excluded = excluded;
            rb->recovery = m;
            rb->share_above_80 = share;
        }
        TextBuf *c = &rep->conclusions;
        if (n >= 2) {
            textbuf_printf(c, "- At %d bits, corrections recover %.1f%% of the quantization loss gap on average (95%% CI [%.1f, %.1f]%%, "
                              "n = %d runs); %.1f%% of runs recover more than 80%%.",
                           bits, 100 * m.mean, 100 * m.ci_low, 100 * m.ci_high, n, 100 * share);
            if (m.ci_low > 1.0) textbuf_printf(c, " The whole interval lies above 100%%: on average the corrected models beat the float ones.");
            if (m.ci_high < 0.0) textbuf_printf(c, " The whole interval lies below 0: on average the corrections make the loss worse.");
            textbuf_printf(c, "\n");
        } else if (n == 1) {
            textbuf_printf(c, "- At %d bits only one run has a defined recovery (%.1f%%): no interval, no claim.\n", bits, 100 * m.mean);
        } else {
            int undefined = 0;
            for (int i = 0; i < rep->n_runs; i++)
                undefined += !rep->runs[i].control && rep->runs[i].bits == bits && strcmp(rep->runs[i].flag, "undefined") == 0;
            if (undefined == excluded)
                textbuf_printf(c, "- At %d bits no run has a defined recovery (all %d runs changed the loss by less than 1e-4 nats "
                                  "when quantized): there is no measurable loss to recover, and this width gets no recovery "
                                  "comparison below.\n", bits, excluded);
            else
                textbuf_printf(c, "- At %d bits no run has a defined recovery (all %d excluded, see the note above); this width gets "
                                  "no recovery comparison below.\n", bits, excluded);
        }
    }
}

/* 2. perplexity by bit width */
static void section_perplexity(Report *rep) {
    TextBuf *t = &rep->body;
    textbuf_printf(t, "\n## 2. Perplexity by bit width\n\nMeans over all quantized runs (n runs); recoveries over the runs where "
                      "they are defined (n rec).\n\n");
    textbuf_printf(t, "| bits | n | ppl float | ppl quantized | ppl corrected | n rec | recovery, loss (%%) | recovery, ppl (%%) |\n"
                      "|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++) {
        int bits = rep->bits[k], n = 0, n_rec = 0;
        double pf = 0, pq = 0, pc = 0, rl = 0, rp = 0;
        for (int i = 0; i < rep->n_runs; i++) {
            const Run *r = &rep->runs[i];
            if (r->control || r->bits != bits) continue;
            if (isfinite(r->ppl_float) && isfinite(r->ppl_quant) && isfinite(r->ppl_corrected)) {
                pf += r->ppl_float, pq += r->ppl_quant, pc += r->ppl_corrected;
                n++;
            }
            if (r->recovery_ok) {
                rep->a[n_rec] = r->recovery;
                rep->b[n_rec] = r->recovery_ppl;
                n_rec++;
            }
        }
        rl = stats_mean(rep->a, n_rec);
        int n_ppl = 0;
        for (int i = 0; i < n_rec; i++)
            if (isfinite(rep->b[i])) rep->b[n_ppl++] = rep->b[i];
        rp = stats_mean(rep->b, n_ppl);
        textbuf_printf(t, "| %d | %d | ", bits, n);
        if (n) textbuf_printf(t, "%.3f | %.3f | %.3f", pf / n, pq / n, pc / n);
        else textbuf_printf(t, "n/a | n/a | n/a");
        textbuf_printf(t, " | %d | ", n_rec);
        put_pct(t, rl, 1);
        textbuf_printf(t, " | ");
        put_pct(t, rp, 1);
        textbuf_printf(t, " |\n");
    }
}

/* What a paired comparison supports: a direction only when the 95% t-interval excludes 0 AND the
 * signed-rank test agrees at 5% (so a tiny n, where the t-interval alone can exclude 0 but no rank
 * test can, makes no claim). */
typedef enum { VERDICT_TOO_FEW, VERDICT_NONE, VERDICT_CONFLICT, VERDICT_HIGHER, VERDICT_LOWER } Verdict;

static Verdict paired_verdict(const PairedComparison *pc) {
    const MeanCI *d = &pc->diff;
    if (pc->n < 2 || !isfinite(d->ci_low)) return VERDICT_TOO_FEW;
    int ci_excludes = d->ci_low > 0 || d->ci_high < 0;
    int rank_agrees = isfinite(pc->wilcoxon.p) && pc->wilcoxon.p < 0.05;
    if (!ci_excludes) return VERDICT_NONE;
    if (!rank_agrees) return VERDICT_CONFLICT;
    return d->mean > 0 ? VERDICT_HIGHER : VERDICT_LOWER;
}

static void conclude_paired(TextBuf *c, const PairedComparison *pc, const char *where, const char *a_name, const char *b_name,
                            const char *unit_name) {
    const MeanCI *d = &pc->diff;
    Verdict v = paired_verdict(pc);
    if (v == VERDICT_TOO_FEW) {
        textbuf_printf(c, "- %s, too few matched pairs (n = %d) to compare %s with %s.\n", where, pc->n, a_name, b_name);
        return;
    }
    if (v == VERDICT_CONFLICT) {
        textbuf_printf(c, "- %s, no firm conclusion on %s vs %s: the 95%% CI of the paired difference, [%.2f, %.2f] percentage points "
                          "over %d matched %s, excludes 0 but the signed-rank test does not confirm it (Wilcoxon p = ",
                       where, a_name, b_name, 100 * d->ci_low, 100 * d->ci_high, pc->n, unit_name);
    } else if (v == VERDICT_HIGHER || v == VERDICT_LOWER) {
        textbuf_printf(c, "- %s, %s recover %.2f percentage points %s of the loss gap than %s (paired difference over %d matched %s, "
                          "95%% CI [%.2f, %.2f], Wilcoxon p = ",
                       where, a_name, 100 * fabs(d->mean), d->mean > 0 ? "more" : "less", b_name, pc->n, unit_name, 100 * d->ci_low,
                       100 * d->ci_high);
    } else {
        textbuf_printf(c, "- %s, no significant difference between %s and %s (paired difference %.2f percentage points over %d matched "
                          "%s, 95%% CI [%.2f, %.2f] includes 0, Wilcoxon p = ",
                       where, a_name, b_name, 100 * d->mean, pc->n, unit_name, 100 * d->ci_low, 100 * d->ci_high);
    }
    put_wilcoxon(c, &pc->wilcoxon);
    textbuf_printf(c, ", sign test p = ");
    put_p(c, pc->sign.p);
    textbuf_printf(c, ").\n");
}

static void put_paired_cells(TextBuf *t, const PairedComparison *pc) {
    textbuf_printf(t, " | ");
    put_pct(t, pc->mean_b, 1);
    textbuf_printf(t, " | ");
    put_pct(t, pc->mean_a, 1);
    textbuf_printf(t, " | ");
    put_pct(t, pc->diff.mean, 2);
    textbuf_printf(t, " | ");
    put_ci(t, pc->diff.ci_low, pc->diff.ci_high, 2);
    textbuf_printf(t, " | ");
    put_wilcoxon(t, &pc->wilcoxon);
    textbuf_printf(t, " | ");
    put_sign(t, &pc->sign);
    textbuf_printf(t, " |\n");
}

/* 3. linear vs MLP, pooled and paired */
static int section_linear_vs_mlp(Report *rep) {
    TextBuf *t = &rep->body;
    textbuf_printf(t, "\n## 3. Linear (hidden = 0) vs MLP (hidden > 0) corrections\n\n");
    const char *eligible[MAX_LEVELS];
    int n_eligible = 0;
    for (int m = 0; m < rep->n_methods; m++)
        if (method_has_both_kinds(rep, rep->methods[m])) eligible[n_eligible++] = rep->methods[m];
    if (n_eligible == 0) {
        textbuf_printf(t, "No method ran both linear and MLP corrections: nothing to compare.\n");
        textbuf_printf(&rep->conclusions, "- Linear and MLP corrections cannot be compared: no method ran both.\n");
        return 0;
    }
    textbuf_printf(t, "Runs of the method%s that ran both kinds: ", n_eligible == 1 ? "" : "s");
    for (int m = 0; m < n_eligible; m++) textbuf_printf(t, "%s%s", m ? ", " : "", eligible[m]);
    textbuf_printf(t, " (a closed-form lstsq correction is linear only; it is compared in section 9).\n\n");
    textbuf_printf(t, "| bits | n linear | linear: mean ± std (%%) | n MLP | MLP: mean ± std (%%) |\n|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++) {
        MeanCI stats[2];
        for (int kind = 0; kind < 2; kind++) {
            int n = 0;
            for (int m = 0; m < n_eligible; m++) {
                Select s = select_bits(rep->bits[k]);
                s.kind = kind;
                s.method = eligible[m];
                n += collect_recovery(rep, &s, rep->a + n);
            }
            stats[kind] = stats_mean_ci(rep->a, n, 0.95);
        }
        textbuf_printf(t, "| %d | %d | ", rep->bits[k], stats[0].n);
        put_mean_std(t, &stats[0]);
        textbuf_printf(t, " | %d | ", stats[1].n);
        put_mean_std(t, &stats[1]);
        textbuf_printf(t, " |\n");
    }
    textbuf_printf(t, "\n### Paired: MLP − linear\n\nPairing: each linear run is matched with the MLP runs of the same seed, model "
                      "size, correct_every, bits, scheme, calibration budget, method and objective, and paired with the **mean over "
                      "those MLP widths** (one difference per matched configuration, so no linear run is counted twice). Differences "
                      "in percentage points (pp).\n\n");
    textbuf_printf(t, "| bits | pairs | linear (%%) | MLP (%%) | MLP − linear (pp) | 95%% CI (pp) | Wilcoxon p | sign test p |\n"
                      "|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++) {
        int bits = rep->bits[k];
        int n = linear_mlp_pairs(rep, bits, -1, rep->a, rep->b);
        PairedComparison pc;
        if (stats_paired(rep->a, rep->b, n, &pc) != 0) return -1;
        textbuf_printf(t, "| %d | %d", bits, n);
        put_paired_cells(t, &pc);
        char where[64];
        snprintf(where, sizeof where, "At %d bits", bits);
        if (bits_has_recovery(rep, bits)) conclude_paired(&rep->conclusions, &pc, where, "MLP corrections", "linear ones", "configurations");
        if (rep->summary && k < REPORT_MAX_BITS) {
            rep->summary->bits[k].have_linear_vs_mlp = 1;
            rep->summary->bits[k].linear_vs_mlp = pc;
        }
    }
    if (rep->n_hidden > 2) {
        textbuf_printf(t, "\nPer MLP width (each width against the same linear run):\n\n");
        textbuf_printf(t, "| bits | hidden | pairs | linear (%%) | MLP (%%) | MLP − linear (pp) | 95%% CI (pp) | Wilcoxon p | sign test p |\n"
                          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int k = 0; k < rep->n_bits; k++)
            for (int h = 0; h < rep->n_hidden; h++) {
                if (rep->hidden[h] == 0) continue;
                int n = linear_mlp_pairs(rep, rep->bits[k], rep->hidden[h], rep->a, rep->b);
                PairedComparison pc;
                if (stats_paired(rep->a, rep->b, n, &pc) != 0) return -1;
                textbuf_printf(t, "| %d | %d | %d", rep->bits[k], rep->hidden[h], n);
                put_paired_cells(t, &pc);
            }
    }
    return 0;
}

/* 4-6: a factor (hidden, size, every) against bit width; cells mean ± std (n) */
typedef enum { FACTOR_HIDDEN, FACTOR_SIZE, FACTOR_EVERY } Factor;

static void section_factor(Report *rep, Factor factor, const char *heading) {
    TextBuf *t = &rep->body;
    int levels = factor == FACTOR_HIDDEN ? rep->n_hidden : factor == FACTOR_SIZE ? rep->n_sizes : rep->n_every;
    textbuf_printf(t, "\n## %s\n\nCells: mean ± std of recovery (%%) over the runs of the cell (n runs).\n\n| bits |", heading);
    for (int l = 0; l < levels; l++) {
        char label[64];
        if (factor == FACTOR_HIDDEN) kind_label(rep->hidden[l], label, sizeof label);
        else if (factor == FACTOR_SIZE) snprintf(label, sizeof label, "%s", rep->sizes[l].name);
        else snprintf(label, sizeof label, "every %d", rep->every[l]);
        textbuf_printf(t, " %s |", label);
    }
    textbuf_printf(t, "\n|---:|");
    for (int l = 0; l < levels; l++) textbuf_printf(t, "---:|");
    textbuf_printf(t, "\n");
    for (int k = 0; k < rep->n_bits; k++) {
        textbuf_printf(t, "| %d |", rep->bits[k]);
        for (int l = 0; l < levels; l++) {
            Select s = select_bits(rep->bits[k]);
            if (factor == FACTOR_HIDDEN) s.hidden = rep->hidden[l];
            else if (factor == FACTOR_SIZE) s.size = l;
            else s.every = rep->every[l];
            MeanCI m = recovery_stats(rep, &s);
            put_cell(t, &m);
        }
        textbuf_printf(t, "\n");
    }
}

/* 7. configurations: every factor but the seed */
typedef struct {
    int first; /* a run of the configuration */
    MeanCI recovery;
} Config;

static int same_config(const Run *x, const Run *y) {
    return x->bits == y->bits && x->size == y->size && x->every == y->every && x->hidden == y->hidden && x->calib_tokens == y->calib_tokens &&
           strcmp(x->scheme, y->scheme) == 0 && strcmp(x->method, y->method) == 0 && strcmp(x->objective, y->objective) == 0;
}

static int compare_config(const void *pa, const void *pb) {
    const Config *a = pa, *b = pb;
    if (a->recovery.mean != b->recovery.mean) return a->recovery.mean < b->recovery.mean ? 1 : -1;
    return (a->first > b->first) - (a->first < b->first);
}

static void put_config_row(const Report *rep, TextBuf *t, const Config *c, int show_scheme, int show_calib) {
    const Run *r = &rep->runs[c->first];
    textbuf_printf(t, " %d | %s | %d | %d | %s | %s |", r->bits, rep->sizes[r->size].name, r->every, r->hidden, r->method, r->objective);
    if (show_scheme) textbuf_printf(t, " `%s` |", r->scheme);
    if (show_calib) textbuf_printf(t, " %ld |", r->calib_tokens);
    textbuf_printf(t, " ");
    put_pct(t, c->recovery.mean, 1);
    textbuf_printf(t, " | ");
    put_pct(t, c->recovery.std, 1);
    textbuf_printf(t, " | %d |\n", c->recovery.n);
}

static int section_configurations(Report *rep) {
    TextBuf *t = &rep->body;
    Config *configs = qc_malloc(sizeof(Config) * (size_t)rep->n_runs, "report configurations");
    if (!configs) return -1;
    int n_configs = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (r->control || !r->recovery_ok) continue;
        int seen = 0;
        for (int c = 0; c < n_configs && !seen; c++) seen = same_config(&rep->runs[configs[c].first], r);
        if (seen) continue;
        int n = 0;
        for (int j = i; j < rep->n_runs; j++)
            if (!rep->runs[j].control && rep->runs[j].recovery_ok && same_config(&rep->runs[j], r)) rep->a[n++] = rep->runs[j].recovery;
        configs[n_configs++] = (Config){i, stats_mean_ci(rep->a, n, 0.95)};
    }
    qsort(configs, (size_t)n_configs, sizeof *configs, compare_config);
    /* show the scheme only when some bit width ran several, the calibration budget when it varied */
    int show_scheme = 0, show_calib = rep->n_calibs > 1;
    for (int k = 0; k < rep->n_bits; k++) {
        const char *first = NULL;
        for (int i = 0; i < rep->n_runs; i++) {
            const Run *r = &rep->runs[i];
            if (r->control || r->bits != rep->bits[k]) continue;
            if (!first) first = r->scheme;
            else if (strcmp(first, r->scheme) != 0) show_scheme = 1;
        }
    }
    const char *columns = "bits | size | every | hidden | method | objective |";
    textbuf_printf(t, "\n## 7. Top configurations\n\nA configuration is every factor but the seed; mean and std of recovery (%%) over "
                      "its seeds (n seeds with a defined recovery). %d configurations in all.\n\n| rank | %s", n_configs, columns);
    if (show_scheme) textbuf_printf(t, " scheme |");
    if (show_calib) textbuf_printf(t, " calib tokens |");
    textbuf_printf(t, " mean (%%) | std (%%) | n |\n|---:|---:|---:|---:|---:|---|---|");
    if (show_scheme) textbuf_printf(t, "---|");
    if (show_calib) textbuf_printf(t, "---:|");
    textbuf_printf(t, "---:|---:|---:|\n");
    for (int c = 0; c < n_configs && c < 10; c++) {
        textbuf_printf(t, "| %d |", c + 1);
        put_config_row(rep, t, &configs[c], show_scheme, show_calib);
    }
    textbuf_printf(t, "\n### Best configuration per bit width\n\n| %s", columns);
    if (show_scheme) textbuf_printf(t, " scheme |");
    if (show_calib) textbuf_printf(t, " calib tokens |");
    textbuf_printf(t, " mean (%%) | std (%%) | n |\n|---:|---:|---:|---:|---|---|");
    if (show_scheme) textbuf_printf(t, "---|");
    if (show_calib) textbuf_printf(t, "---:|");
    textbuf_printf(t, "---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++)
        for (int c = 0; c < n_configs; c++) {
            const Run *r = &rep->runs[configs[c].first];
            if (r->bits != rep->bits[k]) continue;
            textbuf_printf(t, "|");
            put_config_row(rep, t, &configs[c], show_scheme, show_calib);
            textbuf_printf(&rep->conclusions, "- At %d bits the highest mean recovery, %.1f%%", r->bits, 100 * configs[c].recovery.mean);
            if (isfinite(configs[c].recovery.std)) textbuf_printf(&rep->conclusions, " ± %.1f", 100 * configs[c].recovery.std);
            textbuf_printf(&rep->conclusions, " over %d seed%s, comes from size %s, every %d, hidden %d, %s/%s (a ranking of means, "
                                              "not a test against the runner-up).\n",
                           configs[c].recovery.n, configs[c].recovery.n == 1 ? "" : "s", rep->sizes[r->size].name, r->every, r->hidden,
                           r->method, r->objective);
            break;
        }
    free(configs);
    return 0;
}

/* 8. the control arm */
static int same_correction(const Run *x, const Run *y) {
    return x->size == y->size && x->every == y->every && x->hidden == y->hidden && x->calib_tokens == y->calib_tokens &&
           strcmp(x->method, y->method) == 0 && strcmp(x->objective, y->objective) == 0;
}

static int section_control(Report *rep) {
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    textbuf_printf(t, "\n## 8. Control arm: correction training on the unquantized model\n\n");
    if (rep->n_control == 0) {
        textbuf_printf(t, "No control-arm runs (arm = control) in summary.csv: how much of a recovery is plain extra fine-tuning "
                          "cannot be assessed.\n");
        textbuf_printf(c, "- No control arm ran, so no statement separates recovery from plain extra fine-tuning.\n");
        return 0;
    }
    textbuf_printf(t, "Gain = loss before − loss after correction training (nats; gain_loss). The control arm trains the same "
                      "correction on the float model; its gain is what correction training buys without any quantization loss to "
                      "recover. Cells: mean [95%% CI] (n runs), matched on size, correct_every, hidden, method, objective and "
                      "calibration budget.\n\n| size | every | hidden | method/objective | control gain |");
    for (int k = 0; k < rep->n_bits; k++) textbuf_printf(t, " %d-bit gain |", rep->bits[k]);
    textbuf_printf(t, "\n|---:|---:|---:|---|---:|");
    for (int k = 0; k < rep->n_bits; k++) textbuf_printf(t, "---:|");
    textbuf_printf(t, "\n");
    int *group_first = qc_malloc(sizeof(int) * (size_t)rep->n_runs, "control groups");
    if (!group_first) return -1;
    int n_groups = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        if (!rep->runs[i].control) continue;
        int seen = 0;
        for (int g = 0; g < n_groups && !seen; g++) seen = same_correction(&rep->runs[group_first[g]], &rep->runs[i]);
        if (!seen) group_first[n_groups++] = i;
    }
    for (int g = 0; g < n_groups; g++) {
        const Run *key = &rep->runs[group_first[g]];
        int n = 0;
        for (int i = 0; i < rep->n_runs; i++)
            if (rep->runs[i].control && same_correction(&rep->runs[i], key) && isfinite(rep->runs[i].gain)) rep->a[n++] = rep->runs[i].gain;
        MeanCI m = stats_mean_ci(rep->a, n, 0.95);
        textbuf_printf(t, "| %s | %d | %d | %s/%s | ", rep->sizes[key->size].name, key->every, key->hidden, key->method, key->objective);
        put_nats_ci(t, &m);
        textbuf_printf(t, " |");
        for (int k = 0; k < rep->n_bits; k++) {
            n = 0;
            for (int i = 0; i < rep->n_runs; i++) {
                const Run *r = &rep->runs[i];
                if (!r->control && r->bits == rep->bits[k] && same_correction(r, key) && isfinite(r->gain)) rep->a[n++] = r->gain;
            }
            m = stats_mean_ci(rep->a, n, 0.95);
            textbuf_printf(t, " ");
            if (n) put_nats_ci(t, &m);
            else textbuf_printf(t, "–");
            textbuf_printf(t, " |");
        }
        textbuf_printf(t, "\n");
    }
    free(group_first);
    /* pooled, paired by seed: each quantized run against the control run of its seed and correction */
    textbuf_printf(t, "\n### Paired: quantized gain − control gain\n\nEach quantized run is paired with the control run of the same "
                      "seed and correction (size, every, hidden, method, objective, calibration). Control-adjusted recovery = "
                      "(gain_quant − gain_control) / (loss_quant − loss_float), over pairs with a defined recovery.\n\n"
                      "| bits | pairs | quantized gain | control gain | difference (nats) | 95%% CI | Wilcoxon p | sign test p | "
                      "control / quantized gain (%%) | recovery (%%) | control-adjusted recovery (%%) |\n"
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++) {
        int bits = rep->bits[k], n = 0, n_adj = 0;
        double *adjusted = rep->c, recovery_sum = 0.0;
        for (int i = 0; i < rep->n_runs; i++) {
            const Run *q = &rep->runs[i];
            if (q->control || q->bits != bits || !isfinite(q->gain)) continue;
            for (int j = 0; j < rep->n_runs; j++) {
                const Run *ctl = &rep->runs[j];
                if (!ctl->control || ctl->seed != q->seed || !same_correction(ctl, q) || !isfinite(ctl->gain)) continue;
                rep->a[n] = q->gain;
                rep->b[n] = ctl->gain;
                n++;
                if (q->recovery_ok) {
                    adjusted[n_adj++] = (q->gain - ctl->gain) / (q->loss_quant - q->loss_float);
                    recovery_sum += q->recovery;
                }
                break;
            }
        }
        PairedComparison pc;
        if (stats_paired(rep->a, rep->b, n, &pc) != 0) return -1;
        MeanCI adj = stats_mean_ci(adjusted, n_adj, 0.95);
        textbuf_printf(t, "| %d | %d | ", bits, n);
        put_nats(t, pc.mean_a);
        textbuf_printf(t, " | ");
        put_nats(t, pc.mean_b);
        textbuf_printf(t, " | ");
        put_nats(t, pc.diff.mean);
        textbuf_printf(t, " | ");
        if (isfinite(pc.diff.ci_low)) textbuf_printf(t, "[%.4f, %.4f]", pc.diff.ci_low, pc.diff.ci_high);
        else textbuf_printf(t, "n/a");
        textbuf_printf(t, " | ");
        put_wilcoxon(t, &pc.wilcoxon);
        textbuf_printf(t, " | ");
        put_sign(t, &pc.sign);
        textbuf_printf(t, " | ");
        /* a share of a gain below the 1e-4-nat resolution of recovery would be noise */
        put_pct(t, n && pc.mean_a > 1e-4 ? pc.mean_b / pc.mean_a : NAN, 1);
        textbuf_printf(t, " | ");
        put_pct(t, n_adj ? recovery_sum / n_adj : NAN, 1);
        textbuf_printf(t, " | ");
        put_mean_std(t, &adj);
        textbuf_printf(t, " (n=%d) |\n", n_adj);
        /* the sentence */
        if (n < 2 || !isfinite(pc.diff.ci_low)) {
            textbuf_printf(c, "- At %d bits, too few quantized runs with a matching control run (n = %d) to separate recovery from "
                              "fine-tuning.\n", bits, n);
            continue;
        }
        Verdict verdict = paired_verdict(&pc);
        if (verdict == VERDICT_HIGHER) {
            textbuf_printf(c, "- At %d bits, the quantized models gain %.4f nats more from correction training than the float control "
                              "does (paired over %d runs, 95%% CI [%.4f, %.4f], Wilcoxon p = ",
                           bits, pc.diff.mean, n, pc.diff.ci_low, pc.diff.ci_high);
            put_wilcoxon(c, &pc.wilcoxon);
            textbuf_printf(c, ", sign test p = ");
            put_p(c, pc.sign.p);
            textbuf_printf(c, "): the recovery is more than plain extra fine-tuning; the control gain is %.1f%% of the quantized gain",
                           100 * pc.mean_b / pc.mean_a);
            if (n_adj >= 2) textbuf_printf(c, ", and the control-adjusted recovery is %.1f%% (95%% CI [%.1f, %.1f]%%)", 100 * adj.mean,
                                           100 * adj.ci_low, 100 * adj.ci_high);
            textbuf_printf(c, ".\n");
        } else if (verdict == VERDICT_LOWER) {
            textbuf_printf(c, "- At %d bits, the float control gains %.4f nats more from the same correction training than the "
                              "quantized models (paired over %d runs, 95%% CI [%.4f, %.4f], Wilcoxon p = %.3g): correction training helps "
                              "the quantized models no more than it helps the float model.\n",
                           bits, -pc.diff.mean, n, pc.diff.ci_low, pc.diff.ci_high, pc.wilcoxon.p);
        } else if (pc.diff.ci_low > 0 || pc.diff.ci_high < 0) {
            /* the interval excludes 0 but the signed-rank test cannot confirm it (few pairs) */
            textbuf_printf(c, "- At %d bits, no firm conclusion on the quantized models' gain against the float control's: "
                              "the 95%% CI of the paired difference, [%.4f, %.4f] nats over %d runs, excludes 0 but the "
                              "signed-rank test does not confirm it (Wilcoxon p = %.3g).\n",
                           bits, pc.diff.ci_low, pc.diff.ci_high, n, pc.wilcoxon.p);
        } else {
            textbuf_printf(c, "- At %d bits, the quantized models' gain is not distinguishable from the float control's (paired "
                              "difference %.4f nats over %d runs, 95%% CI [%.4f, %.4f], Wilcoxon p = %.3g): the recovery may be "
                              "plain extra fine-tuning.\n", bits, pc.diff.mean, n, pc.diff.ci_low, pc.diff.ci_high, pc.wilcoxon.p);
        }
    }
    return 0;
}

/* 9. learned (train) vs closed-form (lstsq) linear corrections */
static int section_methods(Report *rep) {
    int have_train = 0, have_lstsq = 0;
    for (int m = 0; m < rep->n_methods; m++) {
        have_train |= strcmp(rep->methods[m], "train") == 0;
        have_lstsq |= strcmp(rep->methods[m], "lstsq") == 0;
    }
    if (!have_train || !have_lstsq) return 0;
    TextBuf *t = &rep->body;
    /* the objectives the learned linear corrections used */
    const char *objectives[MAX_LEVELS];
    int n_obj = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (!r->control && r->hidden == 0 && strcmp(r->method, "train") == 0 && add_string_level(objectives, &n_obj, r->objective, "objective"))
            return -1;
    }
    qsort(objectives, (size_t)n_obj, sizeof(char *), compare_string);
    textbuf_printf(t, "\n## 9. Learned vs closed-form linear corrections\n\nEach closed-form (method = lstsq) run is paired with the "
                      "learned linear run (method = train, hidden = 0) of the same seed, size, correct_every, bits, scheme and "
                      "calibration budget, separately for each training objective. Differences learned − closed-form in percentage "
                      "points.\n\n| bits | learned objective | pairs | closed-form (%%) | learned (%%) | learned − closed-form (pp) | "
                      "95%% CI (pp) | Wilcoxon p | sign test p |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    int n_series = 1 + n_obj;
    double *value = qc_malloc(sizeof(double) * 3 * (size_t)(rep->n_bits * n_series), "method plot");
    if (!value) return -1;
    double *low = value + rep->n_bits * n_series, *high = low + rep->n_bits * n_series;
    for (int k = 0; k < rep->n_bits; k++) {
        int bits = rep->bits[k];
        for (int o = 0; o < n_obj; o++) {
            int n = 0;
            for (int i = 0; i < rep->n_runs; i++) {
                const Run *l = &rep->runs[i];
                if (l->control || l->bits != bits || strcmp(l->method, "lstsq") != 0 || !l->recovery_ok) continue;
                double sum = 0.0;
                int count = 0;
                for (int j = 0; j < rep->n_runs; j++) {
                    const Run *tr = &rep->runs[j];
                    if (tr->control || !tr->recovery_ok || tr->hidden != l->hidden || strcmp(tr->method, "train") != 0 ||
                        strcmp(tr->objective, objectives[o]) != 0 || !same_base(tr, l))
                        continue;
                    sum += tr->recovery;
                    count++;
                }
                if (!count) continue;
                rep->a[n] = sum / count;
                rep->b[n] = l->recovery;
                n++;
            }
            PairedComparison pc;
            if (stats_paired(rep->a, rep->b, n, &pc) != 0) { free(value); return -1; }
            textbuf_printf(t, "| %d | %s | %d", bits, objectives[o], n);
            put_paired_cells(t, &pc);
            char where[64], learned[96];
            snprintf(where, sizeof where, "At %d bits", bits);
            snprintf(learned, sizeof learned, "learned (%s) linear corrections", objectives[o]);
            if (bits_has_recovery(rep, bits)) conclude_paired(&rep->conclusions, &pc, where, learned, "closed-form least-squares ones", "runs");
        }
        /* bars: every linear run of each method/objective at this width (unpaired), 95% CI whiskers */
        for (int s = 0; s < n_series; s++) {
            Select sel = select_bits(bits);
            sel.kind = KIND_LINEAR;
            sel.method = s == 0 ? "lstsq" : "train";
            sel.objective = s == 0 ? NULL : objectives[s - 1];
            MeanCI m = recovery_stats(rep, &sel);
            value[k * n_series + s] = 100 * m.mean;
            low[k * n_series + s] = 100 * m.ci_low;
            high[k * n_series + s] = 100 * m.ci_high;
        }
    }
    const char **series = qc_malloc(sizeof(char *) * (size_t)n_series, "plot labels");
    char (*names)[96] = qc_malloc(sizeof *names * (size_t)n_series, "plot labels");
    char (*groups)[32] = qc_malloc(sizeof *groups * (size_t)rep->n_bits, "plot labels");
    const char **group_labels = qc_malloc(sizeof(char *) * (size_t)rep->n_bits, "plot labels");
    int rc = -1;
    if (series && names && groups && group_labels) {
        for (int s = 0; s < n_series; s++) {
            if (s == 0) snprintf(names[s], sizeof names[s], "closed-form (lstsq)");
            else snprintf(names[s], sizeof names[s], "learned (%s)", objectives[s - 1]);
            series[s] = names[s];
        }
        for (int k = 0; k < rep->n_bits; k++) {
            snprintf(groups[k], sizeof groups[k], "%d bits", rep->bits[k]);
            group_labels[k] = groups[k];
        }
        TextBuf svg = {0};
        svg_bar_chart(&svg, "Linear corrections: learned vs closed-form", "recovery (%)", group_labels, rep->n_bits, series, n_series,
                      value, low, high);
        rc = write_plot(rep, "learned_vs_closed_form.svg", &svg);
        textbuf_free(&svg);
        if (rc == 0) {
            textbuf_printf(t, "\nBars: mean recovery of all linear runs of each method at each width (n as in the tables above), "
                              "whiskers 95%% CI.\n");
            embed_plot(rep, "learned_vs_closed_form.svg", "learned vs closed-form linear corrections");
        }
    }
    free(series);
    free(names);
    free(groups);
    free(group_labels);
    free(value);
    return rc;
}

/* plots: recovery by bit width per correction type; heat maps of size × every per bit width */
static int plots_recovery(Report *rep) {
    TextBuf *t = &rep->body;
    int n_groups = rep->n_bits, n_series = rep->n_hidden;
    size_t cells = (size_t)(n_groups * n_series);
    double *value = qc_malloc(sizeof(double) * 3 * (cells ? cells : 1), "recovery plot");
    char (*names)[48] = qc_malloc(sizeof *names * (size_t)(n_series + n_groups + 1), "plot labels");
    const char **labels = qc_malloc(sizeof(char *) * (size_t)(n_series + n_groups + 1), "plot labels");
    if (!value || !names || !labels) { free(value); free(names); free(labels); return -1; }
    double *low = value + cells, *high = low + cells;
    for (int k = 0; k < n_groups; k++)
        for (int h = 0; h < n_series; h++) {
            Select s = select_bits(rep->bits[k]);
            s.hidden = rep->hidden[h];
            MeanCI m = recovery_stats(rep, &s);
            value[k * n_series + h] = 100 * m.mean;
            low[k * n_series + h] = 100 * m.ci_low;
            high[k * n_series + h] = 100 * m.ci_high;
        }
    for (int h = 0; h < n_series; h++) labels[h] = kind_label(rep->hidden[h], names[h], sizeof names[h]);
    for (int k = 0; k < n_groups; k++) {
        snprintf(names[n_series + k], sizeof names[0], "%d bits", rep->bits[k]);
        labels[n_series + k] = names[n_series + k];
    }
    TextBuf svg = {0};
    svg_bar_chart(&svg, "Recovery by bit width and correction type", "recovery (%)", labels + n_series, n_groups, labels, n_series, value,
                  low, high);
    int rc = write_plot(rep, "recovery_by_bits.svg", &svg);
    textbuf_free(&svg);
    free(value);
    if (rc == 0) {
        textbuf_printf(t, "\nRecovery by bit width for each correction type (mean over the runs of each cell, whiskers 95%% CI; n as in "
                          "section 4):\n");
        embed_plot(rep, "recovery_by_bits.svg", "recovery by bit width and correction type");
    }
    /* heat maps: rows model size, columns correct_every */
    double *grid = rc == 0 ? qc_malloc(sizeof(double) * (size_t)(rep->n_sizes * rep->n_every + 1), "heat map") : NULL;
    char (*cols)[32] = grid ? qc_malloc(sizeof *cols * (size_t)(rep->n_every + 1), "heat map labels") : NULL;
    const char **col_labels = cols ? qc_malloc(sizeof(char *) * (size_t)(rep->n_every + 1), "heat map labels") : NULL;
    const char **row_labels = col_labels ? qc_malloc(sizeof(char *) * (size_t)(rep->n_sizes + 1), "heat map labels") : NULL;
    if (!row_labels) rc = -1;
    if (rc == 0) {
        for (int e = 0; e < rep->n_every; e++) {
            snprintf(cols[e], sizeof cols[e], "%d", rep->every[e]);
            col_labels[e] = cols[e];
        }
        for (int s = 0; s < rep->n_sizes; s++) row_labels[s] = rep->sizes[s].name;
        textbuf_printf(t, "\nHeat maps of mean recovery (%%), model size × correct_every, pooled over hidden sizes, methods and seeds "
                          "(cell n as in sections 5 and 6):\n");
    }
    for (int k = 0; rc == 0 && k < rep->n_bits; k++) {
        if (!bits_has_recovery(rep, rep->bits[k])) {
            textbuf_printf(t, "\nNo heat map at %d bits: no run there has a defined recovery.\n", rep->bits[k]);
            continue;
        }
        for (int s = 0; s < rep->n_sizes; s++)
            for (int e = 0; e < rep->n_every; e++) {
                Select sel = select_bits(rep->bits[k]);
                sel.size = s;
                sel.every = rep->every[e];
                int n = collect_recovery(rep, &sel, rep->a);
                grid[s * rep->n_every + e] = 100 * stats_mean(rep->a, n);
            }
        char title[96], file[64];
        snprintf(title, sizeof title, "Recovery (%%) at %d bits: model size x correct_every", rep->bits[k]);
        snprintf(file, sizeof file, "recovery_heatmap_%dbit.svg", rep->bits[k]);
        svg = (TextBuf){0};
        svg_heat_map(&svg, title, "correct_every (a correction after every k-th block)", "model size (d_model x layers)", col_labels,
                     rep->n_every, row_labels, rep->n_sizes, grid, "%.1f", "recovery %");
        rc = write_plot(rep, file, &svg);
        textbuf_free(&svg);
        if (rc == 0) embed_plot(rep, file, title);
    }
    free(grid);
    free(cols);
    free(col_labels);
    free(row_labels);
    free(names);
    free(labels);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* float training loss curves from DIR/floats/ *.train.csv */
static int section_loss_curves(Report *rep) {
    TextBuf *t = &rep->body;
    textbuf_printf(t, "\n## Float training loss curves\n\n");
    char floats[4200];
    snprintf(floats, sizeof floats, "%s/floats", rep->dir);
    char **names = NULL;
    int n_names = 0, cap_names = 0;
    DIR *d = opendir(floats);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!ends_with(e->d_name, ".train.csv") || e->d_name[0] == '.') continue;
            if (n_names == cap_names) {
                cap_names = cap_names ? 2 * cap_names : 16;
                char **grown = realloc(names, sizeof(char *) * (size_t)cap_names);
                if (!grown) break;
                names = grown;
            }
            names[n_names] = strdup(e->d_name);
            if (names[n_names]) n_names++;
        }
        closedir(d);
    }
    if (n_names > 1) qsort(names, (size_t)n_names, sizeof(char *), compare_string);
    SvgSeries *series = qc_calloc((size_t)(2 * n_names + 1), sizeof(SvgSeries), "loss curves");
    double **buffers = qc_calloc((size_t)(4 * n_names + 1), sizeof(double *), "loss curves");
    char (*labels)[160] = qc_calloc((size_t)(2 * n_names + 1), sizeof *labels, "loss curves");
    int n_series = 0, n_files = 0, rc = 0;
    TextBuf skipped = {0};
    if (!series || !buffers || !labels) rc = -1;
    for (int f = 0; rc == 0 && f < n_names; f++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", floats, names[f]);
        ReportCsv csv;
        if (report_csv_read(path, &csv) != 0) {
            textbuf_printf(&skipped, "- skipped `%s`: %s\n", names[f], qc_last_error());
            qc_clear_error();
            continue;
        }
        int c_step = report_csv_column(&csv, "step"), c_loss = report_csv_column(&csv, "loss"), c_val = report_csv_column(&csv, "val_loss");
        if (c_step < 0 || c_loss < 0 || csv.n_rows == 0) {
            textbuf_printf(&skipped, "- skipped `%s`: %s\n", names[f], csv.n_rows == 0 ? "no rows" : "no step or loss column");
            report_csv_free(&csv);
            continue;
        }
        /* at most ~500 points per curve: every k-th row, and always the last */
        int stride = (csv.n_rows + 499) / 500, cap = csv.n_rows / stride + 2;
        double *x = malloc(sizeof(double) * (size_t)cap), *y = malloc(sizeof(double) * (size_t)cap);
        double *vx = malloc(sizeof(double) * (size_t)csv.n_rows), *vy = malloc(sizeof(double) * (size_t)csv.n_rows);
        if (!x || !y || !vx || !vy) {
            free(x), free(y), free(vx), free(vy);
            report_csv_free(&csv);
            qc_error("out of memory reading %s", path);
            rc = -1;
            break;
        }
        int n = 0, nv = 0;
        for (int i = 0; i < csv.n_rows; i++) {
            char *end;
            double step = strtod(report_csv_cell(&csv, i, c_step), &end);
            if (i % stride == 0 || i == csv.n_rows - 1) {
                const char *text = report_csv_cell(&csv, i, c_loss);
                double loss = text[0] ? strtod(text, &end) : NAN;
                x[n] = step;
                y[n] = loss;
                n++;
            }
            if (c_val >= 0 && report_csv_cell(&csv, i, c_val)[0]) {
                vx[nv] = step;
                vy[nv] = strtod(report_csv_cell(&csv, i, c_val), &end);
                nv++;
            }
        }
        report_csv_free(&csv);
        char base[128];
        snprintf(base, sizeof base, "%.*s", (int)(strlen(names[f]) - strlen(".train.csv")), names[f]);
        buffers[4 * n_files] = x, buffers[4 * n_files + 1] = y, buffers[4 * n_files + 2] = vx, buffers[4 * n_files + 3] = vy;
        snprintf(labels[n_series], sizeof labels[0], "%s train", base);
        series[n_series] = (SvgSeries){labels[n_series], x, y, n, n_files, 0};
        n_series++;
        if (nv) {
            snprintf(labels[n_series], sizeof labels[0], "%s val", base);
            series[n_series] = (SvgSeries){labels[n_series], vx, vy, nv, n_files, 1};
            n_series++;
        }
        n_files++;
    }
    if (rc == 0 && n_files) {
        textbuf_printf(t, "Read from `%s/*.train.csv` (%d file%s; columns step, loss, val_loss). Solid: training loss; dashed: "
                          "validation loss.\n", floats, n_files, n_files == 1 ? "" : "s");
        TextBuf svg = {0};
        svg_line_plot(&svg, "Float model training loss", "step", "loss (nats)", series, n_series);
        rc = write_plot(rep, "float_loss_curves.svg", &svg);
        textbuf_free(&svg);
        if (rc == 0) embed_plot(rep, "float_loss_curves.svg", "float training loss curves");
        rep->n_loss_curves = n_files;
    } else if (rc == 0) {
        textbuf_printf(t, "No float training logs (`%s/*.train.csv`) were found: the loss-curve plot is skipped.\n", floats);
    }
    if (rc == 0 && skipped.len) textbuf_printf(t, "\n%s", skipped.data);
    textbuf_free(&skipped);
    for (int i = 0; buffers && i < 4 * n_files; i++) free(buffers[i]);
    for (int i = 0; i < n_names; i++) free(names[i]);
    free(names);
    free(series);
    free(buffers);
    free(labels);
    return rc;
}

/* ======================================================================================
 * the report
 * ====================================================================================== */

static int make_plot_dir(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/plots", dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        qc_error("%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        qc_error("%s: exists but is not a directory", path);
        return -1;
    }
    return 0;
}

int report_write(const char *dir, ReportSummary *summary) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        qc_error("%s: %s", dir, stat(dir, &st) != 0 ? "no such directory" : "not a directory");
        return -1;
    }
    Report *rep = qc_calloc(1, sizeof *rep, "report");
    if (!rep) return -1;
    rep->dir = dir;
    rep->summary = summary;
    if (summary) memset(summary, 0, sizeof *summary);
    int rc = load_runs(rep);
    if (rc == 0 && rep->n_quant == 0) {
        qc_error("%s: no quantized runs (arm = quant), only the control arm", rep->csv_path);
        rc = -1;
    }
    if (rc == 0) rc = make_plot_dir(dir);
    if (rc == 0) {
        write_header(rep);
        section_by_bits(rep);
        section_perplexity(rep);
        rc = section_linear_vs_mlp(rep);
    }
    if (rc == 0) {
        section_factor(rep, FACTOR_HIDDEN, "4. Recovery by correction hidden size");
        rc = plots_recovery(rep);
    }
    if (rc == 0) {
        section_factor(rep, FACTOR_SIZE, "5. Recovery by model size (d_model x layers)");
        section_factor(rep, FACTOR_EVERY, "6. Recovery by correct_every");
        rc = section_configurations(rep);
    }
    if (rc == 0) rc = section_control(rep);
    if (rc == 0) rc = section_methods(rep);
    if (rc == 0) rc = section_loss_curves(rep);
    if (rc == 0) {
        int excluded = count_excluded(rep, -1);
        if (excluded)
            textbuf_printf(&rep->conclusions, "- %d quantized run%s left out of every recovery statistic above because the recovery "
                                              "is undefined (see the note above), not averaged in.\n",
                           excluded, excluded == 1 ? " was" : "s were");
        TextBuf md = {0};
        textbuf_append(&md, rep->head.data ? rep->head.data : "", rep->head.len);
        textbuf_printf(&md, "\n## Conclusions\n\nEach sentence below is generated from a statistic and its uncertainty; a difference "
                            "is called significant only when its 95%% CI excludes 0 and the Wilcoxon signed-rank test agrees "
                            "(p < 0.05).\n\n");
        textbuf_append(&md, rep->conclusions.data ? rep->conclusions.data : "", rep->conclusions.len);
        textbuf_append(&md, rep->body.data ? rep->body.data : "", rep->body.len);
        if (md.failed || rep->head.failed || rep->conclusions.failed || rep->body.failed) rc = -1;
        else {
            char path[4200];
            snprintf(path, sizeof path, "%s/report.md", dir);
            rc = write_file_atomic(path, md.data, md.len);
            if (rc == 0 && summary) {
                snprintf(summary->report_path, sizeof summary->report_path, "%.4000s/report.md", dir);
                summary->n_rows = rep->n_runs;
                summary->n_quant = rep->n_quant;
                summary->n_control = rep->n_control;
                summary->n_excluded = excluded;
                summary->n_plots = rep->n_plots;
                summary->n_loss_curves = rep->n_loss_curves;
            }
        }
        textbuf_free(&md);
    }
    textbuf_free(&rep->head);
    textbuf_free(&rep->conclusions);
    textbuf_free(&rep->body);
    report_csv_free(&rep->csv);
    free(rep->runs);
    free(rep->a);
    free(rep->b);
    free(rep->c);
    free(rep);
    return rc;
}
