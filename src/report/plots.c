/* report/plots: the SVG figures beside report.md — recovery by bit width and type, heat maps of
 * size x correct_every, float training loss curves — each written atomically and embedded. */
#include "report/parts.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "report/svg.h"

int write_plot(Report *rep, const char *file, TextBuf *svg) {
    if (svg->failed) return -1;
    char path[4400];
    snprintf(path, sizeof path, "%s/plots/%s", rep->dir, file);
    if (write_file_atomic(path, svg->data, svg->len) != 0) return -1;
    if (rep->n_plots < MAX_PLOTS) snprintf(rep->plots[rep->n_plots++], sizeof rep->plots[0], "%s", file);
    return 0;
}

/* The names the report gives its figures: a file in plots/ with one of them that this run did not
 * write is a figure of an earlier report of this directory (a grid since changed, a rule that no
 * longer draws it) and would sit beside the new report as if it belonged to it. */
static const char *const REPORT_PLOT_PREFIXES[] = {"recovery_", "frontier_", "budget_", "learned_vs_closed_form", "float_loss_curves"};

int remove_stale_plots(const Report *rep) {
    char path[4400];
    snprintf(path, sizeof path, "%s/plots", rep->dir);
    DIR *d = opendir(path);
    if (!d) { qc_error("%s: cannot read: %s", path, strerror(errno)); return -1; }
    int rc = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".svg") != 0) continue;
        int ours = 0, written = 0;
        for (size_t k = 0; k < sizeof REPORT_PLOT_PREFIXES / sizeof *REPORT_PLOT_PREFIXES; k++)
            ours |= strncmp(e->d_name, REPORT_PLOT_PREFIXES[k], strlen(REPORT_PLOT_PREFIXES[k])) == 0;
        for (int i = 0; i < rep->n_plots; i++) written |= strcmp(e->d_name, rep->plots[i]) == 0;
        if (!ours || written) continue;
        snprintf(path, sizeof path, "%s/plots/%s", rep->dir, e->d_name);
        if (unlink(path) != 0) { qc_error("%s: cannot remove a figure of an earlier report: %s", path, strerror(errno)); rc = -1; }
    }
    closedir(d);
    return rc;
}

void embed_plot(Report *rep, const char *file, const char *alt) { textbuf_printf(&rep->body, "\n![%s](plots/%s)\n", alt, file); }

/* plots: recovery by bit width per correction type; heat maps of size × every per bit width */
int plots_recovery(Report *rep) {
    TextBuf *t = &rep->body;
    const KindSeries *series = rep->kinds;
    int n_groups = rep->n_bits, n_series = rep->n_kinds;
    size_t cells = (size_t)(n_groups * n_series);
    double *value = qc_malloc(sizeof(double) * 3 * (cells ? cells : 1), "recovery plot");
    char (*names)[48] = qc_malloc(sizeof *names * (size_t)(n_groups + 1), "plot labels");
    const char **labels = qc_malloc(sizeof(char *) * (size_t)(n_series + n_groups + 1), "plot labels");
    if (!value || !names || !labels) { free(value); free(names); free(labels); return -1; }
    double *low = value + cells, *high = low + cells;
    for (int k = 0; k < n_groups; k++)
        for (int h = 0; h < n_series; h++) {
            Select s = select_bits(rep->bits[k]);
            s.hidden = series[h].hidden;
            s.method = series[h].method;
            CellRecovery cr;
            cell_recovery(rep, &s, &cr);
            value[k * n_series + h] = 100 * cr.pooled;
            low[k * n_series + h] = cr.n_seeds >= 2 ? 100 * cr.by_seed.ci_low : NAN;
            high[k * n_series + h] = cr.n_seeds >= 2 ? 100 * cr.by_seed.ci_high : NAN;
        }
    for (int h = 0; h < n_series; h++) labels[h] = series[h].label;
    for (int k = 0; k < n_groups; k++) {
        snprintf(names[k], sizeof names[0], "%d bits", rep->bits[k]);
        labels[n_series + k] = names[k];
    }
    TextBuf svg = {0};
    svg_bar_chart(&svg, "Recovery by bit width and correction type", "recovery (%)", labels + n_series, n_groups, labels, n_series, value,
                  low, high);
    int rc = write_plot(rep, "recovery_by_bits.svg", &svg);
    textbuf_free(&svg);
    free(value);
    if (rc == 0) {
        textbuf_printf(t, "\nRecovery by bit width for each correction type (the ratio of pooled means over each cell's resolved "
                          "runs, whiskers the 95%% CI over seeds; n as in section 4):\n");
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
        textbuf_printf(t, "\nHeat maps of recovery (%%, the ratio of pooled means over resolved runs), model size × correct_every, "
                          "pooled over hidden sizes, methods and seeds (cell n as in sections 5 and 6):\n");
    }
    for (int k = 0; rc == 0 && k < rep->n_bits; k++) {
        if (!bits_has_recovery(rep, rep->bits[k])) {
            textbuf_printf(t, "\nNo heat map at %d bits: no run there has a resolved recovery.\n", rep->bits[k]);
            continue;
        }
        for (int s = 0; s < rep->n_sizes; s++)
            for (int e = 0; e < rep->n_every; e++) {
                Select sel = select_bits(rep->bits[k]);
                sel.size = s;
                sel.every = rep->every[e];
                CellRecovery cr;
                cell_recovery(rep, &sel, &cr);
                grid[s * rep->n_every + e] = 100 * cr.pooled;
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
int section_loss_curves(Report *rep) {
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
        series[n_series] = (SvgSeries){labels[n_series], x, y, n, n_files, 0, 0};
        n_series++;
        if (nv) {
            snprintf(labels[n_series], sizeof labels[0], "%s val", base);
            series[n_series] = (SvgSeries){labels[n_series], vx, vy, nv, n_files, 1, 0};
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
