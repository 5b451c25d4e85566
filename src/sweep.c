/* sweep: see sweep.h. Finished work is recognised only by files written atomically (records,
 * checkpoints, sidecars), so a sweep killed at any instant resumes without losing or repeating
 * a row; stale temporaries of dead writers are removed on start. */
#include "sweep.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "model_file.h"
#include "train.h"
#include "util.h"

/* ---------------------------------------------------------------- grid */

static void set_list(int *dst, int *n, const int *src, int count) {
    memcpy(dst, src, (size_t)count * sizeof(int));
    *n = count;
}

int sweep_preset(SweepConfig *cfg, const char *name) {
    memset(cfg, 0, sizeof *cfg);
    quant_scheme_default(&cfg->scheme, 4);
    cfg->method_train = 1;
    cfg->control = 1;
    cfg->heads = 4;
    cfg->objective = OBJECTIVE_CE;
    cfg->ridge = 1e-4;
    if (strcmp(name, "quick") == 0) {
        /* a demo and CI grid: one small model, about a minute end to end on 2 cores */
        set_list(cfg->seeds, &cfg->n_seeds, (int[]){42}, 1);
        set_list(cfg->bits, &cfg->n_bits, (int[]){2, 4}, 2);
        cfg->sizes[0] = (ModelSize){64, 2, 0};
        cfg->n_sizes = 1;
        set_list(cfg->every, &cfg->n_every, (int[]){1, 2}, 2);
        set_list(cfg->hidden, &cfg->n_hidden, (int[]){0, 32}, 2);
        cfg->ctx = 64;
        cfg->train_batch = 32;
        cfg->train_steps = 400;
        cfg->train_lr = 3e-3;
        cfg->corr_steps = 60;
        cfg->corr_batch = 16;
        cfg->corr_lr = 3e-3;
        cfg->calib_tokens = 32768;
        return 0;
    }
    if (strcmp(name, "seed243") == 0) {
        /* the full experiment: 3 seeds x 3 bits x 3 sizes x 3 every x 3 hidden = 243 runs */
        set_list(cfg->seeds, &cfg->n_seeds, (int[]){42, 123, 999}, 3);
        set_list(cfg->bits, &cfg->n_bits, (int[]){2, 4, 8}, 3);
        /* budgets chosen so the whole sweep with its control arm fits in about two hours on a
         * 2-core machine with every float model at validation perplexity 5-9 (README) */
        cfg->sizes[0] = (ModelSize){64, 2, 1500};
        cfg->sizes[1] = (ModelSize){128, 4, 800};
        cfg->sizes[2] = (ModelSize){256, 6, 400};
        cfg->n_sizes = 3;
        set_list(cfg->every, &cfg->n_every, (int[]){1, 2, 4}, 3);
        set_list(cfg->hidden, &cfg->n_hidden, (int[]){0, 32, 64}, 3);
        cfg->ctx = 128;
        cfg->train_batch = 16;
        cfg->train_steps = 1500;
        cfg->train_lr = 3e-3;
        cfg->corr_steps = 60;
        cfg->corr_batch = 8;
        cfg->corr_lr = 3e-3;
        cfg->calib_tokens = 65536;
        return 0;
    }
    qc_error("--preset: unknown preset '%s' (quick, seed243)", name);
    return -1;
}

int parse_int_list(const char *flag, const char *text, int *out, int *n, long min, long max) {
    char buf[1024];
    if (strlen(text) >= sizeof buf) { qc_error("%s: list too long", flag); return -1; }
    snprintf(buf, sizeof buf, "%s", text);
    int count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long v;
        if (count == SWEEP_MAX_VALUES) { qc_error("%s: more than %d values", flag, SWEEP_MAX_VALUES); return -1; }
        if (parse_int(flag, tok, min, max, &v) != 0) return -1;
        for (int i = 0; i < count; i++)
            if (out[i] == v) { qc_error("%s: value %ld appears twice", flag, v); return -1; }
        out[count++] = (int)v;
    }
    if (count == 0) { qc_error("%s: empty list", flag); return -1; }
    *n = count;
    return 0;
}

int parse_size_list(const char *flag, const char *text, ModelSize *out, int *n) {
    char buf[1024];
    if (strlen(text) >= sizeof buf) { qc_error("%s: list too long", flag); return -1; }
    snprintf(buf, sizeof buf, "%s", text);
    int count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int d, l, used = 0;
        long steps = 0;
        char *colon = strchr(tok, ':');
        if (colon) {
            *colon = 0;
            if (parse_int(flag, colon + 1, 1, 100000000, &steps) != 0) return -1;
        }
        if (sscanf(tok, "%dx%d%n", &d, &l, &used) != 2 || tok[used] != 0 || d < 1 || l < 1 || d > 8192 || l > 256) {
            qc_error("%s: '%s' is not a size D_MODELxLAYERS like 128x4 (or 128x4:STEPS)", flag, tok);
            return -1;
        }
        if (count == SWEEP_MAX_VALUES) { qc_error("%s: more than %d values", flag, SWEEP_MAX_VALUES); return -1; }
        for (int i = 0; i < count; i++)
            if (out[i].d_model == d && out[i].n_layer == l) { qc_error("%s: size %dx%d appears twice", flag, d, l); return -1; }
        out[count++] = (ModelSize){d, l, (int)steps};
    }
    if (count == 0) { qc_error("%s: empty list", flag); return -1; }
    *n = count;
    return 0;
}

