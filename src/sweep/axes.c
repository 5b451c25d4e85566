/* sweep/axes: the functions of each sweep axis (SWEEP_AXES in sweep.h), an axis's side by side
 * and ending in its SweepAxisOps; enumerate.c walks the table. */
#include "sweep/parts.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "quant/transform.h"

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
static void seeds_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s;
    if (o) o->seed = (uint64_t)r->seed;
}
const SweepAxisOps axis_seeds = {
    .help = "comma list, e.g. 42,123,999",
    .parse = seeds_parse,
    .slots = seeds_slots,
    .set = seeds_set,
    .id_part = seeds_id,
    .manifest = seeds_manifest,
    .compare = seeds_compare,
    .apply = seeds_apply,
};

/* ---- sizes: one float model each (the run holds the index) ---- */
/* A size named without :STEPS keeps the preset's budget for that size (`--preset seed243 --sizes
 * 128x4` trains 128x4 for seed243's 800 steps, not the preset's default); a size the preset lacks
 * takes the default (cfg->train_steps), as does every unnamed one under --train-steps (cmd_sweep). */
static int sizes_parse(const char *flag, const char *text, SweepConfig *cfg) {
    ModelSize preset[SWEEP_MAX_VALUES];
    int n_preset = cfg->n_sizes;
    memcpy(preset, cfg->sizes, sizeof preset);
    if (parse_size_list(flag, text, cfg->sizes, &cfg->n_sizes) != 0) return -1;
    for (int z = 0; z < cfg->n_sizes; z++)
        for (int p = 0; p < n_preset && !cfg->sizes[z].train_steps; p++)
            if (preset[p].d_model == cfg->sizes[z].d_model && preset[p].n_layer == cfg->sizes[z].n_layer)
                cfg->sizes[z].train_steps = preset[p].train_steps;
    return 0;
}
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
const SweepAxisOps axis_sizes = {
    .help = "comma list of D_MODELxLAYERS[:STEPS], e.g. 64x2,128x4:800 (without STEPS: the preset's budget for that size)",
    .parse = sizes_parse,
    .slots = sizes_slots,
    .set = sizes_set,
    .id_part = sizes_id,
    .manifest = sizes_manifest,
    .compare = sizes_compare,
};

/* ---- quantizers (methods.h's table, in table order) ---- */
static int quantizers_slots(const SweepConfig *cfg) { return cfg->n_quantizers; }
static void quantizers_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->quantizer = cfg->quantizers[slot]; }
static void quantizers_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg; /* the table's first (rtn), the historic default, names no part */
    if (quantizer_is_default(r->quantizer)) out[0] = 0;
    else snprintf(out, size, "_%s", quantizer_name(r->quantizer));
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
static void quantizers_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)o;
    if (s) s->quantizer = r->quantizer;
}
static void quantizers_defaults(SweepConfig *cfg) { /* the table's first: rtn */
    cfg->quantizers[0] = (QuantizerId)0;
    cfg->n_quantizers = 1;
}
const SweepAxisOps axis_quantizers = {
    .help = "comma list of quantizers, any of %s (default rtn)",
    .names = quantizer_names,
    .parse = parse_quantizer_list,
    .slots = quantizers_slots,
    .set = quantizers_set,
    .id_part = quantizers_id,
    .manifest = quantizers_manifest,
    .compare = quantizers_compare,
    .apply = quantizers_apply,
    .defaults = quantizers_defaults,
};

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
static void grans_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)o;
    if (s) s->granularity = cfg->grans[r->gran].granularity, s->group = cfg->grans[r->gran].group;
}
static void grans_defaults(SweepConfig *cfg) { /* the scheme's: channel */
    cfg->grans[0] = (SweepGranularity){cfg->scheme.granularity, cfg->scheme.group};
    cfg->n_grans = 1;
}
const SweepAxisOps axis_grans = {
    .help = "comma list of granularities, e.g. tensor,channel,group:32",
    .parse = parse_granularity_list,
    .slots = grans_slots,
    .set = grans_set,
    .admits = grans_admits,
    .id_part = grans_id,
    .manifest = grans_manifest,
    .compare = grans_compare,
    .apply = grans_apply,
    .defaults = grans_defaults,
};

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
static void bits_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)o;
    if (s) s->bits = r->bits;
}
const SweepAxisOps axis_bits = {
    .help = "comma list of weight bits in 2..8",
    .parse = bits_parse,
    .slots = bits_slots,
    .set = bits_set,
    .admits = bits_admits,
    .id_part = bits_id,
    .manifest = bits_manifest,
    .compare = bits_compare,
    .apply = bits_apply,
};

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
static void calib_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s;
    if (o) o->calib_tokens = r->calib;
}
const SweepAxisOps axis_calib = {
    .help = "calibration budget in train characters, or a comma list",
    .parse = calib_parse,
    .slots = calib_slots,
    .set = calib_set,
    .admits = calib_admits,
    .id_part = calib_id,
    .manifest = calib_manifest,
    .apply = calib_apply,
};

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
static void every_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s; /* lowrank's rank matches a linear correction every 1 */
    if (o) o->every = method_uses_every(r->method) ? r->every : 1;
}
const SweepAxisOps axis_every = {
    .help = "comma list of correction frequencies",
    .parse = every_parse,
    .slots = every_slots,
    .set = every_set,
    .admits = every_admits,
    .id_part = every_id,
    .manifest = every_manifest,
    .compare = every_compare,
    .apply = every_apply,
};

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

