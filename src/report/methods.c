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

/* One method row of a table: the runs of (bits, size, quantizer, method) with their seeds. */
static int method_runs(const Report *rep, int bits, int size, const char *quantizer, const char *method, const Run **out, int max) {
    int n = 0;
    for (int i = 0; i < rep->n_runs && n < max; i++) {
        const Run *r = &rep->runs[i];
        if (r->control || r->rec.bits != bits || r->size != size || strcmp(str(r->rec.quantizer), quantizer) != 0 ||
            strcmp(r->rec.method, method) != 0)
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

/* The paired loss differences a - b over (seed, size, quantizer) at bits: a and b name methods. */
static int paired_losses(const Report *rep, int bits, const char *a, const char *b, double *da, double *db) {
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *x = &rep->runs[i];
        if (x->control || x->rec.bits != bits || strcmp(x->rec.method, a) != 0) continue;
        for (int j = 0; j < rep->n_runs; j++) {
            const Run *y = &rep->runs[j];
            if (y->control || y->rec.bits != bits || strcmp(y->rec.method, b) != 0 || y->rec.seed != x->rec.seed || y->size != x->size ||
                strcmp(str(y->rec.quantizer), str(x->rec.quantizer)) != 0 || strcmp(y->rec.scheme, x->rec.scheme) != 0 ||
                y->rec.calib_tokens != x->rec.calib_tokens)
                continue;
            da[n] = x->rec.loss_corrected;
            db[n] = y->rec.loss_corrected;
            n++;
            break;
        }
    }
    return n;
}

int section_methods_budget(Report *rep) {
    if (!has_methods(rep)) return 0;
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    const char *quantizers[MAX_LEVELS], *methods[MAX_LEVELS];
    int nq = 0, nm = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (r->control) continue;
        if (add_string_level(quantizers, &nq, str(r->rec.quantizer), "quantizer") || add_string_level(methods, &nm, r->rec.method, "method"))
            return -1;
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
                int nb = method_runs(rep, rep->bits[k], z, quantizers[q], "none", base, max);
                for (int m = 0; m < nm; m++) {
                    int n = method_runs(rep, rep->bits[k], z, quantizers[q], methods[m], runs, max);
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
    /* the comparisons the question needs, pooled over seeds, sizes and quantizers at each width */
    static const char *const pairs[][2] = {{"train", "lowrank"}, {"train", "lstsq"}, {"train", "bias"}, {"train", "none"},
                                           {"lowrank", "lstsq"}, {"bias", "none"}};
    textbuf_printf(t, "\n### Paired at each bit width\n\nLoss of the first method minus the second's on the same seed, size and "
                      "quantizer (negative: the first is better); train, lowrank and lstsq add the same number of parameters "
                      "(lowrank's rank is matched to a linear correction after every block), bias and none add none.\n\n"
                      "| bits | first − second | pairs | mean (nats) | 95%% CI | Wilcoxon p | sign test p |\n"
                      "|---:|---|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++)
        for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++) {
            int n = paired_losses(rep, rep->bits[k], pairs[p][0], pairs[p][1], rep->a, rep->b);
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
