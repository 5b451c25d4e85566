/* fuzz_corpus: libFuzzer harness for the corpus and the vocabulary string. An input with a NUL
 * byte is "vocabulary string NUL corpus" (the corpus mapped through that vocabulary, as eval
 * does with a checkpoint's); without one it is a corpus that builds its own vocabulary. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    Vocab vocab, *given = NULL;
    size_t skip = 0;
    if (nul) {
        size_t len = (size_t)(nul - data);
        char *text = malloc(len + 1);
        if (!text) return 0;
        memcpy(text, data, len);
        text[len] = 0;
        int rc = vocab_from_string(&vocab, text);
        free(text);
        if (rc != 0) return 0;
        given = &vocab;
        skip = len + 1;
    }
    size_t n = size - skip;
    uint8_t *text = malloc(n ? n : 1);
    if (!text) return 0;
    memcpy(text, data + skip, n);
    Corpus c;
    if (corpus_from_bytes(&c, text, n, "fuzz.txt", given) != 0) return 0;
    /* the vocabulary survives its metadata string exactly (how checkpoints store it) */
    char meta[1024];
    Vocab back;
    if (vocab_to_string(&c.vocab, meta, sizeof meta) != 0 || vocab_from_string(&back, meta) != 0 ||
        back.size != c.vocab.size || memcmp(back.bytes, c.vocab.bytes, (size_t)back.size) != 0)
        abort();
    if (c.n_train > 9) {
        int32_t inputs[16], targets[16];
        Rng rng;
        rng_seed(&rng, 1);
        sample_windows(c.ids, c.n_train, 2, 8, &rng, inputs, targets);
        for (int i = 0; i < 16; i++)
            if (inputs[i] < 0 || inputs[i] >= c.vocab.size || targets[i] < 0 || targets[i] >= c.vocab.size) abort();
    }
    corpus_free(&c);
    return 0;
}
