/* sweep/axes: the functions of each sweep axis (SWEEP_AXES in sweep.h), side by side, and the
 * walks over the table that use them: the enumeration of the runs, their ids, the manifest's
 * axis entries and summary.csv's row order. */
#include "sweep/parts.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static int compare_long(long a, long b) { return a < b ? -1 : a > b; }

/* The scheme's granularity with entry k of a list of granularities. */
static QuantScheme granularity_scheme(const SweepConfig *cfg, const SweepGranularity *g) {
    QuantScheme s = cfg->scheme;
    s.granularity = g->granularity;
    s.group = g->group;
    return s;
}

/* ---- seeds: one float model each ---- */
static int seeds_parse(const char *flag, const char *text, SweepConfig *cfg) {
    return parse_int_list(flag, text, cfg->seeds, &cfg->n_seeds, 0, 2147483647);
}
static int seeds_slots(const SweepConfig *cfg) { return cfg->n_seeds; }
static void seeds_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->seed = cfg->seeds[slot]; }
static void seeds_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg;
    snprintf(out, size, "s%d", r->seed);
}
static void seeds_manifest(const SweepConfig *cfg, cJSON *grid) { cJSON_AddItemToObject(grid, "seeds", int_array(cfg->seeds, cfg->n_seeds)); }
static int seeds_compare(const RunRecord *a, const RunRecord *b) { return compare_long(a->seed, b->seed); }
static const SweepAxisOps axis_seeds = {"comma list, e.g. 42,123,999", NULL, seeds_parse, seeds_slots, seeds_set, NULL,
                                        seeds_id, seeds_manifest, seeds_compare};

/* ---- sizes: one float model each (the run holds the index) ---- */
static int sizes_parse(const char *flag, const char *text, SweepConfig *cfg) { return parse_size_list(flag, text, cfg->sizes, &cfg->n_sizes); }
static int sizes_slots(const SweepConfig *cfg) { return cfg->n_sizes; }
static void sizes_set(const SweepConfig *cfg, SweepRun *r, int slot) {
    (void)cfg;
    r->size_index = slot;
}
static void sizes_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    snprintf(out, size, "_%dx%d", cfg->sizes[r->size_index].d_model, cfg->sizes[r->size_index].n_layer);
}
static void sizes_manifest(const SweepConfig *cfg, cJSON *grid) {
    cJSON *sizes = cJSON_AddArrayToObject(grid, "sizes");
    for (int i = 0; i < cfg->n_sizes; i++) {
        char s[32];
        snprintf(s, sizeof s, "%dx%d", cfg->sizes[i].d_model, cfg->sizes[i].n_layer);
        cJSON_AddItemToArray(sizes, cJSON_CreateString(s));
    }
}
static int sizes_compare(const RunRecord *a, const RunRecord *b) {
    return compare_long(a->d_model * 1000 + a->n_layer, b->d_model * 1000 + b->n_layer);
}
static const SweepAxisOps axis_sizes = {"comma list of D_MODELxLAYERS[:STEPS], e.g. 64x2,128x4:800", NULL, sizes_parse, sizes_slots,
                                        sizes_set, NULL, sizes_id, sizes_manifest, sizes_compare};

/* ---- quantizers (methods.h's table, in table order) ---- */
static int quantizers_slots(const SweepConfig *cfg) { return cfg->n_quantizers; }
static void quantizers_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->quantizer = cfg->quantizers[slot]; }
static void quantizers_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg; /* the table's first (rtn), the historic default, names no part */
    snprintf(out, size, "%s%s", r->quantizer == 0 ? "" : "_", r->quantizer == 0 ? "" : quantizer_name(r->quantizer));
}
static void quantizers_manifest(const SweepConfig *cfg, cJSON *grid) {
    cJSON *a = cJSON_AddArrayToObject(grid, "quantizers");
    for (int i = 0; i < cfg->n_quantizers; i++) cJSON_AddItemToArray(a, cJSON_CreateString(quantizer_name(cfg->quantizers[i])));
}
static long quantizer_rank(const char *q) {
    int k = q ? quantizer_by_name(q) : -1;
    return k < 0 ? 0 : k;
}
static int quantizers_compare(const RunRecord *a, const RunRecord *b) { return compare_long(quantizer_rank(a->quantizer), quantizer_rank(b->quantizer)); }
static const SweepAxisOps axis_quantizers = {"comma list of quantizers, any of %s (default rtn)", quantizer_names, parse_quantizer_list,
                                             quantizers_slots, quantizers_set, NULL, quantizers_id, quantizers_manifest,
                                             quantizers_compare};

