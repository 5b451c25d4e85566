/* model_file: see model_file.h. Reading checks everything the metadata implies against the file
 * (every tensor present with its shape) before allocating, so metadata cannot ask for more than
 * the file holds. */
#include "io/model_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"

/* ---------------------------------------------------------------- the scheme */

/* The activation scheme beyond quant_act_bits, each key only where it differs from what a file
 * with quant_act_bits alone means (per-token symmetric at the matrices' inputs): quant_act_points,
 * quant_kv_bits, quant_act_granularity, quant_act_asymmetric, quant_act_calib (static),
 * quant_act_correction_reads (float only: what a stream correction reads). */
static int act_scheme_to_meta(const ActScheme *a, StMeta *out) {
    int n = 0;
    char text[64];
    if (a->points != (a->bits ? ACT_POINT_INPUTS : 0u)) {
        act_describe_points(a->points, text, sizeof text);
        out[n].key = "quant_act_points";
        snprintf(out[n++].value, sizeof out->value, "%s", text);
    }
    if (a->kv_bits) {
        out[n].key = "quant_kv_bits";
        snprintf(out[n++].value, sizeof out->value, "%d", a->kv_bits);
    }
    if (!a->points) return n;
    if (a->granularity != ACT_TOKEN) {
        out[n].key = "quant_act_granularity";
        snprintf(out[n++].value, sizeof out->value, "%s", act_granularity_name(a->granularity));
    }
    if (a->asymmetric) {
        out[n].key = "quant_act_asymmetric";
        snprintf(out[n++].value, sizeof out->value, "1");
    }
    if (a->granularity == ACT_STATIC) {
        act_describe_calib(a, text, sizeof text);
        out[n].key = "quant_act_calib";
        snprintf(out[n++].value, sizeof out->value, "%s", text);
    }
    if (a->correction_float) { /* only when float: every older file reads as quantized */
        out[n].key = "quant_act_correction_reads";
        snprintf(out[n++].value, sizeof out->value, "float");
    }
    return n;
}

static int act_scheme_from_meta(const SafeTensors *st, int bits, ActScheme *a) {
    const char *points = st_meta(st, "quant_act_points"), *kv = st_meta(st, "quant_kv_bits");
    const char *gran = st_meta(st, "quant_act_granularity"), *asym = st_meta(st, "quant_act_asymmetric");
    const char *calib = st_meta(st, "quant_act_calib");
    long v;
    act_scheme_inputs(a, bits);
    if (kv) {
        if (parse_int("quant_kv_bits", kv, 0, 8, &v) != 0) return -1;
        a->kv_bits = (int)v;
    }
    if (points && act_parse_points(points, &a->points) != 0) return -1;
    if (!points) a->points |= a->kv_bits ? ACT_POINT_KV : 0u;
    if (gran && act_parse_granularity(gran, &a->granularity) != 0) return -1;
    if (asym) {
        if (parse_int("quant_act_asymmetric", asym, 0, 1, &v) != 0) return -1;
        a->asymmetric = (int)v;
    }
    if (calib && (a->granularity != ACT_STATIC || act_parse_calib(calib, a) != 0)) return -1;
    const char *reads = st_meta(st, "quant_act_correction_reads");
    if (reads && act_parse_correction_reads(reads, &a->correction_float) != 0) return -1;
    return act_scheme_check(a);
}

static int act_static_on(const QuantScheme *s) { return s && act_scheme_on(&s->act) && s->act.granularity == ACT_STATIC; }

/* The static range tensors of the scheme's sites that are on: site numbers into sites (the count). */
static int act_range_sites(const GPTConfig *cfg, const QuantScheme *s, int *sites) {
    int n = 0, L = cfg->n_layer;
    if (!act_static_on(s)) return 0;
    for (int site = 0; site < act_site_count(L); site++)
        if (act_point_bits(&s->act, act_site_point(L, site))) sites[n++] = site;
    return n;
}

