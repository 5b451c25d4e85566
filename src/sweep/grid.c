/* sweep/grid: what a sweep runs — the presets, the list flags and grid files that change them,
 * the check of the whole configuration, and the fixed enumeration of its runs. */
#include "sweep/parts.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static void set_list(int *dst, int *n, const int *src, int count) {
    memcpy(dst, src, (size_t)count * sizeof(int));
    *n = count;
}

int sweep_preset(SweepConfig *cfg, const char *name) {
    memset(cfg, 0, sizeof *cfg);
    quant_scheme_default(&cfg->scheme, 4);
    for (int a = 0; a < SWEEP_N_AXES; a++) /* the axes that have a default: train, rtn, channel, float storage */
        if (sweep_axes[a].ops->defaults) sweep_axes[a].ops->defaults(cfg);
    cfg->control = 1;
    cfg->heads = 4;
    cfg->objective = OBJECTIVE_CE;
    cfg->ridge = 1e-4;
    auto_stop_default(&cfg->autostop);
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
        set_list(cfg->steps_axis, &cfg->n_steps_axis, (int[]){60}, 1);
        cfg->corr_batch = 16;
        cfg->corr_lr = 3e-3;
        set_list(cfg->calib_axis, &cfg->n_calib_axis, (int[]){32768}, 1);
        return 0;
    }
    if (strcmp(name, "seed243") == 0) {
        /* the full experiment: 3 seeds x 3 bits x 3 sizes x 3 every x 3 hidden = 243 runs */
        set_list(cfg->seeds, &cfg->n_seeds, (int[]){42, 123, 999}, 3);
        set_list(cfg->bits, &cfg->n_bits, (int[]){2, 4, 8}, 3);
        /* budgets chosen so the whole sweep with its control arm fitted in about two hours on the
         * 2-core Zen 1 of the first engine, with every float model at validation perplexity
         * 6.9-7.8 (on a 2-core AVX-512 Xeon now 36 min in one process, 28 with --jobs 2:
         * results/seed243) */
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
        /* each run trains until its held-out objective stops improving (README: Training to
         * convergence, and its check against 2,000 steps); --steps 60 gives the earlier sweeps */
        set_list(cfg->steps_axis, &cfg->n_steps_axis, (int[]){STEPS_AUTO}, 1);
        cfg->corr_batch = 8;
        cfg->corr_lr = 3e-3;
        set_list(cfg->calib_axis, &cfg->n_calib_axis, (int[]){65536}, 1);
        return 0;
    }
    if (strcmp(name, "frontier") == 0) {
        /* is a correction worth its bits: RTN at 2..8 bits in four granularities beside corrections of
         * the 2..4-bit channel models (every width and frequency, stored as float and at 8 bits)
         * and the control, at the three sizes, one seed, seed243's budgets (README: measured time) */
        if (sweep_preset(cfg, "seed243") != 0) return -1;
        set_list(cfg->seeds, &cfg->n_seeds, (int[]){42}, 1);
        set_list(cfg->bits, &cfg->n_bits, (int[]){2, 3, 4, 5, 6, 7, 8}, 7);
        cfg->grans[0] = (SweepGranularity){GRAN_TENSOR, 0};
        cfg->grans[1] = (SweepGranularity){GRAN_CHANNEL, 0};
        cfg->grans[2] = (SweepGranularity){GRAN_GROUP, 32};
        cfg->grans[3] = (SweepGranularity){GRAN_GROUP, 128};
        cfg->n_grans = 4;
        cfg->methods[0] = METHOD_TRAIN;
        cfg->methods[1] = METHOD_NONE;
        cfg->n_methods = 2;
        set_list(cfg->corr_bits, &cfg->n_corr_bits, (int[]){32, 8}, 2);
        set_list(cfg->corrected_bits, &cfg->n_corrected_bits, (int[]){2, 3, 4}, 3);
        cfg->corrected_grans[0] = (SweepGranularity){GRAN_CHANNEL, 0};
        cfg->n_corrected_grans = 1;
        return 0;
    }
    if (strcmp(name, "budget") == 0) {
        /* recovery against correction steps (a budget curve) with the early-stopping point beside
         * it: linear and MLP h64 corrections, every 1/2/4, at 2 and 4 bits, on seed243's float
         * models of seeds 42 and 123, 65,536 calibration characters (`--calib-tokens
         * 16384,65536,262144` adds the calibration axis of results/budget) */
        if (sweep_preset(cfg, "seed243") != 0) return -1;
        set_list(cfg->seeds, &cfg->n_seeds, (int[]){42, 123}, 2);
        set_list(cfg->bits, &cfg->n_bits, (int[]){2, 4}, 2);
        set_list(cfg->every, &cfg->n_every, (int[]){1, 2, 4}, 3);
        set_list(cfg->hidden, &cfg->n_hidden, (int[]){0, 64}, 2);
        set_list(cfg->steps_axis, &cfg->n_steps_axis, (int[]){15, 30, 60, 120, 250, 500, 1000, 2000, STEPS_AUTO}, 9);
        cfg->control = 0;
        return 0;
    }
    if (strcmp(name, "methods") == 0) {
        /* the field's baselines beside the learned correction (issue 14): rtn, mse and gptq, each
         * bare (none), bias-corrected, with rank-matched low-rank terms, lstsq and a trained linear
         * correction after every block, at 2, 3 and 4 bits, plus the control; seed243's budgets */
        if (sweep_preset(cfg, "seed243") != 0) return -1;
        set_list(cfg->bits, &cfg->n_bits, (int[]){2, 3, 4}, 3);
        set_list(cfg->every, &cfg->n_every, (int[]){1}, 1);
        set_list(cfg->hidden, &cfg->n_hidden, (int[]){0}, 1);
        cfg->quantizers[0] = QUANTIZER_RTN;
        cfg->quantizers[1] = QUANTIZER_MSE;
        cfg->quantizers[2] = QUANTIZER_GPTQ;
        cfg->n_quantizers = 3;
        cfg->n_methods = 0;
        for (int m = 0; m < METHOD_COUNT; m++) cfg->methods[cfg->n_methods++] = (CorrectMethod)m;
        return 0;
    }
    qc_error("unknown preset '%s' (quick, seed243, frontier, budget, methods)", name);
    return -1;
}

