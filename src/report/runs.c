/* report/runs: summary.csv read and checked into Run records, the grid's levels, and the
 * selections and pairings of runs that every section computes its statistics over. */
#include "report/parts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tables/methods.h"

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

/* Reads summary.csv into rep->runs: every column of the schema the report reads (SCHEMA_READ),
 * by its type; a missing SCHEMA_NEEDED column, an empty SCHEMA_KEY cell, a malformed or
 * non-finite value or a run id in two rows is an error naming the file, line and column.
 * Columns the header lacks stay empty. */
/* A recovery is a ratio of the correction's gain to the quantization gap, and correction training
 * also changes a model that was never quantized (the control arm's gain: plain extra fine-tuning,
 * up to ~0.01 nats here). Where the gap is not at least FINE_TUNE_MARGIN times that gain, the ratio
 * measures fine-tuning, not recovery (the 4- and 8-bit "recoveries" of hundreds or thousands of
 * percent): such a run's recovery is left out like an unresolved one. Runs without a matched
 * control run (same seed and correction) keep their flag. */
#define FINE_TUNE_MARGIN 3.0
static void exclude_fine_tuning_bound(Report *rep) {
    for (int i = 0; i < rep->n_runs; i++) {
        Run *r = &rep->runs[i];
        if (r->control || !r->recovery_ok) continue;
        const Run *c = matched_control(rep, r);
        if (!c || !isfinite(c->rec.gain_loss)) continue;
        if (fabs(r->rec.loss_quant - r->rec.loss_float) < FINE_TUNE_MARGIN * fabs(c->rec.gain_loss)) {
            r->recovery_ok = 0;
            r->fine_tune_bound = 1;
        }
    }
}

static int width_has_method(const Report *rep, int hidden, const char *method) {
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (!r->control && r->stream && r->rec.hidden == hidden && strcmp(r->rec.method, method) == 0) return 1;
    }
    return 0;
}

/* rep->kinds (parts.h): per width, its methods in the sorted method levels' order */
static int make_kind_series(Report *rep) {
    rep->kinds = qc_malloc(sizeof *rep->kinds * (size_t)(rep->n_hidden * rep->n_methods + 1), "section 4 columns");
    if (!rep->kinds) return -1;
    rep->n_kinds = 0;
    for (int h = 0; h < rep->n_hidden; h++) {
        int first = rep->n_kinds;
        char kind[64];
        kind_label(rep->hidden[h], kind, sizeof kind);
        for (int m = 0; m < rep->n_methods; m++)
            if (width_has_method(rep, rep->hidden[h], rep->methods[m])) {
                KindSeries *k = &rep->kinds[rep->n_kinds++];
                *k = (KindSeries){.hidden = rep->hidden[h], .method = rep->methods[m]};
                snprintf(k->label, sizeof k->label, "%s, %s", kind, rep->methods[m]);
            }
        if (rep->n_kinds - first < 2) { /* one method (or none): the width alone */
            rep->n_kinds = first;
            rep->kinds[rep->n_kinds] = (KindSeries){.hidden = rep->hidden[h]};
            snprintf(rep->kinds[rep->n_kinds++].label, sizeof rep->kinds[0].label, "%s", kind);
        }
    }
    return 0;
}

