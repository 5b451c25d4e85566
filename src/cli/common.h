/* common: what several subcommands share — finding and loading the corpus, thread count,
 * memory limits checked before allocation, and printing one JSON object on stdout. */
#ifndef QCORR_CLI_COMMON_H
#define QCORR_CLI_COMMON_H

#include <cjson/cJSON.h>

#include "io/model_file.h"
#include "nn/data.h"

/* Finds (README: Data) and loads the corpus; vocab NULL builds one from the text. */
int open_corpus(const char *data_flag, const Vocab *vocab, Corpus *c);
/* SIGINT/SIGTERM: the first sets qc_stop_signal (the library stops between steps), a second
 * ends the process with 128 + the signal. */
void install_stop_handlers(void);
/* threads <= 0 leaves OpenMP's default (OMP_NUM_THREADS or all cores). */
void set_threads(int threads);
/* An output file the command will write, checked before any work: empty, or existing and not a
 * regular file (a directory, FIFO, device) is a usage error (2); a path nothing can be created
 * beside a runtime error (1); temporaries of it left by dead processes are removed. 0 when fine;
 * otherwise the line is printed and the exit status returned. */
int check_output(const char *command, const char *flag, const char *path);
/* Prints obj as one line on stdout and frees it. */
void print_json(cJSON *obj);
/* "dir/m.safetensors" -> "dir/m<suffix>" */
void sibling_path(char *out, size_t size, const char *checkpoint, const char *suffix);

#endif
