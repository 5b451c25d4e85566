/* test_tune: the methods that train the quantized model's own parameters at 0 extra bits (tune.h)
 * — normtweak's and scales' gradients against finite differences, qat's straight-through rule
 * (where finite differences in the latent weights are zero: the forward is piecewise constant),
 * every stored weight a code of its grid after training, nothing else of the model changed, the
 * model's bits unchanged, the saved model's loss reproduced, and the validation split never read. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correct/budget.h"
#include "correct/experiment.h"
#include "correct/tune.h"
#include "quant/quant.h"

#define BATCH 2
#define SEQ 8
#define ROWS (BATCH * SEQ)
/* as test_correct's gradient checks: a large step with Richardson extrapolation (float rounding
 * noise does not shrink with the step), per element 5e-5 + 2e-3 |fd| */
#define FD_STEP 3e-2
#define FD_ATOL 5e-5
#define FD_RTOL 2e-3

/* A float model with LayerNorms away from their init (weights 1 + N(0, 0.2), biases N(0, 0.2)),
 * so every LayerNorm parameter carries a gradient, and its quantized copy. */
static void pair(GPT *f, GPT *q, const QuantScheme *s, int L, int V, int ctx, int max_batch, uint64_t seed) {
    GPTConfig cfg = {.vocab_size = V, .ctx = ctx, .d_model = 16, .n_layer = L, .n_head = 2};
    assert_int_equal(gpt_init(f, &cfg, max_batch), 0);
    gpt_init_weights(f, seed);
    Rng rng;
    rng_seed(&rng, seed + 7);
    for (int i = 0; i < f->n_specs; i++) {
        TensorSpec *t = &f->specs[i];
        if (t->role != ROLE_NORM && t->role != ROLE_BIAS) {
            for (size_t k = 0; k < tensor_numel(t); k++) f->params[t->offset + k] *= 5.0f; /* trained-looking weights */
            continue;
        }
        fill_normal(f->params + t->offset, tensor_numel(t), &rng, 0.2f);
        if (t->role == ROLE_NORM && strstr(t->name, "weight"))
            for (size_t k = 0; k < tensor_numel(t); k++) f->params[t->offset + k] += 1.0f;
    }
    assert_int_equal(gpt_clone(q, f, max_batch), 0);
    assert_int_equal(quantize_model(q, s, NULL, NULL), 0);
}

typedef struct {
    GPT *q, *f;
    Corrections *c;
    Objective objective;
    const int32_t *inputs, *targets;
} Problem;

static double objective(Problem *p, int analytic) {
    double v;
    if (analytic) {
        gpt_zero_grad(p->q);
        assert_int_equal(correction_step_objective(p->q, p->f, p->c, p->objective, p->inputs, p->targets, BATCH, SEQ, 1, 0, NULL, &v), 0);
        return v;
    }
    gpt_forward(p->q, p->inputs, BATCH, SEQ, NULL);
    if (p->objective == OBJECTIVE_CE) return gpt_loss(p->q, p->targets);
    gpt_forward(p->f, p->inputs, BATCH, SEQ, NULL);
    return kl_forward_backward(NULL, p->q->logits, p->f->logits, ROWS, p->q->config.vocab_size, 1.0f / ROWS);
}

/* d objective / d x by central differences over h and h/2, Richardson-extrapolated; after each
 * change of *x, sync (if given) writes the tuned values into the model */
static double fd(Problem *p, float *x, Tuning *sync) {
    double d[2];
    float saved = *x;
    for (int k = 0; k < 2; k++) {
        float up = saved + (float)(FD_STEP / (k + 1)), down = saved - (float)(FD_STEP / (k + 1));
        *x = up;
        if (sync) tuning_apply(sync, p->q);
        double a = objective(p, 0);
        *x = down;
        if (sync) tuning_apply(sync, p->q);
        double b = objective(p, 0);
        d[k] = (a - b) / ((double)up - (double)down);
    }
    *x = saved;
    if (sync) tuning_apply(sync, p->q);
    return (4.0 * d[1] - d[0]) / 3.0;
}

