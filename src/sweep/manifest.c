/* sweep/manifest: the directory's identity — every grid value and hyper-parameter as canonical
 * JSON, written once when the directory is made; a later start with other settings is refused. */
#include "sweep/parts.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* The manifest's entries that are not an axis's, each with its rank in its section (the axes'
 * ranks are in SWEEP_AXES: the entries of a section are written in rank order). */
static void corrected_bits_entry(const SweepConfig *cfg, cJSON *grid) {
    if (cfg->n_corrected_bits) cJSON_AddItemToObject(grid, "corrected_bits", int_array(cfg->corrected_bits, cfg->n_corrected_bits));
}
static void corrected_grans_entry(const SweepConfig *cfg, cJSON *grid) {
    if (!cfg->n_corrected_grans) return;
    cJSON *cg = cJSON_AddArrayToObject(grid, "corrected_granularities");
    for (int i = 0; i < cfg->n_corrected_grans; i++) {
        QuantScheme g = cfg->scheme;
        g.granularity = cfg->corrected_grans[i].granularity, g.group = cfg->corrected_grans[i].group;
        char text[32];
        describe_granularity(&g, text, sizeof text);
        cJSON_AddItemToArray(cg, cJSON_CreateString(text));
    }
}
static void control_entry(const SweepConfig *cfg, cJSON *grid) { cJSON_AddBoolToObject(grid, "control", cfg->control); }
static const ManifestEntry grid_entries[] = {{100, corrected_bits_entry}, {110, corrected_grans_entry}, {120, control_entry}};

static void objective_entry(const SweepConfig *cfg, cJSON *c) { cJSON_AddStringToObject(c, "objective", objective_name(cfg->objective)); }
static void init_entry(const SweepConfig *cfg, cJSON *c) {
    if (cfg->init == INIT_LSTSQ) cJSON_AddStringToObject(c, "init", "lstsq");
}
static void batch_entry(const SweepConfig *cfg, cJSON *c) { cJSON_AddNumberToObject(c, "batch", cfg->corr_batch); }
static void lr_entry(const SweepConfig *cfg, cJSON *c) { cJSON_AddNumberToObject(c, "lr", cfg->corr_lr); }
static void ridge_entry(const SweepConfig *cfg, cJSON *c) { cJSON_AddNumberToObject(c, "ridge", cfg->ridge); }
static void lowrank_entry(const SweepConfig *cfg, cJSON *c) {
    if (cfg->rank) cJSON_AddNumberToObject(c, "lowrank_rank", cfg->rank);
    else cJSON_AddStringToObject(c, "lowrank_rank", "match");
    cJSON_AddStringToObject(c, "lowrank_scale", cfg->lowrank_act_scale ? "act" : "none");
}
static void optimizer_entry(const SweepConfig *cfg, cJSON *c) {
    (void)cfg;
    cJSON_AddStringToObject(c, "optimizer", "AdamW 0.9/0.95, no weight decay, clip 1.0, warmup then cosine to lr/10");
}
static const ManifestEntry correction_entries[] = {{10, objective_entry}, {30, init_entry},    {40, batch_entry},    {50, lr_entry},
                                                   {70, ridge_entry},     {80, lowrank_entry}, {90, optimizer_entry}};

