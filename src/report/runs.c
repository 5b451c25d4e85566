/* report/runs: summary.csv read and checked into Run records, the grid's levels, and the
 * selections and pairings of runs that every section computes its statistics over. */
#include "parts.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util.h"

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
int add_string_level(const char **levels, int *n, const char *v, const char *what) {
    for (int i = 0; i < *n; i++)
        if (strcmp(levels[i], v) == 0) return 0;
    if (*n >= MAX_LEVELS) { qc_error("summary.csv: more than %d distinct values of %s", MAX_LEVELS, what); return -1; }
    levels[(*n)++] = v;
    return 0;
}
static int compare_int(const void *pa, const void *pb) { int a = *(const int *)pa, b = *(const int *)pb; return (a > b) - (a < b); }
static int compare_long(const void *pa, const void *pb) { long a = *(const long *)pa, b = *(const long *)pb; return (a > b) - (a < b); }
int compare_string(const void *pa, const void *pb) { return strcmp(*(const char *const *)pa, *(const char *const *)pb); }
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

int load_runs(Report *rep) {
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

/* ---- selection and pairing ---- */

Select select_bits(int bits) { return (Select){bits, -1, -1, -1, KIND_ANY, NULL, NULL}; }

int run_selected(const Run *r, const Select *s) {
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
int collect_recovery(const Report *rep, const Select *s, double *out) {
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++)
        if (run_selected(&rep->runs[i], s) && rep->runs[i].recovery_ok) out[n++] = rep->runs[i].recovery;
    return n;
}

MeanCI recovery_stats(Report *rep, const Select *s) { return stats_mean_ci(rep->a, collect_recovery(rep, s, rep->a), 0.95); }

/* Same replication unit and model: seed, model size, correct_every, bits, scheme, calibration. */
int same_base(const Run *x, const Run *y) {
    return x->seed == y->seed && x->size == y->size && x->every == y->every && x->bits == y->bits && x->calib_tokens == y->calib_tokens &&
           strcmp(x->scheme, y->scheme) == 0;
}

/* A method "has both kinds" when it ran linear and MLP corrections (lstsq is linear only). */
int method_has_both_kinds(const Report *rep, const char *method) {
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
int linear_mlp_pairs(const Report *rep, int bits, int hidden, double *a, double *b) {
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
int bits_has_recovery(const Report *rep, int bits) {
    for (int i = 0; i < rep->n_runs; i++)
        if (!rep->runs[i].control && rep->runs[i].bits == bits && rep->runs[i].recovery_ok) return 1;
    return 0;
}

int count_excluded(const Report *rep, int bits) {
    int k = 0;
    for (int i = 0; i < rep->n_runs; i++)
        if (!rep->runs[i].control && (bits < 0 || rep->runs[i].bits == bits) && !rep->runs[i].recovery_ok) k++;
    return k;
}