/* Splits a comma list (copied into buf) into items[0..*n): an empty list, an empty element
 * ("1,,2", "1,", ",1"; strtok would skip it silently), more than SWEEP_MAX_VALUES elements or a
 * list longer than buf is refused, naming the flag. */
static int split_list(const char *flag, const char *text, char *buf, size_t size, char **items, int *n) {
    if (strlen(text) >= size) { qc_error("%s: list too long", flag); return -1; }
    if (!text[0]) { qc_error("%s: empty list", flag); return -1; }
    snprintf(buf, size, "%s", text);
    *n = 0;
    for (char *p = buf;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        if (!*p) { qc_error("%s: an empty element in '%s'", flag, text); return -1; }
        if (*n == SWEEP_MAX_VALUES) { qc_error("%s: more than %d values", flag, SWEEP_MAX_VALUES); return -1; }
        items[(*n)++] = p;
        if (!comma) return 0;
        p = comma + 1;
    }
}

/* A comma list of integers in [min, max], each at most once; allow_auto: "auto" stands for STEPS_AUTO. */
static int parse_list(const char *flag, const char *text, int *out, int *n, long min, long max, int allow_auto) {
    char buf[1024], *items[SWEEP_MAX_VALUES];
    int n_items, count = 0;
    if (split_list(flag, text, buf, sizeof buf, items, &n_items) != 0) return -1;
    for (int k = 0; k < n_items; k++) {
        const char *tok = items[k];
        long v = STEPS_AUTO;
        if (!(allow_auto && strcmp(tok, "auto") == 0) && parse_int(flag, tok, min, max, &v) != 0) return -1;
        for (int i = 0; i < count; i++)
            if (out[i] == v) { qc_error("%s: value %s appears twice", flag, tok); return -1; }
        out[count++] = (int)v;
    }
    *n = count;
    return 0;
}

int parse_int_list(const char *flag, const char *text, int *out, int *n, long min, long max) {
    return parse_list(flag, text, out, n, min, max, 0);
}

int parse_steps_list(const char *flag, const char *text, int *out, int *n) {
    return parse_list(flag, text, out, n, 0, 100000000, 1);
}

