/* cmd_eval: `qcorr eval` — validation loss and perplexity of a checkpoint over the whole
 * validation split, in non-overlapping windows of the model's context (README: Evaluation and
 * recovery). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "correct/budget.h"
#include "io/checkpoint.h"
#include "nn/evaluate.h"

/* The model's storage (README: Budgets: what a model stores): its scheme's codes and scales, float
 * tensors, corrections. */
static void add_storage(cJSON *j, const LoadedModel *lm) {
    ModelBits b;
    model_bits(&lm->model.config, lm->quantized ? &lm->scheme : NULL, &b);
    double corrections = lm->corrected ? corrections_storage_bits(&lm->corrections) : 0.0;
    cJSON_AddNumberToObject(j, "model_bits", model_bits_total(&b) + corrections);
    double bpw = bits_per_weight(&b);
    if (isfinite(bpw)) cJSON_AddNumberToObject(j, "bits_per_weight", bpw);
    else cJSON_AddNullToObject(j, "bits_per_weight");
    cJSON_AddNumberToObject(j, "correction_bits", corrections);
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *data = NULL, *reference_path = NULL;
    int json = 0, threads = 0, batch = 32;
    ArgSpec specs[] = {
        {"--model", ARG_STRING, &model_path, 0, 0, "checkpoint (.safetensors)"},
        {"--reference", ARG_STRING, &reference_path, 0, 0, "float checkpoint to compare with: KL, top-1 agreement, loss difference"},
        {"--data", ARG_STRING, &data, 0, 0, "corpus file"},
        {"--batch", ARG_INT, &batch, 1, 4096, "windows per forward pass"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object on stdout"},
    };
    int rc = args_parse("eval", "Validation loss and perplexity of a checkpoint.", specs,
                        sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model_path) return usage_error("eval", "--model is required");
    set_threads(threads);
    LoadedModel lm, rl;
    int have_ref = 0;
    EvalReference ref = {0};
    Evaluation e = {0};
    Corpus corpus;
    rc = 1;
    if (load_checkpoint(&lm, model_path, batch) != 0) return command_failed("eval");
    GPT *m = &lm.model;
    if (open_corpus(data, &lm.vocab, &corpus) != 0) { loaded_model_free(&lm); return command_failed("eval"); }
    const int32_t *val = corpus.ids + corpus.n_train;
    double t0 = now_seconds(), t_ref = 0;
    if (reference_path) {
        if (load_checkpoint(&rl, reference_path, batch) != 0) goto done;
        have_ref = 1;
        if (rl.model.config.ctx != m->config.ctx || rl.vocab.size != lm.vocab.size ||
            memcmp(rl.vocab.bytes, lm.vocab.bytes, (size_t)lm.vocab.size) != 0) {
            qc_error("--reference %s has another context length or vocabulary than --model %s", reference_path, model_path);
            goto done;
        }
        if (eval_reference_build(&ref, &rl.model, val, corpus.n_val) != 0) goto done;
        t_ref = now_seconds() - t0;
        t0 = now_seconds();
    }
    if (evaluate_model(m, loaded_hook(&lm), val, corpus.n_val, NULL, 0, have_ref ? &ref : NULL, &e) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s on %s: %s", model_path, corpus.path, msg);
        goto done;
    }
    double seconds = now_seconds() - t0;
    long tokens = (long)e.n_windows * m->config.ctx;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model_path);
        cJSON_AddStringToObject(j, "data", corpus.path);
        cJSON_AddNumberToObject(j, "loss", e.loss);
        cJSON_AddNumberToObject(j, "loss_se", e.loss_se);
        cJSON_AddNumberToObject(j, "ppl", exp(e.loss));
        cJSON_AddNumberToObject(j, "windows", e.n_windows);
        cJSON_AddNumberToObject(j, "tokens", (double)tokens);
        cJSON_AddNumberToObject(j, "seconds", seconds);
        cJSON_AddNumberToObject(j, "tokens_per_s", tokens / seconds);
        char scheme[256];
        quant_scheme_describe(&lm.scheme, scheme, sizeof scheme);
        cJSON_AddStringToObject(j, "quantization", lm.quantized || lm.scheme.transform.kinds ? scheme : "none");
        cJSON_AddNumberToObject(j, "correction_sites", lm.corrected ? lm.corrections.n_sites : 0);
        add_storage(j, &lm);
        if (have_ref) {
            cJSON_AddStringToObject(j, "reference", reference_path);
            cJSON_AddNumberToObject(j, "kl_mean", e.kl_mean);
            cJSON_AddNumberToObject(j, "kl_se", e.kl_se);
            cJSON_AddNumberToObject(j, "kl_p99", e.kl_p99);
            cJSON_AddNumberToObject(j, "top1_agree", e.top1_agree);
            cJSON_AddNumberToObject(j, "loss_diff", e.loss_diff);
            cJSON_AddNumberToObject(j, "loss_diff_se", e.loss_diff_se);
            cJSON_AddNumberToObject(j, "seconds_reference", t_ref);
        }
        print_json(j);
    } else {
        printf("loss %.6f ± %.6f  ppl %.4f  (%d windows of %d from %s)\n", e.loss, e.loss_se, exp(e.loss), e.n_windows,
               m->config.ctx, corpus.path);
        if (have_ref)
            printf("vs %s: KL %.6f ± %.6f (p99 %.5f), top-1 agreement %.4f, loss difference %.6f ± %.6f\n", reference_path,
                   e.kl_mean, e.kl_se, e.kl_p99, e.top1_agree, e.loss_diff, e.loss_diff_se);
    }
    rc = 0;
done:
    evaluation_free(&e);
    eval_reference_free(&ref);
    if (have_ref) loaded_model_free(&rl);
    loaded_model_free(&lm);
    corpus_free(&corpus);
    return rc ? command_failed("eval") : 0;
}
