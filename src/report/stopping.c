/* report/stopping: section 14 — how the runs trained by --steps auto ended: the steps they ran,
 * how many stopped at the cap, and how many kept parameters from their first measurements (the
 * held-out objective never improved on their start by much), beside the spread of their
 * recoveries, so a cell that mixes trained and untrained runs shows it. */
#include "report/parts.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define NEAR_START 100 /* a best held-out step at most this: the first four measurements (every 25) */

static int auto_run(const Run *r) {
    return r->rec.steps == SCHEMA_STEPS_AUTO && r->rec.steps_run != SCHEMA_NO_INTEGER && r->rec.best_step != SCHEMA_NO_INTEGER;
}

/* The row label: the correction kind for a stream correction trained alone ("MLP (h=32)"), else
 * the method with its storage and, for a stream correction after another method, the kind
 * ("adaround+train, linear (h=0)"); prefixed by the quantizer and transform ("gptq+rotate: ...")
 * when the directory's trained runs used more than one. Rows with different labels never pool. */
#define ROW_LABEL 160
static const char *run_label(const Run *r, int with_quantizer, char *buf, size_t size) {
    char q[64] = "", m[96], kind[32];
    if (with_quantizer) quantizer_with_transform(r, q, sizeof q);
    method_with_storage(r, m, sizeof m);
    if (r->stream) kind_label((int)r->rec.hidden, kind, sizeof kind);
    const char *sep = with_quantizer ? ": " : "";
    if (r->stream && strcmp(m, "train") == 0) snprintf(buf, size, "%s%s%s", q, sep, kind);
    else if (r->stream) snprintf(buf, size, "%s%s%s, %s", q, sep, m, kind);
    else snprintf(buf, size, "%s%s%s", q, sep, m);
    return buf;
}

static int compare_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

int section_stopping(Report *rep) {
    int n_auto = 0;
    for (int i = 0; i < rep->n_runs; i++) n_auto += auto_run(&rep->runs[i]);
    if (n_auto == 0) return 0;
    /* more than one quantizer (with its transform) among the trained quantized runs: the labels name it */
    int with_quantizer = 0, have_first = 0;
    char first[64], q[64];
    for (int i = 0; i < rep->n_runs; i++) {
        if (!auto_run(&rep->runs[i]) || rep->runs[i].control) continue;
        quantizer_with_transform(&rep->runs[i], q, sizeof q);
        if (!have_first) snprintf(first, sizeof first, "%s", q), have_first = 1;
        else if (strcmp(first, q) != 0) with_quantizer = 1;
    }
    /* the labels, in order of first appearance, and each trained run's (-1: not trained by --steps auto) */
    char labels[MAX_LEVELS][ROW_LABEL];
    int n_labels = 0, *label_of = qc_malloc(sizeof(int) * (size_t)rep->n_runs, "stopping rows");
    if (!label_of) return -1;
    for (int i = 0; i < rep->n_runs; i++) {
        label_of[i] = -1;
        if (!auto_run(&rep->runs[i])) continue;
        char l[ROW_LABEL];
        run_label(&rep->runs[i], with_quantizer, l, sizeof l);
        int k = 0;
        while (k < n_labels && strcmp(labels[k], l) != 0) k++;
        if (k == n_labels && n_labels < MAX_LEVELS) snprintf(labels[n_labels++], sizeof labels[0], "%s", l);
        if (k < n_labels) label_of[i] = k;
    }
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    textbuf_printf(t, "\n## 14. How the trained runs stopped\n\nRuns trained by --steps auto, by model size, bit width (control: the "
                      "unquantized arm) and correction or method. Steps: the mean steps run. At the cap: runs the step cap stopped "
                      "rather than the plateau. Near the start: runs whose best held-out measurement came at step %d or earlier, so "
                      "that what they store is at or near their starting point (training did not improve on it by much). Recovery: "
                      "the lowest, median and highest per-run recovery (%%) of the cell's resolved runs; a cell whose runs split "
                      "between near-start and trained ones shows a wide spread here that its pooled recovery hides.\n\n"
                      "| size | bits | correction | runs | steps | at the cap | near the start | recovery min / median / max |\n"
                      "|---|---|---|---:|---:|---:|---:|---|\n",
                   NEAR_START);
    int total = 0, capped = 0, near_quant = 0, n_quant_auto = 0;
    for (int z = 0; z < rep->n_sizes; z++)
        for (int b = 0; b <= rep->n_bits; b++) { /* b == n_bits: the control arm */
            int control = b == rep->n_bits;
            for (int k = 0; k < n_labels; k++) {
                int n = 0, cap = 0, near = 0, n_rec = 0;
                double steps = 0.0;
                for (int i = 0; i < rep->n_runs; i++) {
                    const Run *r = &rep->runs[i];
                    if (label_of[i] != k || r->size != z || r->control != control || (!control && r->rec.bits != rep->bits[b]))
                        continue;
                    n++;
                    steps += (double)r->rec.steps_run;
                    cap += r->rec.stopped_by && strcmp(r->rec.stopped_by, "cap") == 0;
                    near += r->rec.best_step <= NEAR_START;
                    if (!control && r->recovery_ok) rep->a[n_rec++] = r->rec.recovery_loss;
                }
                if (n == 0) continue;
                total += n;
                capped += cap;
                if (!control) near_quant += near, n_quant_auto += n;
                textbuf_printf(t, "| %s | ", rep->sizes[z].name);
                if (control) textbuf_printf(t, "control");
                else textbuf_printf(t, "%d", rep->bits[b]);
                textbuf_printf(t, " | %s | %d | %.0f | %d | %d | ", labels[k], n, steps / n, cap, near);
                if (n_rec == 0) textbuf_printf(t, "n/a");
                else {
                    qsort(rep->a, (size_t)n_rec, sizeof(double), compare_double);
                    double median = n_rec % 2 ? rep->a[n_rec / 2] : 0.5 * (rep->a[n_rec / 2 - 1] + rep->a[n_rec / 2]);
                    textbuf_printf(t, "%.1f / %.1f / %.1f", 100.0 * rep->a[0], 100.0 * median, 100.0 * rep->a[n_rec - 1]);
                }
                textbuf_printf(t, " |\n");
            }
        }
    free(label_of);
    textbuf_printf(c, "- %d of %d runs trained by --steps auto stopped at the step cap (%.1f%%; section 14).\n", capped, total,
                   100.0 * capped / total);
    if (near_quant)
        textbuf_printf(c, "- %d of %d quantized runs trained by --steps auto kept parameters from step %d or earlier: their training "
                          "did not improve on their start by much (section 14 shows where).\n",
                       near_quant, n_quant_auto, NEAR_START);
    return t->failed || c->failed ? -1 : 0;
}