int parse_size_list(const char *flag, const char *text, ModelSize *out, int *n) {
    char buf[1024], *items[SWEEP_MAX_VALUES];
    int n_items, count = 0;
    if (split_list(flag, text, buf, sizeof buf, items, &n_items) != 0) return -1;
    for (int k = 0; k < n_items; k++) {
        char *tok = items[k];
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
        for (int i = 0; i < count; i++)
            if (out[i].d_model == d && out[i].n_layer == l) { qc_error("%s: size %dx%d appears twice", flag, d, l); return -1; }
        out[count++] = (ModelSize){d, l, (int)steps};
    }
    *n = count;
    return 0;
}

/* A comma list of a table's names (methods.h), each at most once; chosen[i] = 1 for entry i. */
static int parse_table_list(const char *flag, const char *text, const char *what, int count, int (*by_name)(const char *),
                            void (*names)(char *, size_t), int *chosen) {
    char buf[1024], all[128], *items[SWEEP_MAX_VALUES];
    int n_items;
    if (split_list(flag, text, buf, sizeof buf, items, &n_items) != 0) return -1;
    names(all, sizeof all);
    for (int k = 0; k < n_items; k++) {
        const char *tok = items[k];
        int i = by_name(tok);
        if (i < 0 || i >= count) { qc_error("%s: '%.100s' is not a %s (%s)", flag, tok, what, all); return -1; }
        if (chosen[i]) { qc_error("%s: %s %s appears twice", flag, what, tok); return -1; }
        chosen[i] = 1;
    }
    return 0;
}

int parse_method_list(const char *flag, const char *text, SweepConfig *cfg) {
    int chosen[METHOD_COUNT] = {0};
    if (parse_table_list(flag, text, "method", METHOD_COUNT, method_by_name, method_names, chosen) != 0) return -1;
    cfg->n_methods = 0;
    for (int m = 0; m < METHOD_COUNT; m++)
        if (chosen[m]) cfg->methods[cfg->n_methods++] = (CorrectMethod)m;
    return 0;
}

int parse_first_method_list(const char *flag, const char *text, SweepConfig *cfg) {
    int chosen[METHOD_COUNT] = {0};
    if (parse_table_list(flag, text, "method", METHOD_COUNT, method_by_name, method_names, chosen) != 0) return -1;
    cfg->n_firsts = 0;
    for (int m = 0; m < METHOD_COUNT; m++) {
        if (!chosen[m]) continue;
        if (m != METHOD_NONE && !method_tunes((CorrectMethod)m)) {
            qc_error("%s: %s adds corrections; a first method is none or one that tunes the base (normtweak, qat, scales, lwc, adaround)", flag,
                     method_name((CorrectMethod)m));
            return -1;
        }
        cfg->firsts[cfg->n_firsts++] = (CorrectMethod)m;
    }
    return 0;
}

int parse_quantizer_list(const char *flag, const char *text, SweepConfig *cfg) {
    int chosen[QUANTIZER_COUNT] = {0};
    if (parse_table_list(flag, text, "quantizer", QUANTIZER_COUNT, quantizer_by_name, quantizer_names, chosen) != 0) return -1;
    cfg->n_quantizers = 0;
    for (int q = 0; q < QUANTIZER_COUNT; q++)
        if (chosen[q]) cfg->quantizers[cfg->n_quantizers++] = (QuantizerId)q;
    return 0;
}