int load_runs(Report *rep) {
    snprintf(rep->csv_path, sizeof rep->csv_path, "%s/summary.csv", rep->dir);
    if (report_csv_read(rep->csv_path, &rep->csv) != 0) return -1;
    int col[SCHEMA_N_COLUMNS];
    for (int k = 0; k < SCHEMA_N_COLUMNS; k++) {
        const SchemaColumn *c = &schema_columns[k];
        col[k] = schema_has(c, SCHEMA_READ) ? report_csv_column(&rep->csv, c->name) : -1;
        if (col[k] < 0 && schema_has(c, SCHEMA_NEEDED)) {
            qc_error("%s line 1: the header has no column '%s'", rep->csv_path, c->name);
            return -1;
        }
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
        RunRecord *v = &r->rec;
        r->line = rep->csv.lines[i];
        run_record_clear(v);
        for (int k = 0; k < SCHEMA_N_COLUMNS; k++) {
            if (col[k] < 0) continue;
            const SchemaColumn *c = &schema_columns[k];
            const char *text = report_csv_cell(&rep->csv, i, col[k]);
            char why[128];
            if (!text[0] && schema_has(c, SCHEMA_KEY)) {
                qc_error("%s line %d, column %s: empty, but every run needs it", rep->csv_path, r->line, c->name);
                return -1;
            }
            if (schema_parse_cell(v, c, text, why, sizeof why) != 0) {
                qc_error("%s line %d, column %s: %s", rep->csv_path, r->line, c->name, why);
                return -1;
            }
        }
        /* d_model and n_layer may be empty: read them from the size then ("128x4") */
        long d_model = v->d_model == SCHEMA_NO_INTEGER ? -1 : v->d_model, n_layer = v->n_layer == SCHEMA_NO_INTEGER ? -1 : v->n_layer;
        int parsed_d, parsed_l;
        if ((d_model < 0 || n_layer < 0) && sscanf(v->size, "%dx%d", &parsed_d, &parsed_l) == 2) {
            if (d_model < 0) d_model = parsed_d;
            if (n_layer < 0) n_layer = parsed_l;
        }
        if (strcmp(v->arm, "control") == 0) r->control = 1;
        else if (strcmp(v->arm, "quant") != 0) {
            qc_error("%s line %d, column arm: '%s' is neither quant nor control", rep->csv_path, r->line, v->arm);
            return -1;
        }
        if (!isfinite(v->gain_loss)) v->gain_loss = v->loss_quant - v->loss_corrected;
        r->recovery_ok = strcmp(v->recovery_flag, "ok") == 0 && isfinite(v->recovery_loss);
        /* the kind: the correction column (methods.h's kind names), or by hidden in files without one */
        const char *kind = v->correction && v->correction[0] ? v->correction : v->hidden == 0 ? "linear" : "mlp";
        r->mlp = strcmp(kind, kind_name(KIND_MLP)) == 0;
        r->stream = r->mlp || strcmp(kind, kind_name(KIND_LINEAR)) == 0;
        /* factor levels */
        int s;
        for (s = 0; s < rep->n_sizes; s++)
            if (strcmp(rep->sizes[s].name, v->size) == 0) break;
        if (s == rep->n_sizes) {
            if (s >= MAX_LEVELS) { qc_error("%s: more than %d model sizes", rep->csv_path, MAX_LEVELS); return -1; }
            rep->sizes[s] = (SizeLevel){v->size, (int)d_model, (int)n_layer};
            rep->n_sizes++;
        }
        if (r->control) rep->n_control++;
        else {
            rep->n_quant++;
            if (add_int_level(rep->bits, &rep->n_bits, (int)v->bits, "bits")) return -1;
        }
        if (add_int_level(rep->every, &rep->n_every, (int)v->every, "every") ||
            add_int_level(rep->hidden, &rep->n_hidden, (int)v->hidden, "hidden") ||
            add_long_level(rep->seeds, &rep->n_seeds, v->seed, "seed") ||
            (v->calib_tokens != SCHEMA_NO_INTEGER && add_long_level(rep->calibs, &rep->n_calibs, v->calib_tokens, "calib_tokens")) ||
            add_string_level(rep->methods, &rep->n_methods, v->method, "method") ||
            add_string_level(rep->objectives, &rep->n_objectives, v->objective, "objective") ||
            add_string_level(rep->schemes, &rep->n_schemes, v->scheme, "scheme"))
            return -1;
    }
    /* a row twice (a summary.csv concatenated or edited by hand) would count its run twice */
    int id_col = report_csv_column(&rep->csv, "run_id");
    for (int i = 1; id_col >= 0 && i < n; i++) {
        const char *id = report_csv_cell(&rep->csv, i, id_col);
        for (int k = 0; id[0] && k < i; k++)
            if (strcmp(id, report_csv_cell(&rep->csv, k, id_col)) == 0) {
                qc_error("%s line %d, column run_id: '%s' is the run of line %d again", rep->csv_path, rep->csv.lines[i], id,
                         rep->csv.lines[k]);
                return -1;
            }
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
    for (int i = 0; i < n; i++)
        for (int s = 0; s < rep->n_sizes; s++)
            if (strcmp(rep->sizes[s].name, rep->runs[i].rec.size) == 0) rep->runs[i].size = s;
    exclude_fine_tuning_bound(rep);
    return make_kind_series(rep);
}

int same_correction(const Run *x, const Run *y) {
    return x->size == y->size && x->rec.every == y->rec.every && x->rec.hidden == y->rec.hidden && x->rec.calib_tokens == y->rec.calib_tokens &&
           x->rec.steps == y->rec.steps && strcmp(x->rec.method, y->rec.method) == 0 && strcmp(x->rec.objective, y->rec.objective) == 0;
}

const Run *matched_control(const Report *rep, const Run *q) {
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *c = &rep->runs[i];
        if (c->control && c->rec.seed == q->rec.seed && same_correction(c, q)) return c;
    }
    return NULL;
}