static void setup_problem(Problem *p, GPT *f, GPT *q, Corrections *c, Objective o, int32_t *inputs, int32_t *targets, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    random_tokens(inputs, ROWS, q->config.vocab_size, &rng);
    random_tokens(targets, ROWS, q->config.vocab_size, &rng);
    CorrectionLayout none = {.kind = KIND_NONE, .every = 1};
    assert_int_equal(corrections_init(c, &q->config, &none, ROWS, 1), 0);
    assert_int_equal(gpt_enable_training(q), 0);
    *p = (Problem){q, f, c, o, inputs, targets};
}

/* Every LayerNorm weight and bias (ln_1, ln_2 of both blocks and ln_f: 160), ce and kl: the
 * gradient normtweak trains by equals the finite difference of the objective in that parameter. */
static void test_normtweak_gradients(void **state) {
    (void)state;
    for (int obj = OBJECTIVE_CE; obj <= OBJECTIVE_KL; obj++) {
        QuantScheme s;
        quant_scheme_default(&s, 3);
        GPT f, q;
        pair(&f, &q, &s, 2, 11, 8, BATCH, 40 + obj);
        Corrections c;
        Problem p;
        int32_t inputs[ROWS], targets[ROWS];
        setup_problem(&p, &f, &q, &c, (Objective)obj, inputs, targets, 41);
        Tuning t;
        assert_int_equal(tuning_init(&t, TUNE_NORMS, &q, &f, &s), 0);
        assert_int_equal((int)t.fit.num_params, (2 * 2 * 2 + 2) * 16);
        objective(&p, 1);
        tuning_collect(&t, &q);
        float *grads = copy_floats(t.fit.grads, t.fit.num_params);
        double ref2 = 0;
        for (size_t i = 0; i < t.fit.num_params; i++) {
            double g = fd(&p, &t.fit.params[i], &t), err = fabs(grads[i] - g);
            ref2 += g * g;
            if (!(err <= FD_ATOL + FD_RTOL * fabs(g)))
                fail_msg("%s: LayerNorm parameter %zu: backward %.7g, finite difference %.7g", objective_name(obj), i, grads[i], g);
        }
        if (!(sqrt(ref2) > 1e-3)) fail_msg("reference gradient norm %.3g too small to test", sqrt(ref2));
        free(grads);
        tuning_free(&t);
        corrections_free(&c);
        gpt_free(&q);
        gpt_free(&f);
    }
}

/* qat's forward is piecewise constant in the latent weights (a tenth of a step moves no code: the
 * loss is bit for bit the same), so finite differences there say nothing; the straight-through
 * rule gives each latent weight the gradient at its grid value, which is checked against finite
 * differences of the objective in the stored (dequantized) weight itself, for every weight of
 * one matrix of each block and of the head. */
static void test_qat_straight_through(void **state) {
    (void)state;
    QuantScheme s;
    quant_scheme_default(&s, 3);
    s.granularity = GRAN_GROUP;
    s.group = 8;
    s.asymmetric = 1;
    GPT f, q;
    pair(&f, &q, &s, 2, 11, 8, BATCH, 50);
    Corrections c;
    Problem p;
    int32_t inputs[ROWS], targets[ROWS];
    setup_problem(&p, &f, &q, &c, OBJECTIVE_CE, inputs, targets, 51);
    Tuning t;
    assert_int_equal(tuning_init(&t, TUNE_WEIGHTS, &q, &f, &s), 0);
    double base = objective(&p, 0);
    for (int i = 0; i < t.n_ranges; i += 7) { /* a tenth of a step up from the grid value: no code moves */
        TuneRange *r = &t.ranges[i];
        t.fit.params[r->from] += (float)(0.1 * r->grid.scale);
    }
    tuning_apply(&t, &q);
    assert_true(objective(&p, 0) == base);
    for (int i = 0; i < t.n_ranges; i += 7) t.fit.params[t.ranges[i].from] -= (float)(0.1 * t.ranges[i].grid.scale);
    tuning_apply(&t, &q);
    objective(&p, 1);
    tuning_collect(&t, &q);
    const char *checked[] = {"transformer.h.0.attn.c_proj.weight", "transformer.h.1.mlp.c_fc.weight", "lm_head.weight"};
    int n_checked = 0;
    for (int k = 0; k < 3; k++) {
        const TensorSpec *spec = gpt_find_tensor(&q, checked[k]);
        assert_non_null(spec);
        for (int i = 0; i < t.n_ranges; i++) {
            TuneRange *r = &t.ranges[i];
            if (r->at < spec->offset || r->at >= spec->offset + tensor_numel(spec)) continue;
            for (size_t j = 0; j < r->n; j++) {
                double g = fd(&p, &q.params[r->at + j], NULL), a = t.fit.grads[r->from + j];
                if (!(fabs(a - g) <= FD_ATOL + FD_RTOL * fabs(g)))
                    fail_msg("%s[%zu]: straight-through gradient %.7g, finite difference at the grid value %.7g", checked[k],
                             r->at + j - spec->offset, a, g);
                n_checked++;
            }
        }
    }
    assert_int_equal(n_checked, 16 * 16 + 64 * 16 + 11 * 16);
    /* a latent weight far beyond its range is clamped to the extreme code, and comes back with a step */
    TuneRange *r = &t.ranges[3];
    t.fit.params[r->from] = (float)(r->hi + 100 * r->grid.scale);
    tuning_apply(&t, &q);
    assert_true(t.fit.params[r->from] == (float)r->hi);
    assert_true(q.params[r->at] == span_grid_apply(r->hi, r->grid, s.bits, s.asymmetric));
    tuning_free(&t);
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
}

