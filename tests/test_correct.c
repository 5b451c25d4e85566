/* test_correct: the correction layers and the recovery metric (README: Correction layers,
 * Evaluation and recovery) — site placement, exact identity at initialisation, gradients of every
 * objective against finite differences (through frozen blocks), a frozen base, the lstsq solve, a
 * checkpoint round trip (recovery of a real quantization loss on a model trained in the test:
 * test_learning.c). */
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "correct/correct.h"
#include "correct/experiment.h"
#include "io/checkpoint.h"
#include "io/model_file.h"
#include "nn/data.h"
#include "nn/optim.h"
#include "nn/train.h"
#include "quant/quant.h"

/* ---- threads ----
 * One thread for the suite (main's group setup), as test_model: these models' OpenMP barriers
 * cost more than their arithmetic on a loaded 2-core machine (measured: the learning test takes
 * 4 s on one thread, 81 s on two while another job holds the cores). */
/* use_threads, setup_one_thread and restore_threads: tests/testutil.h */

/* ============================ sites ============================ */

static void test_site_placement(void **state) {
    (void)state;
    /* (L, every) -> the blocks with a site after them, by the site rule (README: Correction
     * layers): (i+1) % every == 0, and the last block always */
    static const struct {
        int L, every, n;
        int blocks[8];
    } cases[] = {
        {1, 1, 1, {0}},        {2, 1, 2, {0, 1}},        {3, 1, 3, {0, 1, 2}},  {4, 2, 2, {1, 3}},
        {5, 2, 3, {1, 3, 4}},  {6, 4, 2, {3, 5}},        {6, 3, 2, {2, 5}},     {7, 3, 3, {2, 5, 6}},
        {3, 4, 1, {2}},        {2, 5, 1, {1}},           {1, 7, 1, {0}},        {8, 8, 1, {7}},
        {8, 3, 3, {2, 5, 7}},  {6, 6, 1, {5}},           {6, 2, 3, {1, 3, 5}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int L = cases[k].L, every = cases[k].every;
        if (correction_site_count(L, every) != cases[k].n)
            fail_msg("L %d, every %d: %d sites, expected %d", L, every, correction_site_count(L, every), cases[k].n);
        assert_int_equal(cases[k].n, (L + every - 1) / every); /* ceil(L / every), as the README says */
        GPTConfig cfg = {.vocab_size = 5, .ctx = 4, .d_model = 8, .n_layer = L, .n_head = 2};
        for (int hidden = 0; hidden <= 4; hidden += 4) {
            Corrections c;
            assert_int_equal(stream_corrections(&c, &cfg, every, hidden, 4, 1), 0);
            assert_int_equal(c.n_sites, cases[k].n);
            int j = 0;
            for (int i = 0; i < L; i++) {
                if (j < c.n_sites && cases[k].blocks[j] == i) {
                    assert_int_equal(c.sites[j].where, i);
                    assert_int_equal(c.site_of[i], j);
                    j++;
                } else if (c.site_of[i] != -1) {
                    fail_msg("L %d, every %d: a site after block %d", L, every, i);
                }
            }
            assert_int_equal(j, c.n_sites);
            size_t per_site = hidden == 0 ? 8 * 8 + 8 : (size_t)2 * hidden * 8 + hidden + 8;
            assert_int_equal(c.num_params, per_site * c.n_sites);
            corrections_free(&c);
        }
    }
    /* refused: every < 1, hidden < 0 (naming the flag's value) */
    GPTConfig cfg = {.vocab_size = 5, .ctx = 4, .d_model = 8, .n_layer = 2, .n_head = 2};
    Corrections c;
    assert_int_equal(stream_corrections(&c, &cfg, 0, 0, 4, 1), -1);
    assert_non_null(strstr(qc_last_error(), "every 0"));
    assert_int_equal(stream_corrections(&c, &cfg, 1, -1, 4, 1), -1);
    assert_non_null(strstr(qc_last_error(), "width -1"));
}

/* ============================ identity at initialisation ============================ */

enum { BATCH = 2, SEQ = 8, ROWS = BATCH * SEQ };

/* tiny_model's sizes with L blocks (tests/testutil.c) */
static void small_model(GPT *m, int L, int max_batch, uint64_t seed) { small_gpt(m, L, SEQ, max_batch, seed); }

static void test_fresh_correction_is_identity(void **state) {
    (void)state;
    GPT q;
    small_model(&q, 3, BATCH, 201);
    QuantScheme s;
    quant_scheme_default(&s, 4);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    int32_t tokens[ROWS];
    Rng rng;
    rng_seed(&rng, 202);
    random_tokens(tokens, ROWS, q.config.vocab_size, &rng);
    size_t nl = (size_t)ROWS * q.config.vocab_size;
    gpt_forward(&q, tokens, BATCH, SEQ, NULL);
    float *plain = copy_floats(q.logits, nl);
    static const int configs[][2] = {{1, 0}, {2, 0}, {1, 8}, {2, 8}, {5, 32}}; /* every, hidden */
    for (size_t k = 0; k < sizeof configs / sizeof *configs; k++) {
        Corrections c;
        assert_int_equal(stream_corrections(&c, &q.config, configs[k][0], configs[k][1], ROWS, 203 + k), 0);
        gpt_forward(&q, tokens, BATCH, SEQ, &c.hook);
        if (memcmp(q.logits, plain, nl * sizeof(float)) != 0)
            fail_msg("every %d, hidden %d: a fresh correction changes the logits (max %g)", configs[k][0], configs[k][1],
                     max_abs_diff(q.logits, plain, nl));
        /* the MLP's first layer starts random (it must, to learn): only W2 and b2 are zero */
        if (configs[k][1]) {
            double w1 = 0;
            for (size_t i = 0; i < (size_t)configs[k][1] * 16; i++) w1 = fmax(w1, fabs(c.sites[0].param[0][i]));
            assert_true(w1 > 0);
        }
        /* the hook is live: one non-zero bias at the last site moves the logits */
        float *b = c.sites[c.n_sites - 1].param[configs[k][1] ? 3 : 1]; /* linear: weight, bias; MLP: fc.*, proj.* */
        b[3] = 0.5f;
        gpt_forward(&q, tokens, BATCH, SEQ, &c.hook);
        assert_true(max_abs_diff(q.logits, plain, nl) > 1e-3);
        corrections_free(&c);
    }
    free(plain);
    gpt_free(&q);
}

/* ============================ gradients ============================ */

/* Finite differences of the objective in the correction parameters, as test_model does for the
 * base: the objective runs in float, with rounding noise of ~1e-7 that does not shrink with the
 * step, so the step is large (FD_STEP = 3e-2 on parameters of std 0.1..0.3) and its O(h^2)
 * truncation error is cancelled by Richardson extrapolation over h and h/2 (exact to O(h^4)).
 * Every parameter of every site is checked (~4,400 over the seven configurations). Measured: the
 * error norm per site is 1e-6..6e-5 of the gradient's norm, and the worst element uses 0.12 of
 * the per-element bound FD_ATOL + FD_RTOL |fd| = 5e-5 + 2e-3 |fd|; per site the check also holds
 * ||analytic - fd|| <= 2e-3 ||fd|| (30x the worst measured). Site gradients have norms 0.08..1.1
 * (elements ~1e-3..1e-1), so a missing path (the identity of x + f(x), the flow through a frozen
 * block to an earlier site, the MSE term of a later site) or a wrong factor misses the bound by
 * orders of magnitude. */
#define FD_STEP 3e-2
#define FD_ATOL 5e-5
#define FD_RTOL 2e-3
#define SITE_RTOL 2e-3

typedef struct {
    GPT *q;
    Corrections *c;
    Objective objective;
    const int32_t *inputs, *targets;
    const float *target_logits;  /* kl: the float model's */
    const float *const *streams; /* mse: the float model's stream after each site's block */
} GradProblem;

/* The objective's value; with analytic set, also the correction gradients into c->grads. */
static double objective_value(GradProblem *p, int analytic, int stop_block) {
    GPT *q = p->q;
    Corrections *c = p->c;
    int N = ROWS, V = q->config.vocab_size;
    double value;
    if (analytic) corrections_zero_grad(c);
    if (p->objective == OBJECTIVE_MSE) {
        c->mse_targets = p->streams;
        c->mse_loss = 0.0;
        gpt_forward_blocks(q, p->inputs, BATCH, SEQ, &c->hook, q->config.n_layer);
        value = c->mse_loss;
        if (analytic) gpt_backward(q, &c->hook, 0, 0, stop_block);
        c->mse_targets = NULL;
        return value;
    }
    gpt_forward(q, p->inputs, BATCH, SEQ, &c->hook);
    if (p->objective == OBJECTIVE_CE) value = gpt_loss(q, p->targets);
    else value = kl_forward_backward(analytic ? q->dlogits : NULL, q->logits, p->target_logits, N, V, 1.0f / N);
    if (analytic) gpt_backward(q, &c->hook, 1, 0, stop_block);
    return value;
}

static double central_difference(GradProblem *p, size_t i, double h) {
    float *x = &p->c->params[i], saved = *x, up = saved + (float)h, down = saved - (float)h;
    *x = up;
    double f_up = objective_value(p, 0, 0);
    *x = down;
    double f_down = objective_value(p, 0, 0);
    *x = saved;
    return (f_up - f_down) / ((double)up - (double)down);
}

static double fd_gradient(GradProblem *p, size_t i) {
    return (4.0 * central_difference(p, i, FD_STEP / 2) - central_difference(p, i, FD_STEP)) / 3.0;
}

/* Random non-zero correction parameters, so that every path (W, b, the MLP's both layers, and the
 * correction's effect on the stream the next site reads) carries a gradient. */
static void randomize_corrections(Corrections *c, Rng *rng) {
    for (int j = 0; j < c->n_sites; j++) {
        CorrectionSite *s = &c->sites[j];
        int d = c->d, h = c->size;
        if (h == 0) {
            fill_normal(s->param[0], (size_t)d * d, rng, 0.1f);
            fill_normal(s->param[1], (size_t)d, rng, 0.1f);
        } else {
            fill_normal(s->param[0], (size_t)h * d, rng, 0.3f);
            fill_normal(s->param[1], (size_t)h, rng, 0.3f);
            fill_normal(s->param[2], (size_t)d * h, rng, 0.1f);
            fill_normal(s->param[3], (size_t)d, rng, 0.1f);
        }
    }
}

static void check_correction_gradients(const char *what, int L, int every, int hidden, Objective objective, uint64_t seed) {
    GPT f, q;
    small_model(&f, L, BATCH, seed);
    assert_int_equal(gpt_clone(&q, &f, BATCH), 0);
    QuantScheme s;
    quant_scheme_default(&s, 4);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    assert_int_equal(gpt_enable_backward(&q), 0); /* frozen: stream gradients only, no q.grads */
    int V = q.config.vocab_size, C = q.config.d_model;
    int32_t inputs[ROWS], targets[ROWS];
    Rng rng;
    rng_seed(&rng, seed + 1);
    random_tokens(inputs, ROWS, V, &rng);
    random_tokens(targets, ROWS, V, &rng);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, every, hidden, ROWS, seed + 2), 0);
    randomize_corrections(&c, &rng);

    /* the float model's logits and streams: the kl and mse targets */
    gpt_forward(&f, inputs, BATCH, SEQ, NULL);
    float *target_logits = copy_floats(f.logits, (size_t)ROWS * V);
    float *streams[8];
    for (int j = 0; j < c.n_sites; j++) streams[j] = copy_floats(f.layers[c.sites[j].where].resid_out, (size_t)ROWS * C);
    GradProblem p = {&q, &c, objective, inputs, targets, target_logits, (const float *const *)streams};

    float *q_params = copy_floats(q.params, q.num_params);
    int stop = c.sites[0].where + 1; /* what correction_train uses */
    objective_value(&p, 1, stop);
    float *grads = copy_floats(c.grads, c.num_params);
    /* the blocks below the first site add nothing to the correction gradients: a full backward
     * (stop_block 0) gives them bit for bit */
    objective_value(&p, 1, 0);
    assert_memory_equal(c.grads, grads, c.num_params * sizeof(float));
    assert_null(q.grads);

    double atol = FD_ATOL;
    size_t per_site = c.num_params / c.n_sites;
    for (int j = 0; j < c.n_sites; j++) {
        double err2 = 0, ref2 = 0, worst = 0;
        for (size_t k = 0; k < per_site; k++) {
            size_t i = j * per_site + k;
            double fd = fd_gradient(&p, i), a = grads[i], err = fabs(a - fd), bound = atol + FD_RTOL * fabs(fd);
            err2 += err * err;
            ref2 += fd * fd;
            worst = fmax(worst, err / bound);
            if (!(err <= bound))
                fail_msg("%s: site %d (after block %d) parameter %zu: backward %.7g, finite difference %.7g (error %.3g > %.3g)",
                         what, j, c.sites[j].where, k, a, fd, err, bound);
        }
        double rel = sqrt(err2) / fmax(sqrt(ref2), 1e-12);
        /* a site whose reference gradient vanished would let a backward that writes nothing pass */
        if (!(sqrt(ref2) > 1e-3)) fail_msg("%s: site %d: reference gradient norm %.3g is too small to test", what, j, sqrt(ref2));
        if (!(rel <= SITE_RTOL)) fail_msg("%s: site %d: ||backward - fd|| / ||fd|| = %.3g > %g", what, j, rel, SITE_RTOL);
#ifdef TEST_VERBOSE
        print_message("  %-22s site %d (block %d): |g| %.2e, rel err %.2e, worst err/bound %.2f\n", what, j, c.sites[j].where,
                      sqrt(ref2), rel, worst);
#endif
        (void)worst;
    }
    /* the base never moved */
    assert_memory_equal(q.params, q_params, q.num_params * sizeof(float));
    free(q_params);
    free(grads);
    free(target_logits);
    for (int j = 0; j < c.n_sites; j++) free(streams[j]);
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
}

