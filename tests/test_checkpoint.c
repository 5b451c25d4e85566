/* test_checkpoint: safetensors I/O — a bit-exact gpt_save/gpt_load round trip, a header any
 * safetensors reader accepts, and a clear refusal (file and tensor named) of every corrupt file. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"

/* ---- helpers: a reference checkpoint and surgery on its header ---- */

/* 11 bytes, matching tiny_model's vocab_size: ASCII, punctuation and the high half */
static const uint8_t VOCAB_BYTES[11] = {'\n', ' ', '!', 'a', 'b', 'z', 0x80, 0xC3, 0xE9, 0xFE, 0xFF};

static const char *tmp_path(const char *name) {
    static char paths[16][4096];
    static int slot;
    char *p = paths[slot++ % 16];
    int n = snprintf(p, 4096, "%s/%s", test_tmpdir(), name);
    if (n < 0 || n >= 4096) fail_msg("path too long");
    return p;
}

/* Saves tiny_model(seed) with VOCAB_BYTES as `name`; the model stays in *m for comparison. */
static const char *save_reference(GPT *m, Vocab *v, const char *name, uint64_t seed) {
    tiny_model(m, 1, seed);
    vocab_from_bytes(v, VOCAB_BYTES, (int)sizeof VOCAB_BYTES);
    const char *path = tmp_path(name);
    if (gpt_save(m, v, path, NULL, 0, NULL, 0) != 0) fail_msg("gpt_save: %s", qc_last_error());
    return path;
}

typedef struct {
    uint8_t *file;
    size_t size;
    uint64_t header_len;
    cJSON *header;        /* parsed JSON header, ours to edit */
    const uint8_t *data;  /* the byte buffer after the header */
    size_t data_size;
} RawCheckpoint;

static void raw_read(RawCheckpoint *c, const char *path) {
    memset(c, 0, sizeof *c);
    c->file = read_file(path, &c->size);
    if (!c->file) fail_msg("read %s: %s", path, qc_last_error());
    assert_true(c->size >= 8);
    for (int i = 0; i < 8; i++) c->header_len |= (uint64_t)c->file[i] << (8 * i);
    assert_true(c->header_len <= c->size - 8);
    c->header = cJSON_ParseWithLength((const char *)c->file + 8, (size_t)c->header_len);
    assert_non_null(c->header);
    c->data = c->file + 8 + c->header_len;
    c->data_size = c->size - 8 - (size_t)c->header_len;
}

static void raw_free(RawCheckpoint *c) {
    cJSON_Delete(c->header);
    free(c->file);
    memset(c, 0, sizeof *c);
}

/* Writes a safetensors file: length, the JSON of `header` padded with spaces to a multiple of 8,
 * then data. Returns the path. */
static const char *write_checkpoint(const char *name, const cJSON *header, const uint8_t *data, size_t data_size) {
    char *json = cJSON_PrintUnformatted(header);
    assert_non_null(json);
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    uint8_t *buf = malloc(8 + padded + data_size + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, json, len);
    memset(buf + 8 + len, ' ', padded - len);
    if (data_size) memcpy(buf + 8 + padded, data, data_size);
    const char *path = tmp_path(name);
    assert_int_equal(write_file_atomic(path, buf, 8 + padded + data_size), 0);
    free(buf);
    cJSON_free(json);
    return path;
}

static const char *write_raw(const char *name, const uint8_t *bytes, size_t n) {
    const char *path = tmp_path(name);
    assert_int_equal(write_file_atomic(path, bytes, n), 0);
    return path;
}

static cJSON *entry(cJSON *header, const char *tensor) {
    cJSON *e = cJSON_GetObjectItemCaseSensitive(header, tensor);
    if (!e) fail_msg("reference checkpoint lacks tensor %s", tensor);
    return e;
}

static void set_shape(cJSON *header, const char *tensor, const int *dims, int ndim) {
    cJSON *shape = cJSON_CreateArray();
    for (int i = 0; i < ndim; i++) cJSON_AddItemToArray(shape, cJSON_CreateNumber(dims[i]));
    cJSON_ReplaceItemInObjectCaseSensitive(entry(header, tensor), "shape", shape);
}

