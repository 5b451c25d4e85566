/* fuzz_record: libFuzzer harness for sweep run records (runs/<id>.json), as finished_runs and
 * sweep_write_summary read them: sweep_parse_record accepts or names what is wrong. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sweep/sweep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* exactly size bytes, no NUL after them: an over-read is caught by ASan */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    char why[128] = "";
    cJSON *record = sweep_parse_record(text, size, why, sizeof why);
    free(text);
    if (!record && (!why[0] || !memchr(why, 0, sizeof why))) abort(); /* a refusal always says why */
    cJSON_Delete(record);
    return 0;
}