/* every = 1 on 3 blocks: site 0's gradient reaches it through frozen blocks 1 and 2 and through
 * sites 1 and 2; every = 2: the first site is after block 1, so stop_block = 2 skips block 1's
 * backward and still runs the hook after it. */
static void test_gradients_ce(void **state) {
    (void)state;
    check_correction_gradients("ce linear every 1", 3, 1, 0, OBJECTIVE_CE, 301);
    check_correction_gradients("ce MLP every 1", 3, 1, 8, OBJECTIVE_CE, 302);
    check_correction_gradients("ce linear every 2", 3, 2, 0, OBJECTIVE_CE, 303);
}

static void test_gradients_kl(void **state) {
    (void)state;
    check_correction_gradients("kl linear every 1", 3, 1, 0, OBJECTIVE_KL, 311);
    check_correction_gradients("kl MLP every 1", 2, 1, 8, OBJECTIVE_KL, 312);
}

static void test_gradients_mse(void **state) {
    (void)state;
    check_correction_gradients("mse linear every 1", 3, 1, 0, OBJECTIVE_MSE, 321);
    check_correction_gradients("mse MLP every 2", 3, 2, 8, OBJECTIVE_MSE, 322);
}

/* kl_forward_backward on its own: its value against a direct computation in double, KL(p||p) = 0,
 * and its logit gradient against central differences (a smooth function of 7 logits: step 1e-3
 * and the double-precision value make the difference exact to ~1e-7). */