static void set_offsets(cJSON *header, const char *tensor, double begin, double end) {
    cJSON *offs = cJSON_CreateArray();
    cJSON_AddItemToArray(offs, cJSON_CreateNumber(begin));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber(end));
    cJSON_ReplaceItemInObjectCaseSensitive(entry(header, tensor), "data_offsets", offs);
}

static double offset_of(cJSON *header, const char *tensor, int which) {
    cJSON *offs = cJSON_GetObjectItemCaseSensitive(entry(header, tensor), "data_offsets");
    return cJSON_GetArrayItem(offs, which)->valuedouble;
}

/* value NULL deletes the key */
static void set_meta(cJSON *header, const char *key, const char *value) {
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(header, "__metadata__");
    assert_non_null(meta);
    cJSON_DeleteItemFromObjectCaseSensitive(meta, key);
    if (value) cJSON_AddStringToObject(meta, key, value);
}

/* Rebuilds the byte buffer so tensors sit back to back in header order (after removing or
 * adding entries). *out is malloc'd. */
static void repack(cJSON *header, const uint8_t *data, uint8_t **out, size_t *out_size) {
    size_t total = 0;
    for (cJSON *e = header->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__") != 0) total += (size_t)(offset_of(header, e->string, 1) - offset_of(header, e->string, 0));
    *out = malloc(total + 1);
    assert_non_null(*out);
    size_t at = 0;
    for (cJSON *e = header->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        size_t b = (size_t)offset_of(header, e->string, 0), n = (size_t)offset_of(header, e->string, 1) - b;
        memcpy(*out + at, data + b, n);
        set_offsets(header, e->string, (double)at, (double)(at + n));
        at += n;
    }
    *out_size = total;
}

static void expect_error_contains(const char *needle) {
    const char *msg = qc_last_error();
    if (!needle || !strstr(msg, needle)) fail_msg("error '%s' does not contain '%s'", msg, needle ? needle : "(null)");
}

/* gpt_load must refuse path, with an error naming the file and each non-NULL needle, and leave
 * the model empty. */
static void expect_load_fails(const char *path, const char *needle1, const char *needle2) {
    GPT m;
    Vocab v;
    qc_clear_error();
    int rc = gpt_load(&m, &v, path, 2, NULL);
    if (rc == 0) {
        gpt_free(&m);
        fail_msg("gpt_load accepted %s (expected an error containing '%s')", path, needle1 ? needle1 : "");
    }
    assert_int_equal(rc, -1);
    expect_error_contains(path);
    if (needle1) expect_error_contains(needle1);
    if (needle2) expect_error_contains(needle2);
    assert_null(m.params);
    gpt_free(&m); /* harmless on an emptied model */
}

static int compare_offsets(const void *a, const void *b) {
    const double *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* ---- round trip and format ---- */

static void test_round_trip_bit_exact(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    tiny_model(&m, 1, 11);
    vocab_from_bytes(&v, VOCAB_BYTES, (int)sizeof VOCAB_BYTES);
    /* values a decimal or rounding writer would lose: -0, subnormals, the largest float, 1 + ulp */
    const uint32_t specials[] = {0x80000000u, 0x00000001u, 0x807FFFFFu, 0x7F7FFFFFu, 0x3F800001u};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) memcpy(&m.params[i * 37], &specials[i], 4);
    const char *path = tmp_path("roundtrip.safetensors");
    assert_int_equal(gpt_save(&m, &v, path, NULL, 0, NULL, 0), 0);

    /* NaN payloads and infinities: written bit for bit, and refused at load, naming the file and
     * the tensor (a checkpoint with a NaN weight evaluated to "loss nan" as if it were a result) */
    {
        GPT bad;
        tiny_model(&bad, 1, 11);
        const uint32_t non_finite[] = {0x7FC01234u, 0xFFC00001u, 0x7F800000u, 0xFF800000u};
        const char *bad_path = tmp_path("nonfinite.safetensors");
        for (size_t i = 0; i < sizeof non_finite / sizeof *non_finite; i++) {
            const TensorSpec *t = &bad.specs[bad.n_specs - 1 - (int)i];
            float saved = bad.params[t->offset];
            memcpy(&bad.params[t->offset], &non_finite[i], 4);
            assert_int_equal(gpt_save(&bad, &v, bad_path, NULL, 0, NULL, 0), 0);
            SafeTensors st;
            assert_int_equal(st_read(&st, bad_path), 0);
            const StTensor *raw = st_find(&st, t->name);
            assert_non_null(raw);
            assert_memory_equal(raw->data, &non_finite[i], 4);
            st_free(&st);
            GPT back;
            Vocab vb;
            qc_clear_error();
            if (gpt_load(&back, &vb, bad_path, 3, NULL) == 0) fail_msg("loaded %s with a non-finite value in %s", bad_path, t->name);
            if (!strstr(qc_last_error(), bad_path) || !strstr(qc_last_error(), t->name) || !strstr(qc_last_error(), "non-finite"))
                fail_msg("the refusal does not name the file and the tensor: %s", qc_last_error());
            bad.params[t->offset] = saved;
        }
        gpt_free(&bad);
    }

    GPT back;
    Vocab vb;
    if (gpt_load(&back, &vb, path, 3, NULL) != 0) fail_msg("gpt_load: %s", qc_last_error());
    assert_int_equal(back.config.vocab_size, m.config.vocab_size);
    assert_int_equal(back.config.ctx, m.config.ctx);
    assert_int_equal(back.config.d_model, m.config.d_model);
    assert_int_equal(back.config.n_layer, m.config.n_layer);
    assert_int_equal(back.config.n_head, m.config.n_head);
    assert_int_equal(back.max_batch, 3);
    assert_int_equal(back.num_params, m.num_params);
    assert_int_equal(back.n_specs, m.n_specs);
    assert_memory_equal(back.params, m.params, m.num_params * sizeof(float));
    assert_int_equal(vb.size, v.size);
    assert_memory_equal(vb.bytes, v.bytes, (size_t)v.size);
    assert_memory_equal(vb.id_of, v.id_of, sizeof v.id_of);

    /* saving what was loaded gives the same file, byte for byte */
    const char *again = tmp_path("roundtrip2.safetensors");
    assert_int_equal(gpt_save(&back, &vb, again, NULL, 0, NULL, 0), 0);
    size_t n1, n2;
    uint8_t *f1 = read_file(path, &n1), *f2 = read_file(again, &n2);
    assert_non_null(f1);
    assert_non_null(f2);
    assert_int_equal(n1, n2);
    assert_memory_equal(f1, f2, n1);
    free(f1);
    free(f2);
    gpt_free(&back);
    gpt_free(&m);
}

static void test_header_is_valid_safetensors(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "format.safetensors", 3);
    RawCheckpoint c;
    raw_read(&c, path);
    assert_int_equal(c.header_len % 8, 0); /* tensors start 8-byte aligned */
    assert_int_equal(c.file[8], '{');
    /* the JSON ends inside the header; only space padding follows it */
    const char *end = NULL;
    cJSON *strict = cJSON_ParseWithLengthOpts((const char *)c.file + 8, (size_t)c.header_len, &end, 0);
    assert_non_null(strict);
    cJSON_Delete(strict);
    for (const char *p = end; p < (const char *)c.file + 8 + c.header_len; p++) assert_int_equal(*p, ' ');

    /* metadata: strings only, the config and the vocabulary */
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(c.header, "__metadata__");
    assert_true(cJSON_IsObject(meta));
    for (cJSON *kv = meta->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv)) fail_msg("metadata '%s' is not a string", kv->string);
    const struct { const char *key; int value; } ints[] = {
        {"d_model", 16}, {"n_layer", 2}, {"n_head", 2}, {"ctx", 8}, {"vocab_size", 11}};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        cJSON *kv = cJSON_GetObjectItemCaseSensitive(meta, ints[i].key);
        if (!cJSON_IsString(kv)) fail_msg("metadata '%s' missing", ints[i].key);
        assert_int_equal(atoi(kv->valuestring), ints[i].value);
    }
    cJSON *vocab = cJSON_GetObjectItemCaseSensitive(meta, "vocab");
    assert_true(cJSON_IsString(vocab));
    Vocab parsed;
    assert_int_equal(vocab_from_string(&parsed, vocab->valuestring), 0);
    assert_int_equal(parsed.size, 11);
    assert_memory_equal(parsed.bytes, VOCAB_BYTES, 11);

    /* tensors: every spec once, F32, its shape, offsets contiguous from 0 to the end of the file */
    int n = 0;
    double (*spans)[2] = calloc((size_t)m.n_specs + 1, sizeof *spans);
    assert_non_null(spans);
    for (cJSON *e = c.header->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        const TensorSpec *t = gpt_find_tensor(&m, e->string);
        if (!t) fail_msg("unexpected tensor %s in the file", e->string);
        assert_true(n < m.n_specs);
        cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        assert_true(cJSON_IsString(dtype));
        assert_string_equal(dtype->valuestring, "F32");
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        assert_int_equal(cJSON_GetArraySize(shape), t->cols ? 2 : 1);
        assert_int_equal(cJSON_GetArrayItem(shape, 0)->valueint, t->rows);
        if (t->cols) assert_int_equal(cJSON_GetArrayItem(shape, 1)->valueint, t->cols);
        double b = offset_of(c.header, e->string, 0), en = offset_of(c.header, e->string, 1);
        assert_true(en - b == 4.0 * (double)tensor_numel(t));
        /* the bytes are the parameters, little-endian F32 */
        assert_memory_equal(c.data + (size_t)b, m.params + t->offset, tensor_numel(t) * sizeof(float));
        spans[n][0] = b;
        spans[n][1] = en;
        n++;
    }
    assert_int_equal(n, m.n_specs);
    qsort(spans, (size_t)n, sizeof *spans, compare_offsets);
    assert_true(spans[0][0] == 0.0);
    for (int i = 1; i < n; i++)
        if (spans[i][0] != spans[i - 1][1]) fail_msg("gap or overlap at byte %.0f", spans[i][0]);
    assert_true(spans[n - 1][1] == (double)c.data_size);
    free(spans);
    raw_free(&c);
    gpt_free(&m);
}

