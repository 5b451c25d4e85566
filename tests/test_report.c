/* test_report: the CSV reader, and `qcorr report` end to end on a hand-made sweep directory whose
 * numbers the test recomputes on its own (with tests/stats_reference.h) and reads back out of
 * report.md; its errors, small sweeps that support no claim, and old summary.csv files. (The
 * statistics themselves: test_stats.) */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "report/report.h"
#include "report/stats.h"
#include "stats_reference.h"

/* ======================================================================================
 * CSV
 * ====================================================================================== */

static void test_csv_quoting_and_errors(void **state) {
    (void)state;
    const char *text = "a,b,c\r\n1,\"x,y\",\r\n\n\"say \"\"hi\"\"\",2,\"multi\nline\"\n";
    ReportCsv csv;
    assert_int_equal(report_csv_parse("t.csv", text, strlen(text), &csv), 0);
    assert_int_equal(csv.n_cols, 3);
    assert_int_equal(csv.n_rows, 2);
    assert_string_equal(csv.header[2], "c");
    assert_string_equal(report_csv_cell(&csv, 0, 0), "1");
    assert_string_equal(report_csv_cell(&csv, 0, 1), "x,y");
    assert_string_equal(report_csv_cell(&csv, 0, 2), "");
    assert_string_equal(report_csv_cell(&csv, 1, 0), "say \"hi\"");
    assert_string_equal(report_csv_cell(&csv, 1, 2), "multi\nline");
    assert_int_equal(csv.lines[0], 2);
    assert_int_equal(csv.lines[1], 4);
    assert_int_equal(report_csv_column(&csv, "b"), 1);
    assert_int_equal(report_csv_column(&csv, "z"), -1);
    report_csv_free(&csv);
    /* no final newline, trailing empty field */
    assert_int_equal(report_csv_parse("t.csv", "a,b\n1,", 6, &csv), 0);
    assert_int_equal(csv.n_rows, 1);
    assert_string_equal(report_csv_cell(&csv, 0, 1), "");
    report_csv_free(&csv);
    const char *bad_count = "a,b\n1,2\n1,2,3\n";
    assert_int_not_equal(report_csv_parse("t.csv", bad_count, strlen(bad_count), &csv), 0);
    if (!strstr(qc_last_error(), "t.csv line 3") || !strstr(qc_last_error(), "3 fields")) fail_msg("error: %s", qc_last_error());
    const char *bad_quote = "a,b\n1,\"x\"y\n";
    assert_int_not_equal(report_csv_parse("t.csv", bad_quote, strlen(bad_quote), &csv), 0);
    if (!strstr(qc_last_error(), "line 2, column 2 (b)")) fail_msg("error: %s", qc_last_error());
    const char *open_quote = "a,b\n1,\"never closed\n";
    assert_int_not_equal(report_csv_parse("t.csv", open_quote, strlen(open_quote), &csv), 0);
    if (!strstr(qc_last_error(), "never closed")) fail_msg("error: %s", qc_last_error());
    assert_int_not_equal(report_csv_parse("t.csv", "", 0, &csv), 0);
}

/* ======================================================================================
 * end to end
 * ====================================================================================== */

typedef struct {
    int seed, bits, size, every, hidden, lstsq, control, ok;
    double lf, lq, lc, rec, gain;
} TestRun;

#define MAX_TEST_RUNS 200
static TestRun truns[MAX_TEST_RUNS];
static int n_truns;
static const char *const size_names[2] = {"64x2", "128x4"};
static const int size_d[2] = {64, 128}, size_l[2] = {2, 4};
static const int seeds[3] = {1, 2, 3}, bit_widths[2] = {2, 4}, everys[2] = {1, 2}, hiddens[3] = {0, 32, 64};

/* the three runs whose recovery the test makes undefined */
static int made_undefined(const TestRun *r) {
    return (r->bits == 2 && r->seed == 3 && r->size == 1 && r->every == 2 && r->hidden == 64 && !r->lstsq) ||
           (r->bits == 4 && r->seed == 1 && r->size == 0 && r->every == 1 && r->hidden == 0 && !r->lstsq) ||
           (r->bits == 4 && r->seed == 2 && r->size == 0 && r->every == 1 && r->lstsq);
}

static void add_run(int seed, int bits, int size, int every, int hidden, int lstsq, int control, double lf, double gap, double rec) {
    assert_true(n_truns < MAX_TEST_RUNS);
    TestRun *r = &truns[n_truns++];
    *r = (TestRun){seed, bits, size, every, hidden, lstsq, control, 1, lf, lf + gap, 0, rec, 0};
    if (control) {
        r->ok = 0;
        r->lq = lf;
        r->lc = lf - rec; /* rec holds the control gain */
    } else if (made_undefined(r)) {
        r->ok = 0;
        r->lq = lf + 5e-5;
        r->lc = r->lq - 1e-5;
    } else {
        r->lc = r->lq - rec * gap;
    }
    r->gain = r->lq - r->lc;
}

static void make_runs(void) {
    Rng rng;
    rng_seed(&rng, 2024);
    n_truns = 0;
    for (int s = 0; s < 3; s++)
        for (int z = 0; z < 2; z++) {
            double lf = 1.9 + 0.05 * z + 0.01 * seeds[s];
            for (int b = 0; b < 2; b++) {
                double gap = bit_widths[b] == 2 ? 0.6 : 0.12;
                for (int e = 0; e < 2; e++) {
                    double base = 0.6 + 0.05 * (everys[e] == 1) + 0.2 * rng_uniform(&rng);
                    for (int h = 0; h < 3; h++) {
                        /* at 2 bits MLP helps a little on average, at 4 bits not at all: noise decides */
                        double effect = hiddens[h] == 0 ? 0.0 : (bit_widths[b] == 2 ? 0.03 : 0.0) + 0.12 * (rng_uniform(&rng) - 0.5);
                        add_run(seeds[s], bit_widths[b], z, everys[e], hiddens[h], 0, 0, lf, gap, base + effect);
                    }
                    add_run(seeds[s], bit_widths[b], z, everys[e], 0, 1, 0, lf, gap, base - 0.05 + 0.1 * (rng_uniform(&rng) - 0.5));
                }
            }
            for (int e = 0; e < 2; e++)
                for (int h = 0; h < 3; h++) add_run(seeds[s], 32, z, everys[e], hiddens[h], 0, 1, lf, 0, 0.01 + 0.01 * rng_uniform(&rng));
        }
}

static void write_text(const char *path, const char *text) { assert_int_equal(write_file_atomic(path, text, strlen(text)), 0); }

static void write_summary(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.csv", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "run_id,seed,size,d_model,n_layer,bits,scheme,every,hidden,correction,method,objective,arm,loss_float,loss_quant,"
               "loss_corrected,ppl_float,ppl_quant,ppl_corrected,recovery_loss,recovery_ppl,recovery_flag,gain_loss,"
               "correction_params,correction_sites,steps,calib_tokens,seconds_train_float,seconds_quantize,seconds_correct,"
               "seconds_eval\n");
    for (int i = 0; i < n_truns; i++) {
        const TestRun *r = &truns[i];
        /* run 0's id carries a quote, every scheme a comma: both must survive the CSV quoting */
        if (i == 0) fprintf(f, "\"run\"\"0\",");
        else fprintf(f, "run%d,", i);
        fprintf(f, "%d,%s,%d,%d,%d,", r->seed, size_names[r->size], size_d[r->size], size_l[r->size], r->bits);
        if (r->control) fprintf(f, "float32 (no quantization),");
        else fprintf(f, "\"int%d sym-absmax channel rtn scope=linear,head act=none\",", r->bits);
        fprintf(f, "%d,%d,%s,%s,%s,%s,", r->every, r->hidden, r->hidden ? "mlp" : "linear", r->lstsq ? "lstsq" : "train",
                r->lstsq ? "lstsq" : "ce", r->control ? "control" : "quant");
        fprintf(f, "%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,", r->lf, r->lq, r->lc, exp(r->lf), exp(r->lq), exp(r->lc));
        if (r->ok)
            fprintf(f, "%.17g,%.17g,ok,", r->rec, (exp(r->lq) - exp(r->lc)) / (exp(r->lq) - exp(r->lf)));
        else
            fprintf(f, ",,undefined,");
        fprintf(f, "%.17g,1234,2,%d,65536,1.5,0.1,2.5,0.4\n", r->gain, r->lstsq ? 0 : 200);
    }
    assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path) {
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text) fail_msg("%s", qc_last_error());
    return (char *)text;
}