static void test_kl_values(void **state) {
    (void)state;
    enum { N = 3, V = 7 };
    float z[N * V], t[N * V], dz[N * V];
    Rng rng;
    rng_seed(&rng, 331);
    fill_normal(z, N * V, &rng, 2.0f);
    fill_normal(t, N * V, &rng, 2.0f);
    t[5] += 80.0f; /* large logits: the log-sum-exp must be shifted */
    z[V + 2] -= 90.0f;
    double want = 0;
    for (int n = 0; n < N; n++) {
        double zm = -INFINITY, tm = -INFINITY, zs = 0, ts = 0;
        for (int v = 0; v < V; v++) { zm = fmax(zm, z[n * V + v]); tm = fmax(tm, t[n * V + v]); }
        for (int v = 0; v < V; v++) { zs += exp(z[n * V + v] - zm); ts += exp(t[n * V + v] - tm); }
        for (int v = 0; v < V; v++) {
            double lp = t[n * V + v] - tm - log(ts), lq = z[n * V + v] - zm - log(zs);
            want += exp(lp) * (lp - lq);
        }
    }
    want /= N;
    double got = kl_forward_backward(dz, z, t, N, V, 1.0f / N);
    assert_true(isfinite(got));
    assert_close(got, want, 1e-12 * fabs(want) + 1e-15);
    assert_close(kl_forward_backward(NULL, t, t, N, V, 0.0f), 0.0, 1e-12);
    for (int i = 0; i < N * V; i++) {
        float saved = z[i];
        z[i] = saved + 1e-3f;
        double up = kl_forward_backward(NULL, z, t, N, V, 0.0f);
        z[i] = saved - 1e-3f;
        double down = kl_forward_backward(NULL, z, t, N, V, 0.0f);
        z[i] = saved;
        double fd = (up - down) / ((double)(saved + 1e-3f) - (double)(saved - 1e-3f));
        if (!(fabs(dz[i] - fd) <= 1e-6 + 1e-3 * fabs(fd))) fail_msg("kl: dlogits[%d] %.8g, finite difference %.8g", i, dz[i], fd);
    }
}

