/* report/frontier: is a correction worth its bits? (README: Report, section 11) — agreement with
 * the float model (KL, top-1) by bit width, and per model size the validation loss and KL of every
 * model against what it stores, the Pareto frontier drawn, listed and put in one generated
 * sentence. */
#include "report/parts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tables/methods.h"

/* ---------------------------------------------------------------- agreement */

int section_agreement(Report *rep) {
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    int have = 0;
    for (int i = 0; i < rep->n_runs && !have; i++) have = isfinite(rep->runs[i].rec.kl_quant);
    textbuf_printf(t, "\n## 10. Agreement with the float model\n\n");
    if (!have) {
        textbuf_printf(t, "summary.csv has no KL columns (a sweep from before they existed): nothing to show.\n");
        return 0;
    }
    textbuf_printf(t, "KL = mean over validation positions of KL(p_float ‖ p_model) in nats; top-1 = share of positions where both "
                      "models' most likely next character agree (llama.cpp's perplexity --kl-divergence reports the same pair). "
                      "Means over the stream-correction runs of each width; the change is paired run by run (corrected − "
                      "quantized), with its 95%% t-interval and Wilcoxon p.\n\n"
                      "| bits | runs | KL quantized | KL corrected | change | 95%% CI | Wilcoxon p | top-1 quantized | top-1 corrected |\n"
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < rep->n_bits; k++) {
        int n = 0;
        double top_q = 0, top_c = 0;
        for (int i = 0; i < rep->n_runs; i++) {
            const Run *r = &rep->runs[i];
            if (r->control || !r->stream || r->rec.bits != rep->bits[k] || !isfinite(r->rec.kl_quant) || !isfinite(r->rec.kl_corrected))
                continue;
            rep->a[n] = r->rec.kl_corrected;
            rep->b[n] = r->rec.kl_quant;
            top_q += r->rec.top1_quant;
            top_c += r->rec.top1_corrected;
            n++;
        }
        if (n == 0) continue;
        PairedComparison pc;
        if (stats_paired(rep->a, rep->b, n, &pc) != 0) return -1;
        textbuf_printf(t, "| %d | %d | %.4g | %.4g | %+.4g | ", rep->bits[k], n, pc.mean_b, pc.mean_a, pc.diff.mean);
        put_interval(t, pc.diff.ci_low, pc.diff.ci_high, "%.4g");
        textbuf_printf(t, " | ");
        put_wilcoxon(t, &pc.wilcoxon);
        textbuf_printf(t, " | %.4f | %.4f |\n", top_q / n, top_c / n);
        int sure = paired_significant(&pc), untestable = paired_untestable(&pc);
        if (untestable)
            textbuf_printf(c, "- At %d bits there are too few runs to test the corrections' change of KL to the float model (%.4g → "
                              "%.4g nats, mean over %d runs, paired change %+.4g", rep->bits[k], pc.mean_b, pc.mean_a, n, pc.diff.mean);
        else
            textbuf_printf(c, "- At %d bits the corrections %s KL to the float model (%.4g → %.4g nats, mean over %d runs, paired change "
                              "%+.4g", rep->bits[k], !sure ? "do not measurably change" : pc.diff.mean < 0 ? "lower" : "raise",
                           pc.mean_b, pc.mean_a, n, pc.diff.mean);
        if (isfinite(pc.diff.ci_low)) textbuf_printf(c, ", 95%% CI [%.4g, %.4g]", pc.diff.ci_low, pc.diff.ci_high);
        if (untestable) {
            textbuf_printf(c, ": ");
            put_untestable(c, &pc);
        }
        textbuf_printf(c, "); top-1 agreement %.4f → %.4f.\n", top_q / n, top_c / n);
    }
    return 0;
}

/* ---------------------------------------------------------------- the frontier */

typedef enum { POINT_FLOAT, POINT_QUANT, POINT_CORRECTED, POINT_CONTROL } PointKind;
static const char *const point_kind_names[] = {"float", "quantized", "corrected", "control (float + correction)"};

typedef struct {
    PointKind kind;
    int first;           /* a run of it */
    char label[224];
    double bits;         /* model bits */
    double loss, loss_se, kl;
    int n;               /* seeds */
    int frontier;
    long seed[16];       /* its seeds and each seed's loss (up to 16), for differences paired by seed */
    double seed_loss[16];
    double gain_se;      /* corrected points with one seed: the paired standard error of its gain over its own base */
} Point;