/* Splits one markdown table row "| a | b |" into trimmed cells; returns the count. */
static int split_row(const char *line, char cells[][160], int max) {
    int n = 0;
    const char *p = strchr(line, '|');
    while (p && n < max) {
        const char *q = strchr(p + 1, '|');
        const char *nl = strchr(p + 1, '\n');
        if (!q || (nl && nl < q)) break;
        const char *a = p + 1, *b = q;
        while (a < b && *a == ' ') a++;
        while (b > a && b[-1] == ' ') b--;
        snprintf(cells[n], 160, "%.*s", (int)(b - a), a);
        n++;
        p = q;
    }
    return n;
}

/* The cells of the first table row after `heading` (before the next heading) whose first cell is
 * key1 and, if key2 is given, whose second cell is key2. Fails the test when there is none. */
static int table_row(const char *md, const char *heading, const char *key1, const char *key2, char cells[][160]) {
    const char *p = strstr(md, heading);
    if (!p) fail_msg("report.md has no heading '%s'", heading);
    p = strchr(p, '\n');
    while (p && *p) {
        p++;
        if (*p == '#') break;
        if (*p == '|') {
            int n = split_row(p, cells, 24);
            if (n >= 2 && strcmp(cells[0], key1) == 0 && (!key2 || strcmp(cells[1], key2) == 0)) return n;
        }
        p = strchr(p, '\n');
    }
    fail_msg("no row '%s'%s%s under '%s'", key1, key2 ? " / " : "", key2 ? key2 : "", heading);
    return 0;
}

static double cell_number(const char *cell) {
    char *end;
    double v = strtod(cell, &end);
    if (end == cell) fail_msg("cell '%s' is not a number", cell);
    return v;
}
/* "[a, b]" */
static void cell_interval(const char *cell, double *lo, double *hi) {
    if (sscanf(cell, "[%lf, %lf]", lo, hi) != 2) fail_msg("cell '%s' is not an interval", cell);
}
#define PCT_1DP 0.0500001  /* a percentage printed with one decimal */
#define PCT_2DP 0.0050001  /* two decimals */

static void expect_p(const char *cell, double want) {
    double got = cell_number(cell);
    if (!(fabs(got - want) <= 5e-3 * want + 1e-300)) fail_msg("p-value cell '%s', want %.6g", cell, want);
}

static double sample_std(const double *x, int n) {
    double m = 0, s = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m /= n;
    for (int i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (n - 1));
}
static double mean_of(const double *x, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m += x[i];
    return m / n;
}

static int same_base(const TestRun *a, const TestRun *b) {
    return a->seed == b->seed && a->size == b->size && a->every == b->every && a->bits == b->bits && !a->control && !b->control;
}

/* balanced-tag check: every <x ...> closed by </x> in order, <x .../> self-closing */
static void expect_balanced_svg(const char *path) {
    char *text = read_text(path);
    if (strncmp(text, "<svg", 4) != 0) fail_msg("%s does not start with <svg", path);
    if (!strstr(text, "xmlns=\"http://www.w3.org/2000/svg\"")) fail_msg("%s: no SVG xmlns", path);
    if (strstr(text, "<script")) fail_msg("%s: has a script", path);
    char stack[64][32];
    int depth = 0, elements = 0;
    for (const char *p = strchr(text, '<'); p; p = strchr(p + 1, '<')) {
        const char *close = strchr(p, '>');
        if (!close) fail_msg("%s: unterminated tag", path);
        if (p[1] == '?' || p[1] == '!') continue;
        char name[32];
        int closing = p[1] == '/';
        sscanf(p + 1 + closing, "%31[a-zA-Z]", name);
        if (closing) {
            if (depth == 0 || strcmp(stack[depth - 1], name) != 0) fail_msg("%s: </%s> does not close <%s>", path, name, depth ? stack[depth - 1] : "");
            depth--;
        } else if (close[-1] != '/') {
            if (depth >= 64) fail_msg("%s: nesting too deep", path);
            snprintf(stack[depth++], sizeof stack[0], "%s", name);
        }
        elements++;
    }
    if (depth != 0) fail_msg("%s: %d unclosed tags (innermost <%s>)", path, depth, stack[depth - 1]);
    if (elements < 5) fail_msg("%s: only %d tags", path, elements);
    /* every text (but the rotated axis titles) inside the canvas, measured generously (7 px a
     * character at 12 px, 9 at the title's 15): a legend entry cut at the edge fails here */
    int width = 0;
    if (sscanf(text, "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\"", &width) != 1) fail_msg("%s: no width", path);
    for (const char *p = strstr(text, "<text "); p; p = strstr(p + 1, "<text ")) {
        const char *end = strchr(p, '>'), *close = strstr(p, "</text>");
        double x;
        char anchor[16];
        if (!end || !close || sscanf(p, "<text x=\"%lf\" y=\"%*f\" text-anchor=\"%15[a-z]\"", &x, anchor) != 2)
            fail_msg("%s: unreadable <text> at byte %ld", path, (long)(p - text));
        if (memmem(p, (size_t)(end - p), "transform", 9)) continue;
        double w = (memmem(p, (size_t)(end - p), "font-size=\"15\"", 15) ? 9.0 : 7.0) * (double)(close - end - 1);
        double lo = strcmp(anchor, "start") == 0 ? x : strcmp(anchor, "end") == 0 ? x - w : x - w / 2;
        if (lo < 0 || lo + w > width)
            fail_msg("%s: the text '%.*s' runs past the %d-px canvas (from x = %.0f, about %.0f px wide)", path, (int)(close - end - 1),
                     end + 1, width, lo, w);
    }
    free(text);
}

/* The x positions of the x axis's tick labels (the writer puts them 19 px below the plot, at
 * y = 409), with their values, in order. */
static int x_ticks(const char *path, double *x, double *value, int max) {
    char *text = read_text(path);
    int n = 0;
    for (const char *p = strstr(text, "<text "); p && n < max; p = strstr(p + 1, "<text ")) {
        double px, v;
        if (sscanf(p, "<text x=\"%lf\" y=\"409.0\" text-anchor=\"middle\">%lf<", &px, &v) == 2) x[n] = px, value[n] = v, n++;
    }
    free(text);
    return n;
}

