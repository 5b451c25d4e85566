/* cmd_sweep: `qcorr sweep` — a preset or any grid, every hyper-parameter a flag, shards for
 * Slurm arrays or GNU parallel, --dry-run with a measured estimate of the wall time. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/omp_compat.h"
#include "base/util.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "nn/data.h"
#include "nn/train.h"
#include "sweep/sweep.h"

static int parse_shard(const char *text, int *k, int *n) {
    int used = 0;
    if (sscanf(text, "%d/%d%n", k, n, &used) != 2 || text[used] != 0 || *n < 1 || *k < 1 || *k > *n) {
        qc_error("--shard: '%s' is not K/N with 1 <= K <= N", text);
        return -1;
    }
    return 0;
}

/* The wall time of `jobs` workers on groups of these costs: each takes whole groups, the largest
 * first, and a worker out of groups joins a teammate's once its float model is trained, taking
 * its quantized models one by one (sweep.h), so the work is shared to the end but for a group with
 * too few models to split: the most of the work over jobs and each group's float model plus the
 * rest of its work over min(jobs, its models). */
static double workers_wall_time(const double *cost, const double *float_cost, const int *models, int n, int jobs) {
    double total = 0, wall = 0;
    for (int g = 0; g < n; g++) {
        total += cost[g];
        int share = models[g] < jobs ? models[g] : jobs;
        double alone = float_cost[g] + (cost[g] - float_cost[g]) / (share > 0 ? share : 1);
        wall = alone > wall ? alone : wall;
    }
    return total / jobs > wall ? total / jobs : wall;
}

/* The plan of the whole grid (one shard of everything), each size's work weighed by the time a
 * few real steps of that size take on this machine: the sweep's own cost model (sweep.h). */
