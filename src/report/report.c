/* report: report_write of report.h — reads summary.csv into Runs (runs.c), then each section
 * (tables.c, paired.c, plots.c) appends its table, plot and conclusion sentences; one atomic write. */
#include "report/parts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"

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
    if (rc == 0) rc = section_agreement(rep);
    if (rc == 0) rc = section_frontier(rep);
    if (rc == 0) rc = section_budget(rep);
    if (rc == 0) rc = section_methods_budget(rep);
    if (rc == 0) rc = section_stopping(rep);
    if (rc == 0) rc = section_loss_curves(rep);
    if (rc == 0) {
        int excluded = count_excluded(rep, -1);
        if (excluded)
            textbuf_printf(&rep->conclusions, "- %d quantized run%s left out of every recovery statistic above because the recovery "
                                              "is undefined or not resolved (see the note above), not averaged in.\n",
                           excluded, excluded == 1 ? " was" : "s were");
        TextBuf md = {0};
        textbuf_append(&md, rep->head.data ? rep->head.data : "", rep->head.len);
        textbuf_printf(&md, "\n## Conclusions\n\nEach sentence below is generated from a statistic and its uncertainty; a difference "
                            "is called significant only when its 95%% CI excludes 0 and the Wilcoxon signed-rank test agrees "
                            "(p < 0.05); where the pairs are too few for that test to reach p < 0.05 at all (5 or fewer), the "
                            "sentence says they are too few to test.\n\n");
        textbuf_append(&md, rep->conclusions.data ? rep->conclusions.data : "", rep->conclusions.len);
        textbuf_append(&md, rep->body.data ? rep->body.data : "", rep->body.len);
        if (md.failed || rep->head.failed || rep->conclusions.failed || rep->body.failed) rc = -1;
        else {
            char path[4200];
            snprintf(path, sizeof path, "%s/report.md", dir);
            rc = write_file_atomic(path, md.data, md.len);
            if (rc == 0) rc = remove_stale_plots(rep);
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
    free(rep->kinds);
    free(rep->a);
    free(rep->b);
    free(rep->c);
    free(rep);
    return rc;
}
