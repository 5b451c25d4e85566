/* report/parts: what the parts of the report share — the Run records read from summary.csv, the
 * Report being built, run selection, number formatting and the sections report_write calls. */
#ifndef QCORR_REPORT_PARTS_H
#define QCORR_REPORT_PARTS_H

#include <stddef.h>

#include "report/report.h"
#include "report/stats.h"
#include "report/svg.h"
#include "tables/schema.h"

typedef struct {
    RunRecord rec;   /* the row of summary.csv, typed by the schema (strings point into the CSV) */
    int line;        /* where the row starts in summary.csv */
    int size;        /* index into Report.sizes */
    int control;     /* arm = control */
    int recovery_ok; /* recovery_flag = ok (the gap is resolved), recovery_loss finite, and not fine_tune_bound */
    int fine_tune_bound; /* flag ok, but the gap is under 3x the matched control run's gain (runs.c) */
    int stream;      /* a correction on the residual stream (linear or MLP): sections 1-8 */
    int mlp;         /* of them, an MLP (hidden > 0) */
} Run;

typedef struct {
    const char *name; /* "128x4" */
    int d_model, n_layer;
} SizeLevel;

#define MAX_LEVELS 256
#define MAX_PLOTS 64

/* Section 4's columns and its plot's series: one per correction width, and one per method of a
 * width whose runs come from more than one (a learned and a closed-form linear correction, whose
 * recoveries may have opposite signs: pooled, neither shows). label: "linear (h=0)" or
 * "linear (h=0), lstsq". */
typedef struct {
    int hidden;
    const char *method; /* NULL: every method of the width */
    char label[80];
} KindSeries;

typedef struct {
    const char *dir;
    char csv_path[4096];
    ReportCsv csv;
    Run *runs;
    int n_runs, n_control, n_quant;
    /* the grid: distinct values of each factor, sorted */
    int bits[MAX_LEVELS], n_bits; /* quantized arm only */
    SizeLevel sizes[MAX_LEVELS];
    int n_sizes;
    int every[MAX_LEVELS], n_every;
    int hidden[MAX_LEVELS], n_hidden;
    long seeds[MAX_LEVELS], calibs[MAX_LEVELS];
    int n_seeds, n_calibs;
    const char *methods[MAX_LEVELS], *objectives[MAX_LEVELS], *schemes[MAX_LEVELS];
    int n_methods, n_objectives, n_schemes;
    KindSeries *kinds; /* the widths and their methods (above), made by load_runs */
    int n_kinds;
    /* scratch, n_runs each */
    double *a, *b, *c;
    TextBuf head, conclusions, body;
    char plots[MAX_PLOTS][128];
    int n_plots, n_loss_curves;
    ReportSummary *summary;
} Report;

/* ---- runs.c: reading summary.csv, levels, selection and pairing ---- */
int load_runs(Report *rep);
int add_string_level(const char **levels, int *n, const char *v, const char *what);
int compare_string(const void *pa, const void *pb);

enum { SELECT_ANY_KIND = -1, SELECT_LINEAR = 0, SELECT_MLP = 1 };

/* Which quantized runs a cell holds; -1 / NULL: any value. */
typedef struct {
    int bits, size, every, hidden, kind;
    const char *method, *objective;
} Select;

Select select_bits(int bits);
int run_selected(const Run *r, const Select *s);
/* The recoveries (fractions) of the selected runs whose recovery is defined. */
int collect_recovery(const Report *rep, const Select *s, double *out);
MeanCI recovery_stats(Report *rep, const Select *s);

/* A cell's recovery (issue 12): the ratio of pooled means sum(gain) / sum(gap) over its resolved
 * runs, with a 95% t-interval over seeds (each seed's own pooled ratio); the mean of per-run
 * ratios as a second view; and what quantization cost there, resolved or not. */
