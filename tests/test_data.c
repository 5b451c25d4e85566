/* test_data: the corpus layer — SHA-256 against the FIPS 180-4 vectors, the byte vocabulary,
 * the 90/10 split, the vocabulary string, load errors, the window sampler and the search order. */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/data.h"

/* ---- helpers ---- */

static void expect_sha256(const void *data, size_t n, const char *want) {
    char got[65];
    memset(got, 'x', sizeof got);
    sha256_hex(data, n, got);
    if (strlen(got) != 64 || strcmp(got, want) != 0) fail_msg("sha256 of %zu bytes: got %.64s, want %s", n, got, want);
}

static void expect_error_contains(const char *needle) {
    const char *msg = qc_last_error();
    if (!strstr(msg, needle)) fail_msg("error message '%s' does not contain '%s'", msg, needle);
}

/* Writes exactly these bytes to tmpdir/name and returns the path (static buffer per slot). */
static const char *write_bytes(const char *name, const void *data, size_t n) {
    static char paths[8][4096];
    static int slot;
    char *path = paths[slot++ % 8];
    snprintf(path, 4096, "%s/%s", test_tmpdir(), name);
    assert_int_equal(write_file_atomic(path, data, n), 0);
    return path;
}

static void vocab_of(Vocab *v, const char *chars) {
    vocab_from_bytes(v, (const uint8_t *)chars, (int)strlen(chars));
}

/* ---- SHA-256 ---- */