/* ---- selection and pairing ---- */

Select select_bits(int bits) { return (Select){bits, -1, -1, -1, SELECT_ANY_KIND, NULL, NULL}; }

int run_selected(const Run *r, const Select *s) {
    if (r->control || !r->stream) return 0;
    if (s->bits >= 0 && r->rec.bits != s->bits) return 0;
    if (s->size >= 0 && r->size != s->size) return 0;
    if (s->every >= 0 && r->rec.every != s->every) return 0;
    if (s->hidden >= 0 && r->rec.hidden != s->hidden) return 0;
    if (s->kind == SELECT_LINEAR && r->mlp) return 0;
    if (s->kind == SELECT_MLP && !r->mlp) return 0;
    if (s->method && strcmp(r->rec.method, s->method) != 0) return 0;
    if (s->objective && strcmp(r->rec.objective, s->objective) != 0) return 0;
    return 1;
}

/* The recoveries (fractions) of the selected runs whose recovery is defined. */
int collect_recovery(const Report *rep, const Select *s, double *out) {
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++)
        if (run_selected(&rep->runs[i], s) && rep->runs[i].recovery_ok) out[n++] = rep->runs[i].rec.recovery_loss;
    return n;
}

MeanCI recovery_stats(Report *rep, const Select *s) { return stats_mean_ci(rep->a, collect_recovery(rep, s, rep->a), 0.95); }

/* Same replication unit and model: seed, model size, correct_every, bits, scheme, calibration,
 * storage width of the corrections. */
int same_base(const Run *x, const Run *y) {
    return x->rec.seed == y->rec.seed && x->size == y->size && x->rec.every == y->rec.every && x->rec.bits == y->rec.bits && x->rec.calib_tokens == y->rec.calib_tokens &&
           x->rec.correction_stored_bits == y->rec.correction_stored_bits && strcmp(x->rec.scheme, y->rec.scheme) == 0;
}

/* A method "has both kinds" when it ran linear and MLP corrections (lstsq is linear only). */
int method_has_both_kinds(const Report *rep, const char *method) {
    int linear = 0, mlp = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (r->control || !r->stream || strcmp(r->rec.method, method) != 0) continue;
        if (r->mlp) mlp = 1;
        else linear = 1;
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
        if (lin->control || !lin->stream || lin->mlp || lin->rec.bits != bits || !lin->recovery_ok || !method_has_both_kinds(rep, lin->rec.method)) continue;
        double sum = 0.0;
        int count = 0;
        for (int j = 0; j < rep->n_runs; j++) {
            const Run *m = &rep->runs[j];
            if (m->control || !m->mlp || !m->recovery_ok || (hidden >= 0 && m->rec.hidden != hidden)) continue;
            if (!same_base(lin, m) || strcmp(lin->rec.method, m->rec.method) != 0 || strcmp(lin->rec.objective, m->rec.objective) != 0) continue;
            sum += m->rec.recovery_loss;
            count++;
        }
        if (count == 0) continue;
        a[n] = sum / count;
        b[n] = lin->rec.recovery_loss;
        n++;
    }
    return n;
}

