/* cmd_eval: `qcorr eval` — validation loss and perplexity of a checkpoint over the whole
 * validation split, in non-overlapping windows of the model's context (SPEC section 5). */
#include <math.h>
#include <stdio.h>

#include "../checkpoint.h"
#include "../train.h"
#include "../util.h"
#include "args.h"
#include "commands.h"
#include "common.h"

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *data = NULL;
    int json = 0, threads = 0, batch = 32;
    ArgSpec specs[] = {
        {"--model", ARG_STRING, &model_path, 0, 0, "checkpoint (.safetensors)"},
        {"--data", ARG_STRING, &data, 0, 0, "corpus file"},
        {"--batch", ARG_INT, &batch, 1, 4096, "windows per forward pass"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: OMP_NUM_THREADS or all cores)"},
        {"--json", ARG_FLAG, &json, 0, 0, "print one JSON object on stdout"},
    };
    int rc = args_parse("eval", "Validation loss and perplexity of a checkpoint (SPEC section 5).", specs,
                        sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model_path) return usage_error("eval", "--model is required");
    set_threads(threads);
    LoadedModel lm;
    if (load_checkpoint(&lm, model_path, batch) != 0) return command_failed("eval");
    GPT *m = &lm.model;
    Corpus corpus;
    if (open_corpus(data, &lm.vocab, &corpus) != 0) { loaded_model_free(&lm); return command_failed("eval"); }
    double t0 = now_seconds();
    double loss = evaluate_loss(m, corpus.ids + corpus.n_train, corpus.n_val, loaded_hook(&lm));
    double seconds = now_seconds() - t0;
    size_t windows = (corpus.n_val - 1) / (size_t)m->config.ctx;
    if (!isfinite(loss)) {
        qc_error("%s: validation split (%zu bytes) is shorter than one window of %d", corpus.path, corpus.n_val,
                 m->config.ctx + 1);
        loaded_model_free(&lm);
        corpus_free(&corpus);
        return command_failed("eval");
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model_path);
        cJSON_AddStringToObject(j, "data", corpus.path);
        cJSON_AddNumberToObject(j, "loss", loss);
        cJSON_AddNumberToObject(j, "ppl", exp(loss));
        cJSON_AddNumberToObject(j, "windows", (double)windows);
        cJSON_AddNumberToObject(j, "tokens", (double)(windows * (size_t)m->config.ctx));
        cJSON_AddNumberToObject(j, "seconds", seconds);
        cJSON_AddNumberToObject(j, "tokens_per_s", windows * m->config.ctx / seconds);
        char scheme[256];
        quant_scheme_describe(&lm.scheme, scheme, sizeof scheme);
        cJSON_AddStringToObject(j, "quantization", lm.quantized ? scheme : "none");
        cJSON_AddNumberToObject(j, "correction_sites", lm.corrected ? lm.corrections.n_sites : 0);
        print_json(j);
    } else {
        printf("loss %.6f  ppl %.4f  (%zu windows of %d from %s)\n", loss, exp(loss), windows, m->config.ctx, corpus.path);
    }
    loaded_model_free(&lm);
    corpus_free(&corpus);
    return 0;
}