static int grid_array(const cJSON *root, const char *key, const char *path, int *out, int *n, long min, long max) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!a) return 0;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 || cJSON_GetArraySize(a) > SWEEP_MAX_VALUES) {
        qc_error("%s: \"%s\" must be a list of 1 to %d integers", path, key, SWEEP_MAX_VALUES);
        return -1;
    }
    int k = 0;
    for (const cJSON *v = a->child; v; v = v->next) {
        /* the range first: converting a double outside long's range is undefined behaviour */
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= min && v->valuedouble <= max) || v->valuedouble != (double)(long)v->valuedouble) {
            qc_error("%s: \"%s\" holds a value that is not an integer in [%ld, %ld]", path, key, min, max);
            return -1;
        }
        out[k++] = (int)v->valuedouble;
    }
    *n = k;
    return 0;
}

int sweep_read_grid_file(SweepConfig *cfg, const char *path) {
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text) return -1;
    int rc = sweep_parse_grid(cfg, (const char *)text, size, path);
    free(text);
    return rc;
}

int sweep_parse_grid(SweepConfig *cfg, const char *text, size_t size, const char *path) {
    cJSON *root = cJSON_ParseWithLength(text, size);
    int rc = -1;
    if (!root || !cJSON_IsObject(root)) { qc_error("%s: not a JSON object", path); goto done; }
    for (const cJSON *item = root->child; item; item = item->next) {
        const char *known[] = {"seeds", "bits", "sizes", "every", "hidden"};
        int ok = 0;
        for (int i = 0; i < 5; i++) ok |= strcmp(item->string, known[i]) == 0;
        if (!ok) { qc_error("%s: unknown key \"%s\" (seeds, bits, sizes, every, hidden)", path, item->string); goto done; }
    }
    if (grid_array(root, "seeds", path, cfg->seeds, &cfg->n_seeds, 0, 2147483647) ||
        grid_array(root, "bits", path, cfg->bits, &cfg->n_bits, 2, 8) ||
        grid_array(root, "every", path, cfg->every, &cfg->n_every, 1, 256) ||
        grid_array(root, "hidden", path, cfg->hidden, &cfg->n_hidden, 0, 65536))
        goto done;
    const cJSON *sizes = cJSON_GetObjectItemCaseSensitive(root, "sizes");
    if (sizes) {
        if (!cJSON_IsArray(sizes) || cJSON_GetArraySize(sizes) < 1 || cJSON_GetArraySize(sizes) > SWEEP_MAX_VALUES) {
            qc_error("%s: \"sizes\" must be a list of strings like \"128x4\"", path);
            goto done;
        }
        char joined[1024] = "";
        for (const cJSON *v = sizes->child; v; v = v->next) {
            /* short enough that all of them and their commas fit in joined: never a cut-off size */
            if (!cJSON_IsString(v) || strlen(v->valuestring) > sizeof joined / SWEEP_MAX_VALUES - 2) {
                qc_error("%s: \"sizes\" must hold strings like \"128x4\"", path);
                goto done;
            }
            snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s", joined[0] ? "," : "", v->valuestring);
        }
        char flag[4200];
        snprintf(flag, sizeof flag, "%s: sizes", path);
        if (parse_size_list(flag, joined, cfg->sizes, &cfg->n_sizes) != 0) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int sweep_config_check(const SweepConfig *cfg) {
    for (int i = 0; i < cfg->n_bits; i++)
        if (cfg->bits[i] < 2 || cfg->bits[i] > 8) { qc_error("--bits: %d is outside 2..8 (the control arm adds 32)", cfg->bits[i]); return -1; }
    for (int i = 0; i < cfg->n_sizes; i++) {
        GPTConfig g = {.vocab_size = 65, .ctx = cfg->ctx, .d_model = cfg->sizes[i].d_model, .n_layer = cfg->sizes[i].n_layer, .n_head = cfg->heads};
        if (gpt_config_check(&g) != 0) return -1;
        if (cfg->scheme.granularity == GRAN_GROUP && cfg->sizes[i].d_model % cfg->scheme.group != 0) {
            qc_error("--granularity group:%d does not divide d_model %d", cfg->scheme.group, cfg->sizes[i].d_model);
            return -1;
        }
    }
    if (!cfg->method_train && !cfg->method_lstsq) { qc_error("--methods: choose train, lstsq or both"); return -1; }
    return quant_scheme_check(&cfg->scheme);
}

SweepRun *sweep_enumerate(const SweepConfig *cfg, int *n_runs, int *n_groups) {
    int bits[SWEEP_MAX_VALUES + 1], nb = cfg->n_bits;
    memcpy(bits, cfg->bits, (size_t)nb * sizeof(int));
    if (cfg->control) bits[nb++] = 32;
    size_t max = (size_t)cfg->n_seeds * cfg->n_sizes * nb * cfg->n_every * cfg->n_hidden * 2;
    SweepRun *runs = qc_calloc(max ? max : 1, sizeof(SweepRun), "run list");
    if (!runs) return NULL;
    int n = 0, g = 0;
    for (int s = 0; s < cfg->n_seeds; s++)
        for (int z = 0; z < cfg->n_sizes; z++, g++)
            for (int b = 0; b < nb; b++)
                for (int e = 0; e < cfg->n_every; e++)
                    for (int h = 0; h < cfg->n_hidden; h++)
                        for (int m = 0; m < 2; m++) {
                            if (m == METHOD_TRAIN && !cfg->method_train) continue;
                            if (m == METHOD_LSTSQ && (!cfg->method_lstsq || cfg->hidden[h] != 0)) continue;
                            SweepRun *r = &runs[n++];
                            r->seed = cfg->seeds[s];
                            r->size_index = z;
                            r->bits = bits[b];
                            r->every = cfg->every[e];
                            r->hidden = cfg->hidden[h];
                            r->method = (CorrectMethod)m;
                            r->group = g;
                            snprintf(r->id, sizeof r->id, "s%d_%dx%d_b%d_e%d_h%d_%s", r->seed, cfg->sizes[z].d_model,
                                     cfg->sizes[z].n_layer, r->bits, r->every, r->hidden, m == METHOD_TRAIN ? "train" : "lstsq");
                        }
    *n_runs = n;
    *n_groups = g;
    return runs;
}

/* ---------------------------------------------------------------- manifest */

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

char *sweep_manifest_json(const SweepConfig *cfg, const char *command) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "qcorr_manifest", 1);
    cJSON *grid = cJSON_AddObjectToObject(root, "grid");
    cJSON_AddItemToObject(grid, "seeds", int_array(cfg->seeds, cfg->n_seeds));
    cJSON_AddItemToObject(grid, "bits", int_array(cfg->bits, cfg->n_bits));
    cJSON *sizes = cJSON_AddArrayToObject(grid, "sizes");
    cJSON *steps = cJSON_CreateObject(); /* float training steps per size */
    for (int i = 0; i < cfg->n_sizes; i++) {
        char s[32];
        snprintf(s, sizeof s, "%dx%d", cfg->sizes[i].d_model, cfg->sizes[i].n_layer);
        cJSON_AddItemToArray(sizes, cJSON_CreateString(s));
        cJSON_AddNumberToObject(steps, s, SIZE_TRAIN_STEPS(cfg, i));
    }
    cJSON_AddItemToObject(grid, "every", int_array(cfg->every, cfg->n_every));
    cJSON_AddItemToObject(grid, "hidden", int_array(cfg->hidden, cfg->n_hidden));
    cJSON *methods = cJSON_AddArrayToObject(grid, "methods");
    if (cfg->method_train) cJSON_AddItemToArray(methods, cJSON_CreateString("train"));
    if (cfg->method_lstsq) cJSON_AddItemToArray(methods, cJSON_CreateString("lstsq"));
    cJSON_AddBoolToObject(grid, "control", cfg->control);
    cJSON *ft = cJSON_AddObjectToObject(root, "float_training");
    cJSON_AddNumberToObject(ft, "heads", cfg->heads);
    cJSON_AddNumberToObject(ft, "ctx", cfg->ctx);
    cJSON_AddNumberToObject(ft, "batch", cfg->train_batch);
    cJSON_AddItemToObject(ft, "steps", steps);
    cJSON_AddNumberToObject(ft, "lr", cfg->train_lr);
    cJSON_AddStringToObject(ft, "schedule", "warmup min(100, steps/10), cosine to lr/10");
    cJSON_AddStringToObject(ft, "optimizer", "AdamW 0.9/0.95 eps 1e-8, weight decay 0.1 on matrices, clip 1.0");
    cJSON *q = cJSON_AddObjectToObject(root, "quantization");
    StMeta meta[QUANT_META_MAX];
    quant_scheme_to_meta(&cfg->scheme, meta);
    for (int i = 1; i < 5; i++) cJSON_AddStringToObject(q, meta[i].key, meta[i].value); /* granularity .. act bits */
    cJSON_AddStringToObject(q, "quant_scale_dtype", scale_dtype_name(cfg->scheme.scale_dtype));
    cJSON_AddStringToObject(q, "rounding", "nearest, ties to even; weight-only fake quantization");
    cJSON *c = cJSON_AddObjectToObject(root, "correction");
    cJSON_AddStringToObject(c, "objective", objective_name(cfg->objective));
    cJSON_AddNumberToObject(c, "steps", cfg->corr_steps);
    cJSON_AddNumberToObject(c, "batch", cfg->corr_batch);
    cJSON_AddNumberToObject(c, "lr", cfg->corr_lr);
    cJSON_AddNumberToObject(c, "calib_tokens", (double)cfg->calib_tokens);
    cJSON_AddNumberToObject(c, "ridge", cfg->ridge);
    cJSON_AddStringToObject(c, "optimizer", "AdamW 0.9/0.95, no weight decay, clip 1.0, warmup then cosine to lr/10");
    cJSON_AddStringToObject(root, "data_sha256", cfg->data_sha256);
    cJSON_AddStringToObject(root, "command", command ? command : "");
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

/* Names the first difference between two manifests (ignoring "command"), or returns 0. */
static int manifest_difference(const cJSON *a, const cJSON *b, const char *path, char *out, size_t size) {
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        for (const cJSON *x = a->child; x; x = x->next) {
            if (strcmp(x->string, "command") == 0) continue;
            char sub[256];
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", x->string);
            const cJSON *y = cJSON_GetObjectItemCaseSensitive(b, x->string);
            if (!y) { snprintf(out, size, "%s is missing from the new settings", sub); return 1; }
            if (manifest_difference(x, y, sub, out, size)) return 1;
        }
        for (const cJSON *y = b->child; y; y = y->next) {
            if (strcmp(y->string, "command") == 0) continue;
            if (!cJSON_GetObjectItemCaseSensitive(a, y->string)) {
                snprintf(out, size, "%s%s%s is new", path, *path ? "." : "", y->string);
                return 1;
            }
        }
        return 0;
    }
    if (!cJSON_Compare(a, b, 1)) {
        char *ta = cJSON_PrintUnformatted(a), *tb = cJSON_PrintUnformatted(b);
        snprintf(out, size, "%s is %s in the directory but %s now", path, ta ? ta : "?", tb ? tb : "?");
        cJSON_free(ta);
        cJSON_free(tb);
        return 1;
    }
    return 0;
}

