/* cmd_sweep: `qcorr sweep` — a preset or any grid, every hyper-parameter a flag, shards for
 * Slurm arrays or GNU parallel, --dry-run with a measured estimate of the wall time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../correct.h"
#include "../data.h"
#include "../sweep.h"
#include "../train.h"
#include "../util.h"
#include "args.h"
#include "commands.h"
#include "common.h"

static int parse_shard(const char *text, int *k, int *n) {
    int used = 0;
    if (sscanf(text, "%d/%d%n", k, n, &used) != 2 || text[used] != 0 || *n < 1 || *k < 1 || *k > *n) {
        qc_error("--shard: '%s' is not K/N with 1 <= K <= N", text);
        return -1;
    }
    return 0;
}

/* Times a few real steps of each size on this machine and scales them to the planned work. */
static int dry_run(const SweepConfig *cfg, const Corpus *corpus, const char *dir) {
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(cfg, &n_runs, &n_groups);
    if (!runs) return -1;
    printf("plan for %s: %d float models, %d runs (%d with the control arm)\n", dir, n_groups, n_runs,
           cfg->control ? n_runs / (cfg->n_bits + 1) : 0);
    double total = 0.0;
    int B = cfg->train_batch > cfg->corr_batch ? cfg->train_batch : cfg->corr_batch;
    if (B < 32) B = 32;
    size_t eval_tokens = (corpus->n_val - 1) / (size_t)cfg->ctx * (size_t)cfg->ctx;
    for (int z = 0; z < cfg->n_sizes; z++) {
        GPTConfig g = {.vocab_size = corpus->vocab.size, .ctx = cfg->ctx, .d_model = cfg->sizes[z].d_model,
                       .n_layer = cfg->sizes[z].n_layer, .n_head = cfg->heads};
        GPT m;
        if (gpt_init(&m, &g, B) != 0 || gpt_enable_training(&m) != 0) { free(runs); return -1; }
        gpt_init_weights(&m, 1);
        int32_t *in = calloc((size_t)B * cfg->ctx, sizeof(int32_t));
        Rng rng;
        rng_seed(&rng, 1);
        sample_windows(corpus->ids, corpus->n_train, B, cfg->ctx, &rng, in, in);
        double t_train = 0, t_corr = 0, t_eval = 0;
        for (int rep = 0; rep < 3; rep++) { /* the first repetition warms caches and threads */
            double t0 = now_seconds();
            gpt_forward(&m, in, cfg->train_batch, cfg->ctx, NULL);
            gpt_zero_grad(&m);
            gpt_loss(&m, in);
            gpt_backward(&m, NULL, 1, 1, 0);
            double t1 = now_seconds();
            gpt_forward(&m, in, cfg->corr_batch, cfg->ctx, NULL);
            gpt_loss(&m, in);
            gpt_backward(&m, NULL, 1, 0, 0); /* every block: scaled below by the share a run computes */
            double t2 = now_seconds();
            gpt_forward(&m, in, B, cfg->ctx, NULL);
            double t3 = now_seconds();
            if (rep) { t_train += (t1 - t0) / 2; t_corr += (t2 - t1) / 2; t_eval += (t3 - t2) / 2; }
        }
        free(in);
        gpt_free(&m);
        double eval_pass = t_eval / ((double)B * cfg->ctx) * (double)eval_tokens;
        double calib_pass = t_eval / ((double)B * cfg->ctx) * (double)cfg->calib_tokens;
        int groups = cfg->n_seeds, size_runs = 0, bit_models = 0, L = cfg->sizes[z].n_layer;
        int steps = SIZE_TRAIN_STEPS(cfg, z);
        bit_models = cfg->n_seeds * cfg->n_bits;
        double t_float = groups * (steps * t_train + eval_pass);
        double t_q = bit_models * eval_pass;
        /* a run computes only the blocks from its first correction site on (the frozen prefix
         * is cached once per seed, bit width and first site, for validation and calibration) */
        double t_runs = 0, t_caches = 0;
        for (int i = 0; i < n_runs; i++) {
            if (runs[i].size_index != z) continue;
            int first_block = correction_first_site(L, runs[i].every);
            double after = (double)(L - 1 - first_block) / L, before = (double)(first_block + 1) / L;
            size_runs++;
            t_runs += cfg->corr_steps * t_corr * after + eval_pass * after;
            int new_cache = 1; /* the first run of its (seed, bits, first site) builds the cache */
            for (int k = 0; k < i && new_cache; k++)
                new_cache = !(runs[k].size_index == z && runs[k].seed == runs[i].seed && runs[k].bits == runs[i].bits &&
                              correction_first_site(L, runs[k].every) == first_block);
            if (new_cache) t_caches += (eval_pass + (cfg->objective == OBJECTIVE_CE ? calib_pass : 0)) * before;
        }
        double sub = t_float + t_q + t_runs + t_caches;
        total += sub;
        printf("  %4dx%-2d  %3d float models x %d steps (%.0f ms/step), %3d runs x %d steps (%.0f ms/step without cached "
               "prefix) + eval %.1f s each: %.1f min\n",
               cfg->sizes[z].d_model, L, groups, steps, 1000 * t_train, size_runs, cfg->corr_steps, 1000 * t_corr,
               eval_pass, sub / 60);
    }
    printf("estimated wall time: %.1f min on this machine (one shard of everything; lstsq runs counted as trained ones)\n",
           total / 60);
    free(runs);
    return 0;
}