/* The label of a run's quantized model and of its correction. */
static void model_label(const Run *r, char *out, size_t size) {
    if (r->rec.bits >= 32) { snprintf(out, size, "float"); return; }
    char q[48];
    quantizer_with_transform(r, q, sizeof q);
    /* activations quantized too (act=int4:..., or kv=int4 alone): their bits, as the original's
     * "b bits" read (a sweep with --act-bits same mixes W2A2 and W4A4 on one frontier) */
    const char *act = strstr(r->rec.scheme, " act="), *kv = act ? strstr(act, "kv=int") : NULL;
    char a[24] = "";
    if (act && strncmp(act + 5, "int", 3) == 0 && kv) snprintf(a, sizeof a, " a%d kv%d", atoi(act + 8), atoi(kv + 6));
    else if (act && strncmp(act + 5, "int", 3) == 0) snprintf(a, sizeof a, " a%d", atoi(act + 8));
    else if (kv) snprintf(a, sizeof a, " kv%d", atoi(kv + 6));
    snprintf(out, size, "int%ld %s %s%s", r->rec.bits, r->rec.granularity ? r->rec.granularity : "", q, a);
}
static void correction_label(const Run *r, char *out, size_t size) {
    int m = method_by_name(r->rec.method);
    if (m >= 0 && method_tunes((CorrectMethod)m)) { /* no correction: the base itself trained, at its own bits */
        snprintf(out, size, "%s", r->rec.method);
        return;
    }
    const char *kind = r->rec.correction && r->rec.correction[0] ? r->rec.correction : r->mlp ? "mlp" : "linear";
    size_t len = (size_t)snprintf(out, size, "%s", kind);
    if (r->mlp) len += (size_t)snprintf(out + len, size - len, " h%ld", r->rec.hidden);
    if (r->stream) len += (size_t)snprintf(out + len, size - len, " e%ld", r->rec.every);
    if (strcmp(r->rec.method, "train") != 0) len += (size_t)snprintf(out + len, size - len, " (%s)", r->rec.method);
    if (r->rec.correction_stored_bits != SCHEMA_NO_INTEGER && r->rec.correction_stored_bits < 32)
        snprintf(out + len, size - len, " @%ld-bit", r->rec.correction_stored_bits);
}

/* Whether two runs are the same point of kind k (every factor of that point but the seed). */
static int same_point(const Run *x, const Run *y, PointKind k) {
    if (k == POINT_FLOAT) return x->size == y->size;
    if (x->size != y->size || x->control != y->control) return 0;
    if (strcmp(x->rec.scheme, y->rec.scheme) != 0) return 0;
    if (k == POINT_QUANT) return 1;
    return x->rec.every == y->rec.every && x->rec.hidden == y->rec.hidden && x->rec.correction_stored_bits == y->rec.correction_stored_bits &&
           x->rec.calib_tokens == y->rec.calib_tokens && strcmp(x->rec.method, y->rec.method) == 0 &&
           strcmp(x->rec.objective, y->rec.objective) == 0 && strcmp(x->rec.correction ? x->rec.correction : "", y->rec.correction ? y->rec.correction : "") == 0;
}

/* A run's value as a point of kind k: model bits, loss, its standard error, KL. */
static void point_value(const Run *r, PointKind k, double *bits, double *loss, double *se, double *kl) {
    if (k == POINT_FLOAT) *bits = r->rec.model_bits_float, *loss = r->rec.loss_float, *se = r->rec.loss_se_float, *kl = 0;
    else if (k == POINT_QUANT) *bits = r->rec.model_bits_quant, *loss = r->rec.loss_quant, *se = r->rec.loss_se_quant, *kl = r->rec.kl_quant;
    else *bits = r->rec.model_bits_corrected, *loss = r->rec.loss_corrected, *se = r->rec.loss_se_corrected, *kl = r->rec.kl_corrected;
    if (k == POINT_CONTROL) *bits = r->rec.model_bits_float + r->rec.correction_bits;
}