static int make_dir(const char *path) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        qc_error("%s: exists and is not a directory", path);
        return -1;
    }
    qc_error("%s: cannot create directory: %s", path, strerror(errno));
    return -1;
}

static void join(char *out, size_t size, const char *dir, const char *name) { snprintf(out, size, "%s/%s", dir, name); }

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            qc_error("%s: cannot create directory: %s", buf, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    return make_dir(buf);
}

int sweep_prepare_dir(const char *dir, const SweepConfig *cfg, const char *command) {
    char path[4096];
    if (make_dirs(dir) != 0) return -1;
    const char *subdirs[] = {"floats", "quant", "runs", "logs"};
    for (int i = 0; i < 4; i++) {
        join(path, sizeof path, dir, subdirs[i]);
        if (make_dir(path) != 0) return -1;
    }
    char *mine = sweep_manifest_json(cfg, command);
    if (!mine) { qc_error("out of memory"); return -1; }
    join(path, sizeof path, dir, "manifest.json");
    int rc = 0;
    if (access(path, F_OK) == 0) {
        size_t size;
        uint8_t *theirs_text = read_file(path, &size);
        cJSON *theirs = theirs_text ? cJSON_ParseWithLength((const char *)theirs_text, size) : NULL;
        cJSON *ours = cJSON_Parse(mine);
        char diff[1024];
        if (!theirs) {
            qc_error("%s: unreadable manifest: refusing to mix runs (move the directory or repair the file)", path);
            rc = -1;
        } else if (manifest_difference(theirs, ours, "", diff, sizeof diff)) {
            qc_error("%s holds a different sweep: %s (use another --out, or the original settings)", dir, diff);
            rc = -1;
        }
        free(theirs_text);
        cJSON_Delete(theirs);
        cJSON_Delete(ours);
    } else {
        rc = write_file_atomic(path, mine, strlen(mine));
    }
    free(mine);
    return rc;
}

