/* sweep/plan: one cost model for the dry run's estimate and the running sweep's ETA — what a
 * shard computes, as tokens through each kind of pass, weighed by multiply-adds or measured time. */
#include "sweep/parts.h"

#include <math.h>
#include <stdlib.h>

#include "base/util.h"
#include "nn/data.h"
#include "nn/evaluate.h"
#include "nn/model.h"
#include "nn/optim.h"
#include "tables/sites.h"

double sweep_eval_tokens(size_t n_val, int ctx) { return (double)((n_val - 1) / (size_t)ctx * (size_t)ctx); }

/* the block whose output a run's corrections never change: its prefix caches' block, or -1 */
static int plan_first_block(const SweepConfig *cfg, const SweepRun *r) {
    GPTConfig g = {.vocab_size = 65, .ctx = cfg->ctx, .d_model = cfg->sizes[r->size_index].d_model,
                   .n_layer = cfg->sizes[r->size_index].n_layer, .n_head = cfg->heads};
    CorrectionLayout layout = sweep_run_layout(r);
    if (method_tunes(r->method) || r->first != METHOD_NONE) return -1; /* the base itself trains, from block 0 */
    /* a term on every quantized matrix starts in block 0 when the blocks' matrices are quantized */
    if (kind_info[layout.kind].placement == PLACE_LINEAR) return cfg->scheme.scope & SCOPE_OF(ROLE_LINEAR) ? -1 : g.n_layer - 1;
    return correction_layout_frozen_prefix(&g, &layout);
}

/* share of an L-block model's passes that blocks [from, L) are: the sweep runs a correction only
 * above its first site (the prefix below comes from a cache) */
static double share_from(const SweepConfig *cfg, int z, int from_block) {
    int L = cfg->sizes[z].n_layer;
    return (double)(L - from_block) / L;
}

SweepWork plan_float_model(const SweepConfig *cfg, int z, double eval_tokens) {
    return (SweepWork){.train = (double)SIZE_TRAIN_STEPS(cfg, z) * cfg->train_batch * cfg->ctx, .forward = eval_tokens};
}

/* its evaluation, and for a quantizer that uses data the calibration walk (about two passes over
 * the calibration windows: each block runs once per layer it observes, from a cached input) */
SweepWork plan_quant_model(const SweepConfig *cfg, const SweepRun *r, double eval_tokens) {
    QuantScheme s = sweep_run_scheme(cfg, r);
    double calib = quant_scheme_needs_calibration(&s) ? 2.0 * (double)(((long)cfg->calib_axis[0] + cfg->ctx - 1) / cfg->ctx * cfg->ctx) : 0.0;
    return (SweepWork){.forward = eval_tokens + calib};
}

/* the validation windows' prefix, and the calibration windows' for the ce objective */
SweepWork plan_prefix_cache(const SweepConfig *cfg, int z, int first_block, long calib_tokens, double eval_tokens) {
    double calib = cfg->objective == OBJECTIVE_CE ? (double)((calib_tokens + cfg->ctx - 1) / cfg->ctx * cfg->ctx) : 0.0;
    return (SweepWork){.forward = (eval_tokens + calib) * (1.0 - share_from(cfg, z, first_block + 1))};
}

/* --steps auto: the steps a run is expected to take, by model width and kind: the mean steps_run
 * of results/seed243-plateau (the plateau seed243 grid: bits 2/4/8 and its control arm, every
 * 1/2/4, seeds 42/123/999, patience 8, cap 2,000), per size over its linear (h0) and MLP (h32,
 * h64) runs. Other widths take the nearest row's; other budgets and methods (lowrank, the
 * zero-bit methods) take the stream corrections' rows, a guess the dry run says it makes. */
static const struct {
    int d_model;
    double linear, mlp; /* stream corrections: linear (and lowrank, lstsq fine-tuning), MLP */
} plateau_steps[] = {
    {64, 1069, 1265},
    {128, 738, 1022},
    {256, 889, 1672},
};