/* ---- methods (methods.h's table, in table order): at 32 bits (the control arm) only what has
 * something to learn on the float model (method_has_control: the stream corrections, normtweak,
 * qat); --corrected-bits/-granularities keep the others to none ---- */
static int methods_slots(const SweepConfig *cfg) { return cfg->n_methods; }
static void methods_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->method = cfg->methods[slot]; }
static int methods_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)slot;
    if (r->bits == 32) return method_has_control(r->method);
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
static void methods_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s;
    if (o) o->method = r->method;
}
static void methods_defaults(SweepConfig *cfg) {
    cfg->methods[0] = METHOD_TRAIN;
    cfg->n_methods = 1;
}
const SweepAxisOps axis_methods = {
    .help = "comma list of fitting methods, any of %s (default train)",
    .names = method_names,
    .parse = parse_method_list,
    .slots = methods_slots,
    .set = methods_set,
    .admits = methods_admits,
    .id_part = methods_id,
    .manifest = methods_manifest,
    .compare = methods_compare,
    .apply = methods_apply,
    .defaults = methods_defaults,
};

/* ---- transforms (README: Transforms): the float model's transform before the quantizer, a
 * quantized model each; quantized models only (the control arm's float model is not
 * transformed: the same function). Its id part and manifest entry appear only off none, so
 * older directories resume. ---- */
static int transforms_parse(const char *flag, const char *text, SweepConfig *cfg) {
    cfg->n_transforms = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char part[64];
        TransformScheme t;
        if (n == 0 || n >= sizeof part) { qc_error("%s: '%s' has an empty or too long element", flag, text); return -1; }
        memcpy(part, p, n);
        part[n] = '\0';
        if (transform_parse(part, &t) != 0) {
            char why[256];
            snprintf(why, sizeof why, "%s", qc_last_error());
            qc_error("%s: %s", flag, why);
            return -1;
        }
        for (int i = 0; i < cfg->n_transforms; i++)
            if (cfg->transforms[i] == t.kinds) { qc_error("%s: '%s' twice", flag, part); return -1; }
        if (cfg->n_transforms == SWEEP_MAX_VALUES) { qc_error("%s: more than %d values", flag, SWEEP_MAX_VALUES); return -1; }
        cfg->transforms[cfg->n_transforms++] = t.kinds;
        if (!comma) return 0;
        p = comma + 1;
    }
}
static int transforms_slots(const SweepConfig *cfg) { return cfg->n_transforms; }
static void transforms_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->transform = r->bits == 32 ? 0 : cfg->transforms[slot]; }
static int transforms_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)cfg;
    return slot == 0 || r->bits != 32;
}
static void transforms_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg;
    out[0] = 0;
    if (!r->transform) return;
    char name[64];
    transform_kinds_name(r->transform, name, sizeof name);
    snprintf(out, size, "_%s", name);
}
static void transforms_manifest(const SweepConfig *cfg, cJSON *grid) {
    if (cfg->n_transforms == 1 && cfg->transforms[0] == 0) return;
    cJSON *a = cJSON_AddArrayToObject(grid, "transforms");
    for (int i = 0; i < cfg->n_transforms; i++) {
        char name[64];
        transform_kinds_name(cfg->transforms[i], name, sizeof name);
        cJSON_AddItemToArray(a, cJSON_CreateString(name));
    }
}
static void transforms_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)o;
    if (s) s->transform.kinds = r->transform;
}
static void transforms_defaults(SweepConfig *cfg) {
    cfg->transforms[0] = 0;
    cfg->n_transforms = 1;
}
const SweepAxisOps axis_transforms = {
    .help = "comma list of transforms of the float model before the quantizer: none, smooth, online, rotate, online+smooth, rotate+smooth (default none)",
    .parse = transforms_parse,
    .slots = transforms_slots,
    .set = transforms_set,
    .admits = transforms_admits,
    .id_part = transforms_id,
    .manifest = transforms_manifest,
    .apply = transforms_apply,
    .defaults = transforms_defaults,
};

/* ---- firsts: a combination's first method (none, or one that tunes the base), run before a
 * method that adds corrections (README: Combinations); quantized runs only. Its id part and
 * manifest entry appear only when a sweep has combinations, so older directories resume. ---- */