/* Reads the static ranges the scheme implies from the file into m (every one present, a vector of 2). */
static int act_ranges_load(const SafeTensors *st, GPT *m, const QuantScheme *s) {
    int L = m->config.n_layer, n_sites = act_site_count(L);
    int *sites = qc_malloc((size_t)n_sites * sizeof(int), "activation sites");
    float *ranges = qc_calloc((size_t)n_sites * 2, sizeof(float), "static activation ranges");
    int rc = -1;
    if (!sites || !ranges) goto done;
    int n = act_range_sites(&m->config, s, sites);
    for (int i = 0; i < n; i++) {
        char name[128];
        act_site_name(L, sites[i], name, sizeof name);
        if (st_copy_tensor(st, name, 2, 0, ranges + 2 * sites[i]) != 0) goto done;
    }
    rc = gpt_set_act_ranges(m, ranges);
done:
    free(sites);
    free(ranges);
    return rc;
}

/* Whether name is one of the static range tensors of the scheme. */
static int is_act_range_tensor(const GPTConfig *cfg, const QuantScheme *s, const char *name) {
    int L = cfg->n_layer;
    if (!act_static_on(s)) return 0;
    for (int site = 0; site < act_site_count(L); site++) {
        char want[128];
        act_site_name(L, site, want, sizeof want);
        if (strcmp(want, name) == 0) return act_point_bits(&s->act, act_site_point(L, site)) != 0;
    }
    return 0;
}

static void set_meta(StMeta *m, const char *key, const char *value) {
    m->key = key;
    snprintf(m->value, sizeof m->value, "%s", value);
}

static void set_meta_int(StMeta *m, const char *key, int value) {
    m->key = key;
    snprintf(m->value, sizeof m->value, "%d", value);
}

/* The options of the quantizer in use (its ops' list; none for rtn), each under its key where it
 * applies: quant_mse_weighted (mse), quant_gptq_damp, _act_order, _fit, _groups (gptq, and
 * quant_mse_weighted with the mse fit). */
static int quantizer_options_to_meta(const QuantScheme *s, StMeta *out) {
    int n = 0;
    for (const QuantizerOption *const *o = quantizer_ops(s->quantizer)->options; o && *o; o++) {
        if ((*o)->applies && !(*o)->applies(s)) continue;
        out[n].key = (*o)->meta_key;
        (*o)->format(s, out[n++].value, sizeof out->value);
    }
    return n;
}

static int quantizer_options_from_meta(const SafeTensors *st, QuantScheme *s) {
    for (const QuantizerOption *const *o = quantizer_ops(s->quantizer)->options; o && *o; o++) {
        const char *value = st_meta(st, (*o)->meta_key);
        if (value && (*o)->parse((*o)->meta_key, value, s) != 0) return -1;
    }
    return 0;
}

/* The transform (README: Transforms): nothing when there is none, so files without it read as before */
static int transform_to_meta(const TransformScheme *t, StMeta *out) {
    if (!t->kinds) return 0;
    int n = 0;
    out[n].key = "quant_transform";
    transform_kinds_name(t->kinds, out[n++].value, sizeof out->value);
    unsigned slots = transform_online_slots(t);
    if (slots) {
        out[n].key = "quant_transform_seed";
        snprintf(out[n++].value, sizeof out->value, "%llu", (unsigned long long)t->rotate_seed);
        out[n].key = "quant_online";
        transform_online_names(slots, out[n++].value, sizeof out->value);
    }
    if (t->kinds & TRANSFORM_SMOOTH) {
        out[n].key = "quant_smooth_alpha";
        snprintf(out[n++].value, sizeof out->value, "%.17g", t->smooth_alpha);
    }
    return n;
}

static int transform_from_meta(const SafeTensors *st, TransformScheme *t) {
    const char *kinds = st_meta(st, "quant_transform"), *seed = st_meta(st, "quant_transform_seed");
    const char *online = st_meta(st, "quant_online"), *alpha = st_meta(st, "quant_smooth_alpha");
    transform_default(t);
    if (!kinds) return seed || online || alpha ? -1 : 0;
    if (transform_parse(kinds, t) != 0) return -1;
    unsigned slots = transform_online_slots(t);
    if (slots) {
        char want[64];
        transform_online_names(slots, want, sizeof want);
        if (!seed || !online || strcmp(online, want) != 0) return -1;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(seed, &end, 10);
        if (errno || end == seed || *end || seed[0] == '-') return -1;
        t->rotate_seed = v;
    } else if (seed || online) {
        return -1;
    }
    if (t->kinds & TRANSFORM_SMOOTH) {
        if (!alpha || parse_float("quant_smooth_alpha", alpha, 0.0, 1.0, &t->smooth_alpha) != 0) return -1;
    } else if (alpha) {
        return -1;
    }
    return transform_check(t);
}

