/* report/methods: the field's baselines beside the learned correction (issue 14) — at each bit
 * width and size, every quantizer x method's loss, KL, extra parameters and model bits over seeds,
 * and the comparisons at matched budgets paired over seeds, sizes and quantizers, so the report
 * says plainly whether a learned correction wins at the same bits. */
#include "report/parts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static const char *str(const char *s) { return s ? s : ""; }

/* A row's two labels. The quantizer's: its name, and the transform of the float model before it
 * where the scheme has one ("rtn+rotate", from the scheme's "transform=rotate:seed=0"). The
 * method's: its name (a combination's "lwc+train"), and where its corrections are stored as
 * integer codes their bits ("train @8-bit"). Rows differ in either, never pooled. */
#define LABEL 96
typedef struct {
    char quantizer[LABEL], method[LABEL];
} RowLabel;

/* Each run's labels, computed once for the section (rep->n_runs entries, NULL when out of memory). */
static RowLabel *row_labels(const Report *rep) {
    RowLabel *lab = qc_malloc(sizeof *lab * (size_t)(rep->n_runs > 0 ? rep->n_runs : 1), "method rows");
    for (int i = 0; lab && i < rep->n_runs; i++) {
        quantizer_with_transform(&rep->runs[i], lab[i].quantizer, LABEL);
        method_with_storage(&rep->runs[i], lab[i].method, LABEL);
    }
    return lab;
}

/* One method row of a table: the runs of (bits, size, quantizer label, method label) with their seeds. */
static int method_runs(const Report *rep, const RowLabel *lab, int bits, int size, const char *quantizer, const char *method,
                       const Run **out, int max) {
    int n = 0;
    for (int i = 0; i < rep->n_runs && n < max; i++) {
        const Run *r = &rep->runs[i];
        if (r->control || r->rec.bits != bits || r->size != size || strcmp(lab[i].quantizer, quantizer) != 0 ||
            strcmp(lab[i].method, method) != 0)
            continue;
        out[n++] = r;
    }
    return n;
}

/* Whether the directory compares methods: any run past the learned stream correction and its
 * closed form on rtn (another quantizer, or none / lowrank / bias). */
static int has_methods(const Report *rep) {
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (r->control) continue;
        if ((r->rec.quantizer && strcmp(r->rec.quantizer, "rtn") != 0) || (!r->stream && r->rec.correction && r->rec.correction[0]))
            return 1;
    }
    return 0;
}

/* The paired loss differences a - b over (seed, size, quantizer and scheme) at bits: a and b name
 * method labels. */
static int paired_losses(const Report *rep, const RowLabel *lab, int bits, const char *a, const char *b, double *da, double *db) {
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *x = &rep->runs[i];
        if (x->control || x->rec.bits != bits || strcmp(lab[i].method, a) != 0) continue;
        for (int j = 0; j < rep->n_runs; j++) {
            const Run *y = &rep->runs[j];
            if (y->control || y->rec.bits != bits || y->rec.seed != x->rec.seed || y->size != x->size ||
                strcmp(str(y->rec.quantizer), str(x->rec.quantizer)) != 0 || strcmp(y->rec.scheme, x->rec.scheme) != 0 ||
                y->rec.calib_tokens != x->rec.calib_tokens || strcmp(lab[j].method, b) != 0)
                continue;
            da[n] = x->rec.loss_corrected;
            db[n] = y->rec.loss_corrected;
            n++;
            break;
        }
    }
    return n;
}

/* Zero extra bits (issue 22): at each bit width and size, the row of least mean loss among those
 * whose model stores no more bits than the plain quantized model (none, bias, and the methods
 * that tune the base), beside the best row that adds bits, and their loss difference paired over
 * seeds (each seed's best-row run against the same seed's). */
static double row_mean(const Run *const *runs, int n, double *kbit) {
    double loss = 0, bits = 0;
    for (int i = 0; i < n; i++) loss += runs[i]->rec.loss_corrected, bits += runs[i]->rec.model_bits_corrected / 1e3;
    *kbit = bits / n;
    return loss / n;
}