int cmd_sweep(int argc, char **argv) {
    const char *preset = "quick", *out = NULL, *seeds = NULL, *bits = NULL, *sizes = NULL, *every = NULL, *hidden = NULL;
    const char *grid = NULL, *methods = "train", *shard = "1/1", *data = NULL, *granularity = NULL, *scope = NULL;
    const char *objective = NULL, *scale_dtype = NULL;
    int no_control = 0, dry = 0, quiet = 0, threads = 0, asymmetric = 0;
    int train_steps = -1, train_batch = -1, ctx = -1, heads = -1, steps = -1, batch = -1, act_bits = -1, calib = -1;
    double train_lr = -1, lr = -1, ridge = -1;
    ArgSpec specs[] = {
        {"--preset", ARG_STRING, &preset, 0, 0, "quick | seed243: the grid and budgets the flags below start from"},
        {"--out", ARG_STRING, &out, 0, 0, "sweep directory (created, or resumed)"},
        {"--seeds", ARG_STRING, &seeds, 0, 0, "comma list, e.g. 42,123,999"},
        {"--bits", ARG_STRING, &bits, 0, 0, "comma list of weight bits in 2..8"},
        {"--sizes", ARG_STRING, &sizes, 0, 0, "comma list of D_MODELxLAYERS[:STEPS], e.g. 64x2,128x4:800"},
        {"--every", ARG_STRING, &every, 0, 0, "comma list of correction frequencies"},
        {"--hidden", ARG_STRING, &hidden, 0, 0, "comma list of correction widths (0 = linear)"},
        {"--grid", ARG_STRING, &grid, 0, 0, "JSON file with any of seeds, bits, sizes, every, hidden"},
        {"--methods", ARG_STRING, &methods, 0, 0, "train, lstsq or train,lstsq"},
        {"--no-control", ARG_FLAG, &no_control, 0, 0, "leave out the float+correction control arm (bits 32)"},
        {"--train-steps", ARG_INT, &train_steps, 1, 100000000, "float training steps of sizes that name none (preset's by default)"},
        {"--train-lr", ARG_FLOAT, &train_lr, 0, 10, "float training peak learning rate"},
        {"--train-batch", ARG_INT, &train_batch, 1, 65536, "float training batch"},
        {"--ctx", ARG_INT, &ctx, 1, 8192, "context length"},
        {"--heads", ARG_INT, &heads, 1, 256, "attention heads"},
        {"--granularity", ARG_STRING, &granularity, 0, 0, "tensor | channel | group:G (default channel)"},
        {"--asymmetric", ARG_FLAG, &asymmetric, 0, 0, "min/max quantization levels"},
        {"--scope", ARG_STRING, &scope, 0, 0, "tensor kinds to quantize (default linear,head)"},
        {"--act-bits", ARG_INT, &act_bits, 0, 8, "activation fake-quantization bits (0: off)"},
        {"--scale-dtype", ARG_STRING, &scale_dtype, 0, 0, "storage type of each scale: f16 | bf16 | f32 (default f16)"},
        {"--objective", ARG_STRING, &objective, 0, 0, "ce | kl | mse"},
        {"--steps", ARG_INT, &steps, 0, 100000000, "correction training steps"},
        {"--lr", ARG_FLOAT, &lr, 0, 10, "correction peak learning rate"},
        {"--batch", ARG_INT, &batch, 1, 65536, "correction batch"},
        {"--calib-tokens", ARG_INT, &calib, 1, 2000000000, "calibration budget in train characters"},
        {"--ridge", ARG_FLOAT, &ridge, 0, 1e6, "lstsq ridge"},
        {"--shard", ARG_STRING, &shard, 0, 0, "K/N: run the K-th of N shards (float-model groups stay together)"},
        {"--dry-run", ARG_FLAG, &dry, 0, 0, "print the planned work and a measured time estimate, run nothing"},
        {"--data", ARG_STRING, &data, 0, 0, "corpus file"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--quiet", ARG_FLAG, &quiet, 0, 0, "no progress on stderr"},
    };
    int rc = args_parse("sweep", "Run (or resume) a grid of experiments into a directory (SPEC section 6).", specs,
                        sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!out) return usage_error("sweep", "--out DIR is required");
    if (grid) { /* an unreadable grid file is a runtime error (1), like a missing corpus */
        size_t size;
        uint8_t *text = read_file(grid, &size);
        if (!text) return command_failed("sweep");
        free(text);
    }
    SweepConfig cfg;
    SweepOptions o = {.quiet = quiet, .dry_run = dry, .data_path = data};
    if (sweep_preset(&cfg, preset) != 0 || parse_shard(shard, &o.shard_k, &o.shard_n) != 0 ||
        (grid && sweep_read_grid_file(&cfg, grid) != 0) ||
        (seeds && parse_int_list("--seeds", seeds, cfg.seeds, &cfg.n_seeds, 0, 2147483647) != 0) ||
        (bits && parse_int_list("--bits", bits, cfg.bits, &cfg.n_bits, 2, 8) != 0) ||
        (sizes && parse_size_list("--sizes", sizes, cfg.sizes, &cfg.n_sizes) != 0) ||
        (every && parse_int_list("--every", every, cfg.every, &cfg.n_every, 1, 256) != 0) ||
        (hidden && parse_int_list("--hidden", hidden, cfg.hidden, &cfg.n_hidden, 0, 65536) != 0) ||
        0)
        return usage_error("sweep", "%s", qc_last_error());
    if (granularity && parse_granularity(granularity, &cfg.scheme) != 0) return usage_error("sweep", "--granularity: %s", qc_last_error());
    if (scope && parse_scope(scope, &cfg.scheme.scope) != 0) return usage_error("sweep", "--scope: %s", qc_last_error());
    if (scale_dtype && (rc = parse_scale_dtype_flag("sweep", scale_dtype, &cfg.scheme.scale_dtype))) return rc;
    if (objective && parse_objective(objective, &cfg.objective) != 0) return usage_error("sweep", "--objective: %s", qc_last_error());
    cfg.method_train = strstr(methods, "train") != NULL;
    cfg.method_lstsq = strstr(methods, "lstsq") != NULL;
    if (strcmp(methods, "train") && strcmp(methods, "lstsq") && strcmp(methods, "train,lstsq") && strcmp(methods, "lstsq,train"))
        return usage_error("sweep", "--methods: expected train, lstsq or train,lstsq, got '%s'", methods);
    if (no_control) cfg.control = 0;
    if (asymmetric) cfg.scheme.asymmetric = 1;
    if (act_bits >= 0) cfg.scheme.act_bits = act_bits;
    if (train_steps > 0) { /* one budget for every size that does not name its own in --sizes */
        cfg.train_steps = train_steps;
        if (!sizes)
            for (int z = 0; z < cfg.n_sizes; z++) cfg.sizes[z].train_steps = 0;
    }
    if (train_lr >= 0) cfg.train_lr = train_lr;
    if (train_batch > 0) cfg.train_batch = train_batch;
    if (ctx > 0) cfg.ctx = ctx;
    if (heads > 0) cfg.heads = heads;
    if (steps >= 0) cfg.corr_steps = steps;
    if (lr >= 0) cfg.corr_lr = lr;
    if (batch > 0) cfg.corr_batch = batch;
    if (calib > 0) cfg.calib_tokens = calib;
    if (ridge >= 0) cfg.ridge = ridge;
    if (sweep_config_check(&cfg) != 0) return usage_error("sweep", "%s", qc_last_error());
    set_threads(threads);

    Corpus corpus;
    if (open_corpus(data, NULL, &corpus) != 0) return command_failed("sweep");
    sha256_hex(corpus.text, corpus.n, cfg.data_sha256);
    for (int z = 0; z < cfg.n_sizes; z++) {
        GPTConfig g = {.vocab_size = corpus.vocab.size, .ctx = cfg.ctx, .d_model = cfg.sizes[z].d_model,
                       .n_layer = cfg.sizes[z].n_layer, .n_head = cfg.heads};
        int B = cfg.train_batch > 32 ? cfg.train_batch : 32;
        if (check_memory(&g, 2 * B, 1) != 0) { corpus_free(&corpus); return command_failed("sweep"); }
    }
    if (dry) {
        rc = dry_run(&cfg, &corpus, out);
        corpus_free(&corpus);
        return rc ? command_failed("sweep") : 0;
    }
    corpus_free(&corpus);
    char command[4096] = "qcorr sweep";
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--shard") != 0 && (i == 0 || strcmp(argv[i - 1], "--shard") != 0))
            snprintf(command + strlen(command), sizeof command - strlen(command), " %s", argv[i]);
    install_stop_handlers();
    if (sweep_run(out, &cfg, &o, command) != 0) return command_failed("sweep");
    if (!quiet) fprintf(stderr, "sweep: summary in %s/summary.csv; next: qcorr report %s\n", out, out);
    return 0;
}