double plan_expected_steps(const SweepConfig *cfg, const SweepRun *r) {
    if (r->steps != STEPS_AUTO) return r->steps;
    int d = cfg->sizes[r->size_index].d_model, best = 0, n = (int)(sizeof plateau_steps / sizeof *plateau_steps);
    for (int i = 1; i < n; i++)
        if (abs(plateau_steps[i].d_model - d) < abs(plateau_steps[best].d_model - d)) best = i;
    double steps = r->hidden > 0 ? plateau_steps[best].mlp : plateau_steps[best].linear;
    return steps < cfg->autostop.max_steps ? steps : cfg->autostop.max_steps;
}

/* its steps above its first site, its evaluation there, a closed form's passes over the
 * calibration windows (quantized and float model: two), and under --steps auto the held-out
 * measurements (one before the first step, one every eval_every); "none" reuses its model's
 * evaluation */
SweepWork plan_run(const SweepConfig *cfg, const SweepRun *r, double eval_tokens) {
    if (!method_corrects(r->method)) return (SweepWork){0};
    int first_block = plan_first_block(cfg, r);
    double above = share_from(cfg, r->size_index, first_block + 1);
    double calib = (double)((r->calib + cfg->ctx - 1) / cfg->ctx * cfg->ctx);
    double solve = method_info[r->method].solves ? 2.0 * calib : 0.0, steps = plan_expected_steps(cfg, r), heldout = 0.0;
    if (r->first != METHOD_NONE) { /* a combination: its first method's steps, then a second that solves takes none */
        SweepRun first = *r;
        first.method = r->first;
        first.hidden = 0;
        if (method_info[r->method].solves) steps = 0.0;
        if (method_info[r->first].trains) steps += plan_expected_steps(cfg, &first);
    }
    if (r->steps == STEPS_AUTO) {
        int n_held = heldout_window_count((int)(calib / cfg->ctx), cfg->autostop.heldout_share);
        heldout = (steps / cfg->autostop.eval_every + 1.0) * n_held * cfg->ctx * above;
    }
    return (SweepWork){.correct = steps * cfg->corr_batch * cfg->ctx * above, .forward = eval_tokens * above + solve + heldout};
}

static void add_work(SweepWork *to, SweepWork w) {
    to->train += w.train;
    to->forward += w.forward;
    to->correct += w.correct;
}

double sweep_work_cost(SweepWork work, SweepWork per_token) {
    return work.train * per_token.train + work.forward * per_token.forward + work.correct * per_token.correct;
}

/* In the order sweep_run works: per (seed, size) group its float model, per bit width its
 * quantized model, then its unfinished runs, a prefix cache each time the first site changes. */
void sweep_plan(const SweepConfig *cfg, const SweepRun *runs, int n_runs, const int *done, int shard_k, int shard_n,
                double eval_tokens, SweepSizePlan *out) {
    for (int z = 0; z < cfg->n_sizes; z++) out[z] = (SweepSizePlan){0};
    for (int i = 0; i < n_runs;) {
        int g = runs[i].group, end = i;
        while (end < n_runs && runs[end].group == g) end++;
        int todo = 0;
        for (int k = i; k < end; k++) todo += !(done && done[k]);
        if (g % shard_n != shard_k - 1 || todo == 0) { i = end; continue; }
        int z = runs[i].size_index;
        SweepSizePlan *p = &out[z];
        p->float_models++;
        add_work(&p->work, plan_float_model(cfg, z, eval_tokens));
        for (int b = i; b < end;) {
            int model_end = b, cached_block = -1, have_model = 0;
            long cached_calib = -1;
            while (model_end < end && runs[model_end].model == runs[b].model) model_end++;
            for (int k = b; k < model_end; k++) {
                if (done && done[k]) continue;
                if (!have_model && sweep_run_has_model(cfg, &runs[k])) {
                    /* the first unfinished run brings the quantized model (the control arm's is the
                     * float model, evaluated already, unless it quantizes activations) */
                    p->quant_models++;
                    add_work(&p->work, plan_quant_model(cfg, &runs[k], eval_tokens));
                }
                have_model = 1;
                int first_block = method_corrects(runs[k].method) ? plan_first_block(cfg, &runs[k]) : -1;
                long draw = calibration_draw_tokens(runs[k].calib, cfg->ctx, runs[k].steps == STEPS_AUTO, cfg->autostop.heldout_share);
                if (first_block >= 0 && draw != cached_calib) cached_block = -1, cached_calib = draw; /* as sweep_run draws */
                if (first_block >= 0 && first_block != cached_block) {
                    p->prefix_caches++;
                    add_work(&p->work, plan_prefix_cache(cfg, z, first_block, draw, eval_tokens));
                    cached_block = first_block;
                }
                p->runs++;
                add_work(&p->work, plan_run(cfg, &runs[k], eval_tokens));
            }
            b = model_end;
        }
        i = end;
    }
}