/* ---- granularities (the run holds the index): a group that does not divide a size's width
 * skips that size ---- */
static int grans_slots(const SweepConfig *cfg) { return cfg->n_grans; }
static void grans_set(const SweepConfig *cfg, SweepRun *r, int slot) {
    (void)cfg;
    r->gran = slot;
}
static int grans_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    const SweepGranularity *g = &cfg->grans[slot];
    int group = g->granularity == GRAN_GROUP ? g->group : 0;
    return r->bits == 32 || !group || cfg->sizes[r->size_index].d_model % group == 0; /* the control arm quantizes no weight */
}
static void grans_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    const SweepGranularity *g = &cfg->grans[r->gran];
    if (g->granularity == GRAN_TENSOR) snprintf(out, size, "_tensor");
    else if (g->granularity == GRAN_GROUP) snprintf(out, size, "_g%d", g->group);
    else out[0] = 0; /* channel, the historic default */
}
static void grans_manifest(const SweepConfig *cfg, cJSON *grid) {
    cJSON *a = cJSON_AddArrayToObject(grid, "granularities");
    for (int i = 0; i < cfg->n_grans; i++) {
        QuantScheme g = granularity_scheme(cfg, &cfg->grans[i]);
        char text[32];
        describe_granularity(&g, text, sizeof text);
        cJSON_AddItemToArray(a, cJSON_CreateString(text));
    }
}
static int grans_compare(const RunRecord *a, const RunRecord *b) {
    return strcmp(a->granularity ? a->granularity : "channel", b->granularity ? b->granularity : "channel");
}
static const SweepAxisOps axis_grans = {"comma list of granularities, e.g. tensor,channel,group:32", NULL, parse_granularity_list,
                                        grans_slots, grans_set, grans_admits, grans_id, grans_manifest, grans_compare};

/* ---- bits, and after them the control arm (32 bits: the float model) once per group ---- */
static int bits_parse(const char *flag, const char *text, SweepConfig *cfg) { return parse_int_list(flag, text, cfg->bits, &cfg->n_bits, 2, 8); }
static int bits_slots(const SweepConfig *cfg) { return cfg->n_bits + 1; }
static void bits_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->bits = slot < cfg->n_bits ? cfg->bits[slot] : 32; }
static int bits_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    return slot < cfg->n_bits || (cfg->control && r->quantizer == cfg->quantizers[0] && r->gran == 0);
}
static void bits_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg;
    snprintf(out, size, "_b%d", r->bits);
}
static void bits_manifest(const SweepConfig *cfg, cJSON *grid) { cJSON_AddItemToObject(grid, "bits", int_array(cfg->bits, cfg->n_bits)); }
static int bits_compare(const RunRecord *a, const RunRecord *b) { return compare_long(a->bits, b->bits); }
static const SweepAxisOps axis_bits = {"comma list of weight bits in 2..8", NULL, bits_parse, bits_slots, bits_set, bits_admits,
                                       bits_id, bits_manifest, bits_compare};

/* ---- calibration budgets: a method that fits nothing runs once, at the first ---- */
static int calib_parse(const char *flag, const char *text, SweepConfig *cfg) {
    return parse_int_list(flag, text, cfg->calib_axis, &cfg->n_calib_axis, 1, 2000000000);
}
static int calib_slots(const SweepConfig *cfg) { return cfg->n_calib_axis; }
static void calib_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->calib = cfg->calib_axis[slot]; }
static int calib_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)cfg;
    return slot == 0 || method_corrects(r->method);
}
static void calib_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    if (cfg->n_calib_axis > 1 && method_corrects(r->method)) snprintf(out, size, "_k%ld", r->calib); /* only where the grid varies it */
    else out[0] = 0;
}
static void calib_manifest(const SweepConfig *cfg, cJSON *c) {
    if (cfg->n_calib_axis > 1) cJSON_AddItemToObject(c, "calib_tokens", int_array(cfg->calib_axis, cfg->n_calib_axis));
    else cJSON_AddNumberToObject(c, "calib_tokens", (double)cfg->calib_axis[0]);
}
static const SweepAxisOps axis_calib = {"calibration budget in train characters, or a comma list", NULL, calib_parse, calib_slots,
                                        calib_set, calib_admits, calib_id, calib_manifest, NULL};