static void test_save_is_atomic_and_reports_unwritable(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "atomic.safetensors", 5);
    /* overwrite in place: the new file replaces the old one */
    m.params[0] += 1.0f;
    assert_int_equal(gpt_save(&m, &v, path, NULL, 0, NULL, 0), 0);
    GPT back;
    Vocab vb;
    assert_int_equal(gpt_load(&back, &vb, path, 1, NULL), 0);
    assert_memory_equal(back.params, m.params, m.num_params * sizeof(float));
    gpt_free(&back);
    /* an unwritable destination: an error naming it, nothing created */
    const char *bad = tmp_path("no-such-dir/m.safetensors");
    qc_clear_error();
    assert_int_not_equal(gpt_save(&m, &v, bad, NULL, 0, NULL, 0), 0);
    expect_error_contains(bad);
    assert_int_not_equal(access(bad, F_OK), 0);
    /* a destination that is a directory: the rename fails, the temporary file is removed */
    const char *dir = tmp_path("a-directory.safetensors");
    assert_int_equal(mkdir(dir, 0755), 0);
    qc_clear_error();
    assert_int_not_equal(gpt_save(&m, &v, dir, NULL, 0, NULL, 0), 0);
    expect_error_contains(dir);
    /* no temporary files left anywhere in the directory */
    DIR *d = opendir(test_tmpdir());
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) fail_msg("temporary file %s left behind", e->d_name);
    closedir(d);
    gpt_free(&m);
}