static void small_corpus(Corpus *c) {
    const char *path = write_test_corpus("tune.txt", 6000, "abcdefgh ,.\n", 601);
    assert_int_equal(corpus_load(c, path, NULL), 0);
}

static void tune_options(CorrectOptions *o, CorrectMethod m, const QuantScheme *s, int steps) {
    correct_options_default(o);
    o->method = m;
    o->scheme = s;
    o->steps = steps;
    o->batch = 4;
    o->calib_tokens = 2048;
    o->lr = 1e-2f;
    o->quiet = 1;
    auto_stop_default(&o->autostop);
    o->autostop.max_steps = 40;
    o->autostop.eval_every = 5;
    o->autostop.patience = 3;
}

/* After qat trains (40 steps at a high rate, so codes move), at 2, 3 and 4 bits, symmetric and
 * asymmetric, per row, per group and per tensor: every span holds at most 2^b distinct values, each
 * exactly code * scale (+ minimum) for an integer code of the grid with its stored scale; codes
 * moved; the tensors qat does not train (LayerNorms, biases, embeddings) are bit for bit the
 * quantized model's; what the model stores costs what the quantized model costs. */
static void test_qat_grid_membership(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    struct { int bits, asym; Granularity g; } cases[] = {{2, 0, GRAN_CHANNEL}, {3, 1, GRAN_GROUP}, {4, 0, GRAN_TENSOR}, {4, 1, GRAN_CHANNEL}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        QuantScheme s;
        quant_scheme_default(&s, cases[k].bits);
        s.asymmetric = cases[k].asym;
        s.granularity = cases[k].g;
        s.group = 8;
        GPT f, q;
        pair(&f, &q, &s, 2, corpus.vocab.size, 16, 8, 60 + k);
        float *start = copy_floats(q.params, q.num_params);
        Tuning grids; /* the grids qat keeps, as it fits them */
        assert_int_equal(tuning_init(&grids, TUNE_WEIGHTS, &q, &f, &s), 0);
        Corrections c;
        CorrectOptions o;
        tune_options(&o, METHOD_QAT, &s, 40);
        CorrectionResult res;
        if (run_correction(&q, &f, &corpus, &o, NULL, NULL, &c, &res) != 0) fail_msg("%s", qc_last_error());
        size_t moved = 0;
        for (int i = 0; i < grids.n_ranges; i++) {
            const TuneRange *r = &grids.ranges[i];
            double lo = s.asymmetric ? 0 : -((1 << (s.bits - 1)) - 1), hi = s.asymmetric ? (1 << s.bits) - 1 : (1 << (s.bits - 1)) - 1;
            float seen[256];
            int n_seen = 0;
            for (size_t j = 0; j < r->n; j++) {
                float v = q.params[r->at + j];
                double code = nearbyint((v - r->grid.minimum) / r->grid.scale);
                if (!(code >= lo && code <= hi && (float)(r->grid.minimum + code * r->grid.scale) == v))
                    fail_msg("case %zu: weight %zu = %.9g is no code of its grid (scale %.9g, minimum %.9g)", k, r->at + j, v, r->grid.scale,
                             r->grid.minimum);
                int found = 0;
                for (int u = 0; u < n_seen; u++) found |= seen[u] == v;
                if (!found) seen[n_seen++] = v;
                moved += v != start[r->at + j];
            }
            assert_true(n_seen <= 1 << s.bits);
        }
        if (!(moved > 0)) fail_msg("case %zu: no code moved", k);
        for (int i = 0; i < q.n_specs; i++)
            if (!(s.scope & SCOPE_OF(q.specs[i].role)))
                assert_memory_equal(q.params + q.specs[i].offset, start + q.specs[i].offset, tensor_numel(&q.specs[i]) * sizeof(float));
        assert_true(corrections_storage_bits(&c) == 0.0 && c.n_sites == 0 && corrections_stored_params(&c) == 0);
        assert_true(res.train.steps_run == 40);
        evaluation_free(&res.eval);
        corrections_free(&c);
        tuning_free(&grids);
        free(start);
        gpt_free(&q);
        gpt_free(&f);
    }
    corpus_free(&corpus);
}