/* The points of size z: each averaged over its seeds (one run per seed). */
static int collect_points(const Report *rep, int z, Point *pts, int max) {
    int n = 0;
    for (int i = 0; i < rep->n_runs; i++) {
        const Run *r = &rep->runs[i];
        if (r->size != z || !isfinite(r->rec.model_bits_quant)) continue;
        PointKind kinds[3];
        int nk = 0;
        if (r->control) kinds[nk++] = POINT_FLOAT, kinds[nk++] = POINT_CONTROL;
        else {
            kinds[nk++] = POINT_FLOAT;
            kinds[nk++] = POINT_QUANT;
            if (strcmp(r->rec.method, "none") != 0) kinds[nk++] = POINT_CORRECTED;
        }
        for (int k = 0; k < nk; k++) {
            PointKind kind = kinds[k];
            int seen = 0;
            for (int p = 0; p < n && !seen; p++)
                seen = pts[p].kind == kind && same_point(&rep->runs[pts[p].first], r, kind);
            if (seen || n == max) continue;
            Point *pt = &pts[n];
            memset(pt, 0, sizeof *pt);
            pt->kind = kind;
            pt->first = i;
            /* one value per seed: the first run of each seed */
            long seeds[MAX_LEVELS];
            int ns = 0;
            double loss = 0, loss2 = 0, se2 = 0, kl = 0, bits = NAN;
            for (int j = i; j < rep->n_runs; j++) {
                const Run *x = &rep->runs[j];
                if (!same_point(x, r, kind)) continue;
                int dup = 0;
                for (int s = 0; s < ns; s++) dup |= seeds[s] == x->rec.seed;
                if (dup || ns == MAX_LEVELS) continue;
                seeds[ns++] = x->rec.seed;
                double b, l, se, k2;
                point_value(x, kind, &b, &l, &se, &k2);
                bits = b, loss += l, loss2 += l * l, se2 += isfinite(se) ? se * se : NAN, kl += k2;
                if (ns <= 16) pt->seed[ns - 1] = x->rec.seed, pt->seed_loss[ns - 1] = l;
                pt->gain_se = x->rec.gain_se;
            }
            pt->n = ns;
            pt->bits = bits;
            pt->loss = loss / ns;
            pt->kl = kl / ns;
            /* over seeds when there are several, else the run's own standard error over windows */
            pt->loss_se = ns >= 2 ? sqrt(fmax(0.0, (loss2 - loss * loss / ns) / (ns - 1)) / ns) : sqrt(se2 / ns);
            if (kind == POINT_FLOAT) snprintf(pt->label, sizeof pt->label, "float");
            else if (kind == POINT_QUANT) model_label(r, pt->label, sizeof pt->label);
            else {
                char m[112], cl[64];
                if (kind == POINT_CONTROL) snprintf(m, sizeof m, "float");
                else model_label(r, m, sizeof m);
                correction_label(r, cl, sizeof cl);
                snprintf(pt->label, sizeof pt->label, "%s + %s", m, cl);
            }
            n++;
        }
    }
    return n;
}

static int compare_points(const void *pa, const void *pb) {
    const Point *a = pa, *b = pb;
    if (a->bits != b->bits) return a->bits < b->bits ? -1 : 1;
    if (a->loss != b->loss) return a->loss < b->loss ? -1 : 1;
    return strcmp(a->label, b->label);
}

/* A point is on the frontier when every point storing no more bits has a higher loss. */
static void mark_frontier(Point *pts, int n) {
    qsort(pts, (size_t)n, sizeof *pts, compare_points);
    double best = INFINITY;
    for (int i = 0; i < n; i++) {
        pts[i].frontier = pts[i].loss < best;
        if (pts[i].loss < best) best = pts[i].loss;
    }
}

/* base's loss minus better's, and its standard error: paired by seed over the seeds both have
 * (seeds share the float model and the windows, so the pairing removes what they share); with
 * one seed, the paired standard error over windows of better's gain when base is its own
 * quantized model, else the two losses' standard errors as if independent (conservative). */
static void paired_margin(const Point *base, const Point *better, double *margin, double *se) {
    int n = 0;
    double d[16], sum = 0;
    for (int i = 0; i < base->n && i < 16; i++)
        for (int j = 0; j < better->n && j < 16; j++)
            if (base->seed[i] == better->seed[j]) d[n] = base->seed_loss[i] - better->seed_loss[j], sum += d[n++];
    if (n >= 2) {
        double mean = sum / n, ss = 0;
        for (int k = 0; k < n; k++) ss += (d[k] - mean) * (d[k] - mean);
        *margin = mean;
        *se = sqrt(ss / (n - 1) / n);
        return;
    }
    *margin = base->loss - better->loss;
    int own_base = base->kind == POINT_QUANT && strcmp(base->label, "") != 0 && strncmp(better->label, base->label, strlen(base->label)) == 0 &&
                   better->label[strlen(base->label)] == ' ';
    *se = own_base && isfinite(better->gain_se) ? better->gain_se : sqrt(base->loss_se * base->loss_se + better->loss_se * better->loss_se);
}