/* extra tensors named corrections.* are the caller's when it asks for the file (st_out) */
static void test_extra_tensors_and_metadata_round_trip(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    tiny_model(&m, 1, 9);
    vocab_from_bytes(&v, VOCAB_BYTES, (int)sizeof VOCAB_BYTES);
    float a[6] = {1, -2, 3.5f, -0.0f, 5, 6};
    StWriteTensor extra = {.name = "corrections.0.A", .rows = 2, .cols = 3, .data = a};
    StMeta meta = {.key = "quant_scheme"};
    snprintf(meta.value, sizeof meta.value, "bits=4 channel");
    const char *path = tmp_path("extra.safetensors");
    assert_int_equal(gpt_save(&m, &v, path, &meta, 1, &extra, 1), 0);

    GPT back;
    Vocab vb;
    SafeTensors st;
    if (gpt_load(&back, &vb, path, 1, &st) != 0) fail_msg("gpt_load: %s", qc_last_error());
    const StTensor *t = st_find(&st, "corrections.0.A");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    float got[6];
    assert_int_equal(st_copy_tensor(&st, "corrections.0.A", 2, 3, got), 0);
    assert_memory_equal(got, a, sizeof a);
    assert_int_not_equal(st_copy_tensor(&st, "corrections.0.A", 3, 2, got), 0);
    expect_error_contains("corrections.0.A");
    assert_string_equal(st_meta(&st, "quant_scheme"), "bits=4 channel");
    assert_null(st_meta(&st, "no such key"));
    st_free(&st);
    gpt_free(&back);
    /* without st_out nobody claims them: refused */
    expect_load_fails(path, "unexpected tensor", "corrections.0.A");
    gpt_free(&m);
}