/* ---------------------------------------------------------------- records */

typedef struct {
    double loss;
    double seconds;
} Sidecar;

static int read_sidecar(const char *path, Sidecar *s) {
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength((const char *)text, size);
    free(text);
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
    const cJSON *secs = cJSON_GetObjectItemCaseSensitive(root, "seconds");
    int ok = cJSON_IsNumber(loss) && (cJSON_IsNumber(secs) || cJSON_IsNull(secs)) && isfinite(loss->valuedouble);
    if (ok) {
        s->loss = loss->valuedouble;
        s->seconds = cJSON_IsNumber(secs) ? secs->valuedouble : NAN;
    }
    cJSON_Delete(root);
    return ok ? 0 : -1;
}

/* %.17g: a resumed sweep reads back exactly the double an uninterrupted one kept in memory */
static int write_sidecar(const char *path, double loss, double seconds) {
    char text[256];
    if (isfinite(seconds)) snprintf(text, sizeof text, "{\"loss\": %.17g, \"seconds\": %.3f}\n", loss, seconds);
    else snprintf(text, sizeof text, "{\"loss\": %.17g, \"seconds\": null}\n", loss);
    return write_file_atomic(path, text, strlen(text));
}

static const char *record_fields[] = {"run_id", "seed", "size", "d_model", "n_layer", "bits", "scheme", "every", "hidden",
                                      "correction", "method", "objective", "arm", "loss_float", "loss_quant",
                                      "loss_corrected", "ppl_float", "ppl_quant", "ppl_corrected", "recovery_loss",
                                      "recovery_ppl", "recovery_flag", "gain_loss", "correction_params",
                                      "correction_sites", "steps", "calib_tokens", "seconds_train_float",
                                      "seconds_quantize", "seconds_correct", "seconds_eval"};
#define N_RECORD_FIELDS ((int)(sizeof record_fields / sizeof *record_fields))

/* A record is valid when it parses and holds every summary field (null allowed for recoveries). */
static cJSON *read_record(const char *path, char *why, size_t why_size) {
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text) { snprintf(why, why_size, "unreadable"); return NULL; }
    cJSON *root = sweep_parse_record((const char *)text, size, why, why_size);
    free(text);
    return root;
}

cJSON *sweep_parse_record(const char *text, size_t size, char *why, size_t why_size) {
    cJSON *root = cJSON_ParseWithLength(text, size);
    if (!root || !cJSON_IsObject(root)) { snprintf(why, why_size, "not JSON"); cJSON_Delete(root); return NULL; }
    for (int i = 0; i < N_RECORD_FIELDS; i++)
        if (!cJSON_GetObjectItemCaseSensitive(root, record_fields[i])) {
            snprintf(why, why_size, "field \"%s\" missing", record_fields[i]);
            cJSON_Delete(root);
            return NULL;
        }
    return root;
}

static void csv_field(FILE *f, const cJSON *v) {
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (strpbrk(s, ",\"\n")) {
            fputc('"', f);
            for (; *s; s++) {
                if (*s == '"') fputc('"', f);
                fputc(*s, f);
            }
            fputc('"', f);
        } else {
            fputs(s, f);
        }
    } else if (cJSON_IsNumber(v)) {
        double x = v->valuedouble;
        if (x == (double)(long long)x && fabs(x) < 1e15) fprintf(f, "%lld", (long long)x);
        else fprintf(f, "%.9g", x);
    } /* null: empty field */
}

typedef struct {
    cJSON *json;
    double key[6];
} RecordRow;

