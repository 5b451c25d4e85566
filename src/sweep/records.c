/* sweep/records: one run's record (runs/<id>.json, written atomically, checked when read back)
 * and summary.csv, rebuilt from every valid record under a lock so shards never lose a row. */
#include "sweep/parts.h"

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

#include "base/util.h"
#include "tables/schema.h"

/* A parsed record's fields into r (strings borrowed from o); -1 with the reason in why when a
 * field the schema requires is missing, or any field has the wrong type or an integer is out of
 * its bounds (a record the report would refuse is corrupt here already). */
static int record_from_json(const cJSON *o, RunRecord *r, char *why, size_t why_size) {
    run_record_clear(r);
    for (int k = 0; k < SCHEMA_N_COLUMNS; k++) {
        const SchemaColumn *c = &schema_columns[k];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, c->name);
        int required = (c->flags & SCHEMA_RECORD) != 0;
        if (!v || cJSON_IsNull(v)) {
            if (!v && required) { snprintf(why, why_size, "field \"%s\" missing", c->name); return -1; }
            if (v && required && c->type != SCHEMA_REAL) { snprintf(why, why_size, "field \"%s\" is null", c->name); return -1; }
            continue; /* empty: a real may be undefined (null), a newer field absent */
        }
        if (c->type == SCHEMA_STRING) {
            if (!cJSON_IsString(v)) { snprintf(why, why_size, "field \"%s\" is not a string", c->name); return -1; }
            *schema_string(r, c) = v->valuestring;
        } else if (!cJSON_IsNumber(v)) {
            snprintf(why, why_size, "field \"%s\" is not a number", c->name);
            return -1;
        } else if (schema_set_number(r, c, v->valuedouble, why, why_size) != 0) {
            return -1;
        }
    }
    return 0;
}

/* r as JSON, in the schema's order: empty fields (and non-finite reals) as null. */
static cJSON *record_to_json(const RunRecord *r) {
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; o && k < SCHEMA_N_COLUMNS; k++) {
        const SchemaColumn *c = &schema_columns[k];
        if (!schema_is_set(r, c)) cJSON_AddNullToObject(o, c->name);
        else if (c->type == SCHEMA_STRING) cJSON_AddStringToObject(o, c->name, schema_get_string(r, c));
        else if (c->type == SCHEMA_INTEGER) cJSON_AddNumberToObject(o, c->name, (double)schema_get_integer(r, c));
        else if (isfinite(schema_get_real(r, c))) cJSON_AddNumberToObject(o, c->name, schema_get_real(r, c));
        else cJSON_AddNullToObject(o, c->name);
    }
    return o;
}

cJSON *sweep_parse_record(const char *text, size_t size, char *why, size_t why_size) {
    cJSON *root = cJSON_ParseWithLength(text, size);
    if (!root || !cJSON_IsObject(root)) { snprintf(why, why_size, "not JSON"); cJSON_Delete(root); return NULL; }
    RunRecord r;
    if (record_from_json(root, &r, why, why_size) != 0) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* A valid record read from path, its values in *values (borrowing from the returned JSON). */
static cJSON *read_record(const char *path, RunRecord *values, char *why, size_t why_size) {
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text) { snprintf(why, why_size, "unreadable"); return NULL; }
    cJSON *root = sweep_parse_record((const char *)text, size, why, why_size);
    free(text);
    if (root) record_from_json(root, values, why, why_size);
    return root;
}

typedef struct {
    cJSON *json;
    RunRecord values;
} RecordRow;

/* summary.csv's order: the axes' (SWEEP_AXES' sort column), then the run id */
static int compare_rows(const void *a, const void *b) {
    return sweep_compare_records(&((const RecordRow *)a)->values, &((const RecordRow *)b)->values);
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
        if (n == cap) {
            RecordRow *bigger = realloc(rows, (size_t)cap * 2 * sizeof(RecordRow));
            if (!bigger) { qc_error("out of memory"); goto done; }
            rows = bigger;
            cap *= 2;
        }
        rows[n].json = read_record(file, &rows[n].values, why, sizeof why);
        if (rows[n].json) n++; /* corrupt records are reported and re-run by sweep_run */
    }
    qsort(rows, (size_t)n, sizeof *rows, compare_rows);
    mem = open_memstream(&buf, &buf_size);
    if (!mem) { qc_error("out of memory"); goto done; }
    schema_write_summary_header(mem);
    for (int i = 0; i < n; i++) schema_write_summary_row(mem, &rows[i].values);
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