/* ---- refusals ---- */

static void test_truncated_files(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "full.safetensors", 21);
    RawCheckpoint c;
    raw_read(&c, path);
    size_t h = 8 + (size_t)c.header_len;
    const size_t cuts[] = {0, 1, 4, 7,                 /* inside the length */
                           8, 9, 8 + (size_t)c.header_len / 2, h - 1, /* inside the header */
                           h, h + 1, h + 4, h + c.data_size / 2, c.size - 4, c.size - 1}; /* inside the data */
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char name[64];
        snprintf(name, sizeof name, "cut-%zu.safetensors", cuts[i]);
        const char *p = write_raw(name, c.file, cuts[i]);
        expect_load_fails(p, cuts[i] >= 8 ? "truncated" : NULL, NULL);
        if (cuts[i] >= h) expect_error_contains("tensor '"); /* names the first tensor that does not fit */
    }
    raw_free(&c);
    gpt_free(&m);
}

static void test_header_length_beyond_file(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "len.safetensors", 22);
    RawCheckpoint c;
    raw_read(&c, path);
    const uint64_t lengths[] = {c.size - 7, c.size, c.size + 1000, (uint64_t)1 << 32, UINT64_MAX, (uint64_t)1 << 63};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++) {
        uint8_t *copy = malloc(c.size);
        assert_non_null(copy);
        memcpy(copy, c.file, c.size);
        for (int k = 0; k < 8; k++) copy[k] = (uint8_t)(lengths[i] >> (8 * k));
        const char *p = write_raw("len-bad.safetensors", copy, c.size);
        expect_load_fails(p, "header length", NULL);
        free(copy);
    }
    /* a length shorter than the JSON: the header no longer parses */
    uint8_t *copy = malloc(c.size);
    assert_non_null(copy);
    memcpy(copy, c.file, c.size);
    uint64_t shorter = c.header_len - 16;
    for (int k = 0; k < 8; k++) copy[k] = (uint8_t)(shorter >> (8 * k));
    expect_load_fails(write_raw("len-short.safetensors", copy, c.size), "JSON", NULL);
    /* a zero length */
    memset(copy, 0, 8);
    expect_load_fails(write_raw("len-zero.safetensors", copy, c.size), "header length", NULL);
    free(copy);
    raw_free(&c);
    gpt_free(&m);
}

static void test_not_json_or_not_an_object(void **state) {
    (void)state;
    const char *texts[] = {"[1, 2, 3]", "\"just a string\"", "{\"a\": ", "not json at all", "{\"x\": {\"dtype\": \"F32\"}}"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        size_t len = strlen(texts[i]), padded = (len + 7) / 8 * 8;
        uint8_t buf[128] = {0};
        for (int k = 0; k < 8; k++) buf[k] = (uint8_t)((uint64_t)padded >> (8 * k));
        memcpy(buf + 8, texts[i], len);
        memset(buf + 8 + len, ' ', padded - len);
        expect_load_fails(write_raw("notjson.safetensors", buf, 8 + padded), NULL, NULL);
    }
    /* a text file is not a checkpoint */
    const char *txt = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
    expect_load_fails(write_raw("text.safetensors", (const uint8_t *)txt, strlen(txt)), "header length", NULL);
    /* a missing file */
    expect_load_fails(tmp_path("does-not-exist.safetensors"), NULL, NULL);
}