/* ============================ training and lstsq on a corpus ============================ */

/* A small float model for a corpus, untrained (std 0.2 weights: clearly non-trivial logits). */
static void small_corpus(Corpus *c) {
    const char *path = write_test_corpus("correct.txt", 6000, "abcdefgh ,.\n", 401);
    assert_int_equal(corpus_load(c, path, NULL), 0);
}

static void quick_options(CorrectOptions *o, Objective objective, int steps) {
    correct_options_default(o);
    o->objective = objective;
    o->steps = steps;
    o->batch = 4;
    o->calib_tokens = 1024;
    o->quiet = 1;
    o->lr = 1e-2f;
}

static double val_loss(GPT *m, const Corpus *c, const ModelHook *hook) {
    return evaluate_loss(m, c->ids + c->n_train, c->n_val, hook);
}

/* Zero steps: the corrected model is the quantized model, to the last bit of the loss. */
static void test_zero_steps_is_quantized_loss(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 2, 4, 411);
    assert_int_equal(gpt_clone(&q, &f, 4), 0);
    QuantScheme s;
    quant_scheme_default(&s, 2);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    double lf = val_loss(&f, &corpus, NULL), lq = val_loss(&q, &corpus, NULL);
    assert_true(lq - lf > 1e-3); /* 2 bits must hurt, or equality below proves little */
    for (int hidden = 0; hidden <= 8; hidden += 8) {
        Corrections c;
        assert_int_equal(stream_corrections(&c, &q.config, 1, hidden, 4 * 16, 412), 0);
        CorrectOptions o;
        quick_options(&o, OBJECTIVE_CE, 0);
        double objective = 0;
        assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, &objective), 0);
        double lc = val_loss(&q, &corpus, &c.hook);
        if (!(lc == lq)) fail_msg("hidden %d: zero steps give loss %.17g, the quantized model %.17g", hidden, lc, lq);
        corrections_free(&c);
    }
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* A few steps of every objective, linear and MLP: the base's (and the float model's) parameter
 * bytes are exactly what they were, while the corrections did move. */
static void test_training_leaves_base_untouched(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 2, 4, 421);
    assert_int_equal(gpt_clone(&q, &f, 4), 0);
    QuantScheme s;
    quant_scheme_default(&s, 3);
    act_scheme_inputs(&s.act, 8);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    float *q_before = copy_floats(q.params, q.num_params), *f_before = copy_floats(f.params, f.num_params);
    double lq = val_loss(&q, &corpus, NULL);
    for (int objective = OBJECTIVE_CE; objective <= OBJECTIVE_MSE; objective++)
        for (int hidden = 0; hidden <= 8; hidden += 8) {
            Corrections c;
            assert_int_equal(stream_corrections(&c, &q.config, 1, hidden, 4 * 16, 422), 0);
            float *init = copy_floats(c.params, c.num_params);
            CorrectOptions o;
            quick_options(&o, (Objective)objective, 5);
            double value = NAN;
            if (correction_train(&q, &f, &c, &corpus, &o, &value) != 0) fail_msg("correction_train: %s", qc_last_error());
            assert_true(isfinite(value));
            if (memcmp(q.params, q_before, q.num_params * sizeof(float)) != 0)
                fail_msg("%s, hidden %d: correction training changed the quantized base", objective_name(objective), hidden);
            assert_memory_equal(f.params, f_before, f.num_params * sizeof(float));
            /* every site trained, the first included (the stop_block of the frozen backward keeps
             * the hook after the first site's block) */
            size_t per_site = c.num_params / c.n_sites;
            for (int j = 0; j < c.n_sites; j++)
                if (!(max_abs_diff(c.params + j * per_site, init + j * per_site, per_site) > 1e-3))
                    fail_msg("%s, hidden %d: site %d did not train", objective_name(objective), hidden, j);
            /* the uncorrected quantized model is still exactly itself */
            assert_true(val_loss(&q, &corpus, NULL) == lq);
            free(init);
            corrections_free(&c);
        }
    free(q_before);
    free(f_before);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* The kl and mse objectives measure the distance to the float model: when the "quantized" model
 * is the float model itself (the control arm, bits 32), a fresh correction makes the two agree
 * bit for bit, so the objective is exactly 0, its gradient exactly 0, and AdamW (no weight decay)
 * leaves every parameter where it was. A target taken from the wrong place (the model's own
 * logits, another block's stream) breaks one of the two. */
static void test_kl_mse_vanish_on_float_model(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 3, 4, 451);
    assert_int_equal(gpt_clone(&q, &f, 4), 0);
    for (int objective = OBJECTIVE_KL; objective <= OBJECTIVE_MSE; objective++)
        for (int hidden = 0; hidden <= 8; hidden += 8) {
            Corrections c;
            assert_int_equal(stream_corrections(&c, &q.config, 1, hidden, 4 * 16, 452), 0);
            float *init = copy_floats(c.params, c.num_params);
            CorrectOptions o;
            quick_options(&o, (Objective)objective, 4);
            double value = NAN;
            assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, &value), 0);
            if (!(value == 0.0)) fail_msg("%s, hidden %d: objective %g on the float model itself, expected 0", objective_name(objective), hidden, value);
            if (memcmp(c.params, init, c.num_params * sizeof(float)) != 0)
                fail_msg("%s, hidden %d: the corrections moved (max %g) with nothing to correct", objective_name(objective), hidden,
                         max_abs_diff(c.params, init, c.num_params));
            free(init);
            corrections_free(&c);
        }
    /* ce is not a distance to the float model: on the same model it trains (the control arm's gain) */
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 4 * 16, 453), 0);
    CorrectOptions o;
    quick_options(&o, OBJECTIVE_CE, 4);
    assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, NULL), 0);
    double moved = 0;
    for (size_t i = 0; i < c.num_params; i++) moved = fmax(moved, fabs(c.params[i]));
    assert_true(moved > 1e-3);
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* The sweep's shortcut (experiment.h StreamCache): ce training from the cached frozen prefix
 * gives the corrections that training from the tokens gives (to rounding), and
 * evaluate_model through the cache exactly evaluate_model from the tokens, with and without the corrections. */
