/* sweep/enumerate: the walks over the sweep axes (SWEEP_AXES in sweep.h; each axis's functions
 * are in axes.c): the enumeration of the runs, their ids and model names, the manifest's axis
 * entries and summary.csv's row order. */
#include "sweep/parts.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

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
