/* common: see common.h. */
#include "common.h"

#include <cblas.h>
#include "../omp_compat.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../util.h"
#include "args.h"
#include "commands.h"

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


int parse_autostop_flags(const char *command, const AutoStopFlags *f, int autostop, AutoStop *a, CorrectionInit *init) {
    auto_stop_default(a);
    *init = INIT_ZERO;
    const char *given = f->max_steps ? "--max-steps" : f->eval_every ? "--eval-every" : f->patience ? "--patience"
                      : f->min_delta ? "--min-delta" : f->heldout_share ? "--heldout-share" : f->schedule ? "--schedule"
                      : f->ema ? "--ema" : NULL;
    if (given && !autostop) return usage_error(command, "%s applies to --steps auto", given);
    long v;
    if (f->max_steps) {
        if (parse_int("--max-steps", f->max_steps, 1, 100000000, &v) != 0) return usage_error(command, "%s", qc_last_error());
        a->max_steps = (int)v;
    }
    if (f->eval_every) {
        if (parse_int("--eval-every", f->eval_every, 1, 100000000, &v) != 0) return usage_error(command, "%s", qc_last_error());
        a->eval_every = (int)v;
    }
    if (f->patience) {
        if (parse_int("--patience", f->patience, 1, 1000000, &v) != 0) return usage_error(command, "%s", qc_last_error());
        a->patience = (int)v;
    }
    if (f->min_delta && parse_float("--min-delta", f->min_delta, 0, 1, &a->min_delta) != 0) return usage_error(command, "%s", qc_last_error());
    if (f->heldout_share) {
        if (parse_float("--heldout-share", f->heldout_share, 0, 1, &a->heldout_share) != 0) return usage_error(command, "%s", qc_last_error());
        if (!(a->heldout_share > 0 && a->heldout_share < 1))
            return usage_error(command, "--heldout-share %s must lie strictly between 0 and 1", f->heldout_share);
    }
    if (f->ema) {
        if (parse_float("--ema", f->ema, 0, 1, &a->ema) != 0) return usage_error(command, "%s", qc_last_error());
        if (!(a->ema < 1)) return usage_error(command, "--ema %s must be below 1 (0: off)", f->ema);
    }
    if (f->schedule && parse_schedule(f->schedule, &a->schedule) != 0) return usage_error(command, "--schedule: %s", qc_last_error());
    if (f->init) {
        if (strcmp(f->init, "zero") == 0) *init = INIT_ZERO;
        else if (strcmp(f->init, "lstsq") == 0) *init = INIT_LSTSQ;
        else return usage_error(command, "--init: expected zero or lstsq, got '%s'", f->init);
    }
    return 0;
}