/* ---- every: the methods on the stream once per value, the others once, after them ---- */
static int every_parse(const char *flag, const char *text, SweepConfig *cfg) { return parse_int_list(flag, text, cfg->every, &cfg->n_every, 1, 256); }
static int every_slots(const SweepConfig *cfg) { return cfg->n_every + 1; }
static void every_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->every = slot < cfg->n_every ? cfg->every[slot] : 0; }
static int every_admits(const SweepConfig *cfg, const SweepRun *r, int slot) { return method_uses_every(r->method) == (slot < cfg->n_every); }
static void every_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg;
    if (method_uses_every(r->method)) snprintf(out, size, "_e%d", r->every);
    else out[0] = 0;
}
static void every_manifest(const SweepConfig *cfg, cJSON *grid) { cJSON_AddItemToObject(grid, "every", int_array(cfg->every, cfg->n_every)); }
static int every_compare(const RunRecord *a, const RunRecord *b) { return compare_long(a->every, b->every); }
static const SweepAxisOps axis_every = {"comma list of correction frequencies", NULL, every_parse, every_slots, every_set, every_admits,
                                        every_id, every_manifest, every_compare};

/* Whether the correcting methods run at r's bits and granularity (SweepConfig.corrected_*). */
static int corrected_here(const SweepConfig *cfg, const SweepRun *r) {
    int ok = cfg->n_corrected_bits == 0;
    for (int i = 0; i < cfg->n_corrected_bits; i++) ok |= cfg->corrected_bits[i] == r->bits;
    if (!ok || cfg->n_corrected_grans == 0) return ok;
    const SweepGranularity *g = &cfg->grans[r->gran];
    for (int i = 0; i < cfg->n_corrected_grans; i++)
        if (cfg->corrected_grans[i].granularity == g->granularity && (g->granularity != GRAN_GROUP || cfg->corrected_grans[i].group == g->group))
            return 1;
    return 0;
}

/* ---- methods (methods.h's table, in table order): at 32 bits only what corrects the stream
 * has something to learn; --corrected-bits/-granularities keep the others to none ---- */
static int methods_slots(const SweepConfig *cfg) { return cfg->n_methods; }
static void methods_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->method = cfg->methods[slot]; }
static int methods_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)slot;
    if (r->bits == 32) return method_corrects(r->method) && method_uses_every(r->method);
    return !method_corrects(r->method) || corrected_here(cfg, r);
}
static void methods_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg;
    snprintf(out, size, "_%s", method_name(r->method));
}
static void methods_manifest(const SweepConfig *cfg, cJSON *grid) {
    cJSON *a = cJSON_AddArrayToObject(grid, "methods");
    for (int i = 0; i < cfg->n_methods; i++) cJSON_AddItemToArray(a, cJSON_CreateString(method_name(cfg->methods[i])));
}
static long method_rank(const char *m) {
    int k = m ? method_by_name(m) : -1;
    return k < 0 ? METHOD_COUNT : k;
}
static int methods_compare(const RunRecord *a, const RunRecord *b) { return compare_long(method_rank(a->method), method_rank(b->method)); }
static const SweepAxisOps axis_methods = {"comma list of fitting methods, any of %s (default train)", method_names, parse_method_list,
                                          methods_slots, methods_set, methods_admits, methods_id, methods_manifest, methods_compare};

