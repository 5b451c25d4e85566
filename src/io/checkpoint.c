/* checkpoint: see checkpoint.h. The JSON header is parsed with cJSON (Debian's libcjson); the
 * file is written with write_file_atomic_parts, so a crash never leaves a half checkpoint. */
#include "io/checkpoint.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define ST_MAX_HEADER (100u * 1024u * 1024u)

void st_free(SafeTensors *st) {
    free(st->file);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    memset(st, 0, sizeof *st);
}

static int compare_tensor_offset(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data;
}

int st_read(SafeTensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    size_t size;
    uint8_t *file = read_file(path, &size);
    if (!file) return -1;
    return st_parse(st, file, size, path);
}

int st_parse(SafeTensors *st, uint8_t *file, size_t size, const char *path) {
    memset(st, 0, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    st->file = file;
    st->file_size = size;
    cJSON *root = NULL;
    if (st->file_size < 8) { qc_error("%s: not a safetensors file (only %zu bytes)", path, st->file_size); goto fail; }
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)st->file[i] << (8 * i);
    if (header_len < 2 || header_len > ST_MAX_HEADER || header_len > st->file_size - 8) {
        qc_error("%s: bad safetensors header length %llu (file has %zu bytes): truncated or not a checkpoint", path,
                 (unsigned long long)header_len, st->file_size);
        goto fail;
    }
    root = cJSON_ParseWithLength((const char *)st->file + 8, (size_t)header_len);
    if (!root || !cJSON_IsObject(root)) { qc_error("%s: safetensors header is not a JSON object", path); goto fail; }
    const uint8_t *data = st->file + 8 + header_len;
    size_t data_size = st->file_size - 8 - (size_t)header_len;
    int count = cJSON_GetArraySize(root);
    st->tensors = qc_calloc((size_t)count, sizeof(StTensor), "tensor list");
    if (!st->tensors) goto fail;
    for (cJSON *item = root->child; item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item)) { qc_error("%s: __metadata__ is not an object", path); goto fail; }
            if (st->meta_keys) { qc_error("%s: __metadata__ appears twice", path); goto fail; }
            int nm = cJSON_GetArraySize(item);
            st->meta_keys = qc_calloc((size_t)nm + 1, sizeof(char *), "metadata");
            st->meta_values = qc_calloc((size_t)nm + 1, sizeof(char *), "metadata");
            if (!st->meta_keys || !st->meta_values) goto fail;
            for (cJSON *kv = item->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv)) { qc_error("%s: metadata value '%s' is not a string", path, kv->string); goto fail; }
                st->meta_keys[st->n_meta] = strdup(kv->string);
                st->meta_values[st->n_meta] = strdup(kv->valuestring);
                st->n_meta++;
                if (!st->meta_keys[st->n_meta - 1] || !st->meta_values[st->n_meta - 1]) { qc_error("out of memory"); goto fail; }
            }
            continue;
        }
        StTensor *t = &st->tensors[st->n_tensors];
        if (strlen(item->string) >= sizeof t->name) { qc_error("%s: tensor name too long", path); goto fail; }
        snprintf(t->name, sizeof t->name, "%s", item->string);
        cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
        cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
        if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2) {
            qc_error("%s: tensor '%s' lacks dtype, shape or data_offsets", path, t->name);
            goto fail;
        }
        if (strcmp(dtype->valuestring, "F32") != 0) {
            qc_error("%s: tensor '%s' has dtype %s; qcorr reads F32 only", path, t->name, dtype->valuestring);
            goto fail;
        }
        t->ndim = cJSON_GetArraySize(shape);
        if (t->ndim > ST_MAX_DIMS) { qc_error("%s: tensor '%s' has %d dimensions", path, t->name, t->ndim); goto fail; }
        double numel = 1;
        int k = 0;
        for (cJSON *d = shape->child; d; d = d->next, k++) {
            if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e12 || d->valuedouble != (double)(int64_t)d->valuedouble) {
                qc_error("%s: tensor '%s' has a bad shape", path, t->name);
                goto fail;
            }
            t->shape[k] = (int64_t)d->valuedouble;
            numel *= d->valuedouble;
        }
        cJSON *begin = cJSON_GetArrayItem(offsets, 0), *end = cJSON_GetArrayItem(offsets, 1);
        if (!cJSON_IsNumber(begin) || !cJSON_IsNumber(end) || begin->valuedouble < 0 || end->valuedouble < begin->valuedouble ||
            end->valuedouble > (double)data_size || begin->valuedouble != (double)(size_t)begin->valuedouble ||
            end->valuedouble != (double)(size_t)end->valuedouble) {
            qc_error("%s: tensor '%s' has data offsets outside the file: truncated or corrupt", path, t->name);
            goto fail;
        }
        size_t b = (size_t)begin->valuedouble, e = (size_t)end->valuedouble;
        if ((double)(e - b) != numel * 4.0) {
            qc_error("%s: tensor '%s' holds %zu bytes but its shape needs %.0f", path, t->name, e - b, numel * 4.0);
            goto fail;
        }
        t->numel = (size_t)numel;
        t->data = data + b;
        for (int j = 0; j < st->n_tensors; j++)
            if (strcmp(st->tensors[j].name, t->name) == 0) { qc_error("%s: tensor '%s' appears twice", path, t->name); goto fail; }
        st->n_tensors++;
    }
    /* tensors must not overlap (safetensors packs them back to back) */
    StTensor *sorted = qc_malloc((size_t)st->n_tensors * sizeof(StTensor) + 1, "tensor list");
    if (!sorted) goto fail;
    memcpy(sorted, st->tensors, (size_t)st->n_tensors * sizeof(StTensor));
    qsort(sorted, (size_t)st->n_tensors, sizeof(StTensor), compare_tensor_offset);
    for (int i = 1; i < st->n_tensors; i++)
        if (sorted[i].data < sorted[i - 1].data + sorted[i - 1].numel * 4) {
            qc_error("%s: tensors '%s' and '%s' overlap", path, sorted[i - 1].name, sorted[i].name);
            free(sorted);
            goto fail;
        }
    free(sorted);
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    st_free(st);
    return -1;
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *st_meta(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

static void format_shape(char *out, size_t size, int rows, int cols) {
    if (cols) snprintf(out, size, "[%d, %d]", rows, cols);
    else snprintf(out, size, "[%d]", rows);
}

int st_copy_tensor(const SafeTensors *st, const char *name, int rows, int cols, float *dst) {
    if (st_check_tensor(st, name, rows, cols) != 0) return -1;
    const StTensor *t = st_find(st, name);
    memcpy(dst, t->data, t->numel * sizeof(float)); /* little-endian hosts only (x86, arm64) */
    /* a NaN or infinite weight would evaluate to "loss nan" and sample garbage as if it were a
     * result: refused here, where the file and the tensor can still be named */
    for (size_t i = 0; i < t->numel; i++)
        if (!isfinite(dst[i])) {
            qc_error("%s: tensor '%s' holds a non-finite value (%g at index %zu): the file is corrupt or its training diverged",
                     st->path, name, (double)dst[i], i);
            return -1;
        }
    return 0;
}

int st_check_tensor(const SafeTensors *st, const char *name, int rows, int cols) {
    const StTensor *t = st_find(st, name);
    if (!t) { qc_error("%s: tensor '%s' is missing", st->path, name); return -1; }
    int want_ndim = cols ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char want[64], got[64] = "[";
        format_shape(want, sizeof want, rows, cols);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        strcat(got, "]");
        qc_error("%s: tensor '%s' has shape %s, expected %s", st->path, name, got, want);
        return -1;
    }
    return 0;
}

