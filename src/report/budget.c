/* report/budget: recovery against the correction budget — training steps and calibration
 * characters — when a sweep varies them (a budget curve): a table and a plot per model size, and
 * where each curve comes within 2 points of its best. */
#include "report/parts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static int add_long(long *v, int *n, long x) {
    for (int i = 0; i < *n; i++)
        if (v[i] == x) return 0;
    if (*n == MAX_LEVELS) return -1;
    v[(*n)++] = x;
    return 0;
}
static int compare_long_values(const void *pa, const void *pb) {
    long a = *(const long *)pa, b = *(const long *)pb;
    return (a > b) - (a < b);
}

/* The pooled recovery of the stream runs of size z at bits, steps and calibration budget. */
static void budget_cell(Report *rep, int z, int bits, int kind, long steps, long calib, CellRecovery *out) {
    /* select_bits, size and kind, then keep the budget by masking the runs that differ */
    Select s = select_bits(bits);
    s.size = z;
    s.kind = kind;
    int *hidden = qc_malloc(sizeof(int) * (size_t)rep->n_runs, "budget cell");
    if (!hidden) { memset(out, 0, sizeof *out); out->pooled = NAN; return; }
    for (int i = 0; i < rep->n_runs; i++) {
        Run *r = &rep->runs[i];
        hidden[i] = r->stream;
        if (r->rec.steps != steps || r->rec.calib_tokens != calib) r->stream = 0;
    }
    cell_recovery(rep, &s, out);
    for (int i = 0; i < rep->n_runs; i++) rep->runs[i].stream = hidden[i];
    free(hidden);
}

/* The mean steps_run of size z's --steps auto stream runs at bits and calibration budget (NaN: none). */
static double auto_mean_steps(const Report *rep, int z, int bits, int kind, long calib) {
    double sum = 0;
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (r->control || !r->stream || r->size != z || r->rec.bits != bits || r->rec.calib_tokens != calib ||
            r->rec.steps != SCHEMA_STEPS_AUTO || r->rec.steps_run == SCHEMA_NO_INTEGER ||
            (kind != SELECT_ANY_KIND && r->mlp != (kind == SELECT_MLP)))
            continue;
        sum += (double)r->rec.steps_run;
        n++;
    }
    return n ? sum / n : NAN;
}