int quant_scheme_to_meta(const QuantScheme *s, StMeta *out) {
    char gran[32], scope[64];
    describe_granularity(s, gran, sizeof gran);
    describe_scope(s->scope, scope, sizeof scope);
    int n = 0;
    set_meta_int(&out[n++], "quant_bits", s->bits);
    set_meta(&out[n++], "quant_granularity", gran);
    set_meta_int(&out[n++], "quant_asymmetric", s->asymmetric);
    set_meta(&out[n++], "quant_scope", scope);
    set_meta_int(&out[n++], "quant_act_bits", s->act.bits);
    n += act_scheme_to_meta(&s->act, out + n);
    out[n].key = "quant_scheme";
    quant_scheme_describe(s, out[n++].value, sizeof out->value);
    if (s->scale_dtype != SCALE_EXACT) set_meta(&out[n++], "quant_scale_dtype", scale_dtype_name(s->scale_dtype));
    if (!quantizer_is_default(s->quantizer)) set_meta(&out[n++], "quant_quantizer", quantizer_name(s->quantizer));
    n += quantizer_options_to_meta(s, out + n);
    n += transform_to_meta(&s->transform, out + n);
    return n;
}

int quant_scheme_from_meta(const SafeTensors *st, QuantScheme *s) {
    const char *bits = st_meta(st, "quant_bits");
    if (!bits) return 0;
    const char *gran = st_meta(st, "quant_granularity"), *asym = st_meta(st, "quant_asymmetric");
    const char *scope = st_meta(st, "quant_scope"), *act = st_meta(st, "quant_act_bits");
    const char *dtype = st_meta(st, "quant_scale_dtype"), *quantizer = st_meta(st, "quant_quantizer");
    long v;
    quant_scheme_default(s, 4);
    if (!gran || !asym || !scope || !act || parse_int("quant_bits", bits, 2, 32, &v) != 0) goto bad;
    s->bits = (int)v;
    if (parse_granularity(gran, s) != 0 || parse_scope(scope, &s->scope) != 0) goto bad;
    if (parse_int("quant_asymmetric", asym, 0, 1, &v) != 0) goto bad;
    s->asymmetric = (int)v;
    if (parse_int("quant_act_bits", act, 0, 8, &v) != 0) goto bad;
    if (act_scheme_from_meta(st, (int)v, &s->act) != 0) goto bad;
    /* files from before these keys existed: scales kept exact, round-to-nearest */
    s->scale_dtype = SCALE_EXACT;
    if (dtype && scale_dtype_parse(dtype, &s->scale_dtype) != 0) goto bad;
    if (quantizer) {
        int q = quantizer_by_name(quantizer);
        if (q < 0) goto bad;
        s->quantizer = (QuantizerId)q;
    }
    if (quantizer_options_from_meta(st, s) != 0) goto bad;
    if (transform_from_meta(st, &s->transform) != 0) goto bad;
    if (quant_scheme_check(s) != 0) goto bad;
    return 1;
bad:
    qc_error("%s: malformed quantization metadata", st->path);
    return -1;
}

/* ---------------------------------------------------------------- corrections */

/* correction_type (the kind), correction_every and correction_hidden (stream kinds),
 * correction_sites (the block each stream site follows, or the linear layer each linear site is
 * on), correction_sizes (linear kinds: each site's size), correction_method, correction_objective */