/* ---- hidden: only for the methods with a width (0 elsewhere) ---- */
static int hidden_parse(const char *flag, const char *text, SweepConfig *cfg) {
    return parse_int_list(flag, text, cfg->hidden, &cfg->n_hidden, 0, 65536);
}
static int hidden_slots(const SweepConfig *cfg) { return cfg->n_hidden; }
static void hidden_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->hidden = method_uses_hidden(r->method) ? cfg->hidden[slot] : 0; }
static int hidden_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)cfg;
    return slot == 0 || method_uses_hidden(r->method);
}
static void hidden_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg; /* beside every, as ids always had it */
    if (method_uses_every(r->method)) snprintf(out, size, "_h%d", r->hidden);
    else out[0] = 0;
}
static void hidden_manifest(const SweepConfig *cfg, cJSON *grid) { cJSON_AddItemToObject(grid, "hidden", int_array(cfg->hidden, cfg->n_hidden)); }
static int hidden_compare(const RunRecord *a, const RunRecord *b) { return compare_long(a->hidden, b->hidden); }
static const SweepAxisOps axis_hidden = {"comma list of correction widths (0 = linear)", NULL, hidden_parse, hidden_slots, hidden_set,
                                         hidden_admits, hidden_id, hidden_manifest, hidden_compare};

/* ---- the width corrections are stored at: only for methods that store corrections (32 elsewhere) ---- */
static int method_stores(CorrectMethod m) { return method_corrects(m) && !method_tunes(m); } /* tuning stores no correction */
static int corr_bits_parse(const char *flag, const char *text, SweepConfig *cfg) {
    return parse_int_list(flag, text, cfg->corr_bits, &cfg->n_corr_bits, 2, 32);
}
static int corr_bits_slots(const SweepConfig *cfg) { return cfg->n_corr_bits; }
static void corr_bits_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->corr_bits = method_stores(r->method) ? cfg->corr_bits[slot] : 32; }
static int corr_bits_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)cfg;
    return slot == 0 || method_stores(r->method);
}
static void corr_bits_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg;
    if (r->corr_bits < 32) snprintf(out, size, "_c%d", r->corr_bits);
    else out[0] = 0;
}
static void corr_bits_manifest(const SweepConfig *cfg, cJSON *grid) {
    cJSON_AddItemToObject(grid, "correction_stored_bits", int_array(cfg->corr_bits, cfg->n_corr_bits));
}
static int corr_bits_compare(const RunRecord *a, const RunRecord *b) { /* float first */
    long x = a->correction_stored_bits == SCHEMA_NO_INTEGER ? 32 : a->correction_stored_bits;
    long y = b->correction_stored_bits == SCHEMA_NO_INTEGER ? 32 : b->correction_stored_bits;
    return compare_long(y, x);
}
static const SweepAxisOps axis_corr_bits = {"comma list of widths the corrections are stored at: 32 (float), 16, 8", NULL, corr_bits_parse,
                                            corr_bits_slots, corr_bits_set, corr_bits_admits, corr_bits_id, corr_bits_manifest,
                                            corr_bits_compare};