int st_write(const char *path, const StWriteTensor *tensors, int n_tensors, const StMeta *meta, int n_meta) {
    cJSON *root = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
    for (int i = 0; i < n_meta; i++) cJSON_AddStringToObject(md, meta[i].key, meta[i].value);
    size_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const StWriteTensor *t = &tensors[i];
        cJSON *entry = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(entry, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(entry, "shape");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber(t->rows));
        if (t->cols) cJSON_AddItemToArray(shape, cJSON_CreateNumber(t->cols));
        size_t bytes = (size_t)t->rows * (t->cols ? (size_t)t->cols : 1) * sizeof(float);
        cJSON *offs = cJSON_AddArrayToObject(entry, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) { qc_error("%s: out of memory building the header", path); return -1; }
    size_t json_len = strlen(json);
    size_t padded = (json_len + 7) / 8 * 8; /* data starts 8-byte aligned */
    char *header = qc_malloc(8 + padded, "header");
    if (!header) { free(json); return -1; }
    for (int i = 0; i < 8; i++) header[i] = (char)(((uint64_t)padded >> (8 * i)) & 0xFF);
    memcpy(header + 8, json, json_len);
    memset(header + 8 + json_len, ' ', padded - json_len);
    free(json);
    int n_parts = n_tensors + 1;
    const void **parts = qc_malloc((size_t)n_parts * sizeof(void *), "write list");
    size_t *sizes = qc_malloc((size_t)n_parts * sizeof(size_t), "write list");
    if (!parts || !sizes) { free(header); free(parts); free(sizes); return -1; }
    parts[0] = header;
    sizes[0] = 8 + padded;
    for (int i = 0; i < n_tensors; i++) {
        parts[i + 1] = tensors[i].data;
        sizes[i + 1] = (size_t)tensors[i].rows * (tensors[i].cols ? (size_t)tensors[i].cols : 1) * sizeof(float);
    }
    int rc = write_file_atomic_parts(path, parts, sizes, n_parts);
    free(header);
    free(parts);
    free(sizes);
    return rc;
}

