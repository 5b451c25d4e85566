/* fuzz_safetensors: libFuzzer harness for checkpoints — st_parse on the bytes, then everything
 * load_checkpoint does (config, vocabulary, every tensor, quantization scheme, corrections). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* exactly size bytes, no NUL after them: an over-read is caught by ASan */
    uint8_t *file = malloc(size ? size : 1);
    if (!file) return 0;
    memcpy(file, data, size);
    SafeTensors st;
    if (st_parse(&st, file, size, "fuzz.safetensors") != 0) return 0;
    /* a legal model of long context and many layers needs GiBs of activations even at batch 1:
     * the user's request (load_checkpoint_from refuses what exceeds the machine), not a fault */
    GPTConfig cfg;
    Vocab vocab;
    if (gpt_config_from(&cfg, &vocab, &st) == 0 && gpt_memory_bytes(&cfg, 1, 0) > 1e9) {
        st_free(&st);
        return 0;
    }
    LoadedModel lm;
    if (load_checkpoint_from(&lm, &st, 1) == 0) loaded_model_free(&lm);
    st_free(&st);
    return 0;
}
