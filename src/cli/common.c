/* common: see common.h. */
#include "common.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../util.h"

int open_corpus(const char *data_flag, const Vocab *vocab, Corpus *c) {
    char path[4096];
    if (corpus_find(data_flag, path, sizeof path) != 0) return -1;
    return corpus_load(c, path, vocab);
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
