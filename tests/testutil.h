/* testutil: helpers every cmocka suite shares — random tensors, relative differences, a tiny
 * model, a temporary directory and the corpus path. */
#ifndef QCORR_TESTUTIL_H
#define QCORR_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "correct/correct.h"
#include "correct/experiment.h"
#include "nn/data.h"
#include "nn/evaluate.h"
#include "nn/model.h"

void fill_uniform(float *x, size_t n, Rng *rng, float lo, float hi);
void fill_normal(float *x, size_t n, Rng *rng, float std);
/* max over i of |a-b| / max(|b|, floor) */
double max_rel_diff(const float *a, const float *b, size_t n, double floor);
double max_abs_diff(const float *a, const float *b, size_t n);
/* A tiny config (V 11, ctx 8, C 16, 2 layers, 2 heads) with random weights, for gradient checks. */
void tiny_model(GPT *m, int max_batch, uint64_t seed);
/* tiny_model's vocabulary and width with n_layer blocks and context ctx (tiny_model: 2 and 8). */
void small_gpt(GPT *m, int n_layer, int ctx, int max_batch, uint64_t seed);
/* A malloc'ed copy of x[0..n) (asserts on failure). */
float *copy_floats(const float *x, size_t n);
/* n token ids uniform in [0, V). */
void random_tokens(int32_t *t, int n, int V, Rng *rng);
/* The prefix cache's training check: trains `plain` from the calibration windows' tokens and
 * `cached` from a cache of the same windows' stream after block `first` (left in *calib, the
 * windows' starts in *starts: the caller frees both), each with options o (o->calib_cache ends
 * set to calib); returns the parameters' relative distance |cached - plain| / |plain|. */
double train_from_tokens_and_cache(GPT *q, GPT *f, Corrections *plain, Corrections *cached, const Corpus *corpus,
                                   CorrectOptions *o, int first, StreamCache *calib, int64_t **starts);
/* A fresh directory under /tmp for a test's files (not removed: small). */
const char *test_tmpdir(void);
/* Whether two files hold the same bytes (both must be readable: asserted). */
int same_file_bytes(const char *a, const char *b);
/* The real corpus if it can be found (by the search order of README: Data), else NULL. */
const char *test_corpus_path(void);
/* Writes a small deterministic text corpus (bytes of `alphabet`) of n bytes; returns its path. */
const char *write_test_corpus(const char *name, size_t n, const char *alphabet, uint64_t seed);

/* Thread count for a suite: suites of tiny models run on one thread (group setup), since their
 * OpenMP barriers cost more than their arithmetic on a busy 2-core machine; tests that compare
 * thread counts call use_threads themselves. */
void use_threads(int n);
int setup_one_thread(void **state);   /* cmocka group setup: remember the default, use 1 */
int restore_threads(void **state);    /* cmocka group teardown: back to the default */
int default_thread_count(void);       /* the count before setup_one_thread */

/* Stream corrections (README: Correction layers) as the train method sizes them: linear at hidden
 * 0, else MLP. */
/* A 16-wide GPT of L blocks over corpus's vocabulary (ctx 16, 2 heads), its seeded weights times 5
 * so that quantization hurts it measurably. */
void corpus_model(GPT *m, const Corpus *corpus, int L, int max_batch, uint64_t seed);
int stream_corrections(Corrections *c, const GPTConfig *cfg, int every, int hidden, int max_rows, uint64_t seed);

/* A generated corpus with structure (words of a small lexicon in sentences, 300,000 bytes), so a
 * small model trained on it has weights with real structure; written once per process. */
const char *lexicon_corpus_path(void);
/* The real corpus when found, else lexicon_corpus_path's. */
const char *learnable_corpus_path(void);
/* steps of AdamW (warm-up 10, lr 1e-2 cosine to 1e-3, no decay) on c's train split, batches of
 * m->max_batch windows of ctx drawn by seed. */
void train_briefly(GPT *m, const Corpus *c, int steps, uint64_t seed);

/* Skips the running test and says why, as one line "skip - TEST: WHY" on stdout: tests/run_all.sh
 * lists those lines and fails a suite that skips a test without one. */
void skip_reason(const char *test, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define skip_because(...) do { skip_reason(__func__, __VA_ARGS__); skip(); } while (0)

/* The validation split made unreadable: the corpus's ids moved into a mapping where the
 * validation part starts a page, and those pages protected, so a read faults the test;
 * readable_validation undoes it (the corpus's own ids back). */
typedef struct {
    unsigned char *base;
    size_t lead, total;
    int32_t *own;
} GuardedSplit;
void unreadable_validation(Corpus *c, GuardedSplit *g);
void readable_validation(Corpus *c, GuardedSplit *g);

#define assert_close(a, b, tol) \
    do { double _a = (a), _b = (b); if (!(fabs(_a - _b) <= (tol))) fail_msg("%s = %.9g, %s = %.9g, tolerance %g", #a, _a, #b, _b, (double)(tol)); } while (0)

#endif
