/* report/paired: the comparisons conclusions rest on — linear vs MLP (3), quantized vs control gain
 * (8), learned vs closed form (9) — paired differences, intervals, tests, sentences no stronger. */
#include "report/parts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "report/svg.h"

/* What a paired comparison supports: a direction only when the 95% t-interval excludes 0 AND the
 * signed-rank test agrees at 5%. A tiny n, where the t-interval alone can exclude 0 but no rank
 * test can, makes no claim, and says that it cannot (VERDICT_UNTESTABLE), not that nothing changed. */
typedef enum { VERDICT_TOO_FEW, VERDICT_UNTESTABLE, VERDICT_NONE, VERDICT_CONFLICT, VERDICT_HIGHER, VERDICT_LOWER } Verdict;

int paired_untestable(const PairedComparison *pc) {
    return pc->wilcoxon.n_used >= 1 && !(stats_wilcoxon_smallest_p(pc->wilcoxon.n_used) < 0.05);
}

void put_untestable(TextBuf *t, const PairedComparison *pc) {
    textbuf_printf(t, "a signed-rank test over %d pair%s cannot reach p < 0.05 (its smallest p is %.3g)", pc->wilcoxon.n_used,
                   pc->wilcoxon.n_used == 1 ? "" : "s", stats_wilcoxon_smallest_p(pc->wilcoxon.n_used));
}

static Verdict paired_verdict(const PairedComparison *pc) {
    const MeanCI *d = &pc->diff;
    if (pc->n < 2 || !isfinite(d->ci_low)) return VERDICT_TOO_FEW;
    if (paired_untestable(pc)) return VERDICT_UNTESTABLE;
    int ci_excludes = d->ci_low > 0 || d->ci_high < 0;
    int rank_agrees = isfinite(pc->wilcoxon.p) && pc->wilcoxon.p < 0.05;
    if (!ci_excludes) return VERDICT_NONE;
    if (!rank_agrees) return VERDICT_CONFLICT;
    return d->mean > 0 ? VERDICT_HIGHER : VERDICT_LOWER;
}

int paired_significant(const PairedComparison *pc) {
    Verdict v = paired_verdict(pc);
    return v == VERDICT_HIGHER || v == VERDICT_LOWER;
}

static void conclude_paired(TextBuf *c, const PairedComparison *pc, const char *where, const char *a_name, const char *b_name,
                            const char *unit_name) {
    const MeanCI *d = &pc->diff;
    Verdict v = paired_verdict(pc);
    if (v == VERDICT_TOO_FEW) {
        textbuf_printf(c, "- %s, too few matched pairs (n = %d) to compare %s with %s.\n", where, pc->n, a_name, b_name);
        return;
    }
    if (v == VERDICT_UNTESTABLE) {
        textbuf_printf(c, "- %s, too few matched %s to test %s against %s (paired difference %.2f percentage points over %d matched "
                          "%s, 95%% CI [%.2f, %.2f]): ",
                       where, unit_name, a_name, b_name, 100 * d->mean, pc->n, unit_name, 100 * d->ci_low, 100 * d->ci_high);
        put_untestable(c, pc);
        textbuf_printf(c, ".\n");
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
    put_rank_tests(t, pc);
    textbuf_printf(t, " |\n");
}

/* 3. linear vs MLP, pooled and paired */
int section_linear_vs_mlp(Report *rep) {
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

/* 8. the control arm */

int section_control(Report *rep) {
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
            if (rep->runs[i].control && same_correction(&rep->runs[i], key) && isfinite(rep->runs[i].rec.gain_loss)) rep->a[n++] = rep->runs[i].rec.gain_loss;
        MeanCI m = stats_mean_ci(rep->a, n, 0.95);
        textbuf_printf(t, "| %s | %ld | %ld | %s/%s | ", rep->sizes[key->size].name, key->rec.every, key->rec.hidden, key->rec.method, key->rec.objective);
        put_nats_ci(t, &m);
        textbuf_printf(t, " |");
        for (int k = 0; k < rep->n_bits; k++) {
            n = 0;
            for (int i = 0; i < rep->n_runs; i++) {
                const Run *r = &rep->runs[i];
                if (!r->control && r->rec.bits == rep->bits[k] && same_correction(r, key) && isfinite(r->rec.gain_loss)) rep->a[n++] = r->rec.gain_loss;
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
            if (q->control || q->rec.bits != bits || !isfinite(q->rec.gain_loss)) continue;
            for (int j = 0; j < rep->n_runs; j++) {
                const Run *ctl = &rep->runs[j];
                if (!ctl->control || ctl->rec.seed != q->rec.seed || !same_correction(ctl, q) || !isfinite(ctl->rec.gain_loss)) continue;
                rep->a[n] = q->rec.gain_loss;
                rep->b[n] = ctl->rec.gain_loss;
                n++;
                if (q->recovery_ok) {
                    adjusted[n_adj++] = (q->rec.gain_loss - ctl->rec.gain_loss) / (q->rec.loss_quant - q->rec.loss_float);
                    recovery_sum += q->rec.recovery_loss;
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
        put_interval(t, pc.diff.ci_low, pc.diff.ci_high, "%.4f");
        textbuf_printf(t, " | ");
        put_rank_tests(t, &pc);
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
        if (verdict == VERDICT_UNTESTABLE) {
            textbuf_printf(c, "- At %d bits, too few runs with a matching control run to test the quantized models' gain against the "
                              "float control's (paired difference %.4f nats over %d runs, 95%% CI [%.4f, %.4f]: ",
                           bits, pc.diff.mean, n, pc.diff.ci_low, pc.diff.ci_high);
            put_untestable(c, &pc);
            textbuf_printf(c, ").\n");
        } else if (verdict == VERDICT_HIGHER) {
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
int section_methods(Report *rep) {
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
        if (!r->control && r->rec.hidden == 0 && strcmp(r->rec.method, "train") == 0 && add_string_level(objectives, &n_obj, r->rec.objective, "objective"))
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
                if (l->control || l->rec.bits != bits || strcmp(l->rec.method, "lstsq") != 0 || !l->recovery_ok) continue;
                double sum = 0.0;
                int count = 0;
                for (int j = 0; j < rep->n_runs; j++) {
                    const Run *tr = &rep->runs[j];
                    if (tr->control || !tr->recovery_ok || tr->rec.hidden != l->rec.hidden || strcmp(tr->rec.method, "train") != 0 ||
                        strcmp(tr->rec.objective, objectives[o]) != 0 || !same_base(tr, l))
                        continue;
                    sum += tr->rec.recovery_loss;
                    count++;
                }
                if (!count) continue;
                rep->a[n] = sum / count;
                rep->b[n] = l->rec.recovery_loss;
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
            sel.kind = SELECT_LINEAR;
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
