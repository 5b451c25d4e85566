/* sweep/run: sweep_run — each (seed, size) group's float model, its quantized models and its
 * runs, shared work made once, finished work recognised only by atomically written files. */
#include "sweep/parts.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "correct/budget.h"
#include "correct/correct.h"
#include "io/checkpoint.h"
#include "io/model_file.h"
#include "nn/train.h"

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

typedef struct {
    const char *dir;
    int done, total;            /* this shard's runs */
    double started;             /* for the ETA: */
    double work_done, work_left;/* multiply-adds (plan.c) done by this process, and left */
    double step_work, credited; /* the float model in training: work per step, credited so far */
    char phase[256];
    int quiet;
} Progress;

/* The ETA weighs what is left by the plan's multiply-adds: sizes differ by 100x in cost, so
 * counting runs would not do. */
static double flops(const SweepConfig *cfg, int size_index, SweepWork work) {
    return sweep_work_cost(work, sweep_flops_per_token(cfg, size_index));
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

/* --jobs (sweep.h): a worker takes a group by creating DIR/claims/<group>.claim, and each quantized
 * model of it by DIR/claims/models/<model>.claim, holding its HOST.PID and, on a second line, its
 * team (the --jobs parent's HOST.PID); write_file_new links a finished file into place, so of
 * workers racing exactly one creates it. Claims are only ever removed by sweep_clear_stale_claims,
 * before workers start, so a worker never deletes a live worker's claim. 1: taken, 0: another
 * worker's, -1: error. */
static void team_tag(char *out, size_t size) {
    char host[96];
    process_owner_tag(host, sizeof host);
    char *dot = strrchr(host, '.');
    if (dot) *dot = '\0';
    snprintf(out, size, "team %s.%ld\n", host, (long)getppid());
}

static int claim_file(const char *dir, const char *sub, const char *name) {
    char path[4200], tag[160], team[160];
    snprintf(path, sizeof path, "%s/claims", dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) { qc_error("%s: cannot create: %s", path, strerror(errno)); return -1; }
    if (sub) {
        snprintf(path, sizeof path, "%s/claims/%s", dir, sub);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) { qc_error("%s: cannot create: %s", path, strerror(errno)); return -1; }
    }
    snprintf(path, sizeof path, "%s/claims/%s%s%s.claim", dir, sub ? sub : "", sub ? "/" : "", name);
    process_owner_tag(tag, sizeof tag - 1);
    strcat(tag, "\n");
    team_tag(team, sizeof team);
    strncat(tag, team, sizeof tag - strlen(tag) - 1);
    int rc = write_file_new(path, tag, strlen(tag));
    return rc == 0 ? 1 : rc == 1 ? 0 : -1;
}

/* Whether group `name` is claimed by a worker of this worker's own --jobs parent (not by
 * another sweep's), so its unclaimed quantized models may be shared. */
static int claimed_by_team(const char *dir, const char *name) {
    char path[4200], team[160];
    snprintf(path, sizeof path, "%s/claims/%s.claim", dir, name);
    size_t size;
    char *text = (char *)read_file(path, &size);
    if (!text) return 0;
    team_tag(team, sizeof team);
    int ours = strstr(text, team) != NULL;
    free(text);
    return ours;
}

/* Pass 1's wait for a teammate's float model: 1 once its checkpoint exists; 0 when its owner is
 * gone (the claim's process) or a signal asks this worker to stop. Polled once a second: a float
 * model takes seconds to minutes, the runs after it longer. */
static int float_model_ready(const char *dir, const char *group, const char *ckpt) {
    char path[4200];
    snprintf(path, sizeof path, "%s/claims/%s.claim", dir, group);
    while (access(ckpt, F_OK) != 0) {
        size_t size;
        char *owner = (char *)read_file(path, &size);
        int gone = !owner || process_is_gone(owner);
        free(owner);
        if (gone || qc_stop_signal) return 0;
        sleep(1);
    }
    return 1;
}

static void clear_stale_in(const char *path, int *rc) {
    DIR *d = opendir(path);
    if (!d) return; /* none yet */
    for (struct dirent *e; (e = readdir(d));) {
        if (!strstr(e->d_name, ".claim")) continue;
        char file[4200 + 256];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        size_t size;
        char *text = (char *)read_file(file, &size);
        if (text && process_is_gone(text) && unlink(file) != 0) {
            qc_error("%s: cannot remove a finished worker's claim: %s", file, strerror(errno));
            *rc = -1;
        }
        free(text);
    }
    closedir(d);
}