/* scales: the gradient in each span's log-scale θ (and, asymmetric, its minimum offset μ) equals
 * the finite difference of the objective, ce and kl, for every trained value of the model; scales
 * kept exact here (the storage rounding is passed straight through, and would make the forward
 * piecewise constant in θ). */
static void test_scales_gradients(void **state) {
    (void)state;
    for (int k = 0; k < 4; k++) {
        int obj = k % 2 ? OBJECTIVE_KL : OBJECTIVE_CE, asym = k >= 2;
        QuantScheme s;
        quant_scheme_default(&s, 3);
        s.asymmetric = asym;
        s.scale_dtype = SCALE_EXACT;
        GPT f, q;
        pair(&f, &q, &s, 2, 11, 8, BATCH, 90 + k);
        Corrections c;
        Problem p;
        int32_t inputs[ROWS], targets[ROWS];
        setup_problem(&p, &f, &q, &c, (Objective)obj, inputs, targets, 91 + k);
        Tuning t;
        assert_int_equal(tuning_init(&t, TUNE_SCALES, &q, &f, &s), 0);
        /* per row: the 4 block matrices of 2 blocks (3·16 + 16 + 64 + 16 rows each) and the head's 11 */
        size_t spans = 2 * (48 + 16 + 64 + 16) + 11;
        assert_int_equal((int)t.fit.num_params, (int)(spans * (asym ? 2 : 1)));
        for (size_t i = 0; i < t.fit.num_params; i++) t.fit.params[i] = 0.05f * (float)((int)(i % 7) - 3); /* away from the start */
        tuning_apply(&t, &q);
        objective(&p, 1);
        tuning_collect(&t, &q);
        float *grads = copy_floats(t.fit.grads, t.fit.num_params);
        double ref2 = 0;
        for (size_t i = 0; i < t.fit.num_params; i++) {
            double g = fd(&p, &t.fit.params[i], &t), err = fabs(grads[i] - g);
            ref2 += g * g;
            if (!(err <= FD_ATOL + FD_RTOL * fabs(g)))
                fail_msg("%s, %s: scale parameter %zu: backward %.7g, finite difference %.7g", objective_name(obj),
                         asym ? "asymmetric" : "symmetric", i, grads[i], g);
        }
        if (!(sqrt(ref2) > 1e-3)) fail_msg("reference gradient norm %.3g too small to test", sqrt(ref2));
        free(grads);
        tuning_free(&t);
        corrections_free(&c);
        gpt_free(&q);
        gpt_free(&f);
    }
}

/* After scales or lwc trains (40 steps at a high rate), at 2, 3 and 4 bits, symmetric and
 * asymmetric, per row, group and tensor, scales stored as f16: every stored scale and minimum an
 * f16 value; scales: every weight its starting code times its span's stored scale (plus stored
 * minimum); lwc: every weight its float weight rounded onto its span's stored grid, and codes
 * moved with the scales (what sets it apart from scales) — so a span keeps at most 2^b distinct
 * values; the scales moved; nothing the scheme does not quantize changed; no bits added. */