static void test_stream_cache_matches(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 3, 4, 461);
    assert_int_equal(gpt_clone(&q, &f, 4), 0);
    QuantScheme s;
    quant_scheme_default(&s, 2);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    int T = q.config.ctx;
    const int32_t *val = corpus.ids + corpus.n_train;
    int n_val_windows = (int)((corpus.n_val - 1) / (size_t)T);
    for (int every = 1; every <= 2; every++) {
        Corrections plain, cached;
        assert_int_equal(stream_corrections(&plain, &q.config, every, 0, 4 * T, 462), 0);
        assert_int_equal(stream_corrections(&cached, &q.config, every, 0, 4 * T, 462), 0);
        int first = plain.sites[0].where;
        CorrectOptions o;
        quick_options(&o, OBJECTIVE_CE, 6);
        /* the same arithmetic on the same windows, but the frozen prefix was computed in other
         * batches (the cache's), so the BLAS may round a row differently: ~1e-7 after 6 steps
         * (measured 1.2e-7); a cache that skips the first site's hook or feeds the wrong windows
         * trains different corrections by O(lr) = 1e-2 */
        int64_t *starts;
        StreamCache calib, vc;
        double rel = train_from_tokens_and_cache(&q, &f, &plain, &cached, &corpus, &o, first, &calib, &starts);
        if (!(rel <= 1e-4))
            fail_msg("every %d: training from the prefix cache differs from training from tokens (relative %g, max %g)", every,
                     rel, max_abs_diff(cached.params, plain.params, plain.num_params));
        assert_int_equal(stream_cache_build(&vc, &q, val, NULL, n_val_windows, first), 0);
        /* from the cache or from the tokens, window by window: the same bits */
        for (int hooked = 0; hooked < 2; hooked++) {
            const ModelHook *hook = hooked ? &plain.hook : NULL;
            Evaluation from_tokens, from_cache;
            assert_int_equal(evaluate_model(&q, hook, val, corpus.n_val, NULL, first, NULL, &from_tokens), 0);
            assert_int_equal(evaluate_model(&q, hook, val, corpus.n_val, &vc, first, NULL, &from_cache), 0);
            assert_int_equal(from_cache.n_windows, n_val_windows);
            if (memcmp(from_cache.window_loss, from_tokens.window_loss, (size_t)n_val_windows * sizeof(double)) != 0 ||
                !(from_cache.loss == from_tokens.loss))
                fail_msg("every %d: evaluation from the prefix cache %.17g, from the tokens %.17g", every, from_cache.loss, from_tokens.loss);
            assert_true(from_tokens.loss == evaluate_loss(&q, val, corpus.n_val, hook));
            evaluation_free(&from_tokens);
            evaluation_free(&from_cache);
        }
        stream_cache_free(&calib);
        stream_cache_free(&vc);
        free(starts);
        corrections_free(&plain);
        corrections_free(&cached);
    }
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* A cache is matched to the corrections by its content: windows of another calibration set (same
 * count, other seed), a cache of another model, or of another block are refused, not trained on. */
static void test_calibration_cache_identity(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 3, 4, 463);
    assert_int_equal(gpt_clone(&q, &f, 4), 0);
    QuantScheme s;
    quant_scheme_default(&s, 2);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    int T = q.config.ctx, n_windows = 0;
    CorrectOptions o;
    quick_options(&o, OBJECTIVE_CE, 2);
    int64_t *starts = calibration_windows(&corpus, o.calib_tokens, T, o.seed, &n_windows);
    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 4 * T, 464), 0);
    int first = c.sites[0].where;
    StreamCache cache, deeper;
    assert_int_equal(stream_cache_build(&cache, &q, corpus.ids, starts, n_windows, first), 0);
    o.calib_cache = &cache;
    assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, NULL), 0);
    /* the same number of windows drawn with another seed */
    o.seed += 1;
    assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, NULL), -1);
    assert_non_null(strstr(qc_last_error(), "calibration cache"));
    o.seed -= 1;
    /* the cache of another model: one weight of the quantized model changed */
    q.params[q.num_params / 2] += 0.25f;
    assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, NULL), -1);
    assert_non_null(strstr(qc_last_error(), "calibration cache"));
    q.params[q.num_params / 2] -= 0.25f;
    /* a cache of another block */
    assert_int_equal(stream_cache_build(&deeper, &q, corpus.ids, starts, n_windows, first + 1), 0);
    o.calib_cache = &deeper;
    assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, NULL), -1);
    stream_cache_free(&deeper);
    stream_cache_free(&cache);
    corrections_free(&c);
    free(starts);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* The corrections' saved activations hold max_rows rows: a forward of more rows through their hook
 * is refused before anything is written (it used to write past the end of the scratch). */
static void test_forward_refuses_rows_beyond_the_corrections(void **state) {
    (void)state;
    GPT q;
    small_gpt(&q, 2, 8, 4, 465);
    int32_t tokens[4 * 8] = {0};
    for (int hidden = 0; hidden <= 8; hidden += 8) {
        Corrections c;
        assert_int_equal(stream_corrections(&c, &q.config, 1, hidden, 2 * 8, 466), 0);
        assert_int_equal(gpt_forward(&q, tokens, 2, 8, &c.hook), 0);
        assert_int_equal(gpt_forward(&q, tokens, 4, 8, &c.hook), -1);
        assert_non_null(strstr(qc_last_error(), "exceeds the 16 rows"));
        assert_int_equal(gpt_forward_blocks(&q, tokens, 3, 8, &c.hook, 1), -1);
        assert_int_equal(gpt_forward_from(&q, q.encoded, 1, 3, 8, &c.hook), -1);
        /* evaluation batches by the model's max_batch (4): refused, not overflowed */
        assert_true(isnan(evaluate_loss(&q, tokens, 4 * 8, &c.hook)));
        corrections_free(&c);
    }
    gpt_free(&q);
}

