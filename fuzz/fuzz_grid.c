/* fuzz_grid: libFuzzer harness for sweep grid files — sweep_parse_grid over the quick preset,
 * then what `qcorr sweep --grid` does next: the config check, the manifest and the run list. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sweep/sweep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* exactly size bytes, no NUL after them: an over-read is caught by ASan */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    SweepConfig cfg;
    sweep_preset(&cfg, "quick");
    int rc = sweep_parse_grid(&cfg, text, size, "fuzz.json");
    free(text);
    if (rc != 0 || sweep_config_check(&cfg) != 0) return 0;
    free(sweep_manifest_json(&cfg, "qcorr sweep --grid fuzz.json"));
    /* a legal grid of 32 values on every axis has 34M runs (GiBs of run list): that is the
     * user's own request, not a parsing fault, so only modest grids are enumerated here */
    double runs = (double)cfg.n_seeds * cfg.n_sizes * (cfg.n_bits + 1) * cfg.n_every * cfg.n_hidden * 2;
    if (runs <= 100000) {
        int n_runs, n_groups;
        free(sweep_enumerate(&cfg, &n_runs, &n_groups));
    }
    return 0;
}