static void test_wrong_shape(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "shape.safetensors", 23);
    RawCheckpoint c;
    raw_read(&c, path);
    const char *qkv = "transformer.h.0.attn.c_attn.weight"; /* [48, 16] */

    /* transposed: same byte count, so only the shape check can catch it */
    set_shape(c.header, qkv, (const int[]){16, 48}, 2);
    expect_load_fails(write_checkpoint("transposed.safetensors", c.header, c.data, c.data_size), qkv, "[16, 48]");
    expect_error_contains("[48, 16]");

    /* an extra unit dimension */
    set_shape(c.header, qkv, (const int[]){48, 16, 1}, 3);
    expect_load_fails(write_checkpoint("rank3.safetensors", c.header, c.data, c.data_size), qkv, NULL);

    /* a vector stored as a matrix */
    set_shape(c.header, qkv, (const int[]){48, 16}, 2);
    set_shape(c.header, "transformer.ln_f.bias", (const int[]){16, 1}, 2);
    expect_load_fails(write_checkpoint("vecmat.safetensors", c.header, c.data, c.data_size), "transformer.ln_f.bias", NULL);
    set_shape(c.header, "transformer.ln_f.bias", (const int[]){16}, 1);

    /* a shape whose byte count disagrees with its data offsets */
    set_shape(c.header, "lm_head.weight", (const int[]){11, 17}, 2);
    expect_load_fails(write_checkpoint("size.safetensors", c.header, c.data, c.data_size), "lm_head.weight", NULL);

    /* negative and fractional dimensions */
    set_shape(c.header, "lm_head.weight", (const int[]){-11, -16}, 2);
    expect_load_fails(write_checkpoint("negative.safetensors", c.header, c.data, c.data_size), "lm_head.weight", NULL);
    raw_free(&c);
    gpt_free(&m);
}

static void test_missing_tensor(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "missing.safetensors", 24);
    const char *names[] = {"transformer.wte.weight", "transformer.h.1.mlp.c_proj.bias", "lm_head.bias"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        RawCheckpoint c;
        raw_read(&c, path);
        cJSON_DeleteItemFromObjectCaseSensitive(c.header, names[i]);
        uint8_t *data;
        size_t n;
        repack(c.header, c.data, &data, &n); /* a well-formed file that simply lacks the tensor */
        expect_load_fails(write_checkpoint("missing-one.safetensors", c.header, data, n), names[i], "missing");
        free(data);
        raw_free(&c);
    }
    gpt_free(&m);
}

static void test_unexpected_extra_tensor(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "extra-src.safetensors", 25);
    const char *names[] = {"extra.weight", "transformer.h.2.ln_1.weight" /* a layer the config lacks */};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        RawCheckpoint c;
        raw_read(&c, path);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber(2));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)c.data_size));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)c.data_size + 8));
        cJSON_AddItemToObject(c.header, names[i], e);
        uint8_t *data = calloc(c.data_size + 8, 1);
        assert_non_null(data);
        memcpy(data, c.data, c.data_size);
        expect_load_fails(write_checkpoint("extra-one.safetensors", c.header, data, c.data_size + 8), names[i], "unexpected");
        free(data);
        raw_free(&c);
    }
    gpt_free(&m);
}

static void test_duplicate_tensor(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "dup.safetensors", 26);
    RawCheckpoint c;
    raw_read(&c, path);
    /* cJSON does not refuse a repeated key: the reader must */
    cJSON_AddItemToObject(c.header, "transformer.ln_f.bias", cJSON_Duplicate(entry(c.header, "transformer.ln_f.bias"), 1));
    expect_load_fails(write_checkpoint("dup-one.safetensors", c.header, c.data, c.data_size), "transformer.ln_f.bias", NULL);
    raw_free(&c);
    gpt_free(&m);
}

static void test_non_f32_dtype(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "dtype.safetensors", 27);
    const char *dtypes[] = {"F16", "BF16", "F64", "I32", "U8", "f32"};
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++) {
        RawCheckpoint c;
        raw_read(&c, path);
        cJSON_ReplaceItemInObjectCaseSensitive(entry(c.header, "transformer.wpe.weight"), "dtype", cJSON_CreateString(dtypes[i]));
        expect_load_fails(write_checkpoint("dtype-one.safetensors", c.header, c.data, c.data_size), "transformer.wpe.weight", dtypes[i]);
        raw_free(&c);
    }
    /* dtype absent */
    RawCheckpoint c;
    raw_read(&c, path);
    cJSON_DeleteItemFromObjectCaseSensitive(entry(c.header, "transformer.wpe.weight"), "dtype");
    expect_load_fails(write_checkpoint("dtype-none.safetensors", c.header, c.data, c.data_size), "transformer.wpe.weight", "dtype");
    raw_free(&c);
    gpt_free(&m);
}