static int compare_rows(const void *a, const void *b) {
    const RecordRow *x = a, *y = b;
    for (int i = 0; i < 6; i++)
        if (x->key[i] != y->key[i]) return x->key[i] < y->key[i] ? -1 : 1;
    return 0;
}

static double number_of(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int sweep_write_summary(const char *dir) {
    char path[4096], lock_path[4096];
    join(lock_path, sizeof lock_path, dir, ".lock");
    int lock = open(lock_path, O_CREAT | O_RDWR, 0644);
    if (lock < 0) { qc_error("%s: cannot open the lock: %s", lock_path, strerror(errno)); return -1; }
    flock(lock, LOCK_EX);
    join(path, sizeof path, dir, "runs");
    DIR *d = opendir(path);
    int rc = -1, n = 0, cap = 64;
    RecordRow *rows = qc_calloc((size_t)cap, sizeof(RecordRow), "summary rows");
    char *buf = NULL;
    size_t buf_size = 0;
    FILE *mem = NULL;
    if (!d) { qc_error("%s: %s", path, strerror(errno)); goto done; }
    if (!rows) goto done;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char file[4096 + 256], why[128];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        cJSON *r = read_record(file, why, sizeof why);
        if (!r) continue; /* corrupt records are reported and re-run by sweep_run */
        if (n == cap) {
            RecordRow *bigger = realloc(rows, (size_t)cap * 2 * sizeof(RecordRow));
            if (!bigger) { cJSON_Delete(r); qc_error("out of memory"); goto done; }
            rows = bigger;
            cap *= 2;
        }
        rows[n].json = r;
        rows[n].key[0] = number_of(r, "seed");
        rows[n].key[1] = number_of(r, "d_model") * 1000 + number_of(r, "n_layer");
        rows[n].key[2] = number_of(r, "bits");
        rows[n].key[3] = number_of(r, "every");
        rows[n].key[4] = number_of(r, "hidden");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "method");
        rows[n].key[5] = cJSON_IsString(m) && strcmp(m->valuestring, "lstsq") == 0;
        n++;
    }
    qsort(rows, (size_t)n, sizeof *rows, compare_rows);
    mem = open_memstream(&buf, &buf_size);
    if (!mem) { qc_error("out of memory"); goto done; }
    fprintf(mem, "%s\n", SUMMARY_COLUMNS);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < N_RECORD_FIELDS; k++) {
            if (k) fputc(',', mem);
            csv_field(mem, cJSON_GetObjectItemCaseSensitive(rows[i].json, record_fields[k]));
        }
        fputc('\n', mem);
    }
    fclose(mem);
    mem = NULL;
    join(path, sizeof path, dir, "summary.csv");
    rc = write_file_atomic(path, buf, buf_size);
done:
    if (d) closedir(d);
    for (int i = 0; i < n; i++) cJSON_Delete(rows[i].json);
    free(rows);
    free(buf);
    flock(lock, LOCK_UN);
    close(lock);
    return rc;
}

/* ---------------------------------------------------------------- running */

typedef struct {
    const char *dir;
    int done, total;            /* this shard's runs */
    double started;             /* for the ETA: */
    double work_done, work_left;/* work (float_work, quant_work, run_work) done by this process, and left */
    double step_work, credited; /* the float model in training: work per step, credited so far */
    char phase[160];
    int quiet;
} Progress;

/* The sweep's work in multiply-adds of the matrix products (the cost model of --dry-run), so the
 * ETA can weigh what is left: sizes differ by 100x in cost, so counting runs would not do. Per
 * token, a forward costs L blocks of 12 d^2 + 2 T d and the head 65 d (a character vocabulary). */
static double forward_per_token(const SweepConfig *cfg, int z, int from_block) {
    double d = cfg->sizes[z].d_model, L = cfg->sizes[z].n_layer;
    return (L - from_block) * (12.0 * d * d + 2.0 * cfg->ctx * d) + 65.0 * d;
}
/* a float model: its training steps (forward + backward = 3 forwards) and its evaluation */
static double float_work(const SweepConfig *cfg, int z, double n_val) {
    double f = forward_per_token(cfg, z, 0);
    return 3.0 * f * SIZE_TRAIN_STEPS(cfg, z) * cfg->train_batch * cfg->ctx + f * n_val;
}
/* a quantized model: its evaluation */
static double quant_work(const SweepConfig *cfg, int z, double n_val) { return forward_per_token(cfg, z, 0) * n_val; }
/* a run: correction steps (forward + stream backward) and evaluation above its first site */
static double run_work(const SweepConfig *cfg, const SweepRun *r, double n_val) {
    int first_block = correction_first_site(cfg->sizes[r->size_index].n_layer, r->every);
    double f = forward_per_token(cfg, r->size_index, first_block + 1);
    return 2.0 * f * cfg->corr_steps * cfg->corr_batch * cfg->ctx + f * n_val;
}
static void progress_credit(Progress *p, double work) {
    p->work_done += work;
    p->work_left -= work;
}

static void show_progress(Progress *p, const char *detail) {
    if (p->quiet) return;
    char eta[32] = "?";
    if (p->work_done > 0) {
        double left = (now_seconds() - p->started) / p->work_done * p->work_left;
        if (left < 60) snprintf(eta, sizeof eta, "%.0fs", left);
        else snprintf(eta, sizeof eta, "%dh%02dm", (int)(left / 3600), (int)(fmod(left, 3600) / 60));
    }
    progress_line(stderr, 0, "[%d/%d] %s%s%s ETA %s", p->done, p->total, p->phase, detail ? " " : "", detail ? detail : "", eta);
}