typedef struct {
    int n_runs, n_resolved, n_seeds;
    double pooled;          /* NaN without a resolved run */
    MeanCI by_seed;         /* over the seeds' pooled ratios */
    MeanCI per_run;         /* the mean of per-run ratios */
    double gap_mean, gap_se; /* mean loss_quant - loss_float over all the cell's runs, and the root mean square of their gap_se */
    double share_above_80;  /* of resolved runs */
} CellRecovery;
void cell_recovery(Report *rep, const Select *s, CellRecovery *out);
/* "72.3% [65.1, 80.0] (n 9/9)", or "unresolved (0/9)" */
void put_cell_recovery(TextBuf *t, const CellRecovery *c);
/* The same correction: size, every, hidden, calibration, steps, method and objective. */
int same_correction(const Run *x, const Run *y);
/* The control run of q's seed and correction, or NULL. */
const Run *matched_control(const Report *rep, const Run *q);
/* Same replication unit and model: seed, model size, correct_every, bits, scheme, calibration. */
int same_base(const Run *x, const Run *y);
/* A method "has both kinds" when it ran linear and MLP corrections (lstsq is linear only). */
int method_has_both_kinds(const Report *rep, const char *method);
/* Linear-vs-MLP pairs at bits (MLP widths averaged when hidden < 0): a[] = MLP, b[] = linear. */
int linear_mlp_pairs(const Report *rep, int bits, int hidden, double *a, double *b);
/* Whether any quantized run at this width has a defined recovery. */
int bits_has_recovery(const Report *rep, int bits);
/* Quantized runs (at bits, or all when bits < 0) left out of recovery statistics. */
int count_excluded(const Report *rep, int bits);

/* ---- format.c: numbers in markdown ---- */
/* The quantizer a run used and the transform of the float model before it, as a label: "rtn",
 * "gptq+rotate" (the transform's kind from the scheme's "transform=rotate:seed=0"). */
void quantizer_with_transform(const Run *r, char *out, size_t size);
/* The method a run used and, where its corrections are stored as integer codes, their bits:
 * "train", "lwc+train", "train @8-bit". */
void method_with_storage(const Run *r, char *out, size_t size);
void put_pct(TextBuf *t, double fraction, int decimals);
void put_mean_std(TextBuf *t, const MeanCI *m);
void put_ci(TextBuf *t, double lo, double hi, int decimals);
/* an interval of raw numbers, each printed with num_fmt ("%+.4f"); "n/a" when undefined */
void put_interval(TextBuf *t, double lo, double hi, const char *num_fmt);
void put_p(TextBuf *t, double p);
void put_nats(TextBuf *t, double v);
void put_nats_ci(TextBuf *t, const MeanCI *m);
void put_cell(TextBuf *t, const MeanCI *m);
/* a loss gap and its standard error in nats: 4 decimals, or 2 significant digits below 1e-3 */
void put_gap(TextBuf *t, double mean, double se);
void put_wilcoxon(TextBuf *t, const WilcoxonResult *w);
void put_sign(TextBuf *t, const SignTestResult *s);
/* the Wilcoxon and sign test cells of a paired comparison, " | " between them */
void put_rank_tests(TextBuf *t, const PairedComparison *pc);
const char *kind_label(int hidden, char *buf, size_t size);

/* ---- the sections, in report order ---- */
void write_header(Report *rep);                 /* tables.c */
void section_by_bits(Report *rep);              /* 1 */
void section_perplexity(Report *rep);           /* 2 */
int section_linear_vs_mlp(Report *rep);         /* 3, paired.c */
/* The rule every generated sentence follows: a paired difference supports a direction only when
 * n >= 2, its 95% t-interval excludes 0 and the signed-rank test agrees at 5% (paired.c). */
int paired_significant(const PairedComparison *pc);
/* When the pairs are too few for the signed-rank test to reach p < 0.05 whatever they show (5
 * nonzero differences or fewer), a sentence says so instead of calling the change unmeasurable;
 * put_untestable writes "a signed-rank test over N pairs cannot reach p < 0.05 (its smallest p is
 * P)". */
int paired_untestable(const PairedComparison *pc);
void put_untestable(TextBuf *t, const PairedComparison *pc);
typedef enum { FACTOR_HIDDEN, FACTOR_SIZE, FACTOR_EVERY } Factor;
void section_factor(Report *rep, Factor factor, const char *heading); /* 4-6, tables.c */
int plots_recovery(Report *rep);                /* plots.c */
int section_configurations(Report *rep);        /* 7, tables.c */
int section_control(Report *rep);               /* 8, paired.c */
int section_methods(Report *rep);               /* 9, paired.c */
int section_agreement(Report *rep);             /* 10, frontier.c */
int section_frontier(Report *rep);              /* 11, frontier.c */
int section_budget(Report *rep);                /* 12, budget.c (when the sweep varies it) */
int section_methods_budget(Report *rep);        /* 13, methods.c (when the sweep compares methods) */
int section_stopping(Report *rep);              /* 14, stopping.c (when runs trained by --steps auto) */
int section_loss_curves(Report *rep);           /* plots.c */

/* ---- plots.c ---- */
/* removes the SVG files in plots/ named as the report names its figures but not written by this run */
int remove_stale_plots(const Report *rep);
int write_plot(Report *rep, const char *file, TextBuf *svg);
void embed_plot(Report *rep, const char *file, const char *alt);

#endif