/* Mean squared difference, in double, between the stream at site j of q (after the site's
 * correction, earlier sites applied) and f's stream at the same block, over the calibration
 * windows lstsq used. */
static double site_mse(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, int j) {
    int T = q->config.ctx, d = c->d, n_windows = 0, block = c->sites[j].where;
    int64_t *starts = calibration_windows(corpus, o->calib_tokens, T, o->seed, &n_windows);
    assert_non_null(starts);
    int32_t *inputs = malloc((size_t)q->max_batch * T * sizeof(int32_t));
    double sum = 0;
    for (int w0 = 0; w0 < n_windows; w0 += q->max_batch) {
        int nb = n_windows - w0 < q->max_batch ? n_windows - w0 : q->max_batch;
        for (int b = 0; b < nb; b++) memcpy(inputs + (size_t)b * T, corpus->ids + starts[w0 + b], (size_t)T * sizeof(int32_t));
        gpt_forward_blocks(q, inputs, nb, T, &c->hook, block + 1);
        gpt_forward_blocks(f, inputs, nb, T, NULL, block + 1);
        const float *x = c->sites[j].output, *y = f->layers[block].resid_out;
        for (size_t i = 0; i < (size_t)nb * T * d; i++) sum += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    }
    free(inputs);
    free(starts);
    return sum / ((double)n_windows * T * d);
}

/* The ridge normal equations of site j at the solved correction, on the calibration stream that
 * reaches the site (earlier sites applied): with Z = [X 1] (rows: positions, X the quantized
 * stream entering the site), R = Y - X (Y the float stream) and W = [A; c] (A = weight^T),
 * G = Z^T (Z W - R) + diag(lambda, .., lambda, 0) W must vanish, lambda = ridge * mean diagonal
 * of X^T X (experiment.h). Returns ||G|| / ||Z^T R||: the solve is in double, the stored W in
 * float, so ~1e-7..1e-6 is rounding; a site solved on the wrong stream, without its bias, or
 * transposed is off by O(0.1..1). */
static double normal_equation_residual(GPT *q, GPT *f, Corrections *c, const Corpus *corpus, const CorrectOptions *o, int j) {
    int T = q->config.ctx, d = c->d, D = d + 1, n_windows = 0, block = c->sites[j].where;
    int64_t *starts = calibration_windows(corpus, o->calib_tokens, T, o->seed, &n_windows);
    int32_t *inputs = malloc((size_t)q->max_batch * T * sizeof(int32_t));
    double *ztz = calloc((size_t)D * D, sizeof(double)), *ztr = calloc((size_t)D * d, sizeof(double));
    double z[64];
    assert_true(D <= 64);
    for (int w0 = 0; w0 < n_windows; w0 += q->max_batch) {
        int nb = n_windows - w0 < q->max_batch ? n_windows - w0 : q->max_batch;
        for (int b = 0; b < nb; b++) memcpy(inputs + (size_t)b * T, corpus->ids + starts[w0 + b], (size_t)T * sizeof(int32_t));
        gpt_forward_blocks(q, inputs, nb, T, &c->hook, block + 1);
        gpt_forward_blocks(f, inputs, nb, T, NULL, block + 1);
        const float *x = q->layers[block].resid_out, *y = f->layers[block].resid_out;
        for (size_t i = 0; i < (size_t)nb * T; i++) {
            for (int k = 0; k < d; k++) z[k] = x[i * d + k];
            z[d] = 1.0;
            for (int a = 0; a < D; a++) {
                for (int b = 0; b < D; b++) ztz[a * D + b] += z[a] * z[b];
                for (int b = 0; b < d; b++) ztr[a * d + b] += z[a] * ((double)y[i * d + b] - x[i * d + b]);
            }
        }
    }
    double trace = 0;
    for (int k = 0; k < d; k++) trace += ztz[k * D + k];
    double lambda = o->ridge * trace / d, g2 = 0, r2 = 0;
    const CorrectionSite *s = &c->sites[j];
    for (int a = 0; a < D; a++)
        for (int b = 0; b < d; b++) {
            /* W[k][b] = A[k][b] = weight[b][k]; W[d][b] = bias[b] */
            double g = -ztr[a * d + b];
            for (int k = 0; k < D; k++) g += ztz[a * D + k] * (k < d ? s->param[0][(size_t)b * d + k] : s->param[1][b]);
            if (a < d) g += lambda * s->param[0][(size_t)b * d + a];
            g2 += g * g;
            r2 += ztr[a * d + b] * ztr[a * d + b];
        }
    free(inputs);
    free(starts);
    free(ztz);
    free(ztr);
    return sqrt(g2 / r2);
}

/* lstsq against known answers: (1) the "quantized" model is the float model: the residual to fit
 * is exactly zero, so the solve returns zero (up to nothing: X^T 0 = 0) and the loss is unchanged;
 * (2) a 2-bit model: each site's solve minimises the ridge objective over the calibration stream,
 * which at A = 0, c = 0 equals the uncorrected MSE, so the MSE at that site (earlier sites
 * applied) can only go down — and at 2 bits it goes down clearly; (3) each site's solution
 * satisfies its ridge normal equations on the stream that reaches it. */