static void test_report_end_to_end(void **state) {
    (void)state;
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/sweep", test_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    make_runs();
    assert_int_equal(n_truns, 132);
    write_summary(dir);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    write_text(path, "{\"command\": \"qcorr sweep --preset test --out sweep\", \"grid\": {}}");
    snprintf(path, sizeof path, "%s/floats", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/floats/s1_64x2.train.csv", dir);
    write_text(path, "step,loss,lr,grad_norm,tokens_per_s,val_loss\n0,4.2,0.001,1.0,1000,4.25\n10,3.1,0.001,0.9,1000,\n"
                     "20,2.5,0.001,0.8,1000,2.6\n30,2.2,0.001,0.7,1000,\n");
    snprintf(path, sizeof path, "%s/floats/s2_64x2.train.csv", dir);
    write_text(path, "step,loss,lr,grad_norm,tokens_per_s,val_loss\n0,4.3,0.001,1.0,1000,\n10,3.0,0.001,0.9,1000,\n");
    /* an earlier report's figure this grid does not draw (no 8-bit runs), and a file of the user's */
    snprintf(path, sizeof path, "%s/plots", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/plots/recovery_heatmap_8bit.svg", dir);
    write_text(path, "<svg></svg>\n");
    snprintf(path, sizeof path, "%s/plots/my_figure.svg", dir);
    write_text(path, "<svg></svg>\n");

    ReportSummary summary;
    if (report_write(dir, &summary) != 0) fail_msg("report_write: %s", qc_last_error());
    struct stat seen;
    snprintf(path, sizeof path, "%s/plots/recovery_heatmap_8bit.svg", dir);
    if (stat(path, &seen) == 0) fail_msg("%s, a figure of an earlier report, is still there", path);
    snprintf(path, sizeof path, "%s/plots/my_figure.svg", dir);
    if (stat(path, &seen) != 0) fail_msg("%s, not a name the report gives, was removed", path);
    assert_int_equal(summary.n_rows, 132);
    assert_int_equal(summary.n_control, 36);
    assert_int_equal(summary.n_quant, 96);
    assert_int_equal(summary.n_excluded, 3);
    assert_int_equal(summary.n_loss_curves, 2);
    snprintf(path, sizeof path, "%s/report.md", dir);
    char *md = read_text(path);
    char cells[24][160];

    /* header: run count, grid, schemes (with their commas), how to reproduce */
    assert_non_null(strstr(md, "132 runs (96 quantized, 36 in the control arm)"));
    assert_non_null(strstr(md, "- model size (d_model x layers): 64x2, 128x4"));
    assert_non_null(strstr(md, "- `int2 sym-absmax channel rtn scope=linear,head act=none`"));
    assert_non_null(strstr(md, "qcorr sweep --preset test --out sweep"));
    assert_null(strstr(md, "place the same correction sites")); /* every 1 and 2 differ at 2 and 4 layers */
    /* the undefined runs: counted in a note, never averaged in */
    assert_non_null(strstr(md, "**Note: 3 runs excluded from the recovery statistics**"));
    assert_non_null(strstr(md, "3 with loss gap below 1e-4"));

    for (int b = 0; b < 2; b++) {
        int bits = bit_widths[b];
        char key[8];
        snprintf(key, sizeof key, "%d", bits);
        /* 1. recovery by bit width */
        double rec[128];
        int n = 0, excluded = 0, above = 0;
        for (int i = 0; i < n_truns; i++) {
            if (truns[i].control || truns[i].bits != bits) continue;
            if (!truns[i].ok) { excluded++; continue; }
            rec[n++] = truns[i].rec;
            above += truns[i].rec > 0.8;
        }
        assert_int_equal(excluded, bits == 2 ? 1 : 2);
        /* the ratio of pooled means over the resolved runs, and each seed's own pooled ratio */
        double gain = 0, gap = 0, by_seed[3];
        for (int i = 0; i < n_truns; i++)
            if (!truns[i].control && truns[i].bits == bits && truns[i].ok) gain += truns[i].lq - truns[i].lc, gap += truns[i].lq - truns[i].lf;
        for (int k = 0; k < 3; k++) {
            double g = 0, q = 0;
            for (int i = 0; i < n_truns; i++)
                if (!truns[i].control && truns[i].bits == bits && truns[i].ok && truns[i].seed == seeds[k]) g += truns[i].lq - truns[i].lc, q += truns[i].lq - truns[i].lf;
            by_seed[k] = g / q;
        }
        double pooled = gain / gap, seed_mean = mean_of(by_seed, 3);
        double half = t_quantile_by_integration(0.975, 2) * sample_std(by_seed, 3) / sqrt(3.0);
        double mean = mean_of(rec, n), std = sample_std(rec, n);
        table_row(md, "## 1. Recovery by bit width", key, NULL, cells);
        assert_int_equal(atoi(cells[1]), n + excluded);
        assert_int_equal(atoi(cells[2]), n);
        assert_close(cell_number(cells[3]), 100 * pooled, PCT_1DP);
        double got_mean, got_std, lo, hi;
        int got_n;
        cell_interval(cells[4], &lo, &hi);
        assert_close(lo, 100 * (seed_mean - half), PCT_1DP);
        assert_close(hi, 100 * (seed_mean + half), PCT_1DP);
        got_mean = cell_number(cells[5]);
        got_std = cell_number(strstr(cells[5], "± ") + strlen("± "));
        assert_close(got_mean, 100 * mean, PCT_1DP);
        assert_close(got_std, 100 * std, PCT_1DP);
        assert_close(cell_number(cells[6]), 100.0 * above / n, PCT_1DP);
        /* the same numbers, unrounded, in the summary --json prints: the pooled ratio, the interval over seeds */
        assert_int_equal(summary.bits[b].bits, bits);
        assert_int_equal(summary.bits[b].recovery.n, 3);
        assert_close(summary.bits[b].recovery.mean, pooled, 1e-12);
        assert_close(summary.bits[b].recovery.ci_high, seed_mean + half, 1e-7);

        /* 3. paired MLP − linear: the test's own pairing (mean over the MLP widths) */
        double diff[32];
        int pairs = 0, n_pos = 0, n_neg = 0;
        for (int i = 0; i < n_truns; i++) {
            const TestRun *lin = &truns[i];
            if (lin->control || lin->bits != bits || lin->hidden || lin->lstsq || !lin->ok) continue;
            double sum = 0;
            int count = 0;
            for (int j = 0; j < n_truns; j++) {
                const TestRun *m = &truns[j];
                if (same_base(lin, m) && m->hidden && !m->lstsq && m->ok) sum += m->rec, count++;
            }
            if (!count) continue;
            diff[pairs] = sum / count - lin->rec;
            n_pos += diff[pairs] > 0, n_neg += diff[pairs] < 0;
            pairs++;
        }
        assert_int_equal(pairs, bits == 2 ? 12 : 11);
        double dmean = mean_of(diff, pairs), dhalf = t_quantile_by_integration(0.975, pairs - 1) * sample_std(diff, pairs) / sqrt(pairs);
        double p_wilcoxon = wilcoxon_by_enumeration(diff, pairs), p_sign = sign_test_by_binomial(n_pos, n_neg);
        table_row(md, "### Paired: MLP − linear", key, NULL, cells);
        assert_int_equal(atoi(cells[1]), pairs);
        assert_close(cell_number(cells[4]), 100 * dmean, PCT_2DP);
        cell_interval(cells[5], &lo, &hi);
        assert_close(lo, 100 * (dmean - dhalf), PCT_2DP);
        assert_close(hi, 100 * (dmean + dhalf), PCT_2DP);
        expect_p(cells[6], p_wilcoxon);
        assert_non_null(strstr(cells[6], "(exact)"));
        expect_p(cells[7], p_sign);
        const PairedComparison *pc = &summary.bits[b].linear_vs_mlp;
        assert_true(summary.bits[b].have_linear_vs_mlp);
        assert_int_equal(pc->n, pairs);
        assert_close(pc->diff.mean, dmean, 1e-12);
        assert_close(pc->wilcoxon.p, p_wilcoxon, 1e-12);
        assert_close(pc->sign.p, p_sign, 1e-12);
        /* the conclusion sentence: a direction only when the CI excludes 0 and Wilcoxon agrees */
        char sentence[128];
        int ci_excludes = dmean - dhalf > 0 || dmean + dhalf < 0;
        if (ci_excludes && p_wilcoxon < 0.05)
            snprintf(sentence, sizeof sentence, "- At %d bits, MLP corrections recover %.2f percentage points %s", bits, 100 * fabs(dmean),
                     dmean > 0 ? "more" : "less");
        else if (ci_excludes)
            snprintf(sentence, sizeof sentence, "- At %d bits, no firm conclusion on MLP corrections vs linear ones", bits);
        else
            snprintf(sentence, sizeof sentence, "- At %d bits, no significant difference between MLP corrections and linear ones", bits);
        if (!strstr(md, sentence)) fail_msg("report.md lacks the sentence '%s'", sentence);

        /* 4. by hidden size: the 64-wide MLP cell, pooled over its resolved runs */
        double g64 = 0, q64 = 0;
        int runs64 = 0;
        n = 0;
        for (int i = 0; i < n_truns; i++)
            if (!truns[i].control && truns[i].bits == bits && truns[i].hidden == 64) {
                runs64++;
                if (truns[i].ok) g64 += truns[i].lq - truns[i].lc, q64 += truns[i].lq - truns[i].lf, n++;
            }
        /* the linear width holds learned and closed-form runs: a column each (lstsq, then train),
         * never their pool */
        int cols = table_row(md, "## 4. Recovery by correction hidden size", key, NULL, cells);
        assert_int_equal(cols, 5);
        if (!strstr(md, "| bits | linear (h=0), lstsq | linear (h=0), train | MLP (h=32) | MLP (h=64) |"))
            fail_msg("section 4 does not give the learned and the closed-form linear corrections a column each");
        assert_close(cell_number(cells[4]), 100 * g64 / q64, PCT_1DP);
        char counts[32];
        snprintf(counts, sizeof counts, "(%d/%d)", n, runs64);
        if (!strstr(cells[4], counts)) fail_msg("cell '%s' does not count %s", cells[4], counts);
        for (int lstsq = 1; lstsq >= 0; lstsq--) {
            double g = 0, q = 0;
            for (int i = 0; i < n_truns; i++)
                if (!truns[i].control && truns[i].bits == bits && truns[i].hidden == 0 && truns[i].lstsq == lstsq && truns[i].ok)
                    g += truns[i].lq - truns[i].lc, q += truns[i].lq - truns[i].lf;
            assert_close(cell_number(cells[lstsq ? 1 : 2]), 100 * g / q, PCT_1DP);
        }
        (void)got_n;

        /* 8. control: each quantized train run against the control run of its seed and correction */
        double qg = 0, cg = 0;
        pairs = 0;
        for (int i = 0; i < n_truns; i++) {
            const TestRun *q = &truns[i];
            if (q->control || q->bits != bits) continue;
            for (int j = 0; j < n_truns; j++) {
                const TestRun *c = &truns[j];
                if (c->control && c->seed == q->seed && c->size == q->size && c->every == q->every && c->hidden == q->hidden && !q->lstsq) {
                    qg += q->gain, cg += c->gain;
                    pairs++;
                }
            }
        }
        assert_int_equal(pairs, 36);
        table_row(md, "### Paired: quantized gain − control gain", key, NULL, cells);
        assert_int_equal(atoi(cells[1]), pairs);
        assert_close(cell_number(cells[2]), qg / pairs, 0.00005001);
        assert_close(cell_number(cells[3]), cg / pairs, 0.00005001);

        /* 9. learned (train, ce) − closed-form (lstsq), linear runs paired */
        pairs = 0;
        for (int i = 0; i < n_truns; i++) {
            const TestRun *l = &truns[i];
            if (l->control || l->bits != bits || !l->lstsq || !l->ok) continue;
            for (int j = 0; j < n_truns; j++) {
                const TestRun *t = &truns[j];
                if (same_base(l, t) && !t->lstsq && t->hidden == 0 && t->ok) diff[pairs++] = t->rec - l->rec;
            }
        }
        assert_int_equal(pairs, bits == 2 ? 12 : 10);
        table_row(md, "## 9. Learned vs closed-form", key, "ce", cells);
        assert_int_equal(atoi(cells[2]), pairs);
        assert_close(cell_number(cells[5]), 100 * mean_of(diff, pairs), PCT_2DP);
        expect_p(cells[7], wilcoxon_by_enumeration(diff, pairs));
    }

    /* 7. the best configuration: the test's own means over seeds */
    double best = -1;
    int best_count = 0;
    for (int i = 0; i < n_truns; i++) {
        const TestRun *r = &truns[i];
        if (r->control || !r->ok) continue;
        double sum = 0;
        int count = 0;
        for (int j = 0; j < n_truns; j++) {
            const TestRun *o = &truns[j];
            if (!o->control && o->ok && o->bits == r->bits && o->size == r->size && o->every == r->every && o->hidden == r->hidden &&
                o->lstsq == r->lstsq)
                sum += o->rec, count++;
        }
        if (sum / count > best) best = sum / count, best_count = count;
    }
    table_row(md, "## 7. Top configurations", "1", NULL, cells);
    assert_close(cell_number(cells[7]), 100 * best, PCT_1DP);
    assert_int_equal(atoi(cells[9]), best_count);

    /* the loss curves were read; every plot exists, is SVG and is balanced; every link resolves */
    assert_non_null(strstr(md, "(2 files; columns step, loss, val_loss)"));
    const char *plots[] = {"recovery_by_bits.svg", "recovery_heatmap_2bit.svg", "recovery_heatmap_4bit.svg", "float_loss_curves.svg",
                           "learned_vs_closed_form.svg"};
    for (size_t i = 0; i < sizeof plots / sizeof *plots; i++) {
        snprintf(path, sizeof path, "%s/plots/%s", dir, plots[i]);
        expect_balanced_svg(path);
        char link[128];
        snprintf(link, sizeof link, "(plots/%s)", plots[i]);
        if (!strstr(md, link)) fail_msg("report.md does not link %s", plots[i]);
    }
    assert_int_equal(summary.n_plots, 5);
    for (const char *p = strstr(md, "](plots/"); p; p = strstr(p + 1, "](plots/")) {
        char file[128];
        sscanf(p + 2, "%127[^)]", file);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        struct stat st;
        if (stat(path, &st) != 0) fail_msg("report.md links %s, which does not exist", file);
    }
    /* atomic writes leave no temporary files behind */
    snprintf(path, sizeof path, "%s/plots", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp")) fail_msg("temporary file %s left behind", e->d_name);
    closedir(d);
    free(md);
}

/* dir's report.md, the test failing if it lacks any of the n expected strings; the caller frees it */
static char *report_with(const char *dir, const char *const *expected, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/report.md", dir);
    char *md = read_text(path);
    for (size_t i = 0; i < n; i++)
        if (!strstr(md, expected[i])) fail_msg("report.md lacks '%s'", expected[i]);
    return md;
}

/* Closes the summary.csv a test wrote (f) and writes the report of its directory. */
static void close_and_report(FILE *f, const char *dir, ReportSummary *summary) {
    assert_int_equal(fclose(f), 0);
    if (report_write(dir, summary) != 0) fail_msg("report_write: %s", qc_last_error());
}

/* Makes test_tmpdir()/name (into dir) and opens its summary.csv with the header row written:
 * the columns every record has, then `extra` (",steps_run,..." or ""). */
static FILE *new_summary_with(const char *name, char *dir, size_t size, const char *extra) {
    char path[1024];
    snprintf(dir, size, "%s/%s", test_tmpdir(), name);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/summary.csv", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "run_id,seed,size,d_model,n_layer,bits,scheme,every,hidden,correction,method,objective,arm,loss_float,loss_quant,"
               "loss_corrected,ppl_float,ppl_quant,ppl_corrected,recovery_loss,recovery_ppl,recovery_flag,gain_loss,"
               "correction_params,correction_sites,steps,calib_tokens,seconds_train_float,seconds_quantize,seconds_correct,"
               "seconds_eval%s\n", extra);
    return f;
}
static FILE *new_summary(const char *name, char *dir, size_t size) { return new_summary_with(name, dir, size, ""); }

/* A resolved gap that the same correction training on the unquantized model (the control run)
 * could account for is no recovery: 4-bit runs with a gap of 0.004 nats, linear ones gaining 0.002
 * (50%) beside a control gain of 0.0005, MLP ones gaining 0.010 (250%) beside a control gain of
 * 0.003 (more than a third of the gap). Only the linear runs count: the cell recovers 50%. */
static void test_report_fine_tuning_is_no_recovery(void **state) {
    (void)state;
    char dir[512];
    FILE *f = new_summary("finetune", dir, sizeof dir);
    for (int seed = 1; seed <= 3; seed++)
        for (int h = 0; h < 2; h++) {
            double lf = 2.0 + 0.01 * seed, lq = lf + 0.004, gain = h ? 0.010 : 0.002, ctl = h ? 0.003 : 0.0005;
            double lc = lq - gain, rec = gain / (lq - lf);
            fprintf(f, "q%d%d,%d,64x2,64,2,4,int4,1,%d,%s,train,ce,quant,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,ok,%.17g,"
                       "1,1,60,1,1,1,1,1\n",
                    seed, h, seed, 32 * h, h ? "mlp" : "linear", lf, lq, lc, exp(lf), exp(lq), exp(lc), rec, rec, gain);
            fprintf(f, "c%d%d,%d,64x2,64,2,32,float32,1,%d,%s,train,ce,control,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,,,undefined,%.17g,"
                       "1,1,60,1,1,1,1,1\n",
                    seed, h, seed, 32 * h, h ? "mlp" : "linear", lf, lf, lf - ctl, exp(lf), exp(lf), exp(lf - ctl), ctl);
        }
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    assert_int_equal(summary.n_excluded, 3);
    assert_int_equal(summary.bits[0].bits, 4);
    assert_int_equal(summary.bits[0].n_excluded, 3);
    assert_close(summary.bits[0].recovery.mean, 0.5, 1e-9);
    const char *expected[] = {
        "- At 4 bits, corrections recover 50.0% of the pooled quantization loss gap",
        "3 whose loss gap is resolved but under 3 times the gain the same correction training gives the unquantized model",
        "| bits | linear (h=0) | MLP (h=32) |\n", /* one method: one column a width */
    };
    char *md = report_with(dir, expected, sizeof expected / sizeof *expected);
    if (strstr(md, "250.0")) fail_msg("report.md quotes the fine-tuning ratio 250%%");
    free(md);
}

/* Two matched pairs from one seed: the t-interval can exclude 0 but no signed-rank test can reach
 * 5%, so the report must make no claim; a width where every recovery is undefined gets none either;
 * no control arm and no training logs are said, not papered over. */
static void test_report_small_sweep_makes_no_claim(void **state) {
    (void)state;
    char dir[512], path[1024];
    FILE *f = new_summary("small", dir, sizeof dir);
    /* 2 bits: linear 0.50 / 0.60, MLP 0.60 / 0.71 (differences 0.10 and 0.11) */
    const double rec[2][2] = {{0.50, 0.60}, {0.60, 0.71}};
    for (int e = 0; e < 2; e++)
        for (int h = 0; h < 2; h++) {
            double lf = 2.0, lq = 2.5, lc = lq - rec[e][h] * (lq - lf);
            fprintf(f, "r%d%d,7,64x2,64,2,2,int2,%d,%d,%s,train,ce,quant,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,ok,%.17g,"
                       "1,1,1,1,1,1,1,1\n",
                    e, h, e + 1, 32 * h, h ? "mlp" : "linear", lf, lq, lc, exp(lf), exp(lq), exp(lc), rec[e][h], rec[e][h], lq - lc);
            /* 8 bits: quantization changed nothing measurable */
            fprintf(f, "q%d%d,7,64x2,64,2,8,int8,%d,%d,%s,train,ce,quant,2,2.00002,2.00001,7.389,7.389,7.389,,,undefined,0.00001,"
                       "1,1,1,1,1,1,1,1\n",
                    e, h, e + 1, 32 * h, h ? "mlp" : "linear");
        }
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    assert_int_equal(summary.n_excluded, 4);
    snprintf(path, sizeof path, "%s/report.md", dir);
    char *md = read_text(path);
    const PairedComparison *pc = &summary.bits[0].linear_vs_mlp;
    assert_int_equal(pc->n, 2);
    assert_true(pc->diff.ci_low > 0);       /* the t-interval alone would claim ... */
    assert_close(pc->wilcoxon.p, 0.5, 1e-15); /* ... but 2 pairs cannot reach 5% */
    const char *expected[] = {
        "- At 2 bits, too few matched configurations to test MLP corrections against linear ones",
        "over 2 matched configurations, 95% CI [",
        "]): a signed-rank test over 2 pairs cannot reach p < 0.05 (its smallest p is 0.5).",
        "- 8-bit quantization costs 2.0e-05 ± n/a nats here (4 runs): nothing measurable to recover",
        "- No control arm ran",
        "No heat map at 8 bits",
        "No float training logs",
        "**Note: 4 runs excluded from the recovery statistics**",
    };
    for (size_t i = 0; i < sizeof expected / sizeof *expected; i++)
        if (!strstr(md, expected[i])) fail_msg("report.md lacks '%s'", expected[i]);
    const char *forbidden[] = {"MLP corrections recover", "- At 8 bits, MLP", "- At 8 bits, too few", "no firm conclusion",
                               "no significant difference"};
    for (size_t i = 0; i < sizeof forbidden / sizeof *forbidden; i++)
        if (strstr(md, forbidden[i])) fail_msg("report.md claims '%s'", forbidden[i]);
    free(md);
    snprintf(path, sizeof path, "%s/plots/float_loss_curves.svg", dir);
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/plots/recovery_by_bits.svg", dir);
    expect_balanced_svg(path);
}

/* correct_every values that place the same sites (every >= layers: one site after the last
 * block) are named in the grid, per size, so nobody reads them as separate configurations. */
static void test_report_names_coinciding_every(void **state) {
    (void)state;
    char dir[512], path[1024];
    FILE *f = new_summary("coinciding", dir, sizeof dir);
    const char *sizes[2][3] = {{"64x2", "64", "2"}, {"32x3", "32", "3"}};
    const int everys[4] = {1, 2, 4, 8};
    for (int z = 0; z < 2; z++)
        for (int e = 0; e < 4; e++)
            fprintf(f, "r%d%d,7,%s,%s,%s,2,int2,%d,0,linear,train,ce,quant,2,2.5,2.2,7.389,12.18,9.025,0.6,0.6,ok,0.3,"
                       "1,1,1,1,1,1,1,1\n",
                    z, e, sizes[z][0], sizes[z][1], sizes[z][2], everys[e]);
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    snprintf(path, sizeof path, "%s/report.md", dir);
    char *md = read_text(path);
    /* 2 layers: every 2, 4, 8 all leave the site after block 1; 3 layers: every 4 and 8 the one
     * after block 2, while every 2 there adds block 1's */
    assert_non_null(strstr(md, "(at 64x2, correct_every 2 and 4 and 8 place the same correction sites"));
    assert_non_null(strstr(md, "(at 32x3, correct_every 4 and 8 place the same correction sites"));
    assert_null(strstr(md, "correct_every 1 and"));
    assert_null(strstr(md, "at 32x3, correct_every 2 and"));
    free(md);
}

static void test_report_errors_name_the_fault(void **state) {
    (void)state;
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/missing-dir", test_tmpdir());
    assert_int_not_equal(report_write(dir, NULL), 0);
    if (!strstr(qc_last_error(), "missing-dir")) fail_msg("error: %s", qc_last_error());

    snprintf(dir, sizeof dir, "%s/bad", test_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_not_equal(report_write(dir, NULL), 0);
    if (!strstr(qc_last_error(), "summary.csv")) fail_msg("error: %s", qc_last_error());

    const char *header = "run_id,seed,size,d_model,n_layer,bits,scheme,every,hidden,correction,method,objective,arm,loss_float,"
                         "loss_quant,loss_corrected,ppl_float,ppl_quant,ppl_corrected,recovery_loss,recovery_ppl,recovery_flag,"
                         "gain_loss,correction_params,correction_sites,steps,calib_tokens,seconds_train_float,seconds_quantize,"
                         "seconds_correct,seconds_eval\n";
    snprintf(path, sizeof path, "%s/summary.csv", dir);
    write_text(path, header);
    assert_int_not_equal(report_write(dir, NULL), 0);
    if (!strstr(qc_last_error(), "no runs")) fail_msg("error: %s", qc_last_error());

    char text[4096];
    snprintf(text, sizeof text, "%sr1,42,64x2,64,2,2,int2,1,0,linear,train,ce,quant,2.0,2.5,2.1,7.4,12.2,8.2,0.8,0.8,ok,0.4,1,1,1,1,1,1,1,1\n"
                                "r2,42,64x2,64,2,2,int2,1,0,linear,train,ce,quant,2.0,2.5,two,7.4,12.2,8.2,0.8,0.8,ok,0.4,1,1,1,1,1,1,1,1\n",
             header);
    write_text(path, text);
    assert_int_not_equal(report_write(dir, NULL), 0);
    if (!strstr(qc_last_error(), "line 3, column loss_corrected: 'two'")) fail_msg("error: %s", qc_last_error());

    /* "nan", "inf" or an overflowing number is no result: it gave "pooled recovery nan%" */
    const char *non_finite[] = {"nan", "inf", "-inf", "1e999"};
    for (int k = 0; k < 4; k++) {
        snprintf(text, sizeof text, "%sr1,42,64x2,64,2,2,int2,1,0,linear,train,ce,quant,2.0,2.5,2.1,7.4,12.2,8.2,0.8,0.8,ok,0.4,1,1,1,1,1,1,1,1\n"
                                    "r2,42,64x2,64,2,2,int2,1,0,linear,train,ce,quant,2.0,%s,2.1,7.4,12.2,8.2,0.8,0.8,ok,0.4,1,1,1,1,1,1,1,1\n",
                 header, non_finite[k]);
        write_text(path, text);
        assert_int_not_equal(report_write(dir, NULL), 0);
        if (!strstr(qc_last_error(), "line 3, column loss_quant") || !strstr(qc_last_error(), "not a finite number"))
            fail_msg("%s: %s", non_finite[k], qc_last_error());
    }
    /* a run twice (one id in two rows) was counted twice: "19 runs" from 18 ids */
    snprintf(text, sizeof text, "%sr1,42,64x2,64,2,2,int2,1,0,linear,train,ce,quant,2.0,2.5,2.1,7.4,12.2,8.2,0.8,0.8,ok,0.4,1,1,1,1,1,1,1,1\n"
                                "r2,42,64x2,64,2,2,int2,1,32,mlp,train,ce,quant,2.0,2.5,2.2,7.4,12.2,9.0,0.6,0.6,ok,0.3,1,1,1,1,1,1,1,1\n"
                                "r1,42,64x2,64,2,2,int2,1,0,linear,train,ce,quant,2.0,2.5,2.1,7.4,12.2,8.2,0.8,0.8,ok,0.4,1,1,1,1,1,1,1,1\n",
             header);
    write_text(path, text);
    assert_int_not_equal(report_write(dir, NULL), 0);
    if (!strstr(qc_last_error(), "line 4, column run_id: 'r1'") || !strstr(qc_last_error(), "line 2"))
        fail_msg("a run twice: %s", qc_last_error());

    snprintf(text, sizeof text, "%sr1,42,64x2,64,2,2,int2,1,0,linear,train,ce,quant,2.0,2.5\n", header);
    write_text(path, text);
    assert_int_not_equal(report_write(dir, NULL), 0);
    if (!strstr(qc_last_error(), "line 2: 15 fields")) fail_msg("error: %s", qc_last_error());

    write_text(path, "seed,bits\n1,2\n");
    assert_int_not_equal(report_write(dir, NULL), 0);
    if (!strstr(qc_last_error(), "no column 'size'")) fail_msg("error: %s", qc_last_error());
    /* nothing was written on failure */
    snprintf(path, sizeof path, "%s/report.md", dir);
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
}

/* summary.csv keeping only some columns of src (in order), quoted as the sweep quotes them. */
static void write_columns(const char *src, const char *dst, const char *const *keep, int n_keep) {
    ReportCsv csv;
    if (report_csv_read(src, &csv) != 0) fail_msg("%s", qc_last_error());
    FILE *f = fopen(dst, "w");
    assert_non_null(f);
    int col[64];
    assert_true(n_keep <= 64);
    for (int k = 0; k < n_keep; k++) {
        col[k] = report_csv_column(&csv, keep[k]);
        assert_true(col[k] >= 0);
        fprintf(f, "%s%s", k ? "," : "", keep[k]);
    }
    fputc('\n', f);
    for (int i = 0; i < csv.n_rows; i++)
        for (int k = 0; k < n_keep; k++) {
            const char *cell = report_csv_cell(&csv, i, col[k]);
            if (strpbrk(cell, ",\"")) fprintf(f, "\"%s\"", cell); /* no quotes inside in this file */
            else fputs(cell, f);
            fputc(k + 1 < n_keep ? ',' : '\n', f);
        }
    assert_int_equal(fclose(f), 0);
    report_csv_free(&csv);
}

/* A summary.csv without the columns the report does not read (run ids, the kind's name, site
 * counts, timings): the same report, byte for byte, as from the full file. */
static void test_report_reads_summary_without_optional_columns(void **state) {
    (void)state;
    static const char *const needed[] = {"seed", "size", "d_model", "n_layer", "bits", "scheme", "every", "hidden", "method",
                                         "objective", "arm", "loss_float", "loss_quant", "loss_corrected", "ppl_float",
                                         "ppl_quant", "ppl_corrected", "recovery_loss", "recovery_ppl", "recovery_flag",
                                         "gain_loss", "calib_tokens", "steps", "correction_params", "quantizer", "granularity",
                                         "correction_stored_bits", "loss_se_float", "loss_se_quant", "loss_se_corrected",
                                         "gap_se", "gain_se", "kl_quant", "kl_corrected", "top1_quant", "top1_corrected",
                                         "model_bits_float", "model_bits_quant", "model_bits_corrected", "correction_bits",
                                         "bits_per_weight"};
    char full[512], part[512], path[1024], other[1024];
    snprintf(full, sizeof full, "%s/full", test_tmpdir()); /* names of one length: the reports name them */
    snprintf(part, sizeof part, "%s/part", test_tmpdir());
    assert_int_equal(mkdir(full, 0755), 0);
    assert_int_equal(mkdir(part, 0755), 0);
    size_t size;
    uint8_t *text = read_file("results/seed243/summary.csv", &size);
    if (!text) fail_msg("%s (run from the repository root)", qc_last_error());
    snprintf(path, sizeof path, "%s/summary.csv", full);
    assert_int_equal(write_file_atomic(path, text, size), 0);
    free(text);
    snprintf(other, sizeof other, "%s/summary.csv", part);
    write_columns(path, other, needed, (int)(sizeof needed / sizeof *needed));
    if (report_write(full, NULL) != 0) fail_msg("full: %s", qc_last_error());
    if (report_write(part, NULL) != 0) fail_msg("needed columns only: %s", qc_last_error());
    snprintf(path, sizeof path, "%s/report.md", full);
    snprintf(other, sizeof other, "%s/report.md", part);
    char *a = read_text(path), *b = read_text(other);
    for (char *p; (p = strstr(b, "/part/"));) memcpy(p, "/full/", 6);
    if (strcmp(a, b) != 0) fail_msg("report.md differs when the optional columns are missing");
    free(a);
    free(b);
}

/* ======================================================================================
 * budgets: agreement with the float model and the frontier (issue 12)
 * ====================================================================================== */

/* One row with the budget columns: a run of seed s at `bits` (32: control), with its correction
 * (kind "none" for none), model bits, losses, KL and the paired standard errors. */
static int budget_act_same;
static void budget_row(FILE *f, int seed, int bits, const char *gran, const char *kind, const char *method, int every, double lf,
                       double lq, double lc, double kq, double kc, double bf, double bq, double bc, double gap_se, double gain_se) {
    const char *arm = bits == 32 ? "control" : "quant";
    double gap = lq - lf;
    int ok = fabs(gap) >= 3 * gap_se && fabs(gap) >= 1e-4;
    char act[64] = "none"; /* budget_act_same: activations at the weights' bits, as sweep --act-bits same */
    if (budget_act_same && bits < 32) snprintf(act, sizeof act, bits == 4 ? "int%d:tensor:asym:inputs,kv:kv=int2" : "int%d:tensor:asym", bits);
    fprintf(f, "r%d_%d_%s_%s_%d,%d,64x2,64,2,%d,\"int%d sym-absmax %s rtn scale=f16 scope=linear,head act=%s\",%d,0,%s,%s,ce,%s,"
               "%.17g,%.17g,%.17g,%g,%g,%g,", seed, bits, gran, kind, every, seed, bits, bits, gran, act, every, kind, method, arm, lf, lq, lc,
            exp(lf), exp(lq), exp(lc));
    if (ok) fprintf(f, "%.17g,,ok,", (lq - lc) / gap);
    else fprintf(f, ",,%s,", fabs(gap) < 1e-4 ? "undefined" : "unresolved");
    fprintf(f, "%.17g,100,1,60,65536,1,1,1,1,rtn,%s,32,0.01,0.01,0.01,%g,%g,%g,%g,0.9,0.9,%.17g,%.17g,%.17g,%.17g,4.2\n", lq - lc, gran,
            gap_se, gain_se, kq, kc, bf, bq, bc, bc - bq);
}

static FILE *new_budget_summary(const char *name, char *dir, size_t size) {
    FILE *f = new_summary(name, dir, size);
    /* the header new_summary wrote, with the budget columns after it */
    assert_int_equal(fseek(f, -1, SEEK_CUR), 0);
    fprintf(f, ",quantizer,granularity,correction_stored_bits,loss_se_float,loss_se_quant,loss_se_corrected,gap_se,gain_se,"
               "kl_quant,kl_corrected,top1_quant,top1_corrected,model_bits_float,model_bits_quant,model_bits_corrected,"
               "correction_bits,bits_per_weight\n");
    return f;
}

/* A frontier worked out by hand: at 64x2 over two seeds, int2 (300 kbit) < int2 + linear (400)
 * < int3 (450, dominated by int2 + linear) < int4 (500) < int4 + linear (600) < float (1000).
 * int2 + linear beats every quantized-only model of at most its size (int2) by about 0.5 nats,
 * paired over seeds; int4 + linear beats int4 by 0.002 ± 0.001 only (not twice its standard
 * error), so one configuration beats quantizing to more bits. */
static void test_report_frontier(void **state) {
    (void)state;
    char dir[512], path[1024];
    FILE *f = new_budget_summary("frontier", dir, sizeof dir);
    for (int s = 1; s <= 2; s++) {
        double lf = 2.0 + 0.02 * (s - 1), d = 0.02 * (s - 1);
        /* int2: quantized 2.8, corrected 2.3 (+0.01 with seed 2) */
        budget_row(f, s, 2, "channel", "linear", "train", 1, lf, 2.8 + d, 2.3 + d + 0.01 * (s - 1), 0.5, 0.2, 1e6, 3e5, 4e5, 0.01, 0.005);
        budget_row(f, s, 2, "channel", "none", "none", 0, lf, 2.8 + d, 2.8 + d, 0.5, 0.5, 1e6, 3e5, 3e5, 0.01, 0);
        budget_row(f, s, 3, "channel", "none", "none", 0, lf, 2.4 + d, 2.4 + d, 0.3, 0.3, 1e6, 4.5e5, 4.5e5, 0.01, 0);
        /* int4: quantized 2.05, corrected 2.049 / 2.067 (0.001 and 0.003 better) */
        budget_row(f, s, 4, "channel", "linear", "train", 1, lf, 2.05 + d, 2.049 + d - 0.002 * (s - 1), 0.02, 0.03, 1e6, 5e5, 6e5, 0.004, 0.001);
    }
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    const char *expected[] = {
        "- At 64x2 the frontier is int2 channel rtn (300 kbit, loss 2.810), int2 channel rtn + linear e1 (400 kbit, loss 2.315), "
        "int4 channel rtn (500 kbit, loss 2.060), int4 channel rtn + linear e1 (600 kbit, loss 2.058), float (1000 kbit, loss 2.010); "
        "2 corrected models are on it. 1 corrected configuration beats every quantized-only model of at most its size; the widest "
        "margin: int2 channel rtn + linear e1 (400 kbit, loss 2.3150) against int2 channel rtn (300 kbit, loss 2.8100).",
        /* agreement: KL 0.5 -> 0.2 at 2 bits over 2 runs (both lower: the t-interval excludes 0, no rank test can at n = 2) */
        "| 2 | 2 | 0.5 | 0.2 | -0.3 |",
        "- At 2 bits there are too few runs to test the corrections' change of KL to the float model (0.5 → 0.2 nats, mean "
        "over 2 runs, paired change -0.3",
        ": a signed-rank test over 2 pairs cannot reach p < 0.05 (its smallest p is 0.5)); top-1",
        "![64x2: validation loss against model size](plots/frontier_loss_64x2.svg)",
    };
    char *md = report_with(dir, expected, sizeof expected / sizeof *expected);
    if (strstr(md, "| int3 channel rtn |")) fail_msg("the dominated int3 model is listed on the frontier");
    free(md);
    snprintf(path, sizeof path, "%s/plots/frontier_loss_64x2.svg", dir);
    expect_balanced_svg(path);
    /* bits per parameter (model bits over the float model's 31,250 parameters: 9.6 to 19.2) on a
     * log axis: tick positions proportional to the log of their values */
    double tx[32] = {0}, tv[32] = {0};
    int nt = x_ticks(path, tx, tv, 32);
    if (nt < 3) fail_msg("%s: %d x tick labels", path, nt);
    for (int i = 2; i < nt; i++) {
        double want = log(tv[i] / tv[0]) / log(tv[1] / tv[0]), got = (tx[i] - tx[0]) / (tx[1] - tx[0]);
        if (fabs(got - want) > 0.01 * want) fail_msg("%s: tick %g at x %.1f is not on a log axis (%g of the first step, want %g)", path, tv[i], tx[i], got, want);
    }
    if (!(tv[0] <= 10 && tv[nt - 1] >= 19)) fail_msg("%s: the ticks %g..%g do not span the quantized models' 9.6..19.2 bits/param", path, tv[0], tv[nt - 1]);
    /* zoomed to the quantized and corrected models: their 5 points drawn, the float model (32 bits
     * per parameter) a dashed reference line named in the legend */
    char *svg = read_text(path);
    int dots = 0;
    for (const char *p = strstr(svg, "r=\"3.5\""); p; p = strstr(p + 1, "r=\"3.5\"")) dots++;
    assert_int_equal(dots, 5);
    if (!strstr(svg, "stroke-dasharray=\"8 4\"") || !strstr(svg, ">float model (32 bits/param)</text>"))
        fail_msg("%s: no float model reference line", path);
    free(svg);
    snprintf(path, sizeof path, "%s/plots/frontier_kl_64x2.svg", dir);
    expect_balanced_svg(path);
}

/* The frontier names the activations' bits where a run quantizes them (a sweep with --act-bits
 * same puts W2A2 and W4A4 on one frontier): the same grid as above, its runs' schemes with
 * act=intB (the 4-bit one with its keys and values at 2); the float model has none. */
static void test_report_frontier_names_act_bits(void **state) {
    (void)state;
    char dir[512];
    FILE *f = new_budget_summary("frontier_act", dir, sizeof dir);
    budget_act_same = 1;
    for (int s = 1; s <= 2; s++) {
        double lf = 2.0 + 0.02 * (s - 1), d = 0.02 * (s - 1);
        budget_row(f, s, 2, "tensor", "linear", "train", 1, lf, 2.8 + d, 2.3 + d, 0.5, 0.2, 1e6, 3e5, 4e5, 0.01, 0.005);
        budget_row(f, s, 2, "tensor", "none", "none", 0, lf, 2.8 + d, 2.8 + d, 0.5, 0.5, 1e6, 3e5, 3e5, 0.01, 0);
        budget_row(f, s, 4, "tensor", "none", "none", 0, lf, 2.05 + d, 2.05 + d, 0.02, 0.02, 1e6, 5e5, 5e5, 0.004, 0);
    }
    budget_act_same = 0;
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    const char *expected[] = {
        "- At 64x2 the frontier is int2 tensor rtn a2 (300 kbit, loss 2.810), int2 tensor rtn a2 + linear e1 (400 kbit, loss 2.310), "
        "int4 tensor rtn a4 kv2 (500 kbit, loss 2.060), float (1000 kbit, loss 2.010)",
    };
    char *md = report_with(dir, expected, sizeof expected / sizeof *expected);
    free(md);
}

/* The words match what the test can say: four runs whose corrections all lower KL (the quick
 * preset's 2-bit cell) are too few for a signed-rank test to reach p < 0.05 (its smallest p is
 * 0.125), so the sentence says the runs are too few to test, not that KL did not change; six such
 * runs can reach it (0.03125) and the sentence says KL is lowered. */
static void test_report_agreement_too_few_to_test(void **state) {
    (void)state;
    char dir[512];
    FILE *f = new_budget_summary("agreement_words", dir, sizeof dir);
    for (int s = 1; s <= 6; s++) {
        double lf = 2.0 + 0.01 * s, kq = 0.40 + 0.01 * s, kc = 0.15 + 0.004 * s;
        if (s <= 4) budget_row(f, s, 2, "channel", "linear", "train", 1, lf, lf + 0.8, lf + 0.3, kq, kc, 1e6, 3e5, 4e5, 0.01, 0.005);
        budget_row(f, s, 4, "channel", "linear", "train", 1, lf, lf + 0.05, lf + 0.03, kq / 10, kc / 10, 1e6, 5e5, 6e5, 0.004, 0.002);
    }
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    const char *expected[] = {
        "- At 2 bits there are too few runs to test the corrections' change of KL to the float model (0.425 → 0.16 nats, mean over "
        "4 runs, paired change -0.265, 95% CI [",
        "]: a signed-rank test over 4 pairs cannot reach p < 0.05 (its smallest p is 0.125)); top-1 agreement",
        "- At 4 bits the corrections lower KL to the float model (0.0435 → 0.0164 nats, mean over 6 runs, paired change -0.0271",
    };
    char *md = report_with(dir, expected, sizeof expected / sizeof *expected);
    if (strstr(md, "do not measurably change")) fail_msg("report.md says a change is not measurable where the runs are too few to test");
    free(md);
}

/* A budget curve by hand: recovery 40, 60, 69, 70% after 10, 20, 40, 80 steps (gap 0.5 nats,
 * resolved): within 2 points of its best (70) from 40 steps on. */
static void test_report_budget_curve(void **state) {
    (void)state;
    char dir[512], path[1024];
    FILE *f = new_summary("budget", dir, sizeof dir);
    const int steps[4] = {10, 20, 40, 80};
    const double rec[4] = {0.40, 0.60, 0.69, 0.70};
    for (int k = 0; k < 4; k++) {
        double lf = 2.0, lq = 2.5, lc = lq - rec[k] * 0.5;
        fprintf(f, "b%d,1,64x2,64,2,2,int2,1,0,linear,train,ce,quant,%.17g,%.17g,%.17g,%g,%g,%g,%.17g,,ok,%.17g,1,1,%d,1000,1,1,1,1\n", k,
                lf, lq, lc, exp(lf), exp(lq), exp(lc), rec[k], lq - lc, steps[k]);
    }
    /* at 4 bits a small gap: the ratios leave 0..100% (fine-tuning), and no control arm is there to say so */
    const double rec4[4] = {-0.5, 0.3, 1.2, 1.6};
    for (int k = 0; k < 4; k++) {
        double lf = 2.0, lq = 2.01, lc = lq - rec4[k] * 0.01;
        fprintf(f, "c%d,1,64x2,64,2,4,int4,1,0,linear,train,ce,quant,%.17g,%.17g,%.17g,%g,%g,%g,%.17g,,ok,%.17g,1,1,%d,1000,1,1,1,1\n", k,
                lf, lq, lc, exp(lf), exp(lq), exp(lc), rec4[k], lq - lc, steps[k]);
    }
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    const char *expected[] = {
        "| 2 | 1000 | 40.0 (1/1) | 60.0 (1/1) | 69.0 (1/1) | 70.0 (1/1) | 40 |",
        "- At 64x2, 2 bits, 1000 calibration characters, recovery goes from 40.0% after 10 steps to 70.0% after 80; it comes "
        "within 2 points of its best (70.0%) at 40 steps.",
        "(plots/budget_64x2.svg)",
        "| 4 | 1000 | -50.0 (1/1) | 30.0 (1/1) | 120.0 (1/1) | 160.0 (1/1) | outside 0-100% |",
        "This directory has no control arm",
    };
    char *md = report_with(dir, expected, sizeof expected / sizeof *expected);
    if (strstr(md, "- At 64x2, 4 bits")) fail_msg("report.md draws a conclusion from the 4-bit curve outside 0-100%%");
    if (strstr(md, "## 14.")) fail_msg("report.md has the stopping section without a run trained by --steps auto");
    free(md);
    snprintf(path, sizeof path, "%s/plots/budget_64x2.svg", dir);
    expect_balanced_svg(path);
}

/* Section 14 by hand: four 2-bit linear runs trained by --steps auto (steps run 400 / 800 / 1200 /
 * 3000, best steps 0 / 700 / 1100 / 3000, the last stopped by the cap; recoveries 0 / 50 / 60 /
 * 70%), one fixed-step run, which the section leaves out, and one lwc+train run (best step 50),
 * a row of its own. */
static void test_report_stopping(void **state) {
    (void)state;
    char dir[512];
    FILE *f = new_summary_with("stopping", dir, sizeof dir, ",steps_run,best_step,stopped_by");
    const int run[5] = {400, 800, 1200, 3000, 60}, best[5] = {0, 700, 1100, 3000, 60};
    const double rec[5] = {0.0, 0.5, 0.6, 0.7, 0.9};
    for (int k = 0; k < 5; k++) {
        double lf = 2.0, lq = 2.5, lc = lq - rec[k] * 0.5;
        fprintf(f, "s%d,%d,64x2,64,2,2,int2,1,0,linear,train,ce,quant,%.17g,%.17g,%.17g,%g,%g,%g,%.17g,,ok,%.17g,1,1,%d,1000,1,1,1,1,"
                   "%d,%d,%s\n", k, k + 1, lf, lq, lc, exp(lf), exp(lq), exp(lc), rec[k], lq - lc, k < 4 ? -1 : 60, run[k], best[k],
                k == 3 ? "cap" : k < 4 ? "plateau" : "fixed");
    }
    /* a combination's stream correction is a row of its own, never pooled with train alone */
    fprintf(f, "w0,1,64x2,64,2,2,int2,1,0,linear,lwc+train,ce,quant,2,2.5,2.1,%g,%g,%g,0.8,,ok,0.4,1,1,-1,1000,1,1,1,1,900,50,plateau\n",
            exp(2.0), exp(2.5), exp(2.1));
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    const char *expected[] = {
        "## 14. How the trained runs stopped",
        "| 64x2 | 2 | linear (h=0) | 4 | 1350 | 1 | 1 | 0.0 / 55.0 / 70.0 |",
        "| 64x2 | 2 | lwc+train, linear (h=0) | 1 | 900 | 0 | 1 | 80.0 / 80.0 / 80.0 |",
        "- 1 of 5 runs trained by --steps auto stopped at the step cap (20.0%; section 14).",
        "- 2 of 5 quantized runs trained by --steps auto kept parameters from step 100 or earlier",
    };
    free(report_with(dir, expected, sizeof expected / sizeof *expected));
}

/* The methods section by hand: at 2 bits over two seeds, none 2.8 / 2.82, train 2.4 / 2.41,
 * lowrank 2.41 / 2.43: train − lowrank is −0.01 and −0.02 (mean −0.015), train − none −0.4 and
 * −0.41; train stores 4160 extra parameters, none 0. */
static void test_report_methods(void **state) {
    (void)state;
    char dir[512];
    FILE *f = new_budget_summary("methods", dir, sizeof dir);
    const char *methods[3] = {"none", "train", "lowrank"}, *kinds[3] = {"none", "linear", "lowrank"};
    const double loss[2][3] = {{2.8, 2.4, 2.41}, {2.82, 2.41, 2.43}};
    for (int s = 1; s <= 2; s++)
        for (int m = 0; m < 3; m++) {
            double lf = 2.0, lq = s == 1 ? 2.8 : 2.82, lc = loss[s - 1][m], gap = lq - lf;
            fprintf(f, "m%d_%d,%d,64x2,64,2,2,int2,%d,0,%s,%s,ce,quant,%.17g,%.17g,%.17g,%g,%g,%g,%.17g,,ok,%.17g,%d,1,60,65536,1,1,1,1,"
                       "rtn,channel,32,0.01,0.01,0.01,0.01,0.01,0.5,0.3,0.8,0.9,1000000,300000,%g,%g,2.2\n",
                    s, m, s, m == 1, kinds[m], methods[m], lf, lq, lc, exp(lf), exp(lq), exp(lc), (lq - lc) / gap, lq - lc, m ? 4160 : 0,
                    m ? 433120.0 : 300000.0, m ? 133120.0 : 0.0);
        }
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    const char *expected[] = {
        "## 13. Methods at matched budgets",
        "| rtn | train | 2 | 2.4050 ± 0.0050 | -0.4050 [",
        "| 4160 | 433.1 |",
        "| 2 | train − lowrank | 2 | -0.0150 |",
        "| 2 | train − none | 2 | -0.4050 |",
        "- At 2 bits, too few pairs to test the loss difference between train and lowrank (-0.0150 nats over 2 pairs: a "
        "signed-rank test over 2 pairs cannot reach p < 0.05 (its smallest p is 0.5)).",
    };
    char *md = report_with(dir, expected, sizeof expected / sizeof *expected);
    free(md);
}

/* The methods section's rows keep apart what a row is not allowed to pool: the transform before
 * the quantizer (rtn+rotate), the corrections' storage (train @8-bit); the zero-bit table picks
 * the best row that stores no more bits than none (lwc: 2.51, against rtn+rotate none 2.61) and
 * the best that adds bits (lwc+train 2.305); a combination is paired with its first method. */
static void test_report_methods_labels(void **state) {
    (void)state;
    char dir[512];
    FILE *f = new_budget_summary("methods_labels", dir, sizeof dir);
    const struct {
        const char *method, *kind, *scheme;
        double loss, bits;
        int stored, params;
    } rows[] = {
        {"none", "none", "int2", 2.8, 300000, 32, 0},
        {"none", "none", "int2 transform=rotate:seed=0", 2.6, 300000, 32, 0},
        {"train", "linear", "int2", 2.4, 433120, 32, 4160},
        {"train", "linear", "int2", 2.45, 330000, 8, 4160},
        {"lwc", "none", "int2", 2.5, 300000, 32, 0},
        {"lwc+train", "linear", "int2", 2.3, 433120, 32, 4160},
    };
    for (int s = 1; s <= 2; s++)
        for (size_t m = 0; m < sizeof rows / sizeof *rows; m++) {
            double lf = 2.0, lq = s == 1 ? 2.8 : 2.82, lc = rows[m].loss + (s == 1 ? 0 : 0.01 * (1 + (m == 5))), gap = lq - lf;
            if (m == 1) lq = lc; /* the rotated model's own none */
            fprintf(f, "l%d_%zu,%d,64x2,64,2,2,%s,1,0,%s,%s,ce,quant,%.17g,%.17g,%.17g,%g,%g,%g,%.17g,,ok,%.17g,%d,1,60,65536,1,1,1,1,"
                       "rtn,channel,%d,0.01,0.01,0.01,0.01,0.01,0.5,0.3,0.8,0.9,1000000,300000,%g,%g,2.2\n",
                    s, m, s, rows[m].scheme, rows[m].kind, rows[m].method, lf, lq, lc, exp(lf), exp(lq), exp(lc), (lq - lc) / gap, lq - lc,
                    rows[m].params, rows[m].stored, rows[m].bits, rows[m].bits - 300000);
        }
    ReportSummary summary;
    close_and_report(f, dir, &summary);
    const char *expected[] = {
        "| rtn+rotate | none | 2 | 2.6050 ± 0.0050 |",
        "| rtn | none | 2 | 2.8050 ± 0.0050 |",
        "| rtn | train | 2 | 2.4050 ± 0.0050 |",
        "| rtn | train @8-bit | 2 | 2.4550 ± 0.0050 |",
        "| 2 | 64x2 | rtn lwc | 2.5050 | 300.0 | rtn lwc+train | 2.3100 | 433.1 | -0.1950 | [",
        "| 2 | lwc+train − lwc | 2 | -0.1950 |",
        "| 2 | train @8-bit − train | 2 | +0.0500 |",
        "int2 channel rtn+rotate", /* the frontier's label of the rotated model */
        "- At 2 bits on 64x2 the best model at zero extra bits is rtn lwc (loss 2.5050, 300.0 kbit); the best that adds bits, "
        "rtn lwc+train (2.3100, 433.1 kbit), is lower by 0.1950 nats (paired over 2 seeds",
    };
    char *md = report_with(dir, expected, sizeof expected / sizeof *expected);
    free(md);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_quoting_and_errors),
        cmocka_unit_test(test_report_end_to_end),
        cmocka_unit_test(test_report_small_sweep_makes_no_claim),
        cmocka_unit_test(test_report_fine_tuning_is_no_recovery),
        cmocka_unit_test(test_report_names_coinciding_every),
        cmocka_unit_test(test_report_errors_name_the_fault),
        cmocka_unit_test(test_report_reads_summary_without_optional_columns),
        cmocka_unit_test(test_report_frontier),
        cmocka_unit_test(test_report_frontier_names_act_bits),
        cmocka_unit_test(test_report_agreement_too_few_to_test),
        cmocka_unit_test(test_report_budget_curve),
        cmocka_unit_test(test_report_stopping),
        cmocka_unit_test(test_report_methods),
        cmocka_unit_test(test_report_methods_labels),
    };
    return cmocka_run_group_tests_name("report", tests, NULL, NULL);
}