int sweep_clear_stale_claims(const char *dir) {
    char path[4200];
    int rc = 0;
    snprintf(path, sizeof path, "%s/claims", dir);
    clear_stale_in(path, &rc);
    snprintf(path, sizeof path, "%s/claims/models", dir);
    clear_stale_in(path, &rc);
    return rc;
}

/* The order a process goes through the groups: as enumerated, or for a --jobs worker the most
 * work first (the longest-first rule: the last groups to start are the short ones, so workers
 * finish close together). */
static int *group_order(const SweepConfig *cfg, const SweepRun *runs, int n_runs, int n_groups, const int *done,
                        const SweepOptions *o, double eval_tokens) {
    int *order = qc_malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(int), "group order");
    if (!order) return NULL;
    for (int g = 0; g < n_groups; g++) order[g] = g;
    if (!o->claim) return order;
    double *cost = qc_malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(double), "group order");
    SweepWork per_token[SWEEP_MAX_VALUES];
    if (!cost) { free(order); return NULL; }
    for (int z = 0; z < cfg->n_sizes; z++) per_token[z] = sweep_flops_per_token(cfg, z);
    sweep_group_costs(cfg, runs, n_runs, n_groups, done, eval_tokens, per_token, cost);
    sweep_order_by_cost(cost, n_groups, order);
    free(cost);
    return order;
}

static int ensure_float_model(const char *dir, const SweepConfig *cfg, const Corpus *corpus, const SweepRun *r0,
                              int max_batch, GPT *f, Sidecar *side, Progress *p) {
    int seed = r0->seed, size_index = r0->size_index;
    const ModelSize *z = &cfg->sizes[size_index];
    char base[4096], ckpt[4200], log[4200], meta[4200], name[128];
    snprintf(base, sizeof base, "%s/floats/%s", dir, sweep_group_name(cfg, r0, name, sizeof name));
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
    FloatCheckpoint save = {&corpus->vocab, ckpt};
    o.save = gpt_save_float;
    o.save_ctx = &save;
    TrainResult tr;
    if (train_model(f, corpus, &o, &tr) != 0) {
        gpt_free(f);
        return -1;
    }
    side->loss = tr.val_loss;
    side->seconds = tr.seconds;
    if (write_sidecar(meta, side->loss, side->seconds) == 0) return 0;
    gpt_free(f);
    return -1;
}

/* The quantized model of r's (quantizer, granularity, bits) — at 32 bits the float weights with
 * the scheme's activation quantization (the control arm) — its checkpoint and sidecar (the
 * quantization time) written once, and its evaluation against the float model's view. */
