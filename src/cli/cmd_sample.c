/* cmd_sample: `qcorr sample` — generates text from any checkpoint with a key/value cache. */
#include <stdio.h>

#include "base/util.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "io/checkpoint.h"
#include "nn/sample.h"

int cmd_sample(int argc, char **argv) {
    const char *model_path = NULL, *prompt = "";
    int chars = 500, seed = 1, threads = 1;
    double temperature = 0.8;
    ArgSpec specs[] = {
        {"--model", ARG_STRING, &model_path, 0, 0, "checkpoint (.safetensors)"},
        {"--prompt", ARG_TEXT, &prompt, 0, 0, "text to continue (bytes of the model's vocabulary)"},
        {"--chars", ARG_INT, &chars, 0, 100000000, "characters to generate"},
        {"--temperature", ARG_FLOAT, &temperature, 0, 100, "softmax temperature (0: greedy)"},
        {"--seed", ARG_INT, &seed, 0, 2147483647, "sampling seed"},
        {"--threads", ARG_INT, &threads, 0, 1024, "threads (0: all cores; one row per step runs best on 1)"},
    };
    int rc = args_parse("sample", "Generate text from a checkpoint.", specs, sizeof specs / sizeof *specs, argc, argv);
    if (rc == ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model_path) return usage_error("sample", "--model is required");
    set_threads(threads);
    LoadedModel lm;
    if (load_checkpoint(&lm, model_path, 1) != 0) return command_failed("sample");
    for (const char *c = prompt; *c; c++)
        if (lm.vocab.id_of[(uint8_t)*c] < 0) {
            fprintf(stderr, "qcorr sample: --prompt: character '%c' (byte %u) is not in the vocabulary of %s\n", *c, (uint8_t)*c,
                    model_path);
            loaded_model_free(&lm);
            return 1;
        }
    rc = sample_text(&lm.model, &lm.vocab, loaded_hook(&lm), prompt, chars, (float)temperature, (uint64_t)seed, stdout);
    if (rc == 0) printf("\n");
    else { /* the stream, or the model, at fault */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s: %s", ferror(stdout) ? "stdout" : model_path, msg);
    }
    loaded_model_free(&lm);
    return rc ? command_failed("sample") : 0;
}