static void test_lstsq_known_answers(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 3, 8, 431);
    assert_int_equal(gpt_clone(&q, &f, 8), 0);
    CorrectOptions o;
    quick_options(&o, OBJECTIVE_CE, 0);
    o.method = METHOD_LSTSQ;
    o.batch = 8;
    o.calib_tokens = 2048;

    Corrections c;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 8 * 16, 432), 0);
    double before = val_loss(&q, &corpus, NULL);
    if (correction_lstsq(&q, &f, &c, &corpus, &o) != 0) fail_msg("lstsq: %s", qc_last_error());
    double biggest = 0;
    for (size_t i = 0; i < c.num_params; i++) biggest = fmax(biggest, fabs(c.params[i]));
    if (!(biggest <= 1e-6)) fail_msg("lstsq on an unquantized model: largest correction parameter %g, expected ~0", biggest);
    assert_close(val_loss(&q, &corpus, &c.hook), before, 1e-6);
    corrections_free(&c);

    QuantScheme s;
    quant_scheme_default(&s, 2);
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    for (int every = 1; every <= 2; every++) {
        assert_int_equal(stream_corrections(&c, &q.config, every, 0, 8 * 16, 433), 0);
        if (correction_lstsq(&q, &f, &c, &corpus, &o) != 0) fail_msg("lstsq: %s", qc_last_error());
        size_t per_site = c.num_params / c.n_sites;
        float *saved = malloc(per_site * sizeof(float));
        for (int j = 0; j < c.n_sites; j++) {
            double solved = site_mse(&q, &f, &c, &corpus, &o, j);
            float *p = c.params + j * per_site;
            memcpy(saved, p, per_site * sizeof(float));
            memset(p, 0, per_site * sizeof(float));
            double zero = site_mse(&q, &f, &c, &corpus, &o, j);
            memcpy(p, saved, per_site * sizeof(float));
#ifdef TEST_VERBOSE
            print_message("  lstsq every %d site %d: mse %.5g -> %.5g\n", every, j, zero, solved);
#endif
            /* float rounding of the solved parameters: 1e-6 relative slack */
            if (!(solved <= zero * (1 + 1e-6)))
                fail_msg("every %d: lstsq raised the MSE at site %d from %.6g to %.6g", every, j, zero, solved);
            if (j == 0 && !(solved <= 0.9 * zero))
                fail_msg("every %d: lstsq reduced the MSE at site 0 only from %.6g to %.6g", every, zero, solved);
            /* measured ~1e-7; bound 1e-4 */
            double residual = normal_equation_residual(&q, &f, &c, &corpus, &o, j);
#ifdef TEST_VERBOSE
            print_message("  lstsq every %d site %d: normal equations residual %.3g\n", every, j, residual);
#endif
            if (!(residual <= 1e-4))
                fail_msg("every %d: site %d does not solve its ridge normal equations (relative residual %.3g)", every, j, residual);
        }
        free(saved);
        corrections_free(&c);
    }
    /* a strong ridge (0.1 of the mean diagonal): the shrinkage is now a large part of the
     * equations, so they pin down its definition (A shrunk by lambda, the bias not) */
    o.ridge = 0.1;
    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 8 * 16, 435), 0);
    assert_int_equal(correction_lstsq(&q, &f, &c, &corpus, &o), 0);
    for (int j = 0; j < c.n_sites; j++) {
        double residual = normal_equation_residual(&q, &f, &c, &corpus, &o, j);
        if (!(residual <= 1e-4)) fail_msg("ridge 0.1: site %d does not solve its ridge normal equations (relative residual %.3g)", j, residual);
    }
    corrections_free(&c);
    o.ridge = 1e-4;
    /* lstsq fits linear corrections only */
    assert_int_equal(stream_corrections(&c, &q.config, 1, 8, 8 * 16, 434), 0);
    assert_int_equal(correction_lstsq(&q, &f, &c, &corpus, &o), -1);
    assert_non_null(strstr(qc_last_error(), "linear corrections only, not mlp"));
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* ============================ checkpoint round trip ============================ */

/* Saves q with its scheme and corrections as cmd_correct does (save_model), loads it as eval does
 * (load_checkpoint), and evaluates: the corrected loss comes back exactly. */
static void round_trip(const char *name, GPT *q, const Corrections *c, const QuantScheme *s, const Corpus *corpus, double want) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    if (save_model(path, q, &corpus->vocab, s, c, &(CorrectionProvenance){"train", "ce"}) != 0) fail_msg("save_model: %s", qc_last_error());

    LoadedModel lm;
    if (load_checkpoint(&lm, path, q->max_batch) != 0) fail_msg("load_checkpoint: %s", qc_last_error());
    assert_true(lm.quantized && lm.corrected);
    GPT *m = &lm.model; /* not a copy: the evaluation keeps its scratch in the model, which loaded_model_free frees */
    QuantScheme loaded = lm.scheme;
    Corrections lc = lm.corrections;
    assert_int_equal(m->act.scheme.bits, loaded.act.bits);
    assert_int_equal(m->act.scheme.points, loaded.act.points);
    assert_int_equal(loaded.bits, s->bits);
    assert_int_equal(loaded.granularity, s->granularity);
    assert_int_equal(loaded.group, s->group);
    assert_int_equal(loaded.asymmetric, s->asymmetric);
    assert_int_equal(loaded.scope, s->scope);
    assert_int_equal(loaded.act.bits, s->act.bits);
    assert_int_equal(loaded.act.points, s->act.points);
    assert_int_equal(lc.every, c->every);
    assert_int_equal(lc.kind, c->kind);
    assert_int_equal(lc.size, c->size);
    assert_int_equal(lc.n_sites, c->n_sites);
    assert_memory_equal(m->params, q->params, q->num_params * sizeof(float));
    assert_memory_equal(lc.params, c->params, c->num_params * sizeof(float));
    double got = evaluate_loss(m, corpus->ids + corpus->n_train, corpus->n_val, &lc.hook);
    if (!(got == want)) fail_msg("%s: loaded corrected loss %.17g, before saving %.17g", name, got, want);
    loaded_model_free(&lm);
}