static int ensure_quantized(const char *dir, const SweepConfig *cfg, const Corpus *corpus, const GPT *f, const SweepRun *r,
                            int max_batch, const EvalReference *ref, GPT *q, Sidecar *side, Evaluation *eq) {
    if (gpt_clone(q, f, max_batch) != 0) return -1;
    QuantScheme s = sweep_run_scheme(cfg, r);
    const int32_t *val = corpus->ids + corpus->n_train;
    if (r->bits == 32) { /* the control arm: nothing stored but the float model (and its activation quantization) */
        side->seconds = 0;
        if (quantize_model_on_corpus(q, &s, corpus, cfg->calib_axis[0], (uint64_t)r->seed, NULL, NULL) != 0 ||
            (act_scheme_on(&s.act) ? evaluate_model(q, NULL, val, corpus->n_val, NULL, 0, ref, eq) : evaluation_of_reference(eq, ref)))
            goto fail;
        side->loss = eq->loss;
        return 0;
    }
    /* named as the runs' ids begin: s42_64x2_b4, s42_64x2_b2_tensor_gptq */
    char base[4096], ckpt[4200], meta[4200], name[128];
    sweep_model_name(cfg, r, name, sizeof name);
    snprintf(base, sizeof base, "%s/quant/%s", dir, name);
    snprintf(ckpt, sizeof ckpt, "%s.safetensors", base);
    snprintf(meta, sizeof meta, "%s.json", base);
    if (read_sidecar(meta, side) == 0 && access(ckpt, F_OK) == 0) {
        /* made by an earlier start: read back, not quantized again (GPTQ takes minutes at 256x6) */
        LoadedModel lm;
        if (load_checkpoint(&lm, ckpt, 1) != 0) goto fail;
        int same = lm.model.num_params == q->num_params;
        if (same) memcpy(q->params, lm.model.params, q->num_params * sizeof(float));
        /* its activation quantization as stored (static ranges included) */
        int act = same ? gpt_copy_act(q, &lm.model) : 0;
        if (same && act == 0) act = gpt_set_online(q, lm.model.online_slots, lm.model.online_seed); /* and its online transforms */
        loaded_model_free(&lm);
        if (!same) { qc_error("%s: another model than the float model of %s", ckpt, name); goto fail; }
        if (act != 0) goto fail;
    } else {
        /* quantizers that use data calibrate on the windows the corrections are fitted on */
        double t0 = now_seconds();
        if (quantize_model_on_corpus(q, &s, corpus, cfg->calib_axis[0], (uint64_t)r->seed, NULL, NULL) != 0) goto fail;
        side->seconds = now_seconds() - t0;
        if (save_model(ckpt, q, &corpus->vocab, &s, NULL, NULL) != 0) goto fail;
    }
    if (evaluate_model(q, NULL, val, corpus->n_val, NULL, 0, ref, eq) != 0) goto fail;
    side->loss = eq->loss;
    if (write_sidecar(meta, side->loss, side->seconds) == 0) return 0;
    evaluation_free(eq);
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
    Corpus corpus;
    char data[4096];
    if (corpus_find(o->data_path, data, sizeof data) != 0 || corpus_load(&corpus, data, NULL) != 0) { free(runs); return -1; }
    /* the corpus first: one too short for the windows fails before the directory is made */
    int created = 0;
    if (corpus_check_windows(&corpus, cfg->ctx) != 0 || sweep_prepare_dir(dir, cfg, command, &created) != 0) {
        corpus_free(&corpus);
        free(runs);
        return -1;
    }
    remove_stale_temporaries(dir);
    int *done = sweep_finished_runs(dir, runs, n_runs, o->quiet);
    if (!done) { corpus_free(&corpus); free(runs); return -1; }
    Progress p = {.dir = dir, .started = now_seconds(), .quiet = o->quiet};
    double eval_tokens = sweep_eval_tokens(corpus.n_val, cfg->ctx);
    for (int i = 0; i < n_runs; i++)
        if (runs[i].group % o->shard_n == o->shard_k - 1) {
            p.total++;
            p.done += done[i];
        }
    /* the shared models of a group with unfinished runs are counted as still to make (they may
     * exist from an earlier start; then the ETA is a little pessimistic) */
    SweepSizePlan *plan = qc_calloc((size_t)cfg->n_sizes, sizeof *plan, "sweep plan");
    if (!plan) { free(done); corpus_free(&corpus); free(runs); return -1; }
    sweep_plan(cfg, runs, n_runs, done, o->shard_k, o->shard_n, eval_tokens, plan);
    for (int z = 0; z < cfg->n_sizes; z++) p.work_left += flops(cfg, z, plan[z].work);
    free(plan);
    int max_batch = cfg->train_batch > cfg->corr_batch ? cfg->train_batch : cfg->corr_batch;
    if (max_batch < 32) max_batch = 32; /* evaluation batches */
    int rc = 0;
    int *order = group_order(cfg, runs, n_runs, n_groups, done, o, eval_tokens);
    if (!order) rc = -1;
    /* a --jobs worker: pass 0 takes whole groups; pass 1 joins its team's groups whose float model
     * is trained, taking the quantized models nobody has begun (so no worker idles while another
     * finishes a large group alone) */
    unsigned char *mine = o->claim ? qc_calloc((size_t)(n_groups > 0 ? n_groups : 1), 1, "group claims") : NULL;
    if (o->claim && !mine) rc = -1;
    for (int gi = 0; gi < (o->claim ? 2 * n_groups : n_groups) && rc == 0; gi++) {
        int pass = gi >= n_groups, g = order[gi % n_groups];
        if (g % o->shard_n != o->shard_k - 1) continue;
        int first = -1, todo = 0;
        for (int i = 0; i < n_runs; i++)
            if (runs[i].group == g) {
                if (first < 0) first = i;
                todo += !done[i];
            }
        if (first < 0 || todo == 0) continue;
        const SweepRun *r0 = &runs[first];
        char group_name[128];
        sweep_group_name(cfg, r0, group_name, sizeof group_name);
        if (o->claim && !pass) {
            int taken = claim_file(dir, NULL, group_name);
            if (taken < 0) { rc = -1; break; }
            if (!taken) continue; /* another worker's: perhaps joined in pass 1 */
            mine[g] = 1;
        }
        if (o->claim && pass) {
            char ckpt[4400];
            snprintf(ckpt, sizeof ckpt, "%s/floats/%s.safetensors", dir, group_name);
            if (mine[g] || !claimed_by_team(dir, group_name) || !float_model_ready(dir, group_name, ckpt)) continue;
            /* the runs its owner finished since this worker started need no float model loaded */
            int left = 0;
            for (int i = first; i < n_runs && runs[i].group == g; i++) {
                char record[4400];
                snprintf(record, sizeof record, "%s/runs/%s.json", dir, runs[i].id);
                if (!done[i] && access(record, F_OK) == 0) done[i] = 1;
                left += !done[i];
            }
            if (!left) continue;
        }
        snprintf(p.phase, sizeof p.phase, "float model %s", group_name);
        show_progress(&p, NULL);
        GPT f;
        Sidecar fs;
        p.step_work = flops(cfg, r0->size_index, (SweepWork){.train = (double)cfg->train_batch * cfg->ctx});
        p.credited = 0;
        if (ensure_float_model(dir, cfg, &corpus, r0, max_batch, &f, &fs, &p) != 0) { rc = -1; break; }
        /* the float model's view of the validation split: every loss and KL of the group is against it */
        EvalReference ref;
        if (eval_reference_build(&ref, &f, corpus.ids + corpus.n_train, corpus.n_val) != 0) { gpt_free(&f); rc = -1; break; }
        progress_credit(&p, flops(cfg, r0->size_index, plan_float_model(cfg, r0->size_index, eval_tokens)) - p.credited); /* its evaluation, or all of it if loaded */
        for (int i = first; i < n_runs && runs[i].group == g && rc == 0; i++) {
            int model = runs[i].model, needed = 0;
            if (i > first && runs[i - 1].model == model) continue; /* each quantized model once */
            for (int k = i; k < n_runs && runs[k].group == g && runs[k].model == model; k++) needed |= !done[k];
            if (!needed) continue;
            char name[128];
            sweep_model_name(cfg, &runs[i], name, sizeof name);
            if (o->claim) { /* each quantized model by one worker */
                int taken = claim_file(dir, "models", name);
                if (taken < 0) { rc = -1; break; }
                if (!taken) continue;
            }
            GPT q;
            Sidecar qs;
            Evaluation eq;
            snprintf(p.phase, sizeof p.phase, "quantize %s", name);
            show_progress(&p, NULL);
            if (ensure_quantized(dir, cfg, &corpus, &f, &runs[i], max_batch, &ref, &q, &qs, &eq) != 0) { rc = -1; break; }
            if (sweep_run_has_model(cfg, &runs[i]))
                progress_credit(&p, flops(cfg, r0->size_index, plan_quant_model(cfg, &runs[i], eval_tokens)));
            if (gpt_enable_backward(&q) != 0) { evaluation_free(&eq); gpt_free(&q); rc = -1; break; }
            /* a transformed scheme's corrections learn from the float model transformed alike (the
             * same function, in the quantized model's basis: what lstsq and mse targets read) */
            QuantScheme model_scheme = sweep_run_scheme(cfg, &runs[i]);
            GPT f_transformed, *teacher = &f;
            if (model_scheme.transform.kinds) {
                int cloned = gpt_clone(&f_transformed, &f, max_batch) == 0;
                if (!cloned || transform_model_on_corpus(&f_transformed, &model_scheme.transform, &corpus, cfg->calib_axis[0], (uint64_t)runs[i].seed) != 0) {
                    if (cloned) gpt_free(&f_transformed);
                    evaluation_free(&eq);
                    gpt_free(&q);
                    rc = -1;
                    break;
                }
                teacher = &f_transformed;
            }
            /* the frozen prefix below the first site, computed once per (model, first site) and
             * shared by every width and method: calibration windows and validation windows */
            StreamCache calib = {0}, val = {0};
            int cached_block = -1;
            int n_calib = 0;
            long calib_of_starts = -1; /* the characters calib_starts were drawn for */
            int64_t *calib_starts = NULL;
            int *linear_sizes = qc_calloc((size_t)gpt_linear_count(&q.config), sizeof(int), "correction layout");
            if (!linear_sizes) rc = -1;
            for (int k = i; k < n_runs && runs[k].group == g && runs[k].model == model && rc == 0; k++) {
                if (done[k]) continue;
                const SweepRun *r = &runs[k];
                Corrections c;
                CorrectOptions co;
                QuantScheme scheme = sweep_run_scheme(cfg, r);
                sweep_run_options(cfg, r, &scheme, &co);
                char log[4200];
                snprintf(log, sizeof log, "%s/logs/%s.correct.csv", dir, r->id);
                co.log_path = method_info[r->method].trains ? log : NULL;
                char heldout_log[4200]; /* --steps auto: the held-out curve */
                snprintf(heldout_log, sizeof heldout_log, "%s/logs/%s.heldout.csv", dir, r->id);
                co.heldout_log_path = method_info[r->method].trains && r->steps == STEPS_AUTO ? heldout_log : NULL;
                CorrectionLayout layout;
                if (correction_layout_for(&co, &q.config, &layout, linear_sizes) != 0) { rc = -1; break; }
                /* the windows drawn: the budget's, and under --steps auto its held-out windows too */
                long draw = calibration_draw_tokens(r->calib, cfg->ctx, r->steps == STEPS_AUTO, cfg->autostop.heldout_share);
                if (method_corrects(r->method) && draw != calib_of_starts) { /* a new calibration set: new caches */
                    free(calib_starts);
                    calib_starts = calibration_windows(&corpus, draw, cfg->ctx, (uint64_t)r0->seed, &n_calib);
                    if (!calib_starts) { rc = -1; break; }
                    calib_of_starts = draw;
                    stream_cache_free(&calib);
                    cached_block = -1;
                }
                /* "none" is the quantized model as evaluated: no cache, no work */
                /* a method that tunes the base (alone or first in a combination) trains q itself */
                int tunes_base = method_tunes(r->method) || r->first != METHOD_NONE;
                int first_block = method_corrects(r->method) && !tunes_base ? correction_layout_frozen_prefix(&q.config, &layout) : -1;
                if (first_block >= 0 && first_block != cached_block) {
                    stream_cache_free(&calib);
                    stream_cache_free(&val);
                    snprintf(p.phase, sizeof p.phase, "prefix cache %s after block %d", name, first_block);
                    show_progress(&p, NULL);
                    size_t n_windows = (corpus.n_val - 1) / (size_t)cfg->ctx;
                    if (stream_cache_build(&val, &q, corpus.ids + corpus.n_train, NULL, (int)n_windows, first_block) != 0 ||
                        (cfg->objective == OBJECTIVE_CE &&
                         stream_cache_build(&calib, &q, corpus.ids, calib_starts, n_calib, first_block) != 0)) {
                        rc = -1;
                        break;
                    }
                    progress_credit(&p, flops(cfg, r->size_index, plan_prefix_cache(cfg, r->size_index, first_block, r->calib, eval_tokens)));
                    cached_block = first_block;
                }
                snprintf(p.phase, sizeof p.phase, "run %s", r->id);
                show_progress(&p, NULL);
                co.calib_cache = calib.streams && cached_block == first_block ? &calib : NULL;
                CorrectionResult res = {0};
                /* the next run gets q back as quantized */
                float *untuned = tunes_base ? qc_malloc(q.num_params * sizeof(float), "quantized weights") : NULL;
                if (tunes_base && !untuned) { rc = -1; break; }
                if (untuned) memcpy(untuned, q.params, q.num_params * sizeof(float));
                int fitted = 1;
                if (!method_corrects(r->method)) {
                    if (corrections_init(&c, &q.config, &layout, 1, 0) != 0 || evaluation_copy(&res.eval, &eq) != 0) { rc = -1; break; }
                    res.seconds_correct = res.seconds_eval = 0;
                } else {
                    fitted = run_correction(&q, teacher, &corpus, &co, val.streams && cached_block == first_block ? &val : NULL, &ref, &c, &res) == 0;
                }
                if (untuned) {
                    memcpy(q.params, untuned, q.num_params * sizeof(float));
                    free(untuned);
                }
                if (!fitted) {
                    rc = -1;
                    break;
                }
                Outcome out;
                outcome_compute(&out, &ref, &eq, &res.eval, &q.config, &scheme, corrections_storage_bits(&c));
                RunTimes t = {fs.seconds, qs.seconds, res.seconds_correct, res.seconds_eval};
                int written = sweep_write_record(dir, cfg, r, &out, &c, &t, &res.train) == 0 && sweep_write_summary(dir) == 0;
                evaluation_free(&res.eval);
                corrections_free(&c);
                if (!written) {
                    rc = -1;
                    break;
                }
                done[k] = 1;
                p.done++;
                progress_credit(&p, flops(cfg, r->size_index, plan_run(cfg, r, eval_tokens)));
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
            free(linear_sizes);
            evaluation_free(&eq);
            if (teacher != &f) gpt_free(&f_transformed);
            gpt_free(&q);
        }
        eval_reference_free(&ref);
        /* the float group's time is counted into the ETA through its runs */
        gpt_free(&f);
    }
    free(order);
    free(mine);
    if (rc == 0) rc = sweep_write_summary(dir);
    if (rc != 0 && created) sweep_release_manifest(dir);
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