static int zero_bit_table(Report *rep, const RowLabel *lab, const char *const *quantizers, int nq, const char *const *methods, int nm) {
    int max = rep->n_runs, header = 0;
    const Run **runs = qc_malloc(sizeof(Run *) * (size_t)max, "zero-bit table");
    const Run **zero = qc_malloc(sizeof(Run *) * (size_t)max, "zero-bit table");
    const Run **adds = qc_malloc(sizeof(Run *) * (size_t)max, "zero-bit table");
    if (!runs || !zero || !adds) { free(runs); free(zero); free(adds); return -1; }
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    for (int k = 0; k < rep->n_bits; k++)
        for (int z = 0; z < rep->n_sizes; z++) {
            double base_kbit = NAN, best0 = INFINITY, best1 = INFINITY, kbit0 = 0, kbit1 = 0;
            int n0 = 0, n1 = 0, q0 = -1, m0 = -1, q1 = -1, m1 = -1;
            for (int q = 0; q < nq && isnan(base_kbit); q++) {
                int n = method_runs(rep, lab, rep->bits[k], z, quantizers[q], "none", runs, max);
                if (n > 0) row_mean(runs, n, &base_kbit);
            }
            if (isnan(base_kbit)) continue;
            for (int q = 0; q < nq; q++)
                for (int m = 0; m < nm; m++) {
                    int n = method_runs(rep, lab, rep->bits[k], z, quantizers[q], methods[m], runs, max);
                    if (n == 0) continue;
                    double kbit, loss = row_mean(runs, n, &kbit);
                    int adds_bits = kbit > base_kbit + 0.05;
                    if (!adds_bits && loss < best0) best0 = loss, kbit0 = kbit, q0 = q, m0 = m, n0 = n, memcpy(zero, runs, sizeof(Run *) * (size_t)n);
                    if (adds_bits && loss < best1) best1 = loss, kbit1 = kbit, q1 = q, m1 = m, n1 = n, memcpy(adds, runs, sizeof(Run *) * (size_t)n);
                }
            if (q0 < 0) continue;
            if (!header) {
                textbuf_printf(t, "\n### Zero extra bits: the best at each bit width and size\n\nThe row of least mean loss among those "
                                  "whose model stores no more bits than the plain quantized model (none, bias folded, and the methods "
                                  "that tune the base: normtweak, qat, scales, lwc, adaround), and the best row that adds bits; "
                                  "the difference is paired over the seeds both rows have (negative: the row that adds bits is "
                                  "better).\n\n| bits | size | best at zero extra bits | loss | kbit | best that adds bits | loss | "
                                  "kbit | adds − zero (nats) | 95%% CI | pairs |\n|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
                header = 1;
            }
            textbuf_printf(t, "| %d | %s | %s %s | %.4f | %.1f | ", rep->bits[k], rep->sizes[z].name, quantizers[q0], methods[m0], best0, kbit0);
            if (q1 < 0) {
                textbuf_printf(t, "– | – | – | – | – | 0 |\n");
                continue;
            }
            int np = 0;
            for (int i = 0; i < n1; i++)
                for (int j = 0; j < n0; j++)
                    if (adds[i]->rec.seed == zero[j]->rec.seed) rep->a[np] = adds[i]->rec.loss_corrected, rep->b[np] = zero[j]->rec.loss_corrected, np++;
            textbuf_printf(t, "%s %s | %.4f | %.1f | ", quantizers[q1], methods[m1], best1, kbit1);
            PairedComparison pc;
            if (np >= 2 && stats_paired(rep->a, rep->b, np, &pc) == 0) {
                textbuf_printf(t, "%+.4f | ", pc.diff.mean);
                put_interval(t, pc.diff.ci_low, pc.diff.ci_high, "%+.4f");
                textbuf_printf(t, " | %d |\n", np);
                textbuf_printf(c, "- At %d bits on %s the best model at zero extra bits is %s %s (loss %.4f, %.1f kbit); the best that "
                                  "adds bits, %s %s (%.4f, %.1f kbit), is %s by %.4f nats (paired over %d seeds, 95%% CI [%+.4f, %+.4f]%s).\n",
                               rep->bits[k], rep->sizes[z].name, quantizers[q0], methods[m0], best0, kbit0, quantizers[q1], methods[m1],
                               best1, kbit1, pc.diff.mean < 0 ? "lower" : "higher", fabs(pc.diff.mean), np, pc.diff.ci_low, pc.diff.ci_high,
                               (pc.diff.ci_low > 0 || pc.diff.ci_high < 0) ? "" : ", includes 0");
            } else {
                textbuf_printf(t, "%+.4f | – | %d |\n", best1 - best0, np);
            }
        }
    free(runs);
    free(zero);
    free(adds);
    return 0;
}

static int methods_section(Report *rep, const RowLabel *lab) {
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    /* the labels of the directory's rows, in order of first appearance */
    const char *quantizers[MAX_LEVELS], *methods[MAX_LEVELS];
    int nq = 0, nm = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        if (rep->runs[i].control) continue;
        int fq = 0, fm = 0;
        while (fq < nq && strcmp(quantizers[fq], lab[i].quantizer) != 0) fq++;
        while (fm < nm && strcmp(methods[fm], lab[i].method) != 0) fm++;
        if ((fq == nq && nq == MAX_LEVELS) || (fm == nm && nm == MAX_LEVELS)) { qc_error("more than %d method rows", MAX_LEVELS); return -1; }
        if (fq == nq) quantizers[nq++] = lab[i].quantizer;
        if (fm == nm) methods[nm++] = lab[i].method;
    }
    textbuf_printf(t, "\n## 13. Methods at matched budgets\n\nEvery quantizer × method of the directory at each bit width and size: "
                      "validation loss (mean over seeds ± the standard error over seeds), its paired difference from the same "
                      "quantizer without correction (method none; negative: better), KL to the float model, the extra parameters a "
                      "checkpoint stores (bias correction folds into the existing biases: 0) and the model's bits. Recovery: the "
                      "ratio of pooled means over the resolved runs.\n");
    int max = rep->n_runs;
    const Run **runs = qc_malloc(sizeof(Run *) * (size_t)max, "methods table");
    const Run **base = qc_malloc(sizeof(Run *) * (size_t)max, "methods table");
    if (!runs || !base) { free(runs); free(base); return -1; }
    for (int k = 0; k < rep->n_bits; k++)
        for (int z = 0; z < rep->n_sizes; z++) {
            textbuf_printf(t, "\n### %d bits, %s\n\n| quantizer | method | seeds | loss | vs none (nats) | KL | extra params | kbit | "
                              "recovery (%%) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
                           rep->bits[k], rep->sizes[z].name);
            for (int q = 0; q < nq; q++) {
                int nb = method_runs(rep, lab, rep->bits[k], z, quantizers[q], "none", base, max);
                for (int m = 0; m < nm; m++) {
                    int n = method_runs(rep, lab, rep->bits[k], z, quantizers[q], methods[m], runs, max);
                    if (n == 0) continue;
                    double loss = 0, kl = 0, params = 0, kbit = 0, gain = 0, gap = 0;
                    int resolved = 0, nd = 0;
                    for (int i = 0; i < n; i++) {
                        const Run *r = runs[i];
                        rep->a[i] = r->rec.loss_corrected;
                        loss += r->rec.loss_corrected, kl += r->rec.kl_corrected, params += (double)r->rec.correction_params;
                        kbit += r->rec.model_bits_corrected / 1e3;
                        if (r->recovery_ok) resolved++, gain += r->rec.loss_quant - r->rec.loss_corrected, gap += r->rec.loss_quant - r->rec.loss_float;
                        for (int j = 0; j < nb; j++)
                            if (base[j]->rec.seed == r->rec.seed) rep->b[nd] = r->rec.loss_corrected - base[j]->rec.loss_corrected, nd++;
                    }
                    MeanCI lm = stats_mean_ci(rep->a, n, 0.95), dm = stats_mean_ci(rep->b, nd, 0.95);
                    textbuf_printf(t, "| %s | %s | %d | %.4f", quantizers[q], methods[m], n, loss / n);
                    if (n >= 2) textbuf_printf(t, " ± %.4f", lm.std / sqrt(n));
                    textbuf_printf(t, " | ");
                    if (strcmp(methods[m], "none") == 0 || nd == 0) textbuf_printf(t, "–");
                    else if (nd >= 2) textbuf_printf(t, "%+.4f [%+.4f, %+.4f]", dm.mean, dm.ci_low, dm.ci_high);
                    else textbuf_printf(t, "%+.4f", dm.mean);
                    textbuf_printf(t, " | %.4g | %.0f | %.1f | ", kl / n, params / n, kbit / n);
                    if (resolved) textbuf_printf(t, "%.1f (%d/%d)", 100 * gain / gap, resolved, n);
                    else textbuf_printf(t, "unresolved (0/%d)", n);
                    textbuf_printf(t, " |\n");
                }
            }
        }
    free(runs);
    free(base);
    if (zero_bit_table(rep, lab, quantizers, nq, methods, nm) != 0) return -1;
    /* the comparisons the question needs, pooled over seeds, sizes and quantizers at each width:
     * the fixed ones, then each combination against its first method alone (what the second adds) */
    static const char *const fixed[][2] = {{"train", "lowrank"}, {"train", "lstsq"}, {"train", "bias"}, {"train", "none"},
                                           {"lowrank", "lstsq"}, {"bias", "none"}, {"train @8-bit", "lowrank @8-bit"},
                                           {"train @8-bit", "train"}, {"lowrank @8-bit", "lowrank"}};
    static char firsts[MAX_LEVELS][LABEL];
    const char *pairs[sizeof fixed / sizeof *fixed + MAX_LEVELS][2];
    size_t n_pairs = 0;
    for (size_t p = 0; p < sizeof fixed / sizeof *fixed; p++) pairs[n_pairs][0] = fixed[p][0], pairs[n_pairs][1] = fixed[p][1], n_pairs++;
    for (int m = 0; m < nm; m++) {
        const char *plus = strchr(methods[m], '+');
        if (!plus) continue;
        snprintf(firsts[m], LABEL, "%.*s", (int)(plus - methods[m]), methods[m]);
        pairs[n_pairs][0] = methods[m], pairs[n_pairs][1] = firsts[m], n_pairs++;
    }
    textbuf_printf(t, "\n### Paired at each bit width\n\nLoss of the first method minus the second's on the same seed, size and "
                      "quantizer (negative: the first is better); train, lowrank and lstsq add the same number of parameters "
                      "(lowrank's rank is matched to a linear correction after every block), bias and none add none; "
                      "a combination (\"lwc+train\") against its first method alone says what the second adds on top.\n\n"
                      "| bits | first − second | pairs | mean (nats) | 95%% CI | Wilcoxon p | sign test p |\n"
                      "|---:|---|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++)
        for (size_t p = 0; p < n_pairs; p++) {
            int n = paired_losses(rep, lab, rep->bits[k], pairs[p][0], pairs[p][1], rep->a, rep->b);
            if (n == 0) continue;
            PairedComparison pc;
            if (stats_paired(rep->a, rep->b, n, &pc) != 0) return -1;
            textbuf_printf(t, "| %d | %s − %s | %d | %+.4f | ", rep->bits[k], pairs[p][0], pairs[p][1], n, pc.diff.mean);
            put_interval(t, pc.diff.ci_low, pc.diff.ci_high, "%+.4f");
            textbuf_printf(t, " | ");
            put_rank_tests(t, &pc);
            textbuf_printf(t, " |\n");
            int sure = paired_significant(&pc);
            if (paired_untestable(&pc)) {
                textbuf_printf(c, "- At %d bits, too few pairs to test the loss difference between %s and %s (%+.4f nats over %d pairs: ",
                               rep->bits[k], pairs[p][0], pairs[p][1], pc.diff.mean, n);
                put_untestable(c, &pc);
                textbuf_printf(c, ").\n");
            } else if (!sure)
                textbuf_printf(c, "- At %d bits, no significant loss difference between %s and %s (%+.4f nats over %d pairs).\n", rep->bits[k],
                               pairs[p][0], pairs[p][1], pc.diff.mean, n);
            else
                textbuf_printf(c, "- At %d bits, %s reaches a %s loss than %s by %.4f nats (paired over %d seed × size × quantizer, 95%% CI "
                                  "[%+.4f, %+.4f], Wilcoxon p = %.3g).\n",
                               rep->bits[k], pairs[p][0], pc.diff.mean < 0 ? "lower" : "higher", pairs[p][1], fabs(pc.diff.mean), n,
                               pc.diff.ci_low, pc.diff.ci_high, pc.wilcoxon.p);
        }
    return 0;
}

int section_methods_budget(Report *rep) {
    if (!has_methods(rep)) return 0;
    RowLabel *lab = row_labels(rep);
    int rc = lab ? methods_section(rep, lab) : -1;
    free(lab);
    return rc;
}
