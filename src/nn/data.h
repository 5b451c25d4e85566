/* data: the corpus. Finds it (--data, $QCORR_DATA, data/tinyshakespeare.txt,
 * ../shared/data/tinyshakespeare.txt), reads its bytes, builds the byte vocabulary, splits 90/10
 * and draws seeded (T+1)-byte training windows. */
#ifndef QCORR_DATA_H
#define QCORR_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

#define SHAKESPEARE_SHA256 "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
#define SHAKESPEARE_SIZE 1115394

typedef struct {
    int size;               /* number of distinct bytes */
    uint8_t bytes[256];     /* id -> byte, sorted ascending */
    int16_t id_of[256];     /* byte -> id, -1 when absent */
} Vocab;

typedef struct {
    char path[4096];
    uint8_t *text;          /* raw bytes */
    size_t n;
    int32_t *ids;           /* text mapped through the vocabulary */
    size_t n_train;         /* ids[0 .. n_train) train, ids[n_train .. n) validation */
    size_t n_val;
    Vocab vocab;
} Corpus;

/* Resolves the corpus path by the search order of the README's Data section. */
int corpus_find(const char *flag_path, char *out, size_t out_size);
/* Loads a corpus. vocab == NULL: build the vocabulary from the text; else map through it and fail
 * (naming the byte and the file) on a byte outside it. */
int corpus_load(Corpus *c, const char *path, const Vocab *vocab);
/* corpus_load on bytes already in memory: takes text (malloc'd) even on failure; name stands for the path. */
int corpus_from_bytes(Corpus *c, uint8_t *text, size_t n, const char *name, const Vocab *vocab);
void corpus_free(Corpus *c);
/* Fails, naming the corpus and the split, unless the train split holds one training window of
 * ctx + 1 characters and the validation split one evaluation window: checked before training, so
 * a corpus too short is refused before any work instead of evaluating to NaN. */
int corpus_check_windows(const Corpus *c, int ctx);

void vocab_from_bytes(Vocab *v, const uint8_t *present_bytes, int count);
/* Vocabulary <-> metadata string: byte b is written as code point U+00bb in UTF-8 (Latin-1),
 * so any byte vocabulary (NUL excluded) is a valid JSON string. */
int vocab_to_string(const Vocab *v, char *out, size_t out_size);
int vocab_from_string(Vocab *v, const char *utf8);

/* Fills inputs/targets (B*T each) with B random windows of T+1 tokens from ids[0..n). */
void sample_windows(const int32_t *ids, size_t n, int B, int T, Rng *rng, int32_t *inputs, int32_t *targets);

void sha256_hex(const uint8_t *data, size_t n, char out[65]);

#endif
