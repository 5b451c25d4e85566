/* common: see common.h. */
#include "common.h"

#include <cblas.h>
#include "../omp_compat.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../checkpoint.h"
#include "../util.h"

int open_corpus(const char *data_flag, const Vocab *vocab, Corpus *c) {
    char path[4096];
    if (corpus_find(data_flag, path, sizeof path) != 0) {
        char msg[900];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s; or pass --data PATH", msg);
        return -1;
    }
    return corpus_load(c, path, vocab);
}

/* The first SIGINT/SIGTERM asks the library to stop at its next step (qc_stop_signal); a second
 * one ends the process at once, which only the CLI may decide: every output is atomic, so
 * nothing is left half-written either way. */
static void on_stop_signal(int sig) {
    if (qc_stop_signal) _exit(128 + sig);
    qc_stop_signal = sig;
}

void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void set_threads(int threads) {
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
}

int check_memory(const GPTConfig *cfg, int batch, int training) {
    if (gpt_config_check(cfg) != 0) return -1;
    double need = gpt_memory_bytes(cfg, batch, training);
    double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (need > 0.9 * have) {
        qc_error("this model needs %.1f GiB of memory (d_model %d, %d layers, ctx %d, batch %d) but the machine has %.1f GiB",
                 need / (1 << 30), cfg->d_model, cfg->n_layer, cfg->ctx, batch, have / (1 << 30));
        return -1;
    }
    return 0;
}

void print_json(cJSON *obj) {
    char *text = cJSON_PrintUnformatted(obj);
    if (text) {
        printf("%s\n", text);
        cJSON_free(text);
    }
    fflush(stdout);
    cJSON_Delete(obj);
}

void sibling_path(char *out, size_t size, const char *checkpoint, const char *suffix) {
    size_t len = strlen(checkpoint);
    const char *ext = ".safetensors";
    size_t elen = strlen(ext);
    if (len > elen && strcmp(checkpoint + len - elen, ext) == 0) len -= elen;
    snprintf(out, size, "%.*s%s", (int)len, checkpoint, suffix);
}

int load_checkpoint(LoadedModel *lm, const char *path, int max_batch) {
    memset(lm, 0, sizeof *lm);
    SafeTensors st;
    if (st_read(&st, path) != 0) return -1;
    int rc = load_checkpoint_from(lm, &st, max_batch);
    st_free(&st);
    return rc;
}

int load_checkpoint_from(LoadedModel *lm, const SafeTensors *st, int max_batch) {
    memset(lm, 0, sizeof *lm);
    /* a small file can still ask for a long context over many layers: activations grow as ctx^2 */
    GPTConfig cfg;
    if (gpt_config_from(&cfg, &lm->vocab, st) != 0) return -1;
    if (check_memory(&cfg, max_batch, 0) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s: %s", st->path, msg);
        return -1;
    }
    if (gpt_load_from(&lm->model, &lm->vocab, st, max_batch, 1) != 0) return -1;
    int q = quant_scheme_from_meta(st, &lm->scheme);
    int c = q < 0 ? -1 : corrections_load(&lm->corrections, st, &lm->model.config, max_batch * lm->model.config.ctx);
    if (q < 0 || c < 0 || (q > 0 && gpt_set_act_bits(&lm->model, lm->scheme.act_bits) != 0)) {
        if (c > 0) corrections_free(&lm->corrections);
        gpt_free(&lm->model);
        return -1;
    }
    lm->quantized = q > 0 && lm->scheme.bits < 32;
    lm->corrected = c > 0;
    return 0;
}

const StreamHook *loaded_hook(LoadedModel *lm) { return lm->corrected ? &lm->corrections.hook : NULL; }

void loaded_model_free(LoadedModel *lm) {
    if (lm->corrected) corrections_free(&lm->corrections);
    gpt_free(&lm->model);
}