/* The plot of size z's points: loss (or KL) against bits per parameter (model bits over the float
 * model's parameter count, so the float model stores 32) on a log axis, zoomed to the quantized
 * and corrected models, with the float model as a dashed reference line; the float model and the
 * control arm (32 bits per parameter and more) are off its right edge and in the table. Without
 * quantized models, every point is drawn. */
static int plot_size(Report *rep, const Point *pts, int n, const char *size, int kl) {
    double params = NAN, float_y = NAN;
    int zoom = 0;
    for (int i = 0; i < n; i++) {
        if (pts[i].kind == POINT_FLOAT) params = pts[i].bits / 32.0, float_y = kl ? pts[i].kl : pts[i].loss;
        zoom |= pts[i].kind == POINT_QUANT || pts[i].kind == POINT_CORRECTED;
    }
    if (!(params > 0)) params = 1.0 / 32.0; /* no float point: bits / 32 as the unit (not reached: every run has one) */
    double *xy = qc_malloc(sizeof(double) * 2 * (size_t)(5 * n + 1), "frontier plot");
    if (!xy) return -1;
    SvgSeries series[5];
    int ns = 0, used = 0;
    for (int k = 0; k <= POINT_CONTROL; k++) {
        if (zoom && (k == POINT_FLOAT || k == POINT_CONTROL)) continue;
        int m = 0;
        double *x = xy + used, *y = xy + used + n;
        for (int i = 0; i < n; i++)
            if ((int)pts[i].kind == k) x[m] = pts[i].bits / params, y[m] = kl ? pts[i].kl : pts[i].loss, m++;
        used += 2 * n;
        if (m) series[ns++] = (SvgSeries){point_kind_names[k], x, y, m, k, 0, 1};
    }
    double *fx = xy + used, *fy = xy + used + n;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (pts[i].frontier && (!zoom || pts[i].kind == POINT_QUANT || pts[i].kind == POINT_CORRECTED))
            fx[m] = pts[i].bits / params, fy[m] = kl ? pts[i].kl : pts[i].loss, m++;
    if (!kl) series[ns++] = (SvgSeries){"Pareto frontier (loss)", fx, fy, m, 5, 1, 0};
    char title[128], file[96];
    snprintf(title, sizeof title, "%s: %s against model size", size, kl ? "KL to the float model" : "validation loss");
    snprintf(file, sizeof file, "frontier_%s_%s.svg", kl ? "kl" : "loss", size);
    SvgPlotOptions opt = {.log_x = 1, .ref_y = float_y, .ref_label = zoom && isfinite(float_y) ? "float model (32 bits/param)" : NULL};
    TextBuf svg = {0};
    svg_plot(&svg, title, "bits per parameter (model bits / the float model's parameters), log scale",
             kl ? "KL(p_float || p_model), nats" : "validation loss (nats)", series, ns, &opt);
    int rc = write_plot(rep, file, &svg);
    textbuf_free(&svg);
    free(xy);
    if (rc == 0) embed_plot(rep, file, title);
    return rc;
}

