/* test_messages: library errors name the values at fault, never a command-line flag — the same
 * functions serve grid files, presets and other callers, and only the CLI knows which flag (if
 * any) a value came from: it adds the flag where it parses one. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/data.h"
#include "nn/train.h"
#include "sweep/sweep.h"

/* The last error names every needle and no flag ("--x"). */
static void expect_message(const char *what, const char *const *needles, int n) {
    const char *msg = qc_last_error();
    if (strstr(msg, "--")) fail_msg("%s: the library names a flag: %s", what, msg);
    for (int i = 0; i < n; i++)
        if (!strstr(msg, needles[i])) fail_msg("%s: '%s' does not name %s", what, msg, needles[i]);
}

static void test_sweep_messages_name_values(void **state) {
    (void)state;
    SweepConfig cfg;
    assert_int_not_equal(sweep_preset(&cfg, "nope"), 0);
    expect_message("unknown preset", (const char *[]){"nope", "quick", "seed243"}, 3);

    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    cfg.bits[0] = 9;
    assert_int_not_equal(sweep_config_check(&cfg), 0);
    expect_message("bits outside 2..8", (const char *[]){"bits", "9", "2..8"}, 3);

    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    assert_int_equal(parse_granularity_list("--granularities", "group:48", &cfg), 0);
    assert_int_not_equal(sweep_config_check(&cfg), 0);
    expect_message("group size not dividing d_model", (const char *[]){"group:48", "d_model"}, 2);

    assert_int_equal(sweep_preset(&cfg, "quick"), 0);
    cfg.n_methods = 0;
    assert_int_not_equal(sweep_config_check(&cfg), 0);
    expect_message("no method", (const char *[]){"no correction method"}, 1);
}

/* No corpus anywhere: the message says where it looked and what to set, in the library's terms
 * (the CLI adds its --data). */
static void test_no_corpus_message_names_the_search(void **state) {
    (void)state;
    char cwd[4096], dir[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(dir, sizeof dir, "%s/nowhere", test_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(chdir(dir), 0);
    const char *env = getenv("QCORR_DATA");
    char *saved = env ? strdup(env) : NULL;
    unsetenv("QCORR_DATA");
    char out[4096];
    int rc = corpus_find(NULL, out, sizeof out);
    if (saved) setenv("QCORR_DATA", saved, 1);
    free(saved);
    assert_int_equal(chdir(cwd), 0);
    assert_int_not_equal(rc, 0);
    expect_message("no corpus", (const char *[]){"QCORR_DATA", "data/tinyshakespeare.txt", "../shared/data/tinyshakespeare.txt"}, 3);
}

/* A learning rate that blows the weights up: the message gives the rate, not the flag. */
static void test_divergence_message_names_the_rate(void **state) {
    (void)state;
    const char *path = write_test_corpus("messages.txt", 4000, "abcdefghijk", 7);
    Corpus c;
    assert_int_equal(corpus_load(&c, path, NULL), 0);
    GPT m;
    small_gpt(&m, 1, 8, 4, 3);
    assert_int_equal(m.config.vocab_size, c.vocab.size);
    TrainOptions o;
    train_options_default(&o);
    o.batch = 4;
    o.steps = 20;
    o.lr = 1e30f;
    o.quiet = 1;
    TrainResult r;
    qc_clear_error();
    assert_int_not_equal(train_model(&m, &c, &o, &r), 0);
    expect_message("divergence", (const char *[]){"diverged", "learning rate", "1e+30"}, 3);
    gpt_free(&m);
    corpus_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_messages_name_values),
        cmocka_unit_test(test_no_corpus_message_names_the_search),
        cmocka_unit_test(test_divergence_message_names_the_rate),
    };
    return cmocka_run_group_tests_name("messages", tests, setup_one_thread, restore_threads);
}