void sweep_order_by_cost(const double *cost, int n, int *order) {
    for (int g = 0; g < n; g++) order[g] = g;
    for (int a = 1; a < n; a++) /* insertion sort, stable: equal groups keep their order */
        for (int b = a; b > 0 && cost[order[b]] > cost[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
}

void sweep_group_costs(const SweepConfig *cfg, const SweepRun *runs, int n_runs, int n_groups, const int *done,
                       double eval_tokens, const SweepWork *seconds_per_token, double *cost) {
    int *others = qc_malloc((size_t)(n_runs > 0 ? n_runs : 1) * sizeof(int), "group costs");
    SweepSizePlan *plan = qc_calloc((size_t)cfg->n_sizes, sizeof *plan, "group costs");
    for (int g = 0; g < n_groups; g++) {
        cost[g] = 0.0;
        if (!others || !plan) continue; /* out of memory: every group the same, the order kept */
        for (int i = 0; i < n_runs; i++) others[i] = runs[i].group != g || (done && done[i]);
        sweep_plan(cfg, runs, n_runs, others, 1, 1, eval_tokens, plan);
        for (int z = 0; z < cfg->n_sizes; z++) cost[g] += sweep_work_cost(plan[z].work, seconds_per_token[z]);
    }
    free(others);
    free(plan);
}

/* Per token, a forward costs L blocks of 12 d^2 + 2 T d multiply-adds and the head 65 d (a
 * character vocabulary); a backward with weight gradients twice the forward, without them once. */
SweepWork sweep_flops_per_token(const SweepConfig *cfg, int z) {
    double d = cfg->sizes[z].d_model, L = cfg->sizes[z].n_layer;
    double forward = L * (12.0 * d * d + 2.0 * cfg->ctx * d) + 65.0 * d;
    return (SweepWork){.train = 3.0 * forward, .forward = forward, .correct = 2.0 * forward};
}

/* Times what a run does, with the functions it calls: a training step of the float model, a
 * correction step (linear corrections after every block, the most a stream correction adds:
 * its forward, its backward through every block, the clip and AdamW on the corrections) and the
 * evaluation of one batch of validation windows through those corrections (forward-only pass,
 * per-window losses). Three repetitions of each, the first warming caches and threads. */
int sweep_measure_seconds_per_token(const SweepConfig *cfg, const Corpus *corpus, int z, SweepWork *out) {
    int B = cfg->train_batch > cfg->corr_batch ? cfg->train_batch : cfg->corr_batch;
    if (B < 32) B = 32;
    GPTConfig g = {.vocab_size = corpus->vocab.size, .ctx = cfg->ctx, .d_model = cfg->sizes[z].d_model,
                   .n_layer = cfg->sizes[z].n_layer, .n_head = cfg->heads};
    size_t span = (size_t)B * cfg->ctx, val_windows = corpus->n_val > 0 ? (corpus->n_val - 1) / (size_t)cfg->ctx : 0;
    if (val_windows < 1) { qc_error("the validation split (%zu characters) is shorter than one window of %d", corpus->n_val, cfg->ctx + 1); return -1; }
    if (val_windows < (size_t)B) span = val_windows * cfg->ctx; /* a small corpus: the windows it has */
    GPT m;
    if (gpt_init(&m, &g, B) != 0) return -1;
    if (gpt_enable_training(&m) != 0) { gpt_free(&m); return -1; }
    gpt_init_weights(&m, 1);
    /* the correction steps and evaluations run under the sweep's activation scheme (the float
     * model trains without it); a static one on made-up ranges, which cost what calibrated ones do */
    int act = act_scheme_on(&cfg->scheme.act);
    float *ranges = NULL;
    if (act && cfg->scheme.act.granularity == ACT_STATIC) {
        size_t n = 2 * (size_t)act_site_count(g.n_layer);
        ranges = qc_malloc(n * sizeof(float), "timing ranges");
        if (!ranges) { gpt_free(&m); return -1; }
        for (size_t k = 0; k < n; k++) ranges[k] = k % 2 ? 1.0f : -1.0f;
    }
    CorrectionLayout layout = {.kind = method_kind(METHOD_TRAIN, 0), .every = 1};
    Corrections c;
    if (corrections_init(&c, &g, &layout, B * cfg->ctx, 1) != 0) { free(ranges); gpt_free(&m); return -1; }
    /* B windows are drawn into it (the training and correction steps' batch), even when a small
     * corpus's validation split gives the evaluation fewer: span may be shorter than that */
    int32_t *in = qc_calloc((size_t)B * cfg->ctx, sizeof(int32_t), "timing batch");
    if (!in) { free(ranges); corrections_free(&c); gpt_free(&m); return -1; }
    Rng rng;
    rng_seed(&rng, 1);
    sample_windows(corpus->ids, corpus->n_train, B, cfg->ctx, &rng, in, in);
    const int32_t *val = corpus->ids + corpus->n_train;
    double t_train = 0, t_corr = 0, t_eval = 0;
    int rc = 0;
    for (int rep = 0; rep < 3 && rc == 0; rep++) {
        double t0 = now_seconds();
        gpt_forward(&m, in, cfg->train_batch, cfg->ctx, NULL);
        gpt_zero_grad(&m);
        gpt_loss(&m, in);
        gpt_backward(&m, NULL, 1, 1, 0);
        if (act && (gpt_set_act_scheme(&m, &cfg->scheme.act) != 0 || (ranges && gpt_set_act_ranges(&m, ranges) != 0))) { rc = -1; break; }
        double t1 = now_seconds();
        corrections_zero_grad(&c);
        rc = gpt_forward(&m, in, cfg->corr_batch, cfg->ctx, &c.hook);
        if (rc != 0) break;
        gpt_loss(&m, in);
        gpt_backward(&m, &c.hook, 1, 0, 0); /* every block: the plan counts the share a run computes */
        clip_grad_norm(c.grads, c.num_params, 1.0f);
        AdamWStep step = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .step = rep + 1};
        adamw_update(c.params, c.grads, c.adam_m, c.adam_v, c.num_params, 1, &step);
        double t2 = now_seconds();
        Evaluation ev;
        rc = evaluate_model(&m, &c.hook, val, span + 1, NULL, -1, NULL, &ev);
        if (rc == 0) evaluation_free(&ev);
        double t3 = now_seconds();
        if (act) { ActScheme off; act_scheme_default(&off); if (gpt_set_act_scheme(&m, &off) != 0) rc = -1; }
        if (rep) { t_train += (t1 - t0) / 2; t_corr += (t2 - t1) / 2; t_eval += (t3 - t2) / 2; }
    }
    free(in);
    free(ranges);
    corrections_free(&c);
    gpt_free(&m);
    if (rc != 0) return -1;
    *out = (SweepWork){.train = t_train / ((double)cfg->train_batch * cfg->ctx),
                       .forward = t_eval / (double)span,
                       .correct = t_corr / ((double)cfg->corr_batch * cfg->ctx)};
    return 0;
}