static void on_train_step(void *ctx, int step, int total, double loss) {
    Progress *p = ctx;
    static double last = 0;
    double now = now_seconds();
    double step_credit = p->step_work * step - p->credited; /* the steps since the last call */
    progress_credit(p, step_credit);
    p->credited += step_credit;
    if (step != total && now - last < (isatty(2) ? 0.5 : 30.0)) return;
    last = now;
    char detail[96];
    snprintf(detail, sizeof detail, "step %d/%d loss %.3f", step, total, loss);
    show_progress(p, detail);
}

static void remove_stale_temporaries(const char *dir) {
    const char *subdirs[] = {".", "floats", "quant", "runs", "logs"};
    for (int i = 0; i < 5; i++) {
        char path[4096];
        join(path, sizeof path, dir, subdirs[i]);
        DIR *d = opendir(path);
        if (!d) continue;
        for (struct dirent *e; (e = readdir(d));) {
            if (!is_stale_temporary(e->d_name)) continue;
            char file[4096 + 256];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            unlink(file);
        }
        closedir(d);
    }
}

static void add_str(cJSON *o, const char *k, const char *v) { cJSON_AddStringToObject(o, k, v); }
static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static int write_record(const char *dir, const SweepConfig *cfg, const SweepRun *r, double lf, double lq, double lc,
                        const Corrections *c, double t_float, double t_quant, double t_corr, double t_eval) {
    const ModelSize *z = &cfg->sizes[r->size_index];
    cJSON *o = cJSON_CreateObject();
    char size[32], scheme[256];
    snprintf(size, sizeof size, "%dx%d", z->d_model, z->n_layer);
    QuantScheme s = cfg->scheme;
    s.bits = r->bits;
    quant_scheme_describe(&s, scheme, sizeof scheme);
    add_str(o, "run_id", r->id);
    add_num(o, "seed", r->seed);
    add_str(o, "size", size);
    add_num(o, "d_model", z->d_model);
    add_num(o, "n_layer", z->n_layer);
    add_num(o, "bits", r->bits);
    add_str(o, "scheme", scheme);
    add_num(o, "every", r->every);
    add_num(o, "hidden", r->hidden);
    add_str(o, "correction", r->hidden ? "mlp" : "linear");
    add_str(o, "method", r->method == METHOD_TRAIN ? "train" : "lstsq");
    add_str(o, "objective", r->method == METHOD_TRAIN ? objective_name(cfg->objective) : "lstsq");
    add_str(o, "arm", r->bits == 32 ? "control" : "quant");
    int defined = add_result_fields(o, lf, lq, lc);
    add_str(o, "recovery_flag", defined ? "ok" : "undefined");
    add_num(o, "correction_params", (double)c->num_params);
    add_num(o, "correction_sites", c->n_sites);
    add_num(o, "steps", r->method == METHOD_TRAIN ? cfg->corr_steps : 0);
    add_num(o, "calib_tokens", (double)((cfg->calib_tokens + cfg->ctx - 1) / cfg->ctx * cfg->ctx));
    add_num(o, "seconds_train_float", t_float);
    add_num(o, "seconds_quantize", t_quant);
    add_num(o, "seconds_correct", t_corr);
    add_num(o, "seconds_eval", t_eval);
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    add_str(o, "host", host);
    add_num(o, "finished_unix", (double)time(NULL));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) { qc_error("out of memory"); return -1; }
    char path[4096];
    snprintf(path, sizeof path, "%s/runs/%s.json", dir, r->id);
    int rc = write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

/* Runs already finished; corrupt records are reported, moved aside and re-run. */
static int *finished_runs(const char *dir, const SweepRun *runs, int n, int quiet) {
    int *done = qc_calloc((size_t)n, sizeof(int), "run table");
    if (!done) return NULL;
    for (int i = 0; i < n; i++) {
        char path[4096], why[128];
        snprintf(path, sizeof path, "%s/runs/%s.json", dir, runs[i].id);
        if (access(path, F_OK) != 0) continue;
        cJSON *r = read_record(path, why, sizeof why);
        if (r) {
            done[i] = 1;
            cJSON_Delete(r);
            continue;
        }
        char aside[4200];
        snprintf(aside, sizeof aside, "%s.corrupt", path);
        rename(path, aside);
        fprintf(stderr, "qcorr sweep: %s: corrupt record (%s): moved to %s and re-running it\n", path, why, aside);
        (void)quiet;
    }
    return done;
}