_Static_assert(STEPS_AUTO == SCHEMA_STEPS_AUTO, "a --steps auto run's record says steps -1");

int sweep_write_record(const char *dir, const SweepConfig *cfg, const SweepRun *r, const Outcome *out, const Corrections *c,
                       const RunTimes *t, const TrainSummary *ts) {
    const ModelSize *z = &cfg->sizes[r->size_index];
    char size[32], scheme[256], gran[32], host[128] = "";
    snprintf(size, sizeof size, "%dx%d", z->d_model, z->n_layer);
    QuantScheme s = sweep_run_scheme(cfg, r);
    quant_scheme_describe(&s, scheme, sizeof scheme);
    describe_granularity(&s, gran, sizeof gran);
    gethostname(host, sizeof host - 1);
    const MethodInfo *m = &method_info[r->method];
    char method[64]; /* a combination: lwc+train */
    if (r->first != METHOD_NONE) snprintf(method, sizeof method, "%s+%s", method_name(r->first), m->name);
    else snprintf(method, sizeof method, "%s", m->name);
    int trained = (m->trains && r->steps != 0) || (r->first != METHOD_NONE && method_info[r->first].trains);
    RunRecord v;
    run_record_clear(&v);
    v.run_id = r->id;
    v.seed = r->seed;
    v.size = size;
    v.d_model = z->d_model;
    v.n_layer = z->n_layer;
    v.bits = r->bits;
    v.scheme = scheme;
    v.every = r->every;
    v.hidden = r->hidden;
    v.correction = kind_name(c->kind);
    v.method = method;
    v.objective = trained ? objective_name(cfg->objective) : method;
    v.arm = r->bits == 32 ? "control" : "quant";
    v.loss_float = out->loss_float;
    v.loss_quant = out->loss_quant;
    v.loss_corrected = out->loss_corrected;
    v.ppl_float = exp(out->loss_float);
    v.ppl_quant = exp(out->loss_quant);
    v.ppl_corrected = exp(out->loss_corrected);
    v.recovery_loss = out->recovery_loss;
    v.recovery_ppl = out->recovery_ppl;
    v.recovery_flag = recovery_flag_name(out->flag);
    v.gain_loss = out->loss_quant - out->loss_corrected;
    v.correction_params = (long)corrections_stored_params(c); /* bias: 0, folded into the base */
    v.correction_sites = c->n_sites;
    v.steps = r->steps;
    v.calib_tokens = (r->calib + cfg->ctx - 1) / cfg->ctx * cfg->ctx;
    v.seconds_train_float = t->train_float;
    v.seconds_quantize = t->quantize;
    v.seconds_correct = t->correct;
    v.seconds_eval = t->eval;
    v.quantizer = quantizer_name(r->quantizer);
    v.granularity = gran;
    v.correction_stored_bits = r->corr_bits;
    v.loss_se_float = out->loss_se_float;
    v.loss_se_quant = out->loss_se_quant;
    v.loss_se_corrected = out->loss_se_corrected;
    v.gap_se = out->gap_se;
    v.gain_se = out->gain_se;
    v.kl_quant = out->kl_quant;
    v.kl_corrected = out->kl_corrected;
    v.top1_quant = out->top1_quant;
    v.top1_corrected = out->top1_corrected;
    v.model_bits_float = out->model_bits_float;
    v.model_bits_quant = out->model_bits_quant;
    v.model_bits_corrected = out->model_bits_corrected;
    v.correction_bits = out->correction_bits;
    v.bits_per_weight = out->bits_per_weight;
    if (ts && m->trains && r->steps != 0) { /* what the training did (a fixed count, or --steps auto's stop) */
        v.steps_run = ts->steps_run;
        v.best_step = ts->best_step;
        v.stopped_by = stop_reason_name(ts->stopped_by);
        v.heldout_objective = ts->heldout_objective;
    }
    v.host = host;
    v.finished_unix = (long)time(NULL);
    cJSON *o = record_to_json(&v);
    char *text = o ? cJSON_Print(o) : NULL;
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
        RunRecord values;
        cJSON *r = read_record(path, &values, why, sizeof why);
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
