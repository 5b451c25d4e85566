/* sweep/records: one run's record (runs/<id>.json, written atomically, checked when read back)
 * and summary.csv, rebuilt from every valid record under a lock so shards never lose a row. */
#include "parts.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "../util.h"

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

static void add_str(cJSON *o, const char *k, const char *v) { cJSON_AddStringToObject(o, k, v); }
static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

int sweep_write_record(const char *dir, const SweepConfig *cfg, const SweepRun *r, double lf, double lq, double lc,
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
int *sweep_finished_runs(const char *dir, const SweepRun *runs, int n, int quiet) {
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