int gpt_save(const GPT *m, const Vocab *vocab, const char *path, const StMeta *extra_meta, int n_extra_meta,
             const StWriteTensor *extra, int n_extra) {
    int n_tensors = m->n_specs + n_extra;
    StWriteTensor *list = qc_calloc((size_t)n_tensors, sizeof(StWriteTensor), "tensor list");
    StMeta *meta = qc_calloc((size_t)(8 + n_extra_meta), sizeof(StMeta), "metadata");
    if (!list || !meta) { free(list); free(meta); return -1; }
    for (int i = 0; i < m->n_specs; i++) {
        const TensorSpec *t = &m->specs[i];
        snprintf(list[i].name, sizeof list[i].name, "%s", t->name);
        list[i].rows = t->rows;
        list[i].cols = t->cols;
        list[i].data = m->params + t->offset;
    }
    for (int i = 0; i < n_extra; i++) list[m->n_specs + i] = extra[i];
    int k = 0;
    const GPTConfig *c = &m->config;
    meta[k].key = "format"; snprintf(meta[k++].value, sizeof meta->value, "pt");
    meta[k].key = "qcorr_format"; snprintf(meta[k++].value, sizeof meta->value, "1");
    meta[k].key = "d_model"; snprintf(meta[k++].value, sizeof meta->value, "%d", c->d_model);
    meta[k].key = "n_layer"; snprintf(meta[k++].value, sizeof meta->value, "%d", c->n_layer);
    meta[k].key = "n_head"; snprintf(meta[k++].value, sizeof meta->value, "%d", c->n_head);
    meta[k].key = "ctx"; snprintf(meta[k++].value, sizeof meta->value, "%d", c->ctx);
    meta[k].key = "vocab_size"; snprintf(meta[k++].value, sizeof meta->value, "%d", c->vocab_size);
    meta[k].key = "vocab";
    if (vocab_to_string(vocab, meta[k++].value, sizeof meta->value) != 0) { free(list); free(meta); return -1; }
    for (int i = 0; i < n_extra_meta; i++) meta[k++] = extra_meta[i];
    int rc = st_write(path, list, n_tensors, meta, k);
    free(list);
    free(meta);
    return rc;
}