static int corrections_to_meta(const Corrections *c, const CorrectionProvenance *how, StMeta *out) {
    int n = 0;
    /* folded kinds, and the methods that tune the base's own tensors (no correction at all): the file
     * is a plain quantized model, with where its tensors came from */
    if (correction_kind_ops(c->kind)->fold || c->kind == KIND_NONE) {
        if (c->kind != KIND_NONE) set_meta(&out[n++], "correction_folded", kind_info[c->kind].name);
        if (how) {
            set_meta(&out[n++], "correction_method", how->method);
            set_meta(&out[n++], "correction_objective", how->objective);
        }
        return n;
    }
    int stream = kind_info[c->kind].placement == PLACE_STREAM;
    if (stream) {
        set_meta_int(&out[n++], "correction_every", c->every);
        set_meta_int(&out[n++], "correction_hidden", c->size);
    }
    set_meta(&out[n++], "correction_type", kind_info[c->kind].name);
    StMeta *sites = &out[n++], *sizes = stream ? NULL : &out[n++];
    sites->key = "correction_sites";
    sites->value[0] = 0;
    if (sizes) {
        sizes->key = "correction_sizes";
        sizes->value[0] = 0;
    }
    for (int j = 0; j < c->n_sites; j++) {
        size_t len = strlen(sites->value);
        snprintf(sites->value + len, sizeof sites->value - len, "%s%d", j ? "," : "", c->sites[j].where);
        if (sizes) {
            len = strlen(sizes->value);
            snprintf(sizes->value + len, sizeof sizes->value - len, "%s%d", j ? "," : "", c->sites[j].size);
        }
    }
    if (c->stored_bits < 32) set_meta_int(&out[n++], "correction_bits", c->stored_bits);
    if (how) {
        set_meta(&out[n++], "correction_method", how->method);
        set_meta(&out[n++], "correction_objective", how->objective);
    }
    return n;
}

/* "3,7,9" into out[0..max); returns the count or -1 */
static int parse_index_list(const char *text, int *out, int max) {
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1 << 20 || n == max) return -1;
        out[n++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return n;
}

/* The layout a file's metadata describes (linear_sizes allocated into *sizes for linear kinds).
 * 1: read; 0: the file has no corrections; -1: malformed. */
static int layout_from_meta(const SafeTensors *st, const GPTConfig *cfg, CorrectionLayout *lay, int **sizes) {
    const char *type = st_meta(st, "correction_type"), *every = st_meta(st, "correction_every");
    const char *hidden = st_meta(st, "correction_hidden");
    *sizes = NULL;
    if (!type && !every && !hidden) return 0;
    memset(lay, 0, sizeof *lay);
    long e, h;
    if (every && hidden) { /* stream kinds; files from before correction_type named the kind by hidden */
        if (parse_int("correction_every", every, 1, 256, &e) != 0 || parse_int("correction_hidden", hidden, 0, 1 << 16, &h) != 0)
            goto bad;
        lay->kind = type ? (CorrectionKindId)kind_by_name(type) : method_kind(METHOD_TRAIN, (int)h);
        if ((int)lay->kind < 0 || kind_info[lay->kind].placement != PLACE_STREAM || lay->kind != method_kind(METHOD_TRAIN, (int)h))
            goto bad;
        lay->every = (int)e;
        lay->size = (int)h;
        return 1;
    }
    int kind = type ? kind_by_name(type) : -1;
    const char *site_list = st_meta(st, "correction_sites"), *size_list = st_meta(st, "correction_sizes");
    if (kind < 0 || kind_info[kind].placement != PLACE_LINEAR || !site_list || !size_list) goto bad;
    int n_linear = gpt_linear_count(cfg);
    int *where = qc_malloc((size_t)n_linear * sizeof(int), "correction layout"), *size = qc_malloc((size_t)n_linear * sizeof(int), "correction layout");
    *sizes = qc_calloc((size_t)n_linear, sizeof(int), "correction layout");
    int ok = where && size && *sizes;
    int n = ok ? parse_index_list(site_list, where, n_linear) : -1;
    ok = ok && n >= 0 && parse_index_list(size_list, size, n_linear) == n;
    for (int j = 0; ok && j < n; j++) {
        ok = where[j] < n_linear && size[j] > 0 && (*sizes)[where[j]] == 0;
        if (ok) (*sizes)[where[j]] = size[j];
    }
    free(where);
    free(size);
    if (!ok) {
        free(*sizes);
        *sizes = NULL;
        goto bad;
    }
    lay->kind = (CorrectionKindId)kind;
    lay->linear_sizes = *sizes;
    return 1;
bad:
    qc_error("%s: malformed correction metadata", st->path);
    return -1;
}

