/* common: see common.h. */
#include "common.h"

#include <cblas.h>
#include "../omp_compat.h"
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