int section_budget(Report *rep) {
    long steps[MAX_LEVELS], calibs[MAX_LEVELS];
    int n_steps = 0, n_calibs = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        /* trained runs only (a closed form's 0 steps is no budget) */
        if (r->control || !r->stream || r->rec.steps == SCHEMA_NO_INTEGER || r->rec.steps <= 0 || r->rec.calib_tokens == SCHEMA_NO_INTEGER)
            continue;
        if (add_long(steps, &n_steps, r->rec.steps) || add_long(calibs, &n_calibs, r->rec.calib_tokens)) break;
    }
    int have_auto = 0, have_kind[2] = {0, 0}; /* --steps auto runs: the early-stopping point of each curve */
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        have_auto |= !r->control && r->stream && r->rec.steps == SCHEMA_STEPS_AUTO && r->rec.steps_run != SCHEMA_NO_INTEGER;
        if (!r->control && r->stream) have_kind[r->mlp] = 1;
    }
    /* linear and MLP corrections on curves of their own when the sweep has both */
    int kinds[2], n_kinds = 0;
    if (have_kind[0] && have_kind[1]) kinds[n_kinds++] = SELECT_LINEAR, kinds[n_kinds++] = SELECT_MLP;
    else kinds[n_kinds++] = SELECT_ANY_KIND;
    if (n_steps < 2 && n_calibs < 2) return 0; /* no budget curve in this sweep */
    qsort(steps, (size_t)n_steps, sizeof(long), compare_long_values);
    qsort(calibs, (size_t)n_calibs, sizeof(long), compare_long_values);
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    textbuf_printf(t, "\n## 12. Recovery against the correction budget\n\nCells: recovery (%%) as the ratio of pooled means over "
                      "the cell's resolved runs (resolved/runs), by correction training steps (columns) and calibration characters "
                      "(rows). \"Flattens at\": the fewest steps whose recovery comes within 2 points of the curve's best.\n");
    if (have_auto)
        textbuf_printf(t, "\"Early stop\": the same runs trained by --steps auto (until the held-out objective stops improving; "
                          "the mean steps they ran beside it), drawn as a dot on each curve.\n");
    /* with more steps a correction fine-tunes the model too; without the control arm's runs at each
     * budget the fine-tuning rule cannot separate that, so a curve that leaves 0..100% draws no
     * conclusion (a cell's ratio of a small gap can run to hundreds of percent either way) */
    if (rep->n_control == 0)
        textbuf_printf(t, "\nThis directory has no control arm, so no run is tested against the gain the same correction training "
                          "gives the unquantized model: a curve with a cell below 0%% or above 100%% measures fine-tuning or "
                          "over-fitting of the correction as much as recovery, is marked \"outside 0-100%%\" and draws no "
                          "conclusion.\n");
    int rc = 0;
    size_t n_curves = (size_t)n_calibs * rep->n_bits * n_kinds;
    double *xy = qc_malloc(sizeof(double) * 2 * ((size_t)(n_steps + 1) * n_curves + 1), "budget plot");
    SvgSeries *series = qc_calloc(2 * n_curves + 1, sizeof(SvgSeries), "budget plot");
    char (*names)[64] = qc_malloc(sizeof *names * (2 * n_curves + 1), "budget plot");
    if (!xy || !series || !names) { free(xy); free(series); free(names); return -1; }
    for (int z = 0; z < rep->n_sizes && rc == 0; z++) {
        textbuf_printf(t, "\n### %s\n\n| bits |%s calibration | ", rep->sizes[z].name, n_kinds > 1 ? " correction |" : "");
        for (int k = 0; k < n_steps; k++) textbuf_printf(t, "%ld steps | ", steps[k]);
        textbuf_printf(t, "flattens at |%s\n|---:|%s---:|", have_auto ? " early stop | its steps |" : "", n_kinds > 1 ? "---|" : "");
        for (int k = 0; k < n_steps; k++) textbuf_printf(t, "---:|");
        textbuf_printf(t, "---:|%s\n", have_auto ? "---:|---:|" : "");
        int ns = 0, used = 0;
        for (int b = 0; b < rep->n_bits; b++)
            for (int kd = 0; kd < n_kinds; kd++)
            for (int a = 0; a < n_calibs; a++) {
                int kind = kinds[kd];
                const char *kname = kind == SELECT_LINEAR ? "linear" : kind == SELECT_MLP ? "MLP" : "";
                double *x = xy + used, *y = xy + used + n_steps, best = -INFINITY;
                used += 2 * n_steps;
                int any = 0, outside = 0;
                if (n_kinds > 1) textbuf_printf(t, "| %d | %s | %ld |", rep->bits[b], kname, calibs[a]);
                else textbuf_printf(t, "| %d | %ld |", rep->bits[b], calibs[a]);
                for (int k = 0; k < n_steps; k++) {
                    CellRecovery cr;
                    budget_cell(rep, z, rep->bits[b], kind, steps[k], calibs[a], &cr);
                    put_cell_recovery(t, &cr);
                    x[k] = log2((double)(steps[k] > 0 ? steps[k] : 1));
                    y[k] = 100 * cr.pooled;
                    if (isfinite(y[k])) best = fmax(best, y[k]), any = 1;
                    if (isfinite(y[k]) && (y[k] < 0.0 || y[k] > 100.0)) outside = 1;
                }
                outside = outside && rep->n_control == 0;
                long flat = -1;
                for (int k = 0; k < n_steps && flat < 0; k++)
                    if (isfinite(y[k]) && y[k] >= best - 2.0) flat = steps[k];
                if (outside) textbuf_printf(t, " outside 0-100%% |");
                else if (flat >= 0) textbuf_printf(t, " %ld |", flat);
                else textbuf_printf(t, " n/a |");
                double *ax = xy + used, *ay = ax + 1;
                *ax = *ay = NAN;
                used += 2;
                if (have_auto) { /* the early-stopping point: its recovery at the mean steps its runs took */
                    CellRecovery cr;
                    budget_cell(rep, z, rep->bits[b], kind, SCHEMA_STEPS_AUTO, calibs[a], &cr);
                    double mean_steps = auto_mean_steps(rep, z, rep->bits[b], kind, calibs[a]);
                    put_cell_recovery(t, &cr);
                    if (isfinite(mean_steps)) textbuf_printf(t, " %.0f |", mean_steps);
                    else textbuf_printf(t, " |");
                    if (isfinite(mean_steps) && mean_steps > 0) *ax = log2(mean_steps), *ay = 100 * cr.pooled;
                }
                textbuf_printf(t, "\n");
                if (!any) continue;
                if (n_calibs > 1)
                    snprintf(names[ns], sizeof names[0], "%d bits%s%s, %ld characters", rep->bits[b], n_kinds > 1 ? ", " : "", kname, calibs[a]);
                else /* one calibration budget: the legend need not say it */
                    snprintf(names[ns], sizeof names[0], "%d bits%s%s", rep->bits[b], n_kinds > 1 ? ", " : "", kname);
                series[ns] = (SvgSeries){names[ns], x, y, n_steps, ns, 0, 0};
                ns++;
                if (isfinite(*ay)) {
                    snprintf(names[ns], sizeof names[0], "early stop, %d bits%s%s", rep->bits[b], n_kinds > 1 ? ", " : "", kname);
                    series[ns] = (SvgSeries){names[ns], ax, ay, 1, ns - 1, 0, 1};
                    ns++;
                }
                if (!outside && n_steps >= 2 && isfinite(y[0]) && isfinite(y[n_steps - 1]))
                    textbuf_printf(c, "- At %s, %d bits%s%s, %ld calibration characters, recovery goes from %.1f%% after %ld steps to %.1f%% "
                                      "after %ld; it comes within 2 points of its best (%.1f%%) at %ld steps.\n",
                                   rep->sizes[z].name, rep->bits[b], n_kinds > 1 ? ", " : "", kname, calibs[a], y[0], steps[0],
                                   y[n_steps - 1], steps[n_steps - 1], best, flat);
            }
        if (ns == 0 || n_steps < 2) continue;
        char title[96], file[64];
        snprintf(title, sizeof title, "%s: recovery against correction steps", rep->sizes[z].name);
        snprintf(file, sizeof file, "budget_%s.svg", rep->sizes[z].name);
        TextBuf svg = {0};
        svg_line_plot(&svg, title, "log2 of correction training steps", "recovery (%)", series, ns);
        rc = write_plot(rep, file, &svg);
        textbuf_free(&svg);
        if (rc == 0) embed_plot(rep, file, title);
    }
    free(xy);
    free(series);
    free(names);
    return rc;
}