/* Whether any quantized run at this width has a defined recovery; widths without one get no
 * comparison sentences (there is nothing to compare). */
int bits_has_recovery(const Report *rep, int bits) {
    for (int i = 0; i < rep->n_runs; i++)
        if (!rep->runs[i].control && rep->runs[i].stream && rep->runs[i].rec.bits == bits && rep->runs[i].recovery_ok) return 1;
    return 0;
}

int count_excluded(const Report *rep, int bits) {
    int k = 0;
    for (int i = 0; i < rep->n_runs; i++)
        if (!rep->runs[i].control && rep->runs[i].stream && (bits < 0 || rep->runs[i].rec.bits == bits) && !rep->runs[i].recovery_ok) k++;
    return k;
}

void cell_recovery(Report *rep, const Select *s, CellRecovery *out) {
    memset(out, 0, sizeof *out);
    double gain = 0, gap = 0, gap_sum = 0, se2 = 0;
    int n_se = 0, above = 0;
    long seeds[MAX_LEVELS];
    int n_seeds = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (!run_selected(r, s)) continue;
        out->n_runs++;
        gap_sum += r->rec.loss_quant - r->rec.loss_float;
        if (isfinite(r->rec.gap_se)) se2 += r->rec.gap_se * r->rec.gap_se, n_se++;
        if (!r->recovery_ok) continue;
        out->n_resolved++;
        gain += r->rec.loss_quant - r->rec.loss_corrected;
        gap += r->rec.loss_quant - r->rec.loss_float;
        rep->b[out->n_resolved - 1] = r->rec.recovery_loss;
        above += r->rec.recovery_loss > 0.8;
        int known = 0;
        for (int k = 0; k < n_seeds; k++) known |= seeds[k] == r->rec.seed;
        if (!known && n_seeds < MAX_LEVELS) seeds[n_seeds++] = r->rec.seed;
    }
    out->per_run = stats_mean_ci(rep->b, out->n_resolved, 0.95);
    out->pooled = out->n_resolved ? gain / gap : NAN;
    out->share_above_80 = out->n_resolved ? (double)above / out->n_resolved : NAN;
    out->gap_mean = out->n_runs ? gap_sum / out->n_runs : NAN;
    out->gap_se = n_se ? sqrt(se2 / n_se) : NAN;
    /* each seed's own pooled ratio: the seeds are the replication unit */
    for (int k = 0; k < n_seeds; k++) {
        double g = 0, q = 0;
        for (int i = 0; i < rep->n_runs; i++) {
            const Run *r = &rep->runs[i];
            if (!run_selected(r, s) || !r->recovery_ok || r->rec.seed != seeds[k]) continue;
            g += r->rec.loss_quant - r->rec.loss_corrected;
            q += r->rec.loss_quant - r->rec.loss_float;
        }
        rep->c[k] = g / q;
    }
    out->n_seeds = n_seeds;
    out->by_seed = stats_mean_ci(rep->c, n_seeds, 0.95);
}

void put_cell_recovery(TextBuf *t, const CellRecovery *c) {
    if (!c->n_resolved) {
        textbuf_printf(t, " unresolved (0/%d) |", c->n_runs);
        return;
    }
    textbuf_printf(t, " %.1f", 100 * c->pooled);
    if (c->n_seeds >= 2 && isfinite(c->by_seed.ci_low)) textbuf_printf(t, " [%.1f, %.1f]", 100 * c->by_seed.ci_low, 100 * c->by_seed.ci_high);
    textbuf_printf(t, " (%d/%d) |", c->n_resolved, c->n_runs);
}