static int firsts_slots(const SweepConfig *cfg) { return cfg->n_firsts; }
static void firsts_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->first = cfg->firsts[slot]; }
static int firsts_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)cfg, (void)slot;
    return r->first == METHOD_NONE || (r->bits < 32 && method_info[r->method].kind != KIND_NONE && !method_tunes(r->method));
}
static void firsts_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    (void)cfg;
    if (r->first != METHOD_NONE) snprintf(out, size, "_first-%s", method_name(r->first));
    else out[0] = 0;
}
static void firsts_manifest(const SweepConfig *cfg, cJSON *grid) {
    if (cfg->n_firsts == 1 && cfg->firsts[0] == METHOD_NONE) return;
    cJSON *a = cJSON_AddArrayToObject(grid, "first_methods");
    for (int i = 0; i < cfg->n_firsts; i++) cJSON_AddItemToArray(a, cJSON_CreateString(method_name(cfg->firsts[i])));
}
static void firsts_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s;
    if (o) {
        o->with_first = r->first != METHOD_NONE;
        o->first = r->first;
    }
}
static void firsts_defaults(SweepConfig *cfg) {
    cfg->firsts[0] = METHOD_NONE;
    cfg->n_firsts = 1;
}
const SweepAxisOps axis_firsts = {
    .help = "combinations: comma list of first methods, none or ones that tune the base, each run before every method that adds corrections (default none)",
    .parse = parse_first_method_list,
    .slots = firsts_slots,
    .set = firsts_set,
    .admits = firsts_admits,
    .id_part = firsts_id,
    .manifest = firsts_manifest,
    .apply = firsts_apply,
    .defaults = firsts_defaults,
};

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
static void hidden_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s;
    if (o) o->hidden = r->hidden;
}
const SweepAxisOps axis_hidden = {
    .help = "comma list of correction widths (0 = linear)",
    .parse = hidden_parse,
    .slots = hidden_slots,
    .set = hidden_set,
    .admits = hidden_admits,
    .id_part = hidden_id,
    .manifest = hidden_manifest,
    .compare = hidden_compare,
    .apply = hidden_apply,
};

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
static void corr_bits_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s;
    if (o) o->correction_bits = r->corr_bits;
}
static void corr_bits_defaults(SweepConfig *cfg) { /* float */
    cfg->corr_bits[0] = 32;
    cfg->n_corr_bits = 1;
}
const SweepAxisOps axis_corr_bits = {
    .help = "comma list of widths the corrections are stored at: 32 (float), 16, 8",
    .parse = corr_bits_parse,
    .slots = corr_bits_slots,
    .set = corr_bits_set,
    .admits = corr_bits_admits,
    .id_part = corr_bits_id,
    .manifest = corr_bits_manifest,
    .compare = corr_bits_compare,
    .apply = corr_bits_apply,
    .defaults = corr_bits_defaults,
};

/* ---- correction steps (a budget curve): only for methods that train (0 elsewhere) ---- */
int sweep_steps_auto(const SweepConfig *cfg) {
    int any = 0;
    for (int i = 0; i < cfg->n_steps_axis; i++) any |= cfg->steps_axis[i] == STEPS_AUTO;
    return any;
}
static int steps_parse(const char *flag, const char *text, SweepConfig *cfg) { return parse_steps_list(flag, text, cfg->steps_axis, &cfg->n_steps_axis); }
static int steps_slots(const SweepConfig *cfg) { return cfg->n_steps_axis; }
/* whether a run trains by steps: its method, or in a combination its first method or a second
 * that trains and does not solve (README: Combinations) */
static int takes_steps(const SweepRun *r) { return correct_takes_steps(r->method, r->first != METHOD_NONE, r->first); }
static void steps_set(const SweepConfig *cfg, SweepRun *r, int slot) { r->steps = takes_steps(r) ? cfg->steps_axis[slot] : 0; }
static int steps_admits(const SweepConfig *cfg, const SweepRun *r, int slot) {
    (void)cfg;
    return slot == 0 || takes_steps(r);
}
static void steps_id(const SweepConfig *cfg, const SweepRun *r, char *out, size_t size) {
    out[0] = 0;
    if (cfg->n_steps_axis < 2 || !takes_steps(r)) return; /* only where the grid varies it */
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
    /* only where it is on, so the directories made before it resume */
    if (a->ema > 0) cJSON_AddNumberToObject(st, "ema", a->ema);
    cJSON_AddStringToObject(st, "keeps", a->ema > 0 ? "the running average of the parameters at its best held-out measurement"
                                                    : "the parameters of the best held-out measurement");
}
static void steps_apply(const SweepConfig *cfg, const SweepRun *r, QuantScheme *s, CorrectOptions *o) {
    (void)cfg, (void)s;
    if (o) o->steps = r->steps;
}
const SweepAxisOps axis_steps = {
    .help = "correction training steps, auto (until the held-out objective stops improving), or a comma list (a budget curve)",
    .parse = steps_parse,
    .slots = steps_slots,
    .set = steps_set,
    .admits = steps_admits,
    .id_part = steps_id,
    .manifest = steps_manifest,
    .apply = steps_apply,
};