static void test_bad_offsets(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "offsets.safetensors", 28);
    const char *w = "transformer.h.0.ln_1.weight", *b = "transformer.h.0.ln_1.bias"; /* both [16] */
    RawCheckpoint c;
    raw_read(&c, path);
    const double data_size = (double)c.data_size;
    raw_free(&c);

    /* two tensors on the same bytes */
    raw_read(&c, path);
    set_offsets(c.header, b, offset_of(c.header, w, 0), offset_of(c.header, w, 1));
    expect_load_fails(write_checkpoint("overlap-same.safetensors", c.header, c.data, c.data_size), "overlap", w);
    expect_error_contains(b);
    raw_free(&c);

    /* partial overlap: the bias starts 4 bytes inside the weight */
    raw_read(&c, path);
    set_offsets(c.header, b, offset_of(c.header, b, 0) - 4, offset_of(c.header, b, 1) - 4);
    expect_load_fails(write_checkpoint("overlap-part.safetensors", c.header, c.data, c.data_size), "overlap", b);
    raw_free(&c);

    /* past the end of the data, reversed, negative, fractional */
    const double spans[][2] = {{data_size, data_size + 64}, {64, 0}, {-64, 0}, {0.5, 64.5}};
    for (size_t i = 0; i < sizeof spans / sizeof *spans; i++) {
        raw_read(&c, path);
        set_offsets(c.header, b, spans[i][0], spans[i][1]);
        expect_load_fails(write_checkpoint("offsets-bad.safetensors", c.header, c.data, c.data_size), b, NULL);
        raw_free(&c);
    }
    /* data_offsets with one number */
    raw_read(&c, path);
    cJSON *one = cJSON_CreateArray();
    cJSON_AddItemToArray(one, cJSON_CreateNumber(0));
    cJSON_ReplaceItemInObjectCaseSensitive(entry(c.header, b), "data_offsets", one);
    expect_load_fails(write_checkpoint("offsets-one.safetensors", c.header, c.data, c.data_size), b, NULL);
    raw_free(&c);
    gpt_free(&m);
}

static void test_missing_metadata(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "meta.safetensors", 29);
    const char *keys[] = {"d_model", "n_layer", "n_head", "ctx", "vocab_size", "vocab"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        RawCheckpoint c;
        raw_read(&c, path);
        set_meta(c.header, keys[i], NULL);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", keys[i]);
        expect_load_fails(write_checkpoint("meta-missing.safetensors", c.header, c.data, c.data_size), quoted, "missing");
        raw_free(&c);
    }
    /* no __metadata__ at all: a plain safetensors file, not a qcorr checkpoint */
    RawCheckpoint c;
    raw_read(&c, path);
    cJSON_DeleteItemFromObjectCaseSensitive(c.header, "__metadata__");
    expect_load_fails(write_checkpoint("meta-none.safetensors", c.header, c.data, c.data_size), "metadata", NULL);
    raw_free(&c);
    /* __metadata__ as something other than an object */
    raw_read(&c, path);
    cJSON_ReplaceItemInObjectCaseSensitive(c.header, "__metadata__", cJSON_CreateString("d_model=16"));
    expect_load_fails(write_checkpoint("meta-string.safetensors", c.header, c.data, c.data_size), "__metadata__", NULL);
    raw_free(&c);
    gpt_free(&m);
}

static void test_bad_metadata_values(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "metabad.safetensors", 30);
    const struct { const char *key, *value, *needle; } cases[] = {
        {"d_model", "abc", "'abc'"}, {"d_model", "", "d_model"}, {"d_model", "16x", "'16x'"},
        {"n_layer", "0", "n_layer"}, {"ctx", "-8", "'-8'"}, {"vocab_size", "99999999999", "vocab_size"},
        {"n_head", "3", "divide"},     /* does not divide d_model 16 */
        {"d_model", "32", "transformer.wte.weight"}, /* consistent metadata, tensors of another size */
        {"n_layer", "3", "transformer.h.2."},         /* a layer the file lacks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        RawCheckpoint c;
        raw_read(&c, path);
        set_meta(c.header, cases[i].key, cases[i].value);
        expect_load_fails(write_checkpoint("metabad-one.safetensors", c.header, c.data, c.data_size), cases[i].needle, NULL);
        raw_free(&c);
    }
    /* a metadata value that is not a string */
    RawCheckpoint c;
    raw_read(&c, path);
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(c.header, "__metadata__");
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "d_model");
    cJSON_AddNumberToObject(meta, "d_model", 16);
    expect_load_fails(write_checkpoint("meta-number.safetensors", c.header, c.data, c.data_size), "d_model", NULL);
    raw_free(&c);
    gpt_free(&m);
}