/* ---- correction steps (a budget curve): only for methods that train (0 elsewhere) ---- */
int sweep_steps_auto(const SweepConfig *cfg) {
    int any = 0;
    for (int i = 0; i < cfg->n_steps_axis; i++) any |= cfg->steps_axis[i] == STEPS_AUTO;
    return any;
}
static int steps_parse(const char *flag, const char *text, SweepConfig *cfg) { return parse_steps_list(flag, text, cfg->steps_axis, &cfg->n_steps_axis); }
static int steps_slots(const SweepConfig *cfg) { return cfg->n_steps_axis; }
static void steps_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->steps = method_info[r->method].trains ? cfg->steps_axis[slot] : 0; }
static int steps_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)cfg;
    return slot == 0 || method_info[r->method].trains;
}
static void steps_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    out[0] = 0;
    if (cfg->n_steps_axis < 2 || !method_info[r->method].trains) return; /* only where the grid varies it */
    if (r->steps == STEPS_AUTO) snprintf(out, size, "_sauto");
    else snprintf(out, size, "_s%d", r->steps);
}
/* numbers, "auto" for --steps auto, whose rule is then written out beside them */
static void steps_manifest(const SweepConfig *cfg, cJSON *c) {
    if (cfg->n_steps_axis > 1) {
        cJSON *a = cJSON_AddArrayToObject(c, "steps");
        for (int i = 0; i < cfg->n_steps_axis; i++)
            cJSON_AddItemToArray(a, cfg->steps_axis[i] == STEPS_AUTO ? cJSON_CreateString("auto") : cJSON_CreateNumber(cfg->steps_axis[i]));
    } else if (cfg->steps_axis[0] == STEPS_AUTO) {
        cJSON_AddStringToObject(c, "steps", "auto");
    } else {
        cJSON_AddNumberToObject(c, "steps", cfg->steps_axis[0]);
    }
    if (!sweep_steps_auto(cfg)) return;
    const AutoStop *a = &cfg->autostop;
    cJSON *st = cJSON_AddObjectToObject(c, "stopping");
    cJSON_AddNumberToObject(st, "max_steps", a->max_steps);
    cJSON_AddNumberToObject(st, "eval_every", a->eval_every);
    cJSON_AddNumberToObject(st, "patience", a->patience);
    cJSON_AddNumberToObject(st, "min_delta", a->min_delta);
    cJSON_AddNumberToObject(st, "heldout_share", a->heldout_share);
    cJSON_AddStringToObject(st, "schedule", schedule_name(a->schedule));
    cJSON_AddStringToObject(st, "keeps", "the parameters of the best held-out measurement");
}
static const SweepAxisOps axis_steps = {"correction training steps, auto (until the held-out objective stops improving), or a comma list (a budget curve)",
                                        NULL, steps_parse, steps_slots, steps_set, steps_admits, steps_id, steps_manifest, NULL};