static int ensure_float_model(const char *dir, const SweepConfig *cfg, const Corpus *corpus, int seed, int size_index,
                              int max_batch, GPT *f, Sidecar *side, Progress *p) {
    const ModelSize *z = &cfg->sizes[size_index];
    char base[4096], ckpt[4200], log[4200], meta[4200];
    snprintf(base, sizeof base, "%s/floats/s%d_%dx%d", dir, seed, z->d_model, z->n_layer);
    snprintf(ckpt, sizeof ckpt, "%s.safetensors", base);
    snprintf(log, sizeof log, "%s.train.csv", base);
    snprintf(meta, sizeof meta, "%s.json", base);
    if (access(ckpt, F_OK) == 0) {
        Vocab v;
        if (gpt_load(f, &v, ckpt, max_batch, NULL) != 0) return -1;
        if (read_sidecar(meta, side) == 0) return 0;
        /* killed between checkpoint and sidecar: evaluate again, never retrain */
        side->seconds = NAN;
        side->loss = evaluate_loss(f, corpus->ids + corpus->n_train, corpus->n_val, NULL);
        if (write_sidecar(meta, side->loss, side->seconds) == 0) return 0;
        gpt_free(f);
        return -1;
    }
    GPTConfig g = {.vocab_size = corpus->vocab.size, .ctx = cfg->ctx, .d_model = z->d_model, .n_layer = z->n_layer, .n_head = cfg->heads};
    if (gpt_init(f, &g, max_batch) != 0) return -1;
    gpt_init_weights(f, (uint64_t)seed);
    TrainOptions o;
    train_options_default(&o);
    o.batch = cfg->train_batch;
    o.steps = SIZE_TRAIN_STEPS(cfg, size_index);
    o.lr = (float)cfg->train_lr;
    o.seed = (uint64_t)seed;
    o.log_path = log;
    o.quiet = 1;
    o.on_step = on_train_step;
    o.on_step_ctx = p;
    TrainResult tr;
    if (train_model(f, corpus, &o, &tr) != 0 || gpt_save(f, &corpus->vocab, ckpt, NULL, 0, NULL, 0) != 0) {
        gpt_free(f);
        return -1;
    }
    side->loss = tr.val_loss;
    side->seconds = tr.seconds;
    if (write_sidecar(meta, side->loss, side->seconds) == 0) return 0;
    gpt_free(f);
    return -1;
}

static int ensure_quantized(const char *dir, const SweepConfig *cfg, const Corpus *corpus, const GPT *f, int seed,
                            int size_index, int bits, int max_batch, GPT *q, Sidecar *side) {
    const ModelSize *z = &cfg->sizes[size_index];
    if (gpt_clone(q, f, max_batch) != 0) return -1;
    if (bits == 32) { /* the control arm: the float model itself */
        side->seconds = 0;
        side->loss = NAN;
        return 0;
    }
    QuantScheme s = cfg->scheme;
    s.bits = bits;
    char base[4096], ckpt[4200], meta[4200];
    snprintf(base, sizeof base, "%s/quant/s%d_%dx%d_b%d", dir, seed, z->d_model, z->n_layer, bits);
    snprintf(ckpt, sizeof ckpt, "%s.safetensors", base);
    snprintf(meta, sizeof meta, "%s.json", base);
    double t0 = now_seconds();
    if (quantize_model(q, &s, NULL, NULL) != 0) goto fail;
    double t_quant = now_seconds() - t0;
    if (read_sidecar(meta, side) == 0 && access(ckpt, F_OK) == 0) return 0;
    if (save_model(ckpt, q, &corpus->vocab, &s, NULL, NULL) != 0) goto fail;
    side->seconds = t_quant;
    side->loss = evaluate_loss(q, corpus->ids + corpus->n_train, corpus->n_val, NULL);
    if (write_sidecar(meta, side->loss, side->seconds) == 0) return 0;
fail:
    gpt_free(q); /* on failure the caller owns nothing */
    return -1;
}