int section_frontier(Report *rep) {
    TextBuf *t = &rep->body, *c = &rep->conclusions;
    textbuf_printf(t, "\n## 11. Is a correction worth its bits? Loss against model size\n\n");
    int have = 0;
    for (int i = 0; i < rep->n_runs && !have; i++) have = isfinite(rep->runs[i].rec.model_bits_quant);
    if (!have) {
        textbuf_printf(t, "summary.csv has no model_bits columns (a sweep from before they existed): nothing to show.\n");
        return 0;
    }
    textbuf_printf(t, "Every model of the directory at what it stores (model_bits: codes, scales and float tensors, and the "
                      "corrections at their stored width; bits/param: model_bits over the float model's parameter count, 32 for "
                      "the float model): the float model, each quantized model, each corrected one, the control arm. A point is a configuration, its loss the mean over seeds (± the standard error over seeds, "
                      "or over validation windows with one seed). The Pareto frontier holds the points that no point of at most "
                      "as many bits beats. A corrected model \"beats\" quantizing to more bits when its loss is lower than that "
                      "of every quantized-only model of at most its size by more than twice the standard error of the "
                      "difference, paired by seed (with one seed: over validation windows against its own base model, else "
                      "both losses' standard errors combined).\n");
    Point *pts = qc_malloc(sizeof(Point) * (size_t)(3 * rep->n_runs + 1), "frontier points");
    if (!pts) return -1;
    int rc = 0;
    for (int z = 0; z < rep->n_sizes && rc == 0; z++) {
        int n = collect_points(rep, z, pts, 3 * rep->n_runs + 1);
        if (n == 0) continue;
        mark_frontier(pts, n);
        const char *size = rep->sizes[z].name;
        double params = NAN; /* the float model's parameters: its bits over 32 */
        for (int i = 0; i < n; i++)
            if (pts[i].kind == POINT_FLOAT) params = pts[i].bits / 32.0;
        textbuf_printf(t, "\n### %s\n\n| model | kind | kbit | bits/param | loss | KL | seeds |\n|---|---|---:|---:|---:|---:|---:|\n", size);
        for (int i = 0; i < n; i++)
            if (pts[i].frontier)
                textbuf_printf(t, "| %s | %s | %.1f | %.2f | %.4f ± %.4f | %.4g | %d |\n", pts[i].label, point_kind_names[pts[i].kind],
                               pts[i].bits / 1e3, pts[i].bits / params, pts[i].loss, pts[i].loss_se, pts[i].kl, pts[i].n);
        int off = 0;
        for (int i = 0; i < n; i++) off += !pts[i].frontier;
        textbuf_printf(t, "\n(the frontier; %d other points in the plots, which show the quantized and corrected models by bits "
                          "per parameter on a log axis with the float model as a dashed line; the float model and the control arm, "
                          "at 32 bits per parameter and more, are off their right edge.)\n", off);
        rc = plot_size(rep, pts, n, size, 0);
        if (rc == 0) rc = plot_size(rep, pts, n, size, 1);
        /* the sentence: who is on the frontier, and does a correction beat more bits */
        int on_corrected = 0;
        for (int i = 0; i < n; i++) on_corrected += pts[i].frontier && pts[i].kind == POINT_CORRECTED;
        int beats = 0, best = -1, best_base = -1;
        double best_margin = 0;
        for (int i = 0; i < n; i++) {
            if (pts[i].kind != POINT_CORRECTED) continue;
            int q = -1;
            for (int j = 0; j < n; j++)
                if ((pts[j].kind == POINT_QUANT || pts[j].kind == POINT_FLOAT) && pts[j].bits <= pts[i].bits && (q < 0 || pts[j].loss < pts[q].loss))
                    q = j;
            if (q < 0) continue;
            double margin, se;
            paired_margin(&pts[q], &pts[i], &margin, &se);
            if (margin > 2 * se) {
                beats++;
                if (margin > best_margin) best_margin = margin, best = i, best_base = q;
            }
        }
        textbuf_printf(c, "- At %s the frontier is ", size);
        int first = 1;
        for (int i = 0; i < n; i++)
            if (pts[i].frontier) {
                textbuf_printf(c, "%s%s (%.0f kbit, loss %.3f)", first ? "" : ", ", pts[i].label, pts[i].bits / 1e3, pts[i].loss);
                first = 0;
            }
        textbuf_printf(c, "; %d corrected model%s on it. ", on_corrected, on_corrected == 1 ? " is" : "s are");
        if (beats)
            textbuf_printf(c, "%d corrected configuration%s beat%s every quantized-only model of at most %s size; the widest margin: %s "
                              "(%.0f kbit, loss %.4f) against %s (%.0f kbit, loss %.4f).\n",
                           beats, beats == 1 ? "" : "s", beats == 1 ? "s" : "", beats == 1 ? "its" : "their", pts[best].label, pts[best].bits / 1e3,
                           pts[best].loss, pts[best_base].label, pts[best_base].bits / 1e3, pts[best_base].loss);
        else
            textbuf_printf(c, "No corrected model beats simply quantizing to more bits at the same or a smaller size.\n");
    }
    free(pts);
    return rc;
}