/* 1: corrections read from st (metadata + tensors); 0: none in the file; -1: error. Every tensor of
 * the file must then be the model's or one of the corrections'. */
static int corrections_load(Corrections *c, const SafeTensors *st, const GPT *m, const QuantScheme *scheme, int max_rows) {
    int *sizes = NULL;
    CorrectionLayout lay;
    int have = layout_from_meta(st, &m->config, &lay, &sizes);
    CorrectionTensor *names = NULL;
    int rc = -1, n = 0, loaded = 0;
    if (have < 0) return -1;
    if (have > 0) {
        int max = 4 * gpt_linear_count(&m->config) + 4 * 256;
        names = qc_calloc((size_t)max, sizeof *names, "correction tensors");
        if (!names || (n = correction_layout_tensors(&m->config, &lay, names, max)) < 0) goto done;
        /* before allocating: every tensor the metadata implies is in the file with its shape */
        for (int i = 0; i < n; i++)
            if (st_check_tensor(st, names[i].name, names[i].rows, names[i].cols) != 0) goto done;
        const char *stored = st_meta(st, "correction_bits");
        long stored_bits = 32;
        if (stored && parse_int("correction_bits", stored, 2, 16, &stored_bits) != 0) {
            qc_error("%s: malformed correction metadata", st->path);
            goto done;
        }
        if (corrections_init(c, &m->config, &lay, max_rows, 0) != 0) goto done;
        c->stored_bits = (int)stored_bits; /* the values are stored dequantized: nothing to redo */
        if (scheme) corrections_set_act(c, &scheme->act); /* a narrow one's products at the activation bits */
        loaded = 1;
        corrections_tensors(c, &m->config, names, max);
        for (int i = 0; i < n; i++)
            if (st_copy_tensor(st, names[i].name, names[i].rows, names[i].cols, names[i].data) != 0) goto done;
    }
    for (int i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        int known = gpt_find_tensor(m, name) != NULL || is_act_range_tensor(&m->config, scheme, name);
        for (int k = 0; k < n && !known; k++) known = strcmp(names[k].name, name) == 0;
        if (known) continue;
        if (have > 0) qc_error("%s: unexpected tensor '%s' for %d %s correction sites", st->path, name, c->n_sites, kind_info[c->kind].name);
        else if (strncmp(name, "corrections.", 12) == 0) qc_error("%s: holds correction tensors but no correction metadata", st->path);
        else qc_error("%s: unexpected tensor '%s'", st->path, name);
        goto done;
    }
    rc = have;
done:
    if (rc < 0 && loaded) corrections_free(c);
    free(names);
    free(sizes);
    return rc;
}

/* ---------------------------------------------------------------- whole checkpoints */

int check_memory(const GPTConfig *cfg, int batch, int training) {
    if (gpt_config_check(cfg) != 0) return -1;
    double need = gpt_memory_bytes(cfg, batch, training);
    double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (need > 0.9 * have) {
        qc_error("this model needs %.1f GiB of memory (d_model %d, %d layers, ctx %d, batch %d) but the machine has %.1f GiB",
                 need / (1 << 30), cfg->d_model, cfg->n_layer, cfg->ctx, batch, have / (1 << 30));
        return -1;
    }
    return 0;
}

int load_checkpoint(LoadedModel *lm, const char *path, int max_batch) {
    memset(lm, 0, sizeof *lm);
    SafeTensors st;
    if (st_read(&st, path) != 0) return -1;
    int rc = load_checkpoint_from(lm, &st, max_batch);
    st_free(&st);
    return rc;
}