static void test_vocab_mismatch(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "vocab.safetensors", 31);
    RawCheckpoint c;

    /* vocab_size says 10, the vocabulary holds 11 */
    raw_read(&c, path);
    set_meta(c.header, "vocab_size", "10");
    expect_load_fails(write_checkpoint("vocab-size.safetensors", c.header, c.data, c.data_size), "vocab_size", "11");
    raw_free(&c);

    /* one character more in the vocabulary than vocab_size */
    raw_read(&c, path);
    char s[64];
    Vocab bigger;
    uint8_t twelve[12];
    memcpy(twelve, VOCAB_BYTES, 11);
    twelve[11] = 'q';
    vocab_from_bytes(&bigger, twelve, 12);
    assert_int_equal(vocab_to_string(&bigger, s, sizeof s), 0);
    set_meta(c.header, "vocab", s);
    expect_load_fails(write_checkpoint("vocab-12.safetensors", c.header, c.data, c.data_size), "vocab_size", "12");
    raw_free(&c);

    /* both say 12 but the embedding holds 11 rows */
    raw_read(&c, path);
    set_meta(c.header, "vocab", s);
    set_meta(c.header, "vocab_size", "12");
    expect_load_fails(write_checkpoint("vocab-rows.safetensors", c.header, c.data, c.data_size), "transformer.wte.weight", "[12, 16]");
    raw_free(&c);

    /* an unsorted or repeating vocabulary string */
    const char *bad[] = {"ba\n !z\xC2\x80\xC3\x83\xC3\xA9\xC3\xBE\xC3\xBF", "\n !aab\xC2\x80\xC3\x83\xC3\xA9\xC3\xBE", "\n !abz\xE2\x82\xAC"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        raw_read(&c, path);
        set_meta(c.header, "vocab", bad[i]);
        expect_load_fails(write_checkpoint("vocab-bad.safetensors", c.header, c.data, c.data_size), "vocab", NULL);
        raw_free(&c);
    }
    gpt_free(&m);
}

/* __metadata__ twice (cJSON keeps both): refused, and the reader must not write past the
 * metadata table it sized for the second one — a crafted file must not corrupt memory. Last in
 * the suite: before the fix it overflows the heap (segfault, or an ASan report with SANITIZE=1). */
static void test_duplicate_metadata(void **state) {
    (void)state;
    GPT m;
    Vocab v;
    const char *path = save_reference(&m, &v, "metatwice.safetensors", 32);
    RawCheckpoint c;
    raw_read(&c, path);
    cJSON *small = cJSON_CreateObject();
    cJSON_AddStringToObject(small, "note", "second");
    cJSON_AddItemToObject(c.header, "__metadata__", small);
    expect_load_fails(write_checkpoint("meta-twice.safetensors", c.header, c.data, c.data_size), "__metadata__", NULL);
    raw_free(&c);
    gpt_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_bit_exact),
        cmocka_unit_test(test_header_is_valid_safetensors),
        cmocka_unit_test(test_save_is_atomic_and_reports_unwritable),
        cmocka_unit_test(test_extra_tensors_and_metadata_round_trip),
        cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_header_length_beyond_file),
        cmocka_unit_test(test_not_json_or_not_an_object),
        cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_unexpected_extra_tensor),
        cmocka_unit_test(test_duplicate_tensor),
        cmocka_unit_test(test_non_f32_dtype),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_missing_metadata),
        cmocka_unit_test(test_bad_metadata_values),
        cmocka_unit_test(test_vocab_mismatch),
        cmocka_unit_test(test_duplicate_metadata),
    };
    return cmocka_run_group_tests_name("checkpoint", tests, NULL, NULL);
}