static void test_checkpoint_round_trip(void **state) {
    (void)state;
    Corpus corpus;
    small_corpus(&corpus);
    GPT f, q;
    corpus_model(&f, &corpus, 3, 4, 441);
    assert_int_equal(gpt_clone(&q, &f, 4), 0);
    QuantScheme s;
    quant_scheme_default(&s, 3);
    assert_int_equal(parse_granularity("group:8", &s), 0);
    s.asymmetric = 1;
    act_scheme_inputs(&s.act, 6); /* a loader that forgot act_bits would not reproduce the loss */
    assert_int_equal(quantize_model(&q, &s, NULL, NULL), 0);
    double lq = val_loss(&q, &corpus, NULL);

    Corrections c;
    CorrectOptions o;
    quick_options(&o, OBJECTIVE_KL, 10);
    assert_int_equal(stream_corrections(&c, &q.config, 2, 8, 4 * 16, 442), 0);
    assert_int_equal(correction_train(&q, &f, &c, &corpus, &o, NULL), 0);
    double lc = val_loss(&q, &corpus, &c.hook);
    assert_true(lc != lq); /* the corrections do something, so reproducing lc is a test */
    round_trip("corrected-mlp.safetensors", &q, &c, &s, &corpus, lc);
    corrections_free(&c);

    assert_int_equal(stream_corrections(&c, &q.config, 1, 0, 4 * 16, 443), 0);
    o.method = METHOD_LSTSQ;
    assert_int_equal(correction_lstsq(&q, &f, &c, &corpus, &o), 0);
    lc = val_loss(&q, &corpus, &c.hook);
    assert_true(lc != lq);
    round_trip("corrected-linear.safetensors", &q, &c, &s, &corpus, lc);
    corrections_free(&c);
    gpt_free(&q);
    gpt_free(&f);
    corpus_free(&corpus);
}

/* ============================ recovery ============================ */

static void test_recovery_metric(void **state) {
    (void)state;
    double r;
    /* defined and exact: (1.5 - 1.25) / (1.5 - 1.0) = 0.5, every value a binary fraction */
    assert_int_equal(recovery_loss(1.0, 1.5, 1.25, &r), 1);
    assert_true(r == 0.5);
    assert_int_equal(recovery_loss(2.0, 3.0, 2.0, &r), 1);
    assert_true(r == 1.0);
    assert_int_equal(recovery_loss(2.0, 3.0, 3.0, &r), 1);
    assert_true(r == 0.0);
    assert_int_equal(recovery_loss(2.0, 3.0, 1.5, &r), 1); /* beats float: over 100% */
    assert_true(r == 1.5);
    assert_int_equal(recovery_loss(2.0, 3.0, 3.5, &r), 1); /* worse than quantized: negative */
    assert_true(r == -0.5);
    /* perplexity space: (e^lq - e^lc) / (e^lq - e^lf) */
    double lf = 1.3, lq = 1.9, lc = 1.45;
    assert_int_equal(recovery_ppl(lf, lq, lc, &r), 1);
    assert_close(r, (exp(1.9) - exp(1.45)) / (exp(1.9) - exp(1.3)), 1e-15);
    double rl;
    assert_int_equal(recovery_loss(lf, lq, lc, &rl), 1);
    assert_close(rl, 0.75, 1e-15);
    /* the recovered part [lc, lq] is the top of [lf, lq], where exp is steepest: its share of the
     * perplexity gap (0.803) exceeds its share of the loss gap (0.75) */
    assert_true(r > rl && r < 1.0);
    /* the threshold: |lq - lf| < 1e-4 nats is undefined (NaN, returns 0); 1e-4 itself is defined */
    const double undefined_gaps[] = {0.0, 5e-5, -5e-5, 9.999e-5, -9.999e-5, 1e-12, -1e-12, -0.0};
    for (size_t k = 0; k < sizeof undefined_gaps / sizeof *undefined_gaps; k++) {
        double g = undefined_gaps[k];
        r = 0;
        if (recovery_loss(3.0, 3.0 + g, 3.0 + g / 2, &r) != 0 || !isnan(r)) fail_msg("gap %g: recovery_loss defined (%g)", g, r);
        r = 0;
        if (recovery_ppl(3.0, 3.0 + g, 3.0 + g / 2, &r) != 0 || !isnan(r)) fail_msg("gap %g: recovery_ppl defined (%g)", g, r);
    }
    assert_int_equal(recovery_loss(0.0, 1e-4, 0.5e-4, &r), 1);
    assert_close(r, 0.5, 1e-12);
    assert_int_equal(recovery_ppl(0.0, 1e-4, 0.5e-4, &r), 1);
    assert_close(r, (exp(1e-4) - exp(0.5e-4)) / (exp(1e-4) - 1.0), 1e-9);
    assert_int_equal(recovery_loss(3.0, 2.5, 2.75, &r), 1); /* quantized better than float, by a lot: defined */
    assert_close(r, 0.5, 1e-15);
    /* non-finite inputs never produce a number */
    r = 0;
    assert_int_equal(recovery_loss(NAN, 3.0, 2.0, &r), 0);
    assert_true(isnan(r));
    r = 0;
    assert_int_equal(recovery_ppl(2.0, NAN, 2.0, &r), 0);
    assert_true(isnan(r));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_site_placement),
        cmocka_unit_test(test_fresh_correction_is_identity),
        cmocka_unit_test(test_gradients_ce),
        cmocka_unit_test(test_gradients_kl),
        cmocka_unit_test(test_gradients_mse),
        cmocka_unit_test(test_kl_values),
        cmocka_unit_test(test_zero_steps_is_quantized_loss),
        cmocka_unit_test(test_training_leaves_base_untouched),
        cmocka_unit_test(test_kl_mse_vanish_on_float_model),
        cmocka_unit_test(test_stream_cache_matches),
        cmocka_unit_test(test_calibration_cache_identity),
        cmocka_unit_test(test_forward_refuses_rows_beyond_the_corrections),
        cmocka_unit_test(test_lstsq_known_answers),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_recovery_metric),
    };
    return cmocka_run_group_tests_name("correct", tests, setup_one_thread, restore_threads);
}
