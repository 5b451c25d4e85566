/* common: see common.h. */
#include "cli/common.h"

#include <cblas.h>
#include "base/omp_compat.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "cli/args.h"

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

int check_output(const char *command, const char *flag, const char *path) {
    if (check_output_path(path) != 0) return usage_error(command, "%s: %s", flag, qc_last_error());
    if (check_writable(path) != 0) return command_failed(command);
    remove_stale_temporaries_of(path);
    return 0;
}

/* no fflush: main flushes and closes stdout at exit and fails the command if a write was lost */
void print_json(cJSON *obj) {
    char *text = cJSON_PrintUnformatted(obj);
    if (text) {
        printf("%s\n", text);
        cJSON_free(text);
    }
    cJSON_Delete(obj);
}

void sibling_path(char *out, size_t size, const char *checkpoint, const char *suffix) {
    size_t len = strlen(checkpoint);
    const char *ext = ".safetensors";
    size_t elen = strlen(ext);
    if (len > elen && strcmp(checkpoint + len - elen, ext) == 0) len -= elen;
    snprintf(out, size, "%.*s%s", (int)len, checkpoint, suffix);
}
