/* sample: text generation from any checkpoint, one character at a time with a key/value cache,
 * so each new character costs one row of compute, not a re-run of the whole context. */
#ifndef QCORR_SAMPLE_H
#define QCORR_SAMPLE_H

#include <stdio.h>

#include "nn/data.h"
#include "nn/model.h"

typedef struct {
    GPT *model;
    const ModelHook *hook;
    float *key_cache, *value_cache; /* (L, ctx, C) each */
    float *x, *ln, *qkv, *atty, *fch, *fch_gelu, *scores, *logits, *stats;
    int pos;                        /* tokens in the cache */
} SampleState;

int sample_state_init(SampleState *s, GPT *m, const ModelHook *hook);
void sample_state_free(SampleState *s);
/* Appends one token at the next position and returns that position's logits (V). */
const float *sample_step(SampleState *s, int token);

/* Generates n_chars after the prompt (every prompt byte must be in the vocabulary). Past the
 * context the cache restarts from the last ctx/2 characters. temperature 0: greedy. A write to
 * out that fails stops the generation at once (-1, the reason in the error). */
int sample_text(GPT *m, const Vocab *v, const ModelHook *hook, const char *prompt, int n_chars, float temperature,
                uint64_t seed, FILE *out);

#endif