/* ---- the table ---- */
#define SWEEP_AXIS_ENTRY(field, type, run, run_type, flag, key, level, id, sort, section, rank, ops) \
    {#field, flag, key, level, id, sort, section, rank, &ops},
const SweepAxis sweep_axes[SWEEP_N_AXES] = {SWEEP_AXES(SWEEP_AXIS_ENTRY)};
#undef SWEEP_AXIS_ENTRY

int sweep_axis_by_key(const char *key) {
    for (int a = 0; a < SWEEP_N_AXES; a++)
        if (strcmp(sweep_axes[a].key, key) == 0) return a;
    return -1;
}

/* The axes ordered by a rank of theirs (ranks of 0 left out): order[0..return). */
static int axes_by_rank(int (*rank)(const SweepAxis *), int *order) {
    int n = 0;
    for (int a = 0; a < SWEEP_N_AXES; a++) {
        if (rank(&sweep_axes[a]) == 0) continue;
        int k = n++;
        for (; k > 0 && rank(&sweep_axes[order[k - 1]]) > rank(&sweep_axes[a]); k--) order[k] = order[k - 1];
        order[k] = a;
    }
    return n;
}
static int id_rank(const SweepAxis *a) { return a->id_rank; }
static int sort_rank(const SweepAxis *a) { return a->sort_rank; }

int sweep_compare_records(const RunRecord *a, const RunRecord *b) {
    int order[SWEEP_N_AXES], n = axes_by_rank(sort_rank, order);
    for (int k = 0; k < n; k++) {
        int c = sweep_axes[order[k]].ops->compare(a, b);
        if (c) return c;
    }
    return strcmp(a->run_id, b->run_id);
}

void sweep_manifest_section(const SweepConfig *cfg, cJSON *section, ManifestSection which, const ManifestEntry *others, int n) {
    int used[SWEEP_N_AXES] = {0}, next = 0;
    for (;;) { /* the entry of the lowest rank not written yet: an axis's before another entry's of its rank */
        int best = -1;
        for (int a = 0; a < SWEEP_N_AXES; a++)
            if (!used[a] && sweep_axes[a].section == which && (best < 0 || sweep_axes[a].manifest_rank < sweep_axes[best].manifest_rank)) best = a;
        if (best >= 0 && (next == n || sweep_axes[best].manifest_rank <= others[next].rank)) {
            used[best] = 1;
            sweep_axes[best].ops->manifest(cfg, section);
        } else if (next < n) {
            others[next++].write(cfg, section);
        } else {
            return;
        }
    }
}

/* The parts of r's id of the axes whose level is at most max_level, in id order. */
static const char *id_parts(const SweepConfig *cfg, const SweepRun *r, AxisLevel max_level, char *out, size_t size) {
    int order[SWEEP_N_AXES], n = axes_by_rank(id_rank, order);
    size_t len = 0;
    out[0] = 0;
    for (int k = 0; k < n; k++) {
        if (sweep_axes[order[k]].level > max_level) continue;
        char part[64];
        sweep_axes[order[k]].ops->id_part(cfg, r, part, sizeof part);
        len += (size_t)snprintf(out + len, len < size ? size - len : 0, "%s", part);
    }
    return out;
}

const char *sweep_model_name(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) { return id_parts(cfg, r, AXIS_QUANT, out, size); }
const char *sweep_group_name(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) { return id_parts(cfg, r, AXIS_FLOAT, out, size); }

/* Combinations of places the enumeration walks at most (it walks them all, then skips). */
#define SWEEP_MAX_COMBINATIONS 20000000.0

/* One walk over the axes in table order (the last varies fastest): every combination of places,
 * set axis by axis, kept where every axis admits it. A run's group and model are its places on
 * the AXIS_FLOAT and AXIS_QUANT axes as one mixed-radix number each. */
SweepRun *sweep_enumerate(const SweepConfig *cfg, int *n_runs, int *n_groups) {
    int slots[SWEEP_N_AXES], slot[SWEEP_N_AXES] = {0}, groups = 1;
    double combinations = 1;
    for (int a = 0; a < SWEEP_N_AXES; a++) {
        slots[a] = sweep_axes[a].ops->slots(cfg);
        combinations *= slots[a];
        if (sweep_axes[a].level == AXIS_FLOAT) groups *= slots[a];
    }
    if (combinations > SWEEP_MAX_COMBINATIONS) {
        qc_error("the grid has %.3g combinations of its lists' values, more than %.0f: split it into several sweeps", combinations,
                 SWEEP_MAX_COMBINATIONS);
        return NULL;
    }
    int n = 0, cap = 64;
    SweepRun *runs = qc_calloc((size_t)cap, sizeof(SweepRun), "run list");
    if (!runs) return NULL;
    for (int more = combinations > 0; more;) {
        SweepRun r = {0};
        int ok = 1;
        for (int a = 0; a < SWEEP_N_AXES; a++) sweep_axes[a].ops->set(cfg, &r, slot[a]);
        for (int a = 0; a < SWEEP_N_AXES && ok; a++) ok = !sweep_axes[a].ops->admits || sweep_axes[a].ops->admits(cfg, &r, slot[a]);
        if (ok) {
            for (int a = 0; a < SWEEP_N_AXES; a++) {
                if (sweep_axes[a].level == AXIS_FLOAT) r.group = r.group * slots[a] + slot[a];
                if (sweep_axes[a].level == AXIS_QUANT) r.model = r.model * slots[a] + slot[a];
            }
            id_parts(cfg, &r, AXIS_RUN, r.id, sizeof r.id);
            if (n == cap) {
                SweepRun *bigger = realloc(runs, (size_t)cap * 2 * sizeof(SweepRun));
                if (!bigger) { free(runs); qc_error("out of memory for the run list"); return NULL; }
                runs = bigger;
                cap *= 2;
            }
            runs[n++] = r;
        }
        more = 0;
        for (int a = SWEEP_N_AXES - 1; a >= 0 && !more; a--) { /* the next combination */
            if (++slot[a] < slots[a]) more = 1;
            else slot[a] = 0;
        }
    }
    /* every run meets correct's rules (a grid that correct would refuse is refused whole) */
    for (int i = 0; i < n; i++) {
        QuantScheme scheme = sweep_run_scheme(cfg, &runs[i]);
        CorrectOptions o;
        sweep_run_options(cfg, &runs[i], &scheme, &o);
        if (method_corrects(runs[i].method) && correct_options_check(&o, &scheme) != 0) {
            char why[512];
            snprintf(why, sizeof why, "%s", qc_last_error());
            qc_error("run %s: %s", runs[i].id, why);
            free(runs);
            return NULL;
        }
    }
    *n_runs = n;
    *n_groups = groups;
    return runs;
}