static void grid_membership(TuneTarget target, CorrectMethod method, uint64_t seed) {
    Corpus corpus;
    small_corpus(&corpus);
    struct { int bits, asym; Granularity g; } cases[] = {{2, 0, GRAN_CHANNEL}, {3, 1, GRAN_GROUP}, {4, 0, GRAN_TENSOR}, {4, 1, GRAN_CHANNEL}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        QuantScheme s;
        quant_scheme_default(&s, cases[k].bits);
        s.asymmetric = cases[k].asym;
        s.granularity = cases[k].g;
        s.group = 8;
        GPT f, q;
        pair(&f, &q, &s, 2, corpus.vocab.size, 16, 8, seed + k);
        float *start = copy_floats(q.params, q.num_params);
        Tuning t;
        assert_int_equal(tuning_init(&t, target, &q, &f, &s), 0);
        Corrections c;
        CorrectionLayout none = {.kind = KIND_NONE, .every = 1};
        assert_int_equal(corrections_init(&c, &q.config, &none, 8 * 16, 1), 0);
        CorrectOptions o;
        tune_options(&o, method, &s, 40);
        TrainSummary sum;
        if (fit_params(&q, &f, &c, &t.fit, &corpus, &o, &sum) != 0) fail_msg("%s", qc_last_error());
        assert_int_equal(sum.steps_run, 40);
        size_t moved = 0, codes_moved = 0;
        for (int i = 0; i < t.n_ranges; i++) {
            const TuneRange *r = &t.ranges[i];
            SpanGrid g = tuning_grid(&t, r);
            if (round_to_dtype(g.scale, SCALE_F16) != g.scale || round_to_dtype(g.minimum, SCALE_F16) != g.minimum)
                fail_msg("case %zu: span %d stores scale %.9g, minimum %.9g: not f16 values", k, i, g.scale, g.minimum);
            moved += g.scale != r->grid.scale;
            for (size_t j = 0; j < r->span; j++) {
                float was = start[r->at + j], v = q.params[r->at + j];
                double code = r->grid.scale == 0 ? 0 : nearbyint((was - r->grid.minimum) / r->grid.scale);
                if (target == TUNE_SCALES && (float)(g.minimum + code * g.scale) != v)
                    fail_msg("case %zu: weight %zu = %.9g is not its code %g times the stored scale %.9g (+ %.9g)", k, r->at + j, v, code,
                             g.scale, g.minimum);
                float want = span_grid_apply(f.params[r->at + j], g, s.bits, s.asymmetric);
                if (target == TUNE_CLIP && v != want)
                    fail_msg("case %zu: weight %zu = %.9g, not its float weight on the stored grid (%.9g)", k, r->at + j, v, want);
                codes_moved += code != (g.scale == 0 ? 0 : nearbyint((v - g.minimum) / g.scale));
            }
        }
        if (!(moved > 0)) fail_msg("case %zu: no scale moved", k);
        if (target == TUNE_CLIP && !(codes_moved > 0)) fail_msg("case %zu: lwc moved no code", k);
        for (int i = 0; i < q.n_specs; i++)
            if (!(s.scope & SCOPE_OF(q.specs[i].role)))
                assert_memory_equal(q.params + q.specs[i].offset, start + q.specs[i].offset, tensor_numel(&q.specs[i]) * sizeof(float));
        assert_true(corrections_storage_bits(&c) == 0.0 && c.n_sites == 0);
        corrections_free(&c);
        tuning_free(&t);
        free(start);
        gpt_free(&q);
        gpt_free(&f);
    }
    corpus_free(&corpus);
}

static void test_scales_grid_membership(void **state) {
    (void)state;
    grid_membership(TUNE_SCALES, METHOD_SCALES, 70);
}

static void test_lwc_grid_membership(void **state) {
    (void)state;
    grid_membership(TUNE_CLIP, METHOD_LWC, 170);
}

/* normtweak changes the LayerNorms and nothing else, stores no correction, and its result is
 * what the evaluation after it measured (the model as it stands: what a checkpoint stores). */