int gpt_save_float(const GPT *m, void *ctx) {
    const FloatCheckpoint *f = ctx;
    return gpt_save(m, f->vocab, f->path, NULL, 0, NULL, 0);
}

static int meta_int(const SafeTensors *st, const char *key, int *out) {
    const char *v = st_meta(st, key);
    if (!v) { qc_error("%s: metadata '%s' is missing: not a qcorr checkpoint", st->path, key); return -1; }
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < 1 || x > 1000000) { qc_error("%s: metadata '%s' = '%s' is not a valid size", st->path, key, v); return -1; }
    *out = (int)x;
    return 0;
}

int gpt_config_from(GPTConfig *out, Vocab *vocab, const SafeTensors *st) {
    const char *path = st->path;
    GPTConfig cfg;
    if (meta_int(st, "d_model", &cfg.d_model) || meta_int(st, "n_layer", &cfg.n_layer) ||
        meta_int(st, "n_head", &cfg.n_head) || meta_int(st, "ctx", &cfg.ctx) || meta_int(st, "vocab_size", &cfg.vocab_size))
        return -1;
    const char *vs = st_meta(st, "vocab");
    if (!vs) { qc_error("%s: metadata 'vocab' is missing: not a qcorr checkpoint", path); return -1; }
    if (vocab_from_string(vocab, vs) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s: %s", path, msg);
        return -1;
    }
    if (vocab->size != cfg.vocab_size) {
        qc_error("%s: vocabulary has %d entries but vocab_size is %d", path, vocab->size, cfg.vocab_size);
        return -1;
    }
    if (gpt_config_check(&cfg) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s: %s", path, msg);
        return -1;
    }
    /* before allocating: every tensor of the table is in the file with its shape, so a header
     * cannot ask for more parameters than the file's data holds */
    int V = cfg.vocab_size, P = cfg.ctx, C = cfg.d_model;
    char name[64];
#define CHECK(field, tname, rows, cols, role)                                \
    snprintf(name, sizeof name, "%s%s", prefix, tname);                      \
    if (st_check_tensor(st, name, rows, cols) != 0) return -1;
    { /* in the table's order, so the first fault named is the one gpt_load always named */
        const char *prefix = "";
        GPT_EMBEDDING_TENSORS(CHECK)
    }
    for (int l = 0; l < cfg.n_layer; l++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "transformer.h.%d.", l);
        GPT_LAYER_TENSORS(CHECK)
    }
    {
        const char *prefix = "";
        GPT_HEAD_TENSORS(CHECK)
    }
#undef CHECK
    *out = cfg;
    return 0;
}

int gpt_load_from(GPT *m, Vocab *vocab, const SafeTensors *st, int max_batch, int allow_extra) {
    const char *path = st->path;
    memset(m, 0, sizeof *m);
    GPTConfig cfg;
    if (gpt_config_from(&cfg, vocab, st) != 0) return -1;
    if (gpt_init(m, &cfg, max_batch) != 0) return -1;
    for (int i = 0; i < m->n_specs; i++) {
        const TensorSpec *t = &m->specs[i];
        if (st_copy_tensor(st, t->name, t->rows, t->cols, m->params + t->offset) != 0) goto fail;
    }
    for (int i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (gpt_find_tensor(m, name)) continue;
        if (allow_extra) continue; /* the caller checks them */
        qc_error("%s: unexpected tensor '%s'", path, name);
        goto fail;
    }
    return 0;
fail:
    gpt_free(m);
    return -1;
}

int gpt_load(GPT *m, Vocab *vocab, const char *path, int max_batch, SafeTensors *st_out) {
    SafeTensors st;
    memset(m, 0, sizeof *m);
    if (st_read(&st, path) != 0) return -1;
    if (gpt_load_from(m, vocab, &st, max_batch, st_out != NULL) != 0) {
        st_free(&st);
        return -1;
    }
    if (st_out) *st_out = st;
    else st_free(&st);
    return 0;
}