int load_checkpoint_from(LoadedModel *lm, const SafeTensors *st, int max_batch) {
    memset(lm, 0, sizeof *lm);
    /* a small file can still ask for a long context over many layers: activations grow as ctx^2 */
    GPTConfig cfg;
    if (gpt_config_from(&cfg, &lm->vocab, st) != 0) return -1;
    if (check_memory(&cfg, max_batch, 0) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qc_last_error());
        qc_error("%s: %s", st->path, msg);
        return -1;
    }
    if (gpt_load_from(&lm->model, &lm->vocab, st, max_batch, 1) != 0) return -1;
    int q = quant_scheme_from_meta(st, &lm->scheme);
    int c = q < 0 ? -1 : corrections_load(&lm->corrections, st, &lm->model, q > 0 ? &lm->scheme : NULL, max_batch * lm->model.config.ctx);
    /* what the forward does beyond the weights: activation quantization, the online transforms */
    if (q < 0 || c < 0 || (q > 0 && gpt_set_act_scheme(&lm->model, &lm->scheme.act) != 0) ||
        (q > 0 && act_static_on(&lm->scheme) && act_ranges_load(st, &lm->model, &lm->scheme) != 0) ||
        (q > 0 && gpt_set_online(&lm->model, transform_online_slots(&lm->scheme.transform), lm->scheme.transform.rotate_seed) != 0)) {
        if (c > 0) corrections_free(&lm->corrections);
        gpt_free(&lm->model);
        return -1;
    }
    lm->quantized = q > 0 && lm->scheme.bits < 32;
    lm->corrected = c > 0;
    return 0;
}

const ModelHook *loaded_hook(LoadedModel *lm) { return lm->corrected ? &lm->corrections.hook : NULL; }

void loaded_model_free(LoadedModel *lm) {
    if (lm->corrected) corrections_free(&lm->corrections);
    gpt_free(&lm->model);
}

int save_model(const char *path, const GPT *m, const Vocab *vocab, const QuantScheme *scheme, const Corrections *c,
               const CorrectionProvenance *how) {
    StMeta meta[QUANT_META_MAX + 8];
    int n_meta = scheme ? quant_scheme_to_meta(scheme, meta) : 0;
    StWriteTensor *tensors = NULL;
    CorrectionTensor *names = NULL;
    int n = 0, n_sites = act_site_count(m->config.n_layer);
    if (act_static_on(scheme) && !m->act.calibrated) {
        qc_error("%s: the static activation ranges are not calibrated", path);
        return -1;
    }
    int max = (c ? 4 * c->n_sites + 1 : 0) + n_sites;
    int *sites = qc_malloc((size_t)n_sites * sizeof(int), "activation sites");
    tensors = qc_calloc((size_t)max, sizeof *tensors, "checkpoint tensors");
    if (!sites || !tensors) {
        free(sites);
        free(tensors);
        return -1;
    }
    if (c) {
        n_meta += corrections_to_meta(c, how, meta + n_meta);
        names = qc_calloc((size_t)max, sizeof *names, "correction tensors");
        if (!names || (n = corrections_tensors(c, &m->config, names, max)) < 0) {
            free(names);
            free(tensors);
            free(sites);
            return -1;
        }
        for (int i = 0; i < n; i++) {
            snprintf(tensors[i].name, sizeof tensors[i].name, "%s", names[i].name);
            tensors[i].rows = names[i].rows;
            tensors[i].cols = names[i].cols;
            tensors[i].data = names[i].data;
        }
    }
    /* the static ranges, after the corrections' tensors: "transformer.h.0.attn.c_attn.input_range", ... */
    int n_ranges = act_range_sites(&m->config, scheme, sites);
    for (int i = 0; i < n_ranges; i++, n++) {
        act_site_name(m->config.n_layer, sites[i], tensors[n].name, sizeof tensors[n].name);
        tensors[n].rows = 2;
        tensors[n].cols = 0;
        tensors[n].data = m->act.ranges + 2 * sites[i];
    }
    free(sites);
    int rc;
    if (c && correction_kind_ops(c->kind)->fold) {
        GPT folded;
        if (gpt_clone(&folded, m, 1) != 0) {
            free(names);
            free(tensors);
            return -1;
        }
        rc = corrections_fold(c, &folded);
        /* the folded file holds no correction tensors: only the ranges */
        if (rc == 0) rc = gpt_save(&folded, vocab, path, meta, n_meta, tensors + (n - n_ranges), n_ranges);
        gpt_free(&folded);
    } else {
        rc = gpt_save(m, vocab, path, meta, n_meta, tensors, n);
    }
    free(names);
    free(tensors);
    return rc;
}