static void test_normtweak_changes_only_norms(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    QuantScheme s;
    quant_scheme_default(&s, 2);
    GPT f, q;
    pair(&f, &q, &s, 2, corpus.vocab.size, 16, 8, 70);
    float *start = copy_floats(q.params, q.num_params);
    Corrections c;
    CorrectOptions o;
    tune_options(&o, METHOD_NORMTWEAK, &s, 30);
    CorrectionResult res;
    if (run_correction(&q, &f, &corpus, &o, NULL, NULL, &c, &res) != 0) fail_msg("%s", qc_last_error());
    int norms_moved = 0;
    for (int i = 0; i < q.n_specs; i++) {
        const TensorSpec *t = &q.specs[i];
        size_t bytes = tensor_numel(t) * sizeof(float);
        if (t->role == ROLE_NORM) norms_moved += memcmp(q.params + t->offset, start + t->offset, bytes) != 0;
        else assert_memory_equal(q.params + t->offset, start + t->offset, bytes);
    }
    assert_int_equal(norms_moved, 4 * 2 + 2); /* ln_1, ln_2 (weight, bias) of both blocks, ln_f */
    assert_true(corrections_storage_bits(&c) == 0.0 && corrections_stored_params(&c) == 0);
    Evaluation again;
    assert_int_equal(evaluate_model(&q, NULL, corpus.ids + corpus.n_train, corpus.n_val, NULL, 0, NULL, &again), 0);
    assert_true(again.loss == res.eval.loss);
    evaluation_free(&again);
    evaluation_free(&res.eval);
    corrections_free(&c);
    free(start);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* What each method refuses, with a message: normtweak of quantized LayerNorms; scales and lwc at
 * 32 bits; qat of a model whose weights are not on the grids their float weights refit to. qat
 * at 32 bits is its control arm: every matrix of the scope trains freely, one range a tensor. */
static void test_refusals(void **state) {
    (void)state;
    QuantScheme s;
    quant_scheme_default(&s, 3);
    s.scope |= SCOPE_OF(ROLE_NORM);
    GPT f, q;
    pair(&f, &q, &s, 1, 11, 8, 2, 80);
    Tuning t;
    assert_int_equal(tuning_init(&t, TUNE_NORMS, &q, &f, &s), -1);
    assert_non_null(strstr(qc_last_error(), "--scope norm"));
    QuantScheme full;
    quant_scheme_default(&full, 32);
    assert_int_equal(tuning_init(&t, TUNE_SCALES, &f, &f, &full), -1);
    assert_non_null(strstr(qc_last_error(), "32 bits"));
    assert_int_equal(tuning_init(&t, TUNE_CLIP, &f, &f, &full), -1);
    assert_non_null(strstr(qc_last_error(), "32 bits"));
    assert_int_equal(tuning_init(&t, TUNE_WEIGHTS, &f, &f, &full), 0);
    int matrices = 0;
    for (int i = 0; i < f.n_specs; i++) matrices += (full.scope & SCOPE_OF(f.specs[i].role)) != 0;
    assert_int_equal(t.n_ranges, matrices);
    for (size_t k = 0; k < t.fit.num_params; k++) t.fit.params[k] += 1e-3f * (float)(k % 5); /* any value: no grid */
    GPT moved;
    assert_int_equal(gpt_clone(&moved, &f, 2), 0);
    tuning_apply(&t, &moved);
    for (int i = 0; i < t.n_ranges; i++)
        assert_memory_equal(moved.params + t.ranges[i].at, t.fit.params + t.ranges[i].from, t.ranges[i].n * sizeof(float));
    gpt_free(&moved);
    tuning_free(&t);
    assert_int_equal(tuning_init(&t, TUNE_WEIGHTS, &q, &f, &s), 0); /* on its grids */
    tuning_free(&t);
    q.params[gpt_find_tensor(&q, "lm_head.weight")->offset] += 1e-3f; /* off the grid */
    assert_int_equal(tuning_init(&t, TUNE_WEIGHTS, &q, &f, &s), -1);
    assert_non_null(strstr(qc_last_error(), "lm_head.weight"));
    gpt_free(&q);
    gpt_free(&f);
}

/* The validation split is never read: its pages are unreadable (test_autostop's layout) while
 * every method of the table that trains the model's own parameters by AdamW steps (normtweak, qat,
 * scales, lwc) trains by fixed steps and by --steps auto, ce and kl, each from the quantized model. */
static void test_never_reads_validation(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    QuantScheme s;
    quant_scheme_default(&s, 2);
    GPT f, q;
    pair(&f, &q, &s, 2, corpus.vocab.size, 16, 8, 90);
    GuardedSplit guard;
    unreadable_validation(&corpus, &guard);
    float *start = copy_floats(q.params, q.num_params);
    int tested = 0;
    for (int m = 0; m < METHOD_COUNT; m++) {
        if (!method_info[m].tunes || !method_info[m].trains) continue;
        tested++;
        for (int obj = OBJECTIVE_CE; obj <= OBJECTIVE_KL; obj++)
            for (int autostop = 0; autostop <= 1; autostop++) {
                memcpy(q.params, start, q.num_params * sizeof(float));
                Corrections c;
                CorrectOptions o;
                tune_options(&o, (CorrectMethod)m, &s, autostop ? STEPS_AUTO : 10);
                o.objective = (Objective)obj;
                CorrectionLayout none = {.kind = KIND_NONE, .every = 1};
                assert_int_equal(corrections_init(&c, &q.config, &none, 8 * 16, 1), 0);
                TrainSummary ts;
                if (tune_fit(&q, &f, &c, &corpus, &o, &ts) != 0) fail_msg("%s: %s", method_name((CorrectMethod)m), qc_last_error());
                assert_true(ts.steps_run > 0 && (autostop ? isfinite(ts.heldout_objective) : ts.stopped_by == STOPPED_FIXED));
                corrections_free(&c);
            }
    }
    assert_int_equal(tested, 4);
    free(start);
    readable_validation(&corpus, &guard);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* --steps auto with the running average (the default) measures the average: it is swapped into
 * the model (fit_apply: qat's grid values, scales' and lwc's stored grids, the norms) and the
 * training's own parameters back after. So how often it measures changes no training step: for
 * every method that tunes by steps the step logs with a measurement every 3 steps and with one
 * at the end are the same bytes. */
static void test_measuring_the_average_leaves_training_alone(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    QuantScheme s;
    quant_scheme_default(&s, 2);
    GPT f, q;
    pair(&f, &q, &s, 2, corpus.vocab.size, 16, 8, 91);
    float *start = copy_floats(q.params, q.num_params);
    int tested = 0;
    for (int m = 0; m < METHOD_COUNT; m++) {
        if (!method_info[m].tunes || !method_info[m].trains) continue;
        tested++;
        char logs[2][4096];
        for (int k = 0; k < 2; k++) {
            memcpy(q.params, start, q.num_params * sizeof(float));
            CorrectOptions o;
            tune_options(&o, (CorrectMethod)m, &s, STEPS_AUTO);
            o.autostop.ema = 0.9;
            o.autostop.eval_every = k == 0 ? 3 : 40;
            o.autostop.patience = 1000;
            o.autostop.schedule = SCHEDULE_COSINE;
            snprintf(logs[k], sizeof logs[k], "%s/tune_ema.steps%d.csv", test_tmpdir(), k);
            o.log_path = logs[k];
            Corrections c;
            CorrectionLayout none = {.kind = KIND_NONE, .every = 1};
            assert_int_equal(corrections_init(&c, &q.config, &none, 8 * 16, 1), 0);
            TrainSummary ts;
            if (tune_fit(&q, &f, &c, &corpus, &o, &ts) != 0) fail_msg("%s: %s", method_name((CorrectMethod)m), qc_last_error());
            assert_int_equal(ts.steps_run, 40);
            corrections_free(&c);
        }
        if (!same_file_bytes(logs[0], logs[1])) fail_msg("%s: the step logs differ with the measurement interval", method_name((CorrectMethod)m));
    }
    assert_int_equal(tested, 4);
    free(start);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normtweak_gradients),
        cmocka_unit_test(test_qat_straight_through),
        cmocka_unit_test(test_qat_grid_membership),
        cmocka_unit_test(test_scales_gradients),
        cmocka_unit_test(test_scales_grid_membership),
        cmocka_unit_test(test_lwc_grid_membership),
        cmocka_unit_test(test_normtweak_changes_only_norms),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_never_reads_validation),
        cmocka_unit_test(test_measuring_the_average_leaves_training_alone),
    };
    return cmocka_run_group_tests(tests, setup_one_thread, restore_threads);
}