static void test_sha256_nist_vectors(void **state) {
    (void)state;
    expect_sha256("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect_sha256("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_sha256(m448, strlen(m448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    expect_sha256(m896, strlen(m896), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    size_t million = 1000000;
    char *a = malloc(million);
    assert_non_null(a);
    memset(a, 'a', million);
    expect_sha256(a, million, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* Lengths around the 55/56/64-byte padding boundaries (one vs two final blocks); the expected
 * digests come from an independent implementation (Python's hashlib). */
static void test_sha256_padding_boundaries(void **state) {
    (void)state;
    static const struct { size_t n; const char *hex; } cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
        {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
    };
    char buf[128];
    memset(buf, 'a', sizeof buf);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) expect_sha256(buf, cases[i].n, cases[i].hex);
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    expect_sha256(all, 256, "40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880");
}

static void test_sha256_real_corpus(void **state) {
    (void)state;
    const char *path = test_corpus_path();
    if (!path) skip_because("the tiny Shakespeare corpus is not found (make data fetches it)");
    size_t n = 0;
    uint8_t *text = read_file(path, &n);
    assert_non_null(text);
    assert_int_equal(n, SHAKESPEARE_SIZE);
    expect_sha256(text, n, SHAKESPEARE_SHA256);
    free(text);
}

/* ---- vocabulary and split ---- */

static void test_vocab_from_bytes_sorted_complete(void **state) {
    (void)state;
    const uint8_t present[] = {'z', 'a', 0xFF, '\n', 'a', 0x80, 'm', 'z', 1};
    Vocab v;
    vocab_from_bytes(&v, present, (int)sizeof present);
    assert_int_equal(v.size, 7);
    const uint8_t want[] = {1, '\n', 'a', 'm', 'z', 0x80, 0xFF};
    assert_memory_equal(v.bytes, want, sizeof want);
    int mapped = 0;
    for (int b = 0; b < 256; b++) {
        if (v.id_of[b] >= 0) {
            mapped++;
            assert_int_equal(v.bytes[v.id_of[b]], b);
        }
    }
    assert_int_equal(mapped, v.size);
    for (int i = 0; i < v.size; i++) assert_int_equal(v.id_of[v.bytes[i]], i);
    assert_int_equal(v.id_of['b'], -1);
    assert_int_equal(v.id_of[0], -1);
}

static void test_corpus_vocab_built_from_text(void **state) {
    (void)state;
    const char *text = "hello, world\nHELLO";
    const char *path = write_bytes("vocab.txt", text, strlen(text));
    Corpus c;
    assert_int_equal(corpus_load(&c, path, NULL), 0);
    /* sorted distinct bytes: \n space , H E L O d e h l o r w */
    const char *want = "\n ,EHLOdehlorw";
    assert_int_equal(c.vocab.size, (int)strlen(want));
    assert_memory_equal(c.vocab.bytes, want, strlen(want));
    assert_int_equal(c.n, strlen(text));
    for (size_t i = 0; i < c.n; i++) assert_int_equal(c.vocab.bytes[c.ids[i]], (uint8_t)text[i]);
    corpus_free(&c);
}

static void test_real_corpus_vocab_and_split(void **state) {
    (void)state;
    const char *path = test_corpus_path();
    if (!path) skip_because("the tiny Shakespeare corpus is not found (make data fetches it)");
    Corpus c;
    assert_int_equal(corpus_load(&c, path, NULL), 0);
    assert_int_equal(c.n, SHAKESPEARE_SIZE);
    assert_int_equal(c.vocab.size, 65);
    const char *expect_chars = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    assert_int_equal(strlen(expect_chars), 65);
    assert_memory_equal(c.vocab.bytes, expect_chars, 65);
    assert_int_equal(c.n_train, 1003854); /* floor(0.9 * 1115394) */
    assert_int_equal(c.n_val, SHAKESPEARE_SIZE - 1003854);
    corpus_free(&c);
}

static void test_split_is_floor_ninety_percent(void **state) {
    (void)state;
    const size_t sizes[] = {2, 3, 9, 10, 11, 19, 20, 21, 99, 100, 101, 1000, 1001, 12345, 99999, 100000, 1000003};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        const char *path = write_test_corpus("split.txt", n, "ab\n", n);
        Corpus c;
        assert_int_equal(corpus_load(&c, path, NULL), 0);
        size_t want = n * 9 / 10; /* exact integer floor(0.9 n) */
        if (c.n_train != want || c.n_val != n - want)
            fail_msg("n = %zu: split %zu + %zu, want %zu + %zu", n, c.n_train, c.n_val, want, n - want);
        corpus_free(&c);
    }
}

/* ---- vocabulary string ---- */

static void test_vocab_string_round_trip(void **state) {
    (void)state;
    /* every byte but NUL: ASCII, control characters and the high half */
    uint8_t all[255];
    for (int i = 0; i < 255; i++) all[i] = (uint8_t)(i + 1);
    Vocab v, back;
    vocab_from_bytes(&v, all, 255);
    char s[1024];
    assert_int_equal(vocab_to_string(&v, s, sizeof s), 0);
    assert_int_equal(strlen(s), 127 + 2 * 128); /* bytes >= 0x80 take two UTF-8 bytes */
    assert_int_equal(vocab_from_string(&back, s), 0);
    assert_int_equal(back.size, v.size);
    assert_memory_equal(back.bytes, v.bytes, (size_t)v.size);
    assert_memory_equal(back.id_of, v.id_of, sizeof v.id_of);

    /* Latin-1 code points as UTF-8: byte 0xE9 -> U+00E9 -> C3 A9; 0x80 -> C2 80 */
    Vocab w;
    const uint8_t few[] = {'\n', 'a', 0x80, 0xE9, 0xFF};
    vocab_from_bytes(&w, few, 5);
    assert_int_equal(vocab_to_string(&w, s, sizeof s), 0);
    assert_string_equal(s, "\na\xC2\x80\xC3\xA9\xC3\xBF");
    assert_int_equal(vocab_from_string(&back, s), 0);
    assert_int_equal(back.size, 5);
    assert_memory_equal(back.bytes, few, 5);

    /* a one-character vocabulary */
    vocab_of(&w, "x");
    assert_int_equal(vocab_to_string(&w, s, sizeof s), 0);
    assert_string_equal(s, "x");
}

static void test_vocab_string_errors(void **state) {
    (void)state;
    Vocab v;
    qc_clear_error();
    assert_int_not_equal(vocab_from_string(&v, ""), 0);
    expect_error_contains("empty");
    assert_int_not_equal(vocab_from_string(&v, "ba"), 0);
    expect_error_contains("sorted");
    assert_int_not_equal(vocab_from_string(&v, "aab"), 0);
    expect_error_contains("repeats");
    assert_int_not_equal(vocab_from_string(&v, "a\xE2\x82\xAC"), 0); /* U+20AC: not a byte */
    expect_error_contains("U+00FF");
    assert_int_not_equal(vocab_from_string(&v, "a\xC3"), 0); /* truncated sequence */
    assert_int_not_equal(vocab_from_string(&v, "a\xC3\x28"), 0); /* bad continuation */

    /* output buffer too small is an error, never an overflow */
    vocab_of(&v, "abcdef");
    char small[4];
    assert_int_not_equal(vocab_to_string(&v, small, sizeof small), 0);
}

/* ---- corpus_load errors ---- */

static void test_corpus_outside_vocab_names_char_and_file(void **state) {
    (void)state;
    Vocab v;
    vocab_of(&v, "ab \n");
    const char *text = "ab ba\nab z ab\n";
    const char *path = write_bytes("outside.txt", text, strlen(text));
    Corpus c;
    qc_clear_error();
    assert_int_not_equal(corpus_load(&c, path, &v), 0);
    expect_error_contains(path);
    expect_error_contains("'z'");
    assert_null(c.text);
    assert_null(c.ids);

    /* a non-printable byte is named by its value */
    const char high[] = "ab\xE9 a";
    path = write_bytes("outside-high.txt", high, strlen(high));
    assert_int_not_equal(corpus_load(&c, path, &v), 0);
    expect_error_contains(path);
    expect_error_contains("233");

    /* the same vocabulary accepts a text inside it, and keeps the given ids */
    const char *ok_text = "b a\nab";
    path = write_bytes("inside.txt", ok_text, strlen(ok_text));
    assert_int_equal(corpus_load(&c, path, &v), 0);
    assert_int_equal(c.vocab.size, 4);
    for (size_t i = 0; i < c.n; i++) assert_int_equal(c.ids[i], v.id_of[(uint8_t)ok_text[i]]);
    corpus_free(&c);
}

static void test_corpus_empty_nul_missing(void **state) {
    (void)state;
    Corpus c;
    const char *path = write_bytes("empty.txt", "", 0);
    qc_clear_error();
    assert_int_not_equal(corpus_load(&c, path, NULL), 0);
    expect_error_contains(path);
    assert_null(c.text);

    path = write_bytes("one.txt", "a", 1);
    assert_int_not_equal(corpus_load(&c, path, NULL), 0);
    expect_error_contains(path);

    const char nul[] = {'a', 'b', 0, 'c', '\n'};
    path = write_bytes("nul.txt", nul, sizeof nul);
    qc_clear_error();
    assert_int_not_equal(corpus_load(&c, path, NULL), 0);
    expect_error_contains(path);
    expect_error_contains("NUL");

    char missing[4096];
    snprintf(missing, sizeof missing, "%s/does-not-exist.txt", test_tmpdir());
    assert_int_not_equal(corpus_load(&c, missing, NULL), 0);
    expect_error_contains(missing);

    /* a directory is not a corpus */
    assert_int_not_equal(corpus_load(&c, test_tmpdir(), NULL), 0);
    expect_error_contains(test_tmpdir());
}

/* ---- window sampler ---- */

static void test_sample_windows_shift_bounds_determinism(void **state) {
    (void)state;
    enum { N = 1000, B = 64, T = 16 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = i; /* ids equal their position: windows are readable */
    int32_t in1[B * T], tg1[B * T], in2[B * T], tg2[B * T];
    const size_t limits[] = {N, 500, T + 1}; /* the whole array, a "train split", the smallest */
    for (size_t li = 0; li < sizeof limits / sizeof *limits; li++) {
        size_t n = limits[li];
        Rng rng;
        rng_seed(&rng, 42);
        sample_windows(ids, n, B, T, &rng, in1, tg1);
        for (int b = 0; b < B; b++) {
            int32_t start = in1[b * T];
            assert_true(start >= 0);
            for (int t = 0; t < T; t++) {
                assert_int_equal(in1[b * T + t], start + t);    /* contiguous */
                assert_int_equal(tg1[b * T + t], start + t + 1); /* targets = inputs shifted by one */
            }
            assert_true((size_t)tg1[b * T + T - 1] < n); /* the last target lies inside [0, n) */
        }
        if (n == T + 1)
            for (int b = 0; b < B; b++) assert_int_equal(in1[b * T], 0);
        /* same seed, same windows */
        rng_seed(&rng, 42);
        sample_windows(ids, n, B, T, &rng, in2, tg2);
        assert_memory_equal(in1, in2, sizeof in1);
        assert_memory_equal(tg1, tg2, sizeof tg1);
    }
    /* another seed, other windows; and over many draws every start is reachable */
    Rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 43);
    sample_windows(ids, N, B, T, &a, in1, tg1);
    sample_windows(ids, N, B, T, &b, in2, tg2);
    assert_memory_not_equal(in1, in2, sizeof in1);
    enum { SMALL = 40 };
    int seen[SMALL] = {0};
    Rng r;
    rng_seed(&r, 7);
    for (int k = 0; k < 200; k++) {
        sample_windows(ids, SMALL, B, T, &r, in1, tg1);
        for (int i = 0; i < B; i++) seen[in1[i * T]] = 1;
    }
    for (int s = 0; s < SMALL - T; s++)
        if (!seen[s]) fail_msg("window start %d never drawn (n %d, T %d)", s, SMALL, T);
}

/* ---- search order ---- */

static char saved_cwd[PATH_MAX];

static int save_cwd_env(void **state) {
    (void)state;
    if (!getcwd(saved_cwd, sizeof saved_cwd)) return -1;
    return 0;
}

static int restore_cwd_env(void **state) {
    (void)state;
    unsetenv("QCORR_DATA");
    return chdir(saved_cwd);
}

/* out = root + suffix, failing the test rather than truncating */
static void path_under(char *out, size_t size, const char *root, const char *suffix) {
    int n = snprintf(out, size, "%s%s", root, suffix);
    if (n < 0 || (size_t)n >= size) fail_msg("path too long: %s%s", root, suffix);
}

static void make_dir(const char *path) {
    if (mkdir(path, 0755) != 0) fail_msg("mkdir %s failed", path);
}

static void test_corpus_find_search_order(void **state) {
    (void)state;
    /* root/shared/data/tinyshakespeare.txt and root/main/data/tinyshakespeare.txt; run in root/main */
    char root[4096], p[4096];
    path_under(root, sizeof root, test_tmpdir(), "/find");
    make_dir(root);
    path_under(p, sizeof p, root, "/shared"); make_dir(p);
    path_under(p, sizeof p, root, "/shared/data"); make_dir(p);
    path_under(p, sizeof p, root, "/main"); make_dir(p);
    path_under(p, sizeof p, root, "/main/data"); make_dir(p);
    path_under(p, sizeof p, root, "/shared/data/tinyshakespeare.txt");
    assert_int_equal(write_file_atomic(p, "shared\n", 7), 0);
    path_under(p, sizeof p, root, "/main/data/tinyshakespeare.txt");
    assert_int_equal(write_file_atomic(p, "local\n", 6), 0);
    path_under(p, sizeof p, root, "/main");
    assert_int_equal(chdir(p), 0);

    char out[4096];
    /* 1. --data wins over everything, even when it does not exist (loading then names it) */
    setenv("QCORR_DATA", "/env/corpus.txt", 1);
    assert_int_equal(corpus_find("/flag/corpus.txt", out, sizeof out), 0);
    assert_string_equal(out, "/flag/corpus.txt");
    /* 2. then $QCORR_DATA */
    assert_int_equal(corpus_find(NULL, out, sizeof out), 0);
    assert_string_equal(out, "/env/corpus.txt");
    /* an empty $QCORR_DATA counts as unset */
    setenv("QCORR_DATA", "", 1);
    assert_int_equal(corpus_find(NULL, out, sizeof out), 0);
    assert_string_equal(out, "data/tinyshakespeare.txt");
    /* 3. then data/ */
    unsetenv("QCORR_DATA");
    assert_int_equal(corpus_find(NULL, out, sizeof out), 0);
    assert_string_equal(out, "data/tinyshakespeare.txt");
    /* 4. then ../shared/data/tinyshakespeare.txt */
    assert_int_equal(unlink("data/tinyshakespeare.txt"), 0);
    assert_int_equal(corpus_find(NULL, out, sizeof out), 0);
    assert_string_equal(out, "../shared/data/tinyshakespeare.txt");
    Corpus c;
    assert_int_equal(corpus_load(&c, out, NULL), 0);
    assert_int_equal(c.n, 7);
    corpus_free(&c);
    /* 5. none: an error that says how to provide one (the CLI adds its --data) */
    path_under(p, sizeof p, root, "/shared/data/tinyshakespeare.txt");
    assert_int_equal(unlink(p), 0);
    qc_clear_error();
    assert_int_not_equal(corpus_find(NULL, out, sizeof out), 0);
    expect_error_contains("QCORR_DATA");
    expect_error_contains("make data");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_nist_vectors),
        cmocka_unit_test(test_sha256_padding_boundaries),
        cmocka_unit_test(test_sha256_real_corpus),
        cmocka_unit_test(test_vocab_from_bytes_sorted_complete),
        cmocka_unit_test(test_corpus_vocab_built_from_text),
        cmocka_unit_test(test_real_corpus_vocab_and_split),
        cmocka_unit_test(test_split_is_floor_ninety_percent),
        cmocka_unit_test(test_vocab_string_round_trip),
        cmocka_unit_test(test_vocab_string_errors),
        cmocka_unit_test(test_corpus_outside_vocab_names_char_and_file),
        cmocka_unit_test(test_corpus_empty_nul_missing),
        cmocka_unit_test(test_sample_windows_shift_bounds_determinism),
        cmocka_unit_test_setup_teardown(test_corpus_find_search_order, save_cwd_env, restore_cwd_env),
    };
    return cmocka_run_group_tests_name("data", tests, NULL, NULL);
}