char *sweep_manifest_json(const SweepConfig *cfg, const char *command) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "qcorr_manifest", 1);
    cJSON *grid = cJSON_AddObjectToObject(root, "grid");
    sweep_manifest_section(cfg, grid, MANIFEST_GRID, grid_entries, (int)(sizeof grid_entries / sizeof *grid_entries));
    cJSON *ft = cJSON_AddObjectToObject(root, "float_training");
    cJSON_AddNumberToObject(ft, "heads", cfg->heads);
    cJSON_AddNumberToObject(ft, "ctx", cfg->ctx);
    cJSON_AddNumberToObject(ft, "batch", cfg->train_batch);
    cJSON *steps = cJSON_AddObjectToObject(ft, "steps"); /* float training steps per size */
    for (int i = 0; i < cfg->n_sizes; i++) {
        char s[32];
        snprintf(s, sizeof s, "%dx%d", cfg->sizes[i].d_model, cfg->sizes[i].n_layer);
        cJSON_AddNumberToObject(steps, s, SIZE_TRAIN_STEPS(cfg, i));
    }
    cJSON_AddNumberToObject(ft, "lr", cfg->train_lr);
    cJSON_AddStringToObject(ft, "schedule", "warmup min(100, steps/10), cosine to lr/10");
    cJSON_AddStringToObject(ft, "optimizer", "AdamW 0.9/0.95 eps 1e-8, weight decay 0.1 on matrices, clip 1.0");
    cJSON *q = cJSON_AddObjectToObject(root, "quantization");
    /* as the checkpoints' metadata spells them (strings) */
    char part[64];
    cJSON_AddStringToObject(q, "quant_asymmetric", cfg->scheme.asymmetric ? "1" : "0");
    describe_scope(cfg->scheme.scope, part, sizeof part);
    cJSON_AddStringToObject(q, "quant_scope", part);
    snprintf(part, sizeof part, "%d", cfg->scheme.act.bits);
    cJSON_AddStringToObject(q, "quant_act_bits", cfg->act_same & SWEEP_ACT_SAME_BITS ? "same" : part);
    /* only where the activation scheme is more than quant_act_bits says (older manifests compare) */
    const ActScheme *act = &cfg->scheme.act;
    if (cfg->act_same || act->points != (act->bits ? ACT_POINT_INPUTS : 0u) || (act->points && (act->granularity != ACT_TOKEN || act->asymmetric))) {
        char desc[128], same[320], kv[32];
        act_scheme_describe(act, desc, sizeof desc);
        /* same: the description's bits are placeholders; what follows the weight bits, said in full
         * (a fixed --kv-bits 8 and keys and values that follow the weights describe alike) */
        if (!act->kv_bits) snprintf(kv, sizeof kv, "off");
        else if (cfg->act_same & SWEEP_ACT_SAME_KV) snprintf(kv, sizeof kv, "each run's weight bits");
        else snprintf(kv, sizeof kv, "int%d", act->kv_bits);
        snprintf(same, sizeof same, "%s with activations at %s, keys and values %s; the control arm quantizes none", desc,
                 cfg->act_same & SWEEP_ACT_SAME_BITS ? "each run's weight bits" : "their bits", kv);
        cJSON_AddStringToObject(q, "quant_act", cfg->act_same ? same : desc);
    }
    cJSON_AddStringToObject(q, "quant_scale_dtype", scale_dtype_name(cfg->scheme.scale_dtype));
    cJSON_AddStringToObject(q, "rounding", "nearest, ties to even; weight-only fake quantization");
    cJSON *c = cJSON_AddObjectToObject(root, "correction");
    sweep_manifest_section(cfg, c, MANIFEST_CORRECTION, correction_entries, (int)(sizeof correction_entries / sizeof *correction_entries));
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

/* The manifest is created exclusively (write_file_new): of sweeps started at the same moment
 * into a new directory, one writes it and the others compare against it, as a later start does. */
int sweep_prepare_dir(const char *dir, const SweepConfig *cfg, const char *command, int *created) {
    char path[4096];
    if (created) *created = 0;
    if (make_dirs(dir) != 0) return -1;
    const char *subdirs[] = {"floats", "quant", "runs", "logs"};
    for (int i = 0; i < 4; i++) {
        join(path, sizeof path, dir, subdirs[i]);
        if (make_dir(path) != 0) return -1;
    }
    char *mine = sweep_manifest_json(cfg, command);
    if (!mine) { qc_error("out of memory"); return -1; }
    join(path, sizeof path, dir, "manifest.json");
    int rc = access(path, F_OK) == 0 ? 1 : write_file_new(path, mine, strlen(mine));
    if (rc == 0 && created) *created = 1;
    if (rc == 1) { /* an existing sweep: it must be this one */
        size_t size;
        uint8_t *theirs_text = read_file(path, &size);
        cJSON *theirs = theirs_text ? cJSON_ParseWithLength((const char *)theirs_text, size) : NULL;
        cJSON *ours = cJSON_Parse(mine);
        char diff[1024];
        rc = 0;
        if (!theirs) {
            qc_error("%s: unreadable manifest: refusing to mix runs (move the directory or repair the file)", path);
            rc = -1;
        } else if (manifest_difference(theirs, ours, "", diff, sizeof diff)) {
            qc_error("%s holds a different sweep: %s (use another directory, or the original settings)", dir, diff);
            rc = -1;
        }
        free(theirs_text);
        cJSON_Delete(theirs);
        cJSON_Delete(ours);
    }
    free(mine);
    return rc;
}

void sweep_release_manifest(const char *dir) {
    const char *subdirs[] = {"floats", "quant", "runs", "logs"};
    char path[4096];
    for (int i = 0; i < 4; i++) {
        join(path, sizeof path, dir, subdirs[i]);
        DIR *d = opendir(path);
        if (!d) continue;
        int empty = 1;
        for (struct dirent *e; empty && (e = readdir(d));) empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
        closedir(d);
        if (!empty) return; /* work of this or another start: the manifest is what it belongs to */
    }
    join(path, sizeof path, dir, "manifest.json");
    unlink(path);
}
