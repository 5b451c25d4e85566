/* cmd_train: `qcorr train` — trains a float GPT on the corpus and writes a safetensors
 * checkpoint plus a CSV training log beside it. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "base/util.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "io/checkpoint.h"
#include "nn/train.h"

int cmd_train(int argc, char **argv) {
    int d_model = 128, layers = 4, heads = 4, ctx = 128, batch = 32, steps = 2000, seed = 42, eval_every = 0;
    int warmup = -1, threads = 0, json = 0, quiet = 0;
    double lr = 3e-3, min_lr = -1, weight_decay = 0.1, grad_clip = 1.0;
    const char *out = NULL, *data = NULL;
    ArgSpec specs[] = {
        {"--d-model", ARG_INT, &d_model, 1, 8192, "residual width"},
        {"--layers", ARG_INT, &layers, 1, 256, "transformer blocks"},
        {"--heads", ARG_INT, &heads, 1, 256, "attention heads (must divide --d-model)"},
        {"--ctx", ARG_INT, &ctx, 1, 8192, "context length T"},
        {"--batch", ARG_INT, &batch, 1, 65536, "sequences per step"},
        {"--steps", ARG_INT, &steps, 1, 100000000, "optimizer steps"},
        {"--lr", ARG_FLOAT, &lr, 0, 10, "peak learning rate"},
        {"--min-lr", ARG_FLOAT, &min_lr, -1, 10, "final learning rate of the cosine (-1: lr/10)"},
        {"--warmup", ARG_INT, &warmup, -1, 100000000, "linear warm-up steps (-1: min(100, steps/10))"},
        {"--weight-decay", ARG_FLOAT, &weight_decay, 0, 10, "AdamW weight decay on matrices"},
        {"--grad-clip", ARG_FLOAT, &grad_clip, 0, 1e9, "global gradient-norm clip (0: off)"},
        {"--seed", ARG_INT, &seed, 0, 2147483647, "seed of initialisation and batch sampling"},
        {"--eval-every", ARG_INT, &eval_every, 0, 100000000, "validation loss every N steps (0: at the end only)"},
        {"--out", ARG_STRING, &out, 0, 0, "checkpoint to write (.safetensors); the log goes beside it"},
        {"--data", ARG_STRING, &data, 0, 0, "corpus file"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object on stdout"},
        {"--quiet", ARG_FLAG, &quiet, 0, 0, "no progress on stderr"},
    };
    int rc = args_parse("train", "Train a float GPT on the corpus.", specs, sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!out) return usage_error("train", "--out is required");
    if (d_model % heads != 0) return usage_error("train", "--heads %d must divide --d-model %d", heads, d_model);
    if (min_lr > lr) return usage_error("train", "--min-lr %g is above --lr %g: the schedule decays from --lr to --min-lr", min_lr, lr);
    /* both outputs, before any work: neither may be a directory, FIFO or device */
    if ((rc = check_output("train", "--out", out))) return rc;
    char log_path[4096];
    if (strlen(out) + strlen(".train.csv") >= sizeof log_path) return usage_error("train", "--out: a path of %zu characters is too long", strlen(out));
    sibling_path(log_path, sizeof log_path, out, ".train.csv");
    if ((rc = check_output("train", "--out", log_path))) return rc;
    set_threads(threads);
    install_stop_handlers(); /* Ctrl-C stops between steps with a message; nothing half-written */

    Corpus corpus;
    if (open_corpus(data, NULL, &corpus) != 0) return command_failed("train");
    GPTConfig cfg = {.vocab_size = corpus.vocab.size, .ctx = ctx, .d_model = d_model, .n_layer = layers, .n_head = heads};
    if (gpt_config_check(&cfg) != 0) { corpus_free(&corpus); return usage_error("train", "%s", qc_last_error()); }
    if (check_memory(&cfg, batch, 1) != 0) { corpus_free(&corpus); return command_failed("train"); }

    GPT model;
    if (gpt_init(&model, &cfg, batch) != 0) { corpus_free(&corpus); return command_failed("train"); }
    gpt_init_weights(&model, (uint64_t)seed);
    TrainOptions o;
    train_options_default(&o);
    o.batch = batch; o.steps = steps; o.warmup = warmup; o.lr = (float)lr; o.min_lr = (float)min_lr;
    o.weight_decay = (float)weight_decay; o.grad_clip = (float)grad_clip; o.seed = (uint64_t)seed;
    o.eval_every = eval_every; o.log_path = log_path; o.quiet = quiet;
    FloatCheckpoint save = {&corpus.vocab, out};
    o.save = gpt_save_float;
    o.save_ctx = &save;
    TrainResult r;
    if (train_model(&model, &corpus, &o, &r) != 0) {
        gpt_free(&model);
        corpus_free(&corpus);
        return command_failed("train");
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double planned = gpt_memory_bytes(&cfg, batch, 1), peak = (double)usage.ru_maxrss * 1024.0;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddNumberToObject(j, "memory_planned_bytes", planned);
        cJSON_AddNumberToObject(j, "peak_rss_bytes", peak);
        cJSON_AddStringToObject(j, "log", log_path);
        cJSON_AddNumberToObject(j, "params", (double)model.num_params);
        cJSON_AddNumberToObject(j, "steps", r.steps);
        cJSON_AddNumberToObject(j, "train_loss", r.train_loss);
        cJSON_AddNumberToObject(j, "val_loss", r.val_loss);
        cJSON_AddNumberToObject(j, "val_ppl", exp(r.val_loss));
        cJSON_AddNumberToObject(j, "seconds", r.seconds);
        cJSON_AddNumberToObject(j, "tokens_per_s", r.tokens_per_second);
        print_json(j);
    } else {
        fprintf(stderr, "wrote %s (%zu parameters): val loss %.4f, ppl %.3f, %.0f tokens/s, %.1f s, memory %.0f MiB planned, %.0f MiB peak RSS\n",
                out, model.num_params, r.val_loss, exp(r.val_loss), r.tokens_per_second, r.seconds, planned / (1 << 20),
                peak / (1 << 20));
    }
    gpt_free(&model);
    corpus_free(&corpus);
    return 0;
}
