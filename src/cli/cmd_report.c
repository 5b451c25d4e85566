/* cmd_report: `qcorr report DIR` — reads DIR/summary.csv and writes DIR/report.md with its SVG plots
 * in DIR/plots/ (README: Report); --json prints the key numbers as one JSON object. */
#include <math.h>
#include <stdio.h>

#include "base/util.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "report/report.h"

/* NaN (an undefined std or interval) becomes JSON null */
static void add_number(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

static cJSON *paired_json(const PairedComparison *pc) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n_pairs", pc->n);
    add_number(o, "mean_mlp", pc->mean_a);
    add_number(o, "mean_linear", pc->mean_b);
    add_number(o, "mean_diff", pc->diff.mean);
    add_number(o, "std_diff", pc->diff.std);
    add_number(o, "ci_low", pc->diff.ci_low);
    add_number(o, "ci_high", pc->diff.ci_high);
    add_number(o, "wilcoxon_p", pc->wilcoxon.p);
    if (isfinite(pc->wilcoxon.p)) cJSON_AddStringToObject(o, "wilcoxon_method", pc->wilcoxon.exact ? "exact" : "normal");
    else cJSON_AddNullToObject(o, "wilcoxon_method");
    add_number(o, "sign_p", pc->sign.p);
    cJSON_AddNumberToObject(o, "sign_pos", pc->sign.n_pos);
    cJSON_AddNumberToObject(o, "sign_neg", pc->sign.n_neg);
    return o;
}

int cmd_report(int argc, char **argv) {
    int json = 0;
    ArgSpec specs[] = {
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object with the key numbers on stdout"},
    };
    const char *summary_text =
        "Writes DIR/report.md (tables with mean, std, 95% CI and paired tests; generated conclusions) and SVG plots in\n"
        "DIR/plots/ from DIR/summary.csv alone. Usage: qcorr report DIR [--json].\n"
        "JSON recoveries are fractions (0.85 = 85%); paired differences are MLP minus linear.";
    /* the one positional argument may stand anywhere among the flags */
    const char *dir = NULL;
    char *flags[64];
    int n_flags = 0;
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') {
            if (n_flags >= 64) return usage_error("report", "too many arguments");
            flags[n_flags++] = argv[i];
        } else if (dir) {
            return usage_error("report", "unexpected argument '%s': give one DIR", argv[i]);
        } else {
            dir = argv[i];
        }
    }
    int rc = args_parse("report", summary_text, specs, sizeof specs / sizeof *specs, n_flags, flags);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!dir) return usage_error("report", "missing DIR (the sweep directory holding summary.csv)");
    if (!dir[0]) return usage_error("report", "DIR: an empty path (the sweep directory holding summary.csv)");
    char report_md[4200];
    snprintf(report_md, sizeof report_md, "%s/report.md", dir);
    if (check_output_path(report_md) != 0) return usage_error("report", "%s", qc_last_error()); /* never a FIFO's place */
    ReportSummary summary;
    if (report_write(dir, &summary) != 0) return command_failed("report");
    if (!json) {
        printf("wrote %s and %d plot%s in %s/plots (%d runs, %d excluded from recovery statistics)\n", summary.report_path,
               summary.n_plots, summary.n_plots == 1 ? "" : "s", dir, summary.n_rows, summary.n_excluded);
        return 0;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "report", summary.report_path);
    cJSON_AddNumberToObject(o, "runs", summary.n_rows);
    cJSON_AddNumberToObject(o, "quantized_runs", summary.n_quant);
    cJSON_AddNumberToObject(o, "control_runs", summary.n_control);
    cJSON_AddNumberToObject(o, "excluded", summary.n_excluded);
    cJSON_AddNumberToObject(o, "plots", summary.n_plots);
    cJSON_AddNumberToObject(o, "loss_curves", summary.n_loss_curves);
    cJSON_AddStringToObject(o, "recovery_units", "fraction");
    cJSON *bits = cJSON_AddArrayToObject(o, "by_bits");
    for (int k = 0; k < summary.n_bits; k++) {
        const ReportBits *b = &summary.bits[k];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "bits", b->bits);
        cJSON_AddNumberToObject(e, "n", b->recovery.n);
        cJSON_AddNumberToObject(e, "excluded", b->n_excluded);
        add_number(e, "mean", b->recovery.mean);
        add_number(e, "std", b->recovery.std);
        add_number(e, "ci_low", b->recovery.ci_low);
        add_number(e, "ci_high", b->recovery.ci_high);
        add_number(e, "share_above_80", b->share_above_80);
        if (b->have_linear_vs_mlp) cJSON_AddItemToObject(e, "linear_vs_mlp", paired_json(&b->linear_vs_mlp));
        else cJSON_AddNullToObject(e, "linear_vs_mlp");
        cJSON_AddItemToArray(bits, e);
    }
    print_json(o);
    return 0;
}