int parse_granularity_list(const char *flag, const char *text, SweepConfig *cfg) {
    char buf[1024], *items[SWEEP_MAX_VALUES];
    int n_items, n = 0;
    if (split_list(flag, text, buf, sizeof buf, items, &n_items) != 0) return -1;
    for (int k = 0; k < n_items; k++) {
        const char *tok = items[k];
        QuantScheme s = cfg->scheme;
        if (parse_granularity(tok, &s) != 0) {
            char why[256];
            snprintf(why, sizeof why, "%s", qc_last_error());
            qc_error("%s: %s", flag, why);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (cfg->grans[i].granularity == s.granularity && cfg->grans[i].group == s.group) {
                qc_error("%s: granularity %s appears twice", flag, tok);
                return -1;
            }
        cfg->grans[n++] = (SweepGranularity){s.granularity, s.granularity == GRAN_GROUP ? s.group : 0};
    }
    cfg->n_grans = n;
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

/* A grid file's list as the text its axis's flag takes: numbers (integers written as such) and
 * names joined by commas; -1 naming the file and the key unless it is a list of 1 to
 * SWEEP_MAX_VALUES numbers or strings (a string holding a comma would be two values). */
static int grid_list_text(const cJSON *a, const char *path, char *out, size_t size) {
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 || cJSON_GetArraySize(a) > SWEEP_MAX_VALUES) {
        qc_error("%s: \"%s\" must be a list of 1 to %d values", path, a->string, SWEEP_MAX_VALUES);
        return -1;
    }
    size_t len = 0;
    out[0] = 0;
    for (const cJSON *v = a->child; v; v = v->next) {
        char item[64];
        /* the range first: converting a double outside long's range is undefined behaviour */
        if (cJSON_IsNumber(v) && fabs(v->valuedouble) < 1e15 && v->valuedouble == (double)(long)v->valuedouble)
            snprintf(item, sizeof item, "%ld", (long)v->valuedouble);
        else if (cJSON_IsNumber(v))
            snprintf(item, sizeof item, "%.17g", v->valuedouble); /* refused by the parser as not an integer */
        else if (cJSON_IsString(v) && strlen(v->valuestring) < sizeof item && !strchr(v->valuestring, ','))
            snprintf(item, sizeof item, "%s", v->valuestring);
        else {
            qc_error("%s: \"%s\" holds a value that is neither a number nor a name", path, a->string);
            return -1;
        }
        len += (size_t)snprintf(out + len, len < size ? size - len : 0, "%s%s", len ? "," : "", item);
    }
    return 0;
}

int sweep_parse_grid(SweepConfig *cfg, const char *text, size_t size, const char *path) {
    cJSON *root = cJSON_ParseWithLength(text, size);
    int rc = -1;
    if (!root || !cJSON_IsObject(root)) { qc_error("%s: not a JSON object", path); goto done; }
    for (const cJSON *item = root->child; item; item = item->next) {
        if (sweep_axis_by_key(item->string) < 0) {
            char keys[512] = "";
            for (int a = 0; a < SWEEP_N_AXES; a++)
                snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s", a ? ", " : "", sweep_axes[a].key);
            qc_error("%s: unknown key \"%s\" (%s)", path, item->string, keys);
            goto done;
        }
        /* cJSON keeps both and reads the first: {"seeds":[1],"seeds":[2]} would run seed 1 alone */
        for (const cJSON *prev = root->child; prev != item; prev = prev->next)
            if (strcmp(prev->string, item->string) == 0) { qc_error("%s: the key \"%s\" appears twice", path, item->string); goto done; }
    }
    for (const cJSON *item = root->child; item; item = item->next) {
        const SweepAxis *axis = &sweep_axes[sweep_axis_by_key(item->string)];
        char list[4096], flag[4200];
        if (grid_list_text(item, path, list, sizeof list) != 0) goto done;
        snprintf(flag, sizeof flag, "%s: %s", path, axis->key);
        if (axis->ops->parse(flag, list, cfg) != 0) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int sweep_config_check(const SweepConfig *cfg) {
    for (int i = 0; i < cfg->n_bits; i++)
        if (cfg->bits[i] < 2 || cfg->bits[i] > 8) { qc_error("bits %d is outside 2..8 (the control arm adds 32)", cfg->bits[i]); return -1; }
    for (int i = 0; i < cfg->n_sizes; i++) {
        GPTConfig g = {.vocab_size = 65, .ctx = cfg->ctx, .d_model = cfg->sizes[i].d_model, .n_layer = cfg->sizes[i].n_layer, .n_head = cfg->heads};
        if (gpt_config_check(&g) != 0) return -1;
    }
    /* a group that divides no model's width is refused; one that misses some sizes skips them */
    for (int k = 0; k < cfg->n_grans; k++) {
        int group = cfg->grans[k].granularity == GRAN_GROUP ? cfg->grans[k].group : 0;
        int fits = !group;
        for (int i = 0; i < cfg->n_sizes; i++) fits |= group && cfg->sizes[i].d_model % group == 0;
        if (!fits) {
            qc_error("granularity group:%d does not divide the width (d_model) of any model size", group);
            return -1;
        }
    }
    if (cfg->n_methods < 1) {
        char names[128];
        method_names(names, sizeof names);
        qc_error("no correction method chosen (%s)", names);
        return -1;
    }
#define SWEEP_AXIS_CHECK(field, type, run, run_type, flag, ...) \
    if (cfg->n_##field < 1) { qc_error("%s: no value", flag); return -1; }
    SWEEP_AXES(SWEEP_AXIS_CHECK)
#undef SWEEP_AXIS_CHECK
    for (int i = 0; i < cfg->n_methods; i++)
        if (method_tunes(cfg->methods[i]) && cfg->objective == OBJECTIVE_MSE) {
            qc_error("method %s has no correction sites for the mse objective to compare: use ce or kl", method_name(cfg->methods[i]));
            return -1;
        }
    for (int i = 0; i < cfg->n_corr_bits; i++)
        if (cfg->corr_bits[i] != 32 && (cfg->corr_bits[i] < 2 || cfg->corr_bits[i] > 16)) {
            qc_error("corrections stored at %d bits: expected 2..16 or 32 (float)", cfg->corr_bits[i]);
            return -1;
        }
    for (int i = 0; i < cfg->n_quantizers; i++)
        if (quantizer_info[cfg->quantizers[i]].needs_data && cfg->calib_axis[0] < 1) {
            qc_error("the %s quantizer needs calibration tokens", quantizer_name(cfg->quantizers[i]));
            return -1;
        }
    if (quant_scheme_check(&cfg->scheme) != 0) return -1;
    int n_runs, n_groups; /* and every run meets correct's rules (sweep_enumerate checks them) */
    SweepRun *runs = sweep_enumerate(cfg, &n_runs, &n_groups);
    free(runs);
    return runs ? 0 : -1;
}

QuantScheme sweep_run_scheme(const SweepConfig *cfg, const SweepRun *r) {
    QuantScheme s = cfg->scheme;
    for (int a = 0; a < SWEEP_N_AXES; a++) /* bits, quantizer, granularity: what the axes set */
        if (sweep_axes[a].ops->apply) sweep_axes[a].ops->apply(cfg, r, &s, NULL);
    if (cfg->act_same && s.bits >= 32) { /* the control arm: the float model, activations too */
        act_scheme_default(&s.act);
    } else if (cfg->act_same) {
        if (cfg->act_same & SWEEP_ACT_SAME_BITS) s.act.bits = s.bits;
        if (cfg->act_same & SWEEP_ACT_SAME_KV) s.act.kv_bits = s.bits;
    }
    return s;
}

int sweep_run_has_model(const SweepConfig *cfg, const SweepRun *r) {
    if (r->bits != 32) return 1;
    QuantScheme s = sweep_run_scheme(cfg, r);
    return act_scheme_on(&s.act);
}

CorrectionLayout sweep_run_layout(const SweepRun *r) {
    return (CorrectionLayout){.kind = method_kind(r->method, r->hidden), .every = r->every, .size = r->hidden};
}

void sweep_run_options(const SweepConfig *cfg, const SweepRun *r, const QuantScheme *scheme, CorrectOptions *o) {
    correct_options_default(o);
    o->objective = cfg->objective;
    o->autostop = cfg->autostop;
    o->batch = cfg->corr_batch;
    o->lr = (float)cfg->corr_lr;
    o->ridge = cfg->ridge;
    o->scope = scheme->scope;
    o->scheme = scheme;
    o->rank = cfg->rank;
    o->lowrank_act_scale = cfg->lowrank_act_scale;
    o->quiet = 1;
    for (int a = 0; a < SWEEP_N_AXES; a++) /* seed, method, every, hidden, steps, calibration, storage: the axes' */
        if (sweep_axes[a].ops->apply) sweep_axes[a].ops->apply(cfg, r, NULL, o);
    /* --init lstsq starts the grid's trained linear corrections; the other runs start as they do */
    o->init = (method_info[r->method].takes & TAKES_INIT) && method_kind(r->method, r->hidden) == KIND_LINEAR ? cfg->init : INIT_ZERO;
}
