/* test_fuzz_regressions: every input a fuzz harness (fuzz/fuzz_*.c) once crashed on (or review of
 * its entry point found), saved under tests/fuzz-regressions/HARNESS/, fed through the same entry
 * point: each must now be refused cleanly (-1 and a message), under the sanitizers too (SANITIZE=1).
 * Every harness's directory must exist and hold inputs: a test over nothing would pass. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/model_file.h"
#include "nn/data.h"
#include "sweep/sweep.h"

#define REGRESSIONS "tests/fuzz-regressions"

/* Calls feed(path, bytes, size) for every file of REGRESSIONS/harness (sorted); returns the count. */
typedef void (*FeedFn)(const char *path, const uint8_t *data, size_t size);
static int for_each_input(const char *harness, FeedFn feed) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", REGRESSIONS, harness);
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    /* a harness whose directory is gone would pass on nothing: its regressions must be there */
    if (n < 0) fail_msg("%s: %s (run from the repository root)", dir, strerror(errno));
    int count = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char path[4096 + 256];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
            size_t size;
            uint8_t *data = read_file(path, &size);
            if (!data) fail_msg("%s (run from the repository root)", qc_last_error());
            qc_clear_error();
            feed(path, data, size);
            free(data);
            count++;
        }
        free(names[i]);
    }
    free(names);
    if (count == 0) fail_msg("%s holds no inputs", dir);
    return count;
}

/* Some inputs once made a loader allocate GiBs before refusing them. Outside ASan (which reserves
 * terabytes of address space) the address space is capped 1 GiB above what the process holds while
 * inputs are fed, so such an allocation fails and shows as "out of memory" instead of the refusal. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
static struct rlimit saved_limit;
#endif
static int cap_address_space(void **state) {
    (void)state;
#ifndef UNDER_ASAN
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1) pages = -1;
    if (f) fclose(f);
    if (getrlimit(RLIMIT_AS, &saved_limit) != 0) return -1;
    if (pages < 0) return 0;
    struct rlimit cap = saved_limit;
    rlim_t want = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)1 << 30);
    if (cap.rlim_max == RLIM_INFINITY || want < cap.rlim_max) cap.rlim_cur = want;
    if (setrlimit(RLIMIT_AS, &cap) != 0) return -1;
#endif
    return 0;
}
static int uncap_address_space(void **state) {
    (void)state;
#ifndef UNDER_ASAN
    if (setrlimit(RLIMIT_AS, &saved_limit) != 0) return -1;
#endif
    return 0;
}

/* The input was refused with a message (naming the input where the entry point takes a name). */
static void expect_refused(const char *path, int rc, int names_input) {
    if (rc != -1) fail_msg("%s: accepted (rc %d), expected a clean refusal", path, rc);
    const char *msg = qc_last_error();
    if (strcmp(msg, "unknown error") == 0) fail_msg("%s: refused without a message", path);
    if (strstr(msg, "out of memory")) fail_msg("%s: allocated GiBs before refusing: %s", path, msg);
    if (names_input && !strstr(msg, path)) fail_msg("%s: the message '%s' does not name the input", path, msg);
}

/* Copies into exactly size malloc'd bytes (no NUL after them), as the harnesses do. */
static uint8_t *exact_copy(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    assert_non_null(copy);
    memcpy(copy, data, size);
    return copy;
}

/* ---- fuzz_safetensors: st_parse, then load_checkpoint_from ---- */

static void feed_safetensors(const char *path, const uint8_t *data, size_t size) {
    SafeTensors st;
    int rc = st_parse(&st, exact_copy(data, size), size, path);
    if (rc == 0) {
        LoadedModel lm;
        rc = load_checkpoint_from(&lm, &st, 1);
        if (rc == 0) loaded_model_free(&lm);
        st_free(&st);
    }
    expect_refused(path, rc, 1);
}

/* ---- fuzz_corpus: "vocabulary NUL text" or text alone, through corpus_from_bytes ---- */

static void feed_corpus(const char *path, const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    Vocab vocab, *given = NULL;
    size_t skip = 0;
    if (nul) {
        size_t len = (size_t)(nul - data);
        char *text = malloc(len + 1);
        assert_non_null(text);
        memcpy(text, data, len);
        text[len] = 0;
        int rc = vocab_from_string(&vocab, text);
        free(text);
        if (rc != 0) { expect_refused(path, rc, 0); return; }
        given = &vocab;
        skip = len + 1;
    }
    Corpus c;
    int rc = corpus_from_bytes(&c, exact_copy(data + skip, size - skip), size - skip, path, given);
    if (rc == 0) corpus_free(&c);
    expect_refused(path, rc, 1);
}

/* ---- fuzz_grid: sweep_parse_grid over the quick preset, then the config check ---- */

static void feed_grid(const char *path, const uint8_t *data, size_t size) {
    SweepConfig cfg;
    sweep_preset(&cfg, "quick");
    char *text = (char *)exact_copy(data, size);
    int rc = sweep_parse_grid(&cfg, text, size, path);
    free(text);
    if (rc == 0) {
        rc = sweep_config_check(&cfg);
        expect_refused(path, rc, 0);
        return;
    }
    expect_refused(path, rc, 1);
}

/* ---- fuzz_record: sweep_parse_record ---- */

static void feed_record(const char *path, const uint8_t *data, size_t size) {
    char *text = (char *)exact_copy(data, size);
    char why[128] = "";
    cJSON *record = sweep_parse_record(text, size, why, sizeof why);
    free(text);
    if (record) {
        cJSON_Delete(record);
        fail_msg("%s: accepted, expected a refusal", path);
    }
    if (!why[0]) fail_msg("%s: refused without a reason", path);
}

/* one test per harness: each fails when its directory is missing or empty */
static void test_safetensors_regressions(void **state) { (void)state; for_each_input("safetensors", feed_safetensors); }
static void test_corpus_regressions(void **state) { (void)state; for_each_input("corpus", feed_corpus); }
static void test_grid_regressions(void **state) { (void)state; for_each_input("grid", feed_grid); }
static void test_record_regressions(void **state) { (void)state; for_each_input("record", feed_record); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_safetensors_regressions, cap_address_space, uncap_address_space),
        cmocka_unit_test(test_corpus_regressions),
        cmocka_unit_test(test_grid_regressions),
        cmocka_unit_test(test_record_regressions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