int sweep_run(const char *dir, const SweepConfig *cfg, const SweepOptions *o, const char *command) {
    int n_runs, n_groups;
    SweepRun *runs = sweep_enumerate(cfg, &n_runs, &n_groups);
    if (!runs) return -1;
    if (o->dry_run) {
        free(runs);
        qc_error("internal: dry runs are planned by the CLI");
        return -1;
    }
    if (sweep_prepare_dir(dir, cfg, command) != 0) { free(runs); return -1; }
    remove_stale_temporaries(dir);
    Corpus corpus;
    char data[4096];
    if (corpus_find(o->data_path, data, sizeof data) != 0 || corpus_load(&corpus, data, NULL) != 0) { free(runs); return -1; }
    int *done = finished_runs(dir, runs, n_runs, o->quiet);
    if (!done) { corpus_free(&corpus); free(runs); return -1; }
    Progress p = {.dir = dir, .started = now_seconds(), .quiet = o->quiet};
    double n_val = (double)(corpus.n_val - 1);
    for (int i = 0; i < n_runs; i++)
        if (runs[i].group % o->shard_n == o->shard_k - 1) {
            p.total++;
            p.done += done[i];
            if (done[i]) continue;
            p.work_left += run_work(cfg, &runs[i], n_val);
            /* the first unfinished run of its group and of its bit width brings the shared models
             * (they may exist from an earlier start; then the ETA is a little pessimistic) */
            int first_of_group = 1, first_of_bits = 1;
            for (int k = 0; k < i; k++)
                if (!done[k] && runs[k].group == runs[i].group) {
                    first_of_group = 0;
                    if (runs[k].bits == runs[i].bits) first_of_bits = 0;
                }
            if (first_of_group) p.work_left += float_work(cfg, runs[i].size_index, n_val);
            if (first_of_bits && runs[i].bits != 32) p.work_left += quant_work(cfg, runs[i].size_index, n_val);
        }
    int max_batch = cfg->train_batch > cfg->corr_batch ? cfg->train_batch : cfg->corr_batch;
    if (max_batch < 32) max_batch = 32; /* evaluation batches */
    int rc = 0;
    for (int g = 0; g < n_groups && rc == 0; g++) {
        if (g % o->shard_n != o->shard_k - 1) continue;
        int first = -1, todo = 0;
        for (int i = 0; i < n_runs; i++)
            if (runs[i].group == g) {
                if (first < 0) first = i;
                todo += !done[i];
            }
        if (first < 0 || todo == 0) continue;
        const SweepRun *r0 = &runs[first];
        const ModelSize *z = &cfg->sizes[r0->size_index];
        snprintf(p.phase, sizeof p.phase, "float model s%d_%dx%d", r0->seed, z->d_model, z->n_layer);
        show_progress(&p, NULL);
        GPT f;
        Sidecar fs;
        p.step_work = 3.0 * forward_per_token(cfg, r0->size_index, 0) * cfg->train_batch * cfg->ctx;
        p.credited = 0;
        if (ensure_float_model(dir, cfg, &corpus, r0->seed, r0->size_index, max_batch, &f, &fs, &p) != 0) { rc = -1; break; }
        progress_credit(&p, float_work(cfg, r0->size_index, n_val) - p.credited); /* its evaluation, or all of it if loaded */
        for (int i = first; i < n_runs && runs[i].group == g && rc == 0; i++) {
            int bits = runs[i].bits, needed = 0;
            if (i > first && runs[i - 1].bits == bits) continue; /* each bit width once */
            for (int k = i; k < n_runs && runs[k].group == g && runs[k].bits == bits; k++) needed |= !done[k];
            if (!needed) continue;
            GPT q;
            Sidecar qs;
            snprintf(p.phase, sizeof p.phase, "quantize s%d_%dx%d to %d bits", r0->seed, z->d_model, z->n_layer, bits);
            show_progress(&p, NULL);
            if (ensure_quantized(dir, cfg, &corpus, &f, r0->seed, r0->size_index, bits, max_batch, &q, &qs) != 0) { rc = -1; break; }
            if (bits != 32) progress_credit(&p, quant_work(cfg, r0->size_index, n_val));
            double loss_q = bits == 32 ? fs.loss : qs.loss;
            if (gpt_enable_backward(&q) != 0) { gpt_free(&q); rc = -1; break; }
            /* the frozen prefix below the first site, computed once per (bits, first site) and
             * shared by every width and method: calibration windows and validation windows */
            StreamCache calib = {0}, val = {0};
            int cached_block = -1;
            int n_calib = 0;
            int64_t *calib_starts = calibration_windows(&corpus, cfg->calib_tokens, cfg->ctx, (uint64_t)r0->seed, &n_calib);
            if (!calib_starts) { gpt_free(&q); rc = -1; break; }
            for (int k = i; k < n_runs && runs[k].group == g && runs[k].bits == bits && rc == 0; k++) {
                if (done[k]) continue;
                const SweepRun *r = &runs[k];
                int first_block = correction_first_site(z->n_layer, r->every);
                if (first_block != cached_block) {
                    stream_cache_free(&calib);
                    stream_cache_free(&val);
                    snprintf(p.phase, sizeof p.phase, "prefix cache s%d_%dx%d b%d after block %d", r0->seed, z->d_model,
                             z->n_layer, bits, first_block);
                    show_progress(&p, NULL);
                    size_t n_val = (corpus.n_val - 1) / (size_t)cfg->ctx;
                    if (stream_cache_build(&val, &q, corpus.ids + corpus.n_train, NULL, (int)n_val, first_block) != 0 ||
                        (cfg->objective == OBJECTIVE_CE &&
                         stream_cache_build(&calib, &q, corpus.ids, calib_starts, n_calib, first_block) != 0)) {
                        rc = -1;
                        break;
                    }
                    cached_block = first_block;
                }
                snprintf(p.phase, sizeof p.phase, "run %s", r->id);
                show_progress(&p, NULL);
                Corrections c;
                CorrectOptions co;
                correct_options_default(&co);
                co.every = r->every;
                co.hidden = r->hidden;
                co.objective = cfg->objective;
                co.method = r->method;
                co.steps = cfg->corr_steps;
                co.batch = cfg->corr_batch;
                co.lr = (float)cfg->corr_lr;
                co.calib_tokens = cfg->calib_tokens;
                co.seed = (uint64_t)r->seed;
                co.ridge = cfg->ridge;
                co.quiet = 1;
                co.calib_cache = calib.streams ? &calib : NULL;
                char log[4200];
                snprintf(log, sizeof log, "%s/logs/%s.correct.csv", dir, r->id);
                co.log_path = method_info[r->method].trains ? log : NULL;
                CorrectionResult res;
                if (run_correction(&q, &f, &corpus, &co, &val, NULL, &c, &res) != 0) { rc = -1; break; }
                double loss_c = res.eval.loss;
                evaluation_free(&res.eval);
                if (write_record(dir, cfg, r, fs.loss, loss_q, loss_c, &c, fs.seconds, qs.seconds, res.seconds_correct,
                                 res.seconds_eval) != 0 ||
                    sweep_write_summary(dir) != 0) {
                    corrections_free(&c);
                    rc = -1;
                    break;
                }
                corrections_free(&c);
                done[k] = 1;
                p.done++;
                progress_credit(&p, run_work(cfg, r, n_val));
                if (o->quiet == 0 && !isatty(2)) show_progress(&p, "done");
                if (qc_stop_signal) {
                    qc_error("interrupted by signal %d: %d of %d runs finished; start the same command again to resume",
                             (int)qc_stop_signal, p.done, p.total);
                    rc = -1;
                }
            }
            stream_cache_free(&calib);
            stream_cache_free(&val);
            free(calib_starts);
            gpt_free(&q);
        }
        /* the float group's time is counted into the ETA through its runs */
        gpt_free(&f);
    }
    if (rc == 0) rc = sweep_write_summary(dir);
    if (!o->quiet) {
        if (isatty(2)) fputc('\n', stderr);
        if (rc == 0) fprintf(stderr, "sweep: %d/%d runs of this shard finished in %s (%.0f s)\n", p.done, p.total, dir,
                             now_seconds() - p.started);
    }
    free(done);
    free(runs);
    corpus_free(&corpus);
    return rc;
}