static int dry_run(const SweepConfig *cfg, const Corpus *corpus, const char *dir, int jobs) {
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(cfg, &n_runs, &n_groups);
    SweepSizePlan *plan = runs ? calloc((size_t)cfg->n_sizes, sizeof *plan) : NULL;
    if (!plan) { free(runs); qc_error("out of memory planning the sweep"); return -1; }
    double eval_tokens = sweep_eval_tokens(corpus->n_val, cfg->ctx);
    sweep_plan(cfg, runs, n_runs, NULL, 1, 1, eval_tokens, plan);
    int n_control = 0;
    for (int i = 0; i < n_runs; i++) n_control += runs[i].bits == 32;
    printf("plan for %s: %d float models, %d runs (%d in the control arm)\n", dir, n_groups, n_runs, n_control);
    double total = 0.0;
    SweepWork per_token[SWEEP_MAX_VALUES];
    for (int z = 0; z < cfg->n_sizes; z++) {
        SweepWork seconds;
        if (sweep_measure_seconds_per_token(cfg, corpus, z, &seconds) != 0) { free(plan); free(runs); return -1; }
        per_token[z] = seconds;
        double sub = sweep_work_cost(plan[z].work, seconds);
        total += sub;
        printf("  %4dx%-2d  %3d float models x %d steps (%.0f ms/step), %3d quantized models, %3d runs, %.0f whole-model correction steps "
               "(%.0f ms/step without cached prefix), an evaluation %.1f s: %.1f min\n",
               cfg->sizes[z].d_model, cfg->sizes[z].n_layer, plan[z].float_models, SIZE_TRAIN_STEPS(cfg, z),
               1000 * seconds.train * cfg->train_batch * cfg->ctx, plan[z].quant_models, plan[z].runs,
               plan[z].work.correct / ((double)cfg->corr_batch * cfg->ctx), 1000 * seconds.correct * cfg->corr_batch * cfg->ctx,
               seconds.forward * eval_tokens, sub / 60);
    }
    if (sweep_steps_auto(cfg)) {
        printf("--steps auto runs counted at the mean steps the rule took in results/seed243-plateau (README), at most %d:",
               cfg->autostop.max_steps);
        for (int z = 0; z < cfg->n_sizes; z++)
            printf("%s %dx%d linear %.0f, MLP %.0f", z ? ";" : "", cfg->sizes[z].d_model, cfg->sizes[z].n_layer,
                   plan_expected_steps(cfg, &(SweepRun){.steps = STEPS_AUTO, .hidden = 0, .size_index = z}),
                   plan_expected_steps(cfg, &(SweepRun){.steps = STEPS_AUTO, .hidden = 1, .size_index = z}));
        printf(" (other budgets and methods: a guess)\n");
    }
    if (jobs > 1) {
        double *cost = malloc((size_t)n_groups * sizeof(double)), *float_cost = calloc((size_t)n_groups, sizeof(double));
        int *models = calloc((size_t)n_groups, sizeof(int));
        if (!cost || !float_cost || !models) {
            free(cost); free(float_cost); free(models); free(plan); free(runs);
            qc_error("out of memory planning the sweep");
            return -1;
        }
        sweep_group_costs(cfg, runs, n_runs, n_groups, NULL, eval_tokens, per_token, cost);
        for (int i = 0; i < n_runs; i++) { /* a group's quantized models (the runs' model indices) and its float model */
            const SweepRun *r = &runs[i];
            if (r->model + 1 > models[r->group]) models[r->group] = r->model + 1;
            const SweepWork *t = &per_token[r->size_index];
            if (i == 0 || runs[i - 1].group != r->group) /* a group's runs are neighbours: once each */
                float_cost[r->group] = (double)SIZE_TRAIN_STEPS(cfg, r->size_index) * cfg->train_batch * cfg->ctx * t->train + t->forward * eval_tokens;
        }
        printf("estimated wall time: %.1f min on this machine with %d workers of %d thread%s (%.1f min of work; groups the "
               "largest first, then shared by quantized model; one shard of everything; lstsq runs counted as trained ones)\n",
               workers_wall_time(cost, float_cost, models, n_groups, jobs) / 60, jobs, omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s", total / 60);
        free(cost);
        free(float_cost);
        free(models);
    } else {
        printf("estimated wall time: %.1f min on this machine (one shard of everything; lstsq runs counted as trained ones)\n",
               total / 60);
    }
    free(plan);
    free(runs);
    return 0;
}

/* The runs of this shard whose record exists in DIR/runs: the --jobs parent's progress count, and
 * at the end what is left to another sweep's workers. */
static int count_recorded(const char *dir, const SweepRun *runs, int n_runs, const SweepOptions *o) {
    int n = 0;
    for (int i = 0; i < n_runs; i++) {
        if (runs[i].group % o->shard_n != o->shard_k - 1) continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/runs/%s.json", dir, runs[i].id);
        n += access(path, F_OK) == 0;
    }
    return n;
}

/* --jobs N: N worker processes of threads/N threads each share the shard's float-model groups
 * through claim files (sweep.h); each group's work is what one process would do, so the records
 * are the same bits. The parent prepares the directory first (one manifest), starts the workers
 * before it runs any OpenMP region (a forked child gets no copy of a thread pool), waits, and on
 * a worker's failure or a signal asks the others to stop after their current run (SIGTERM: the
 * same clean stop as Ctrl-C), so no finished work is lost. */
static int run_jobs(const char *out, const SweepConfig *cfg, SweepOptions o, const char *command, int jobs, int threads) {
    int created = 0;
    if (sweep_prepare_dir(out, cfg, command, &created) != 0 || sweep_clear_stale_claims(out) != 0) return -1;
    int per = threads / jobs > 0 ? threads / jobs : 1, n_runs = 0, n_groups = 0, total = 0;
    SweepRun *runs = sweep_enumerate(cfg, &n_runs, &n_groups);
    if (!runs) return -1;
    for (int i = 0; i < n_runs; i++) total += runs[i].group % o.shard_n == o.shard_k - 1;
    pid_t pids[64];
    fflush(NULL);
    for (int k = 0; k < jobs; k++) {
        pids[k] = fork();
        if (pids[k] < 0) {
            qc_error("--jobs: cannot start worker %d: %s", k + 1, strerror(errno));
            for (int j = 0; j < k; j++) kill(pids[j], SIGTERM);
            while (wait(NULL) > 0) {}
            free(runs);
            return -1;
        }
        if (pids[k] == 0) {
            set_threads(per);
            o.claim = 1;
            o.quiet = 1;
            int rc = sweep_run(out, cfg, &o, command);
            if (rc != 0) fprintf(stderr, "sweep: worker %d: %s\n", k + 1, qc_last_error());
            fflush(NULL);
            _exit(rc ? 1 : 0);
        }
    }
    int alive = jobs, failed = 0, stopping = 0;
    double started = now_seconds(), shown = 0;
    while (alive > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            alive--;
            if (WIFSIGNALED(status) && !stopping) { /* a worker's own failures print their message themselves */
                int k = 0;
                while (k < jobs - 1 && pids[k] != pid) k++;
                fprintf(stderr, "sweep: worker %d (pid %ld) was killed by signal %d\n", k + 1, (long)pid, WTERMSIG(status));
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
        } else if (pid == 0) {
            usleep(200 * 1000);
        } else if (errno != EINTR) {
            break;
        }
        if ((failed || qc_stop_signal) && !stopping) { /* the others stop after their current run */
            stopping = 1;
            for (int k = 0; k < jobs; k++) kill(pids[k], SIGTERM);
        }
        double now = now_seconds();
        if (!o.quiet && (alive == 0 || now - shown >= (isatty(2) ? 1.0 : 30.0))) {
            shown = now;
            progress_line(stderr, alive == 0, "[%d/%d] runs recorded, %d of %d workers running, %.0f s",
                          count_recorded(out, runs, n_runs, &o), total, alive, jobs, now - started);
        }
    }
    if (failed || qc_stop_signal) {
        free(runs);
        if (created) sweep_release_manifest(out); /* no worker finished anything: nothing is locked */
        qc_error("%s: %s; finished runs are kept: start the same command again to resume", out,
                 failed ? "a worker failed (its message is above)" : "interrupted");
        return -1;
    }
    /* groups claimed by a live process that is not one of ours (another sweep --jobs on this
     * directory) were left to it */
    int missing = total - count_recorded(out, runs, n_runs, &o);
    free(runs);
    if (missing && !o.quiet)
        fprintf(stderr, "sweep: %d of %d runs are left to another sweep's workers, which claimed their groups (%s/claims)\n",
                missing, total, out);
    return sweep_write_summary(out);
}

int cmd_sweep(int argc, char **argv) {
    const char *preset = "quick", *out = NULL;
    const char *grid = NULL, *shard = "1/1", *data = NULL, *granularity = NULL, *scope = NULL;
    const char *objective = NULL, *scale_dtype = NULL, *correction_reads = NULL;
    const char *corrected_bits = NULL, *corrected_grans = NULL, *rank = NULL, *lowrank_scale = NULL;
    int no_control = 0, dry = 0, quiet = 0, threads = 0, asymmetric = 0, jobs = 1;
    int train_steps = -1, train_batch = -1, ctx = -1, heads = -1, batch = -1;
    ActFlags actf = ACT_FLAGS_INIT;
    AutoStopFlags af = {0};
    double train_lr = -1, lr = -1, ridge = -1;
    /* one list flag per axis (SWEEP_AXES), its help naming the table's entries where it has one,
     * so a new line there is listed here */
    const char *axis_text[SWEEP_N_AXES] = {0};
    char axis_help[SWEEP_N_AXES][256];
    for (int a = 0; a < SWEEP_N_AXES; a++) {
        char names[192] = "";
        if (sweep_axes[a].ops->names) sweep_axes[a].ops->names(names, sizeof names);
        snprintf(axis_help[a], sizeof axis_help[a], sweep_axes[a].ops->help, names);
    }
#define SWEEP_AXIS_ARG(field, type, run, run_type, flag, ...) {flag, ARG_STRING, &axis_text[AXIS_##field], 0, 0, axis_help[AXIS_##field]},
    ArgSpec specs[] = {
        {"--preset", ARG_STRING, &preset, 0, 0, "quick | seed243 | frontier | budget | methods: the grid and budgets the flags below start from"},
        {"--out", ARG_STRING, &out, 0, 0, "sweep directory (created, or resumed)"},
        SWEEP_AXES(SWEEP_AXIS_ARG)
        {"--grid", ARG_STRING, &grid, 0, 0, "JSON file with any of the lists above by their keys: seeds, sizes, bits, methods, ... (README)"},
        {"--rank", ARG_STRING, &rank, 0, 0, "lowrank: the rank per matrix, or match (a linear correction after every block's parameters)"},
        {"--lowrank-scale", ARG_STRING, &lowrank_scale, 0, 0, "lowrank: none | act (SVD of the error scaled by the inputs' mean |x|)"},
        {"--corrected-bits", ARG_STRING, &corrected_bits, 0, 0, "bit widths at which correcting methods run (default all; others: none only)"},
        {"--corrected-granularities", ARG_STRING, &corrected_grans, 0, 0, "granularities at which correcting methods run (default all)"},
        {"--no-control", ARG_FLAG, &no_control, 0, 0, "leave out the float+correction control arm (bits 32)"},
        {"--train-steps", ARG_INT, &train_steps, 1, 100000000, "float training steps of sizes that name none (preset's by default)"},
        {"--train-lr", ARG_FLOAT, &train_lr, 0, 10, "float training peak learning rate"},
        {"--train-batch", ARG_INT, &train_batch, 1, 65536, "float training batch"},
        {"--ctx", ARG_INT, &ctx, 1, 8192, "context length"},
        {"--heads", ARG_INT, &heads, 1, 256, "attention heads"},
        {"--granularity", ARG_STRING, &granularity, 0, 0, "tensor | channel | group:G (default channel): one granularity"},
        {"--asymmetric", ARG_FLAG, &asymmetric, 0, 0, "min/max quantization levels"},
        {"--scope", ARG_STRING, &scope, 0, 0, "tensor kinds to quantize (default linear,head)"},
        ACT_ARG_SPECS(actf),
        CORRECTION_READS_SPEC(correction_reads),
        {"--scale-dtype", ARG_STRING, &scale_dtype, 0, 0, "storage type of each scale: f16 | bf16 | f32 (default f16)"},
        {"--objective", ARG_STRING, &objective, 0, 0, "ce | kl | mse"},
        AUTOSTOP_ARG_SPECS(af),
        {"--lr", ARG_FLOAT, &lr, 0, 10, "correction peak learning rate"},
        {"--batch", ARG_INT, &batch, 1, 65536, "correction batch"},
        {"--ridge", ARG_FLOAT, &ridge, 0, 1e6, "lstsq ridge"},
        {"--shard", ARG_STRING, &shard, 0, 0, "K/N: run the K-th of N shards (float-model groups stay together)"},
        {"--dry-run", ARG_FLAG, &dry, 0, 0, "print the planned work and a measured time estimate, run nothing"},
        {"--data", ARG_STRING, &data, 0, 0, "corpus file"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--jobs", ARG_INT, &jobs, 1, 64, "worker processes sharing the float-model groups, each with threads/jobs threads"},
        {"--quiet", ARG_FLAG, &quiet, 0, 0, "no progress on stderr"},
    };
#undef SWEEP_AXIS_ARG
    int rc = args_parse("sweep", "Run (or resume) a grid of experiments into a directory.", specs,
                        sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!out) return usage_error("sweep", "--out DIR is required");
    struct stat out_st;
    if (stat(out, &out_st) == 0 && !S_ISDIR(out_st.st_mode)) /* a sweep directory, or nothing yet */
        return usage_error("sweep", "--out: %s exists and is not a directory", out);
    if (grid) { /* an unreadable grid file is a runtime error (1), like a missing corpus */
        size_t size;
        uint8_t *text = read_file(grid, &size);
        if (!text) return command_failed("sweep");
        free(text);
    }
    SweepConfig cfg;
    SweepOptions o = {.quiet = quiet, .dry_run = dry, .data_path = data};
    if (sweep_preset(&cfg, preset) != 0) return usage_error("sweep", "--preset: %s", qc_last_error());
    if (parse_shard(shard, &o.shard_k, &o.shard_n) != 0 || (grid && sweep_read_grid_file(&cfg, grid) != 0))
        return usage_error("sweep", "%s", qc_last_error());
    if (granularity && parse_granularity(granularity, &cfg.scheme) != 0) return usage_error("sweep", "--granularity: %s", qc_last_error());
    if (granularity) { /* one granularity: a list of one */
        cfg.grans[0] = (SweepGranularity){cfg.scheme.granularity, cfg.scheme.granularity == GRAN_GROUP ? cfg.scheme.group : 0};
        cfg.n_grans = 1;
    }
    if (scope && parse_scope(scope, &cfg.scheme.scope) != 0) return usage_error("sweep", "--scope: %s", qc_last_error());
    if (scale_dtype && (rc = parse_scale_dtype_flag("sweep", scale_dtype, &cfg.scheme.scale_dtype))) return rc;
    if (objective && parse_objective(objective, &cfg.objective) != 0) return usage_error("sweep", "--objective: %s", qc_last_error());
    for (int a = 0; a < SWEEP_N_AXES; a++)
        if (axis_text[a] && sweep_axes[a].ops->parse(sweep_axes[a].flag, axis_text[a], &cfg) != 0)
            return usage_error("sweep", "%s", qc_last_error());
    if (corrected_bits && parse_int_list("--corrected-bits", corrected_bits, cfg.corrected_bits, &cfg.n_corrected_bits, 2, 8) != 0)
        return usage_error("sweep", "%s", qc_last_error());
    if (corrected_grans) {
        SweepConfig tmp = cfg;
        if (parse_granularity_list("--corrected-granularities", corrected_grans, &tmp) != 0) return usage_error("sweep", "%s", qc_last_error());
        memcpy(cfg.corrected_grans, tmp.grans, sizeof tmp.grans);
        cfg.n_corrected_grans = tmp.n_grans;
    }
    if (granularity && axis_text[AXIS_grans]) return usage_error("sweep", "--granularity and --granularities: give one");
    if (rank && strcmp(rank, "match") != 0) {
        long k;
        if (parse_int("--rank", rank, 1, 1 << 20, &k) != 0) return usage_error("sweep", "%s (or match)", qc_last_error());
        cfg.rank = (int)k;
    }
    if (lowrank_scale) {
        if (strcmp(lowrank_scale, "none") != 0 && strcmp(lowrank_scale, "act") != 0)
            return usage_error("sweep", "--lowrank-scale: expected none or act, got '%s'", lowrank_scale);
        cfg.lowrank_act_scale = strcmp(lowrank_scale, "act") == 0;
    }
    if (no_control) cfg.control = 0;
    if (asymmetric) cfg.scheme.asymmetric = 1;
    if (actf.bits || actf.granularity || actf.calib || actf.asymmetric || actf.points || actf.kv_bits >= 0) {
        /* same: parsed at 8 bits, then each run's weight bits replace them (sweep_run_scheme) */
        int same = actf.bits && strcmp(actf.bits, "same") == 0;
        if ((rc = parse_act_flags("sweep", &actf, same ? 8 : -1, &cfg.scheme.act))) return rc;
        if (same) cfg.act_same = (cfg.scheme.act.bits ? SWEEP_ACT_SAME_BITS : 0u) | (actf.kv_bits <= 0 && cfg.scheme.act.kv_bits ? SWEEP_ACT_SAME_KV : 0u);
        if (same && !cfg.act_same) return usage_error("sweep", "--act-bits same: no point follows the weight bits (--kv-bits %d fixes the only one)", actf.kv_bits);
    }
    if ((rc = parse_correction_reads_flag("sweep", correction_reads, &cfg.scheme.act))) return rc;
    if (train_steps > 0) { /* one budget for every size that does not name its own in --sizes */
        cfg.train_steps = train_steps;
        ModelSize named[SWEEP_MAX_VALUES];
        int n_named = 0;
        if (axis_text[AXIS_sizes] && parse_size_list("--sizes", axis_text[AXIS_sizes], named, &n_named) != 0) return usage_error("sweep", "%s", qc_last_error());
        for (int z = 0; z < cfg.n_sizes; z++) /* the preset's budgets give way (the sizes keep --sizes' order) */
            if (z >= n_named || !named[z].train_steps) cfg.sizes[z].train_steps = 0;
    }
    if (train_lr >= 0) cfg.train_lr = train_lr;
    if (train_batch > 0) cfg.train_batch = train_batch;
    if (ctx > 0) cfg.ctx = ctx;
    if (heads > 0) cfg.heads = heads;
    if ((rc = parse_autostop_flags("sweep", &af, sweep_steps_auto(&cfg), &cfg.autostop, &cfg.init))) return rc;
    if (lr >= 0) cfg.corr_lr = lr;
    if (batch > 0) cfg.corr_batch = batch;
    if (ridge >= 0) cfg.ridge = ridge;
    if (sweep_config_check(&cfg) != 0) return usage_error("sweep", "%s", qc_last_error());
    int all_threads = threads > 0 ? threads : omp_get_max_threads();
    if (jobs == 1)
        set_threads(threads);
    else if (dry) /* timed as one worker runs */
        set_threads(all_threads / jobs > 0 ? all_threads / jobs : 1);

    Corpus corpus;
    if (open_corpus(data, NULL, &corpus) != 0) return command_failed("sweep");
    /* a corpus too short for the grid's windows is refused before the directory exists */
    if (corpus_check_windows(&corpus, cfg.ctx) != 0) { corpus_free(&corpus); return command_failed("sweep"); }
    sha256_hex(corpus.text, corpus.n, cfg.data_sha256);
    for (int z = 0; z < cfg.n_sizes; z++) {
        GPTConfig g = {.vocab_size = corpus.vocab.size, .ctx = cfg.ctx, .d_model = cfg.sizes[z].d_model,
                       .n_layer = cfg.sizes[z].n_layer, .n_head = cfg.heads};
        int B = cfg.train_batch > 32 ? cfg.train_batch : 32;
        if (check_memory(&g, 2 * B, 1) != 0) { corpus_free(&corpus); return command_failed("sweep"); }
    }
    if (dry) {
        rc = dry_run(&cfg, &corpus, out, jobs);
        corpus_free(&corpus);
        return rc ? command_failed("sweep") : 0;
    }
    corpus_free(&corpus);
    char command[4096] = "qcorr sweep";
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--shard") != 0 && (i == 0 || strcmp(argv[i - 1], "--shard") != 0))
            snprintf(command + strlen(command), sizeof command - strlen(command), " %s", argv[i]);
    install_stop_handlers();
    if (jobs > 1 ? run_jobs(out, &cfg, o, command, jobs, all_threads) != 0 : sweep_run(out, &cfg, &o, command) != 0)
        return command_failed("sweep");
    if (!quiet) fprintf(stderr, "sweep: summary in %s/summary.csv; next: qcorr report %s\n", out, out);
    return 0;
}
