/* correct: see correct.h. A fresh correction is exactly the identity (A, c, W2, b2 start at
 * zero), so the corrected model reproduces the quantized one bit for bit before training. */
#include "correct.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "util.h"

static size_t site_param_count(int d, int h) { return h == 0 ? (size_t)d * d + d : (size_t)h * d + h + (size_t)d * h + d; }

static void carve_site_params(CorrectionSite *s, float *base, int d, int h) {
    if (h == 0) {
        s->weight = base;
        s->bias = base + (size_t)d * d;
    } else {
        s->fc_weight = base;
        s->fc_bias = base + (size_t)h * d;
        s->proj_weight = s->fc_bias + h;
        s->proj_bias = s->proj_weight + (size_t)d * h;
    }
}

static float *site_forward(void *ctx, int block, float *x, int rows) {
    Corrections *c = ctx;
    int j = c->site_of_block[block];
    if (j < 0) return x;
    CorrectionSite *s = &c->sites[j];
    int d = c->d, h = c->hidden;
    s->input = x;
    memcpy(s->output, x, (size_t)rows * d * sizeof(float));
    if (h == 0) {
        matmul_forward(s->output, x, s->weight, s->bias, rows, d, d, 1);
    } else {
        matmul_forward(s->hidden_pre, x, s->fc_weight, s->fc_bias, rows, d, h, 0);
        gelu_forward(s->hidden, s->hidden_pre, (long)rows * h);
        matmul_forward(s->output, s->hidden, s->proj_weight, s->proj_bias, rows, h, d, 1);
    }
    if (c->mse_targets) {
        const float *t = c->mse_targets[j];
        double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (long i = 0; i < (long)rows * d; i++) {
            double e = (double)s->output[i] - t[i];
            sum += e * e;
        }
        c->mse_loss += sum / ((double)rows * d) / c->n_sites;
    }
    return s->output;
}

static void site_backward(void *ctx, int block, float *dx, int rows) {
    Corrections *c = ctx;
    int j = c->site_of_block[block];
    if (j < 0) return;
    CorrectionSite *s = &c->sites[j];
    int d = c->d, h = c->hidden;
    size_t offset = (size_t)((h == 0 ? s->weight : s->fc_weight) - c->params);
    CorrectionSite grads;
    carve_site_params(&grads, c->grads + offset, d, h);
    if (c->mse_targets) { /* d/d output of mean over sites of mean squared error */
        const float *t = c->mse_targets[j];
        float scale = 2.0f / ((float)rows * d * c->n_sites);
#pragma omp parallel for schedule(static)
        for (long i = 0; i < (long)rows * d; i++) dx[i] += scale * (s->output[i] - t[i]);
    }
    if (h == 0) {
        matmul_backward(c->dscratch, grads.weight, grads.bias, dx, s->input, s->weight, rows, d, d);
    } else {
        matmul_backward(c->dhidden, grads.proj_weight, grads.proj_bias, dx, s->hidden, s->proj_weight, rows, h, d);
        gelu_backward(c->dhidden, s->hidden_pre, c->dhidden, (long)rows * h);
        matmul_backward(c->dscratch, grads.fc_weight, grads.fc_bias, c->dhidden, s->input, s->fc_weight, rows, d, h);
    }
    /* output = x + f(x): the identity path plus the correction's own */
    residual_forward(dx, dx, c->dscratch, (long)rows * d);
}

int corrections_init(Corrections *c, const GPTConfig *cfg, int every, int hidden, int max_rows, uint64_t seed) {
    memset(c, 0, sizeof *c);
    if (every < 1) { qc_error("--every %d must be at least 1", every); return -1; }
    if (hidden < 0) { qc_error("--hidden %d must be 0 (linear) or positive (MLP width)", hidden); return -1; }
    if (cfg->n_layer > 256) { qc_error("too many layers for corrections"); return -1; }
    int d = cfg->d_model, h = hidden;
    c->d = d;
    c->hidden = h;
    c->every = every;
    c->n_layer = cfg->n_layer;
    c->max_rows = max_rows;
    c->n_sites = correction_site_count(cfg->n_layer, every);
    c->sites = qc_calloc((size_t)c->n_sites, sizeof(CorrectionSite), "correction sites");
    if (!c->sites) return -1;
    for (int i = 0, j = 0; i < cfg->n_layer; i++) {
        c->site_of_block[i] = -1;
        if (correction_is_site(i, cfg->n_layer, every)) {
            c->site_of_block[i] = j;
            c->sites[j++].block = i;
        }
    }
    size_t per_site = site_param_count(d, h);
    c->num_params = per_site * c->n_sites;
    c->params = qc_aligned_alloc(c->num_params * sizeof(float), "correction parameters");
    c->grads = qc_aligned_alloc(c->num_params * sizeof(float), "correction gradients");
    c->adam_m = qc_aligned_alloc(c->num_params * sizeof(float), "correction AdamW state");
    c->adam_v = qc_aligned_alloc(c->num_params * sizeof(float), "correction AdamW state");
    size_t rows = (size_t)max_rows;
    size_t act_per_site = rows * d + 2 * rows * h;
    c->act_memory = qc_aligned_alloc((act_per_site * c->n_sites + rows * d + rows * (h ? h : 1)) * sizeof(float),
                                     "correction activations");
    if (!c->params || !c->grads || !c->adam_m || !c->adam_v || !c->act_memory) { corrections_free(c); return -1; }
    memset(c->params, 0, c->num_params * sizeof(float));
    memset(c->grads, 0, c->num_params * sizeof(float));
    memset(c->adam_m, 0, c->num_params * sizeof(float));
    memset(c->adam_v, 0, c->num_params * sizeof(float));
    Rng rng;
    rng_seed(&rng, seed ^ 0xC0C0C0C0ull);
    float *act = c->act_memory;
    for (int j = 0; j < c->n_sites; j++) {
        CorrectionSite *s = &c->sites[j];
        carve_site_params(s, c->params + per_site * j, d, h);
        if (h > 0) /* W1 small random so the MLP can learn; W2 = 0 keeps the output exact */
            for (size_t k = 0; k < (size_t)h * d; k++) s->fc_weight[k] = 0.02f * rng_normal(&rng);
        s->output = act; act += rows * d;
        s->hidden_pre = act; act += rows * h;
        s->hidden = act; act += rows * h;
    }
    c->dscratch = act; act += rows * d;
    c->dhidden = act;
    c->hook.ctx = c;
    c->hook.forward = site_forward;
    c->hook.backward = site_backward;
    return 0;
}

void corrections_free(Corrections *c) {
    free(c->sites);
    free(c->params);
    free(c->grads);
    free(c->adam_m);
    free(c->adam_v);
    free(c->act_memory);
    memset(c, 0, sizeof *c);
}

void corrections_zero_grad(Corrections *c) { memset(c->grads, 0, c->num_params * sizeof(float)); }

int corrections_tensors(const Corrections *c, StWriteTensor *out, int max_out) {
    int k = 0, d = c->d, h = c->hidden;
    for (int j = 0; j < c->n_sites && k + 4 <= max_out; j++) {
        const CorrectionSite *s = &c->sites[j];
        if (h == 0) {
            out[k] = (StWriteTensor){.rows = d, .cols = d, .data = s->weight};
            snprintf(out[k++].name, sizeof out->name, "corrections.%d.weight", j);
            out[k] = (StWriteTensor){.rows = d, .cols = 0, .data = s->bias};
            snprintf(out[k++].name, sizeof out->name, "corrections.%d.bias", j);
        } else {
            out[k] = (StWriteTensor){.rows = h, .cols = d, .data = s->fc_weight};
            snprintf(out[k++].name, sizeof out->name, "corrections.%d.fc.weight", j);
            out[k] = (StWriteTensor){.rows = h, .cols = 0, .data = s->fc_bias};
            snprintf(out[k++].name, sizeof out->name, "corrections.%d.fc.bias", j);
            out[k] = (StWriteTensor){.rows = d, .cols = h, .data = s->proj_weight};
            snprintf(out[k++].name, sizeof out->name, "corrections.%d.proj.weight", j);
            out[k] = (StWriteTensor){.rows = d, .cols = 0, .data = s->proj_bias};
            snprintf(out[k++].name, sizeof out->name, "corrections.%d.proj.bias", j);
        }
    }
    return k;
}

void corrections_to_meta(const Corrections *c, StMeta *out) {
    out[0].key = "correction_every"; snprintf(out[0].value, sizeof out[0].value, "%d", c->every);
    out[1].key = "correction_hidden"; snprintf(out[1].value, sizeof out[1].value, "%d", c->hidden);
    out[2].key = "correction_type"; snprintf(out[2].value, sizeof out[2].value, "%s", c->hidden ? "mlp" : "linear");
    out[3].key = "correction_sites"; /* the block index each site follows, in site order */
    out[3].value[0] = 0;
    for (int j = 0; j < c->n_sites; j++)
        snprintf(out[3].value + strlen(out[3].value), sizeof out[3].value - strlen(out[3].value), "%s%d", j ? "," : "",
                 c->sites[j].block);
}

int corrections_load(Corrections *c, const SafeTensors *st, const GPTConfig *cfg, int max_rows) {
    const char *every = st_meta(st, "correction_every"), *hidden = st_meta(st, "correction_hidden");
    if (!every && !hidden) {
        for (int i = 0; i < st->n_tensors; i++)
            if (strncmp(st->tensors[i].name, "corrections.", 12) == 0) {
                qc_error("%s: holds correction tensors but no correction metadata", st->path);
                return -1;
            }
        return 0;
    }
    long e, h;
    if (!every || !hidden || parse_int("correction_every", every, 1, 256, &e) != 0 ||
        parse_int("correction_hidden", hidden, 0, 1 << 16, &h) != 0) {
        qc_error("%s: malformed correction metadata", st->path);
        return -1;
    }
    /* before allocating: every tensor the metadata implies is in the file with its shape (named by
     * corrections_tensors on sites without storage), so metadata cannot ask for more than the file holds */
    StWriteTensor names[4 * 256];
    CorrectionSite no_storage[256] = {{0}};
    Corrections layout = {.d = cfg->d_model, .hidden = (int)h, .n_sites = correction_site_count(cfg->n_layer, (int)e), .sites = no_storage};
    int n = corrections_tensors(&layout, names, 4 * 256);
    for (int i = 0; i < n; i++)
        if (st_check_tensor(st, names[i].name, names[i].rows, names[i].cols) != 0) return -1;
    if (corrections_init(c, cfg, (int)e, (int)h, max_rows, 0) != 0) return -1;
    n = corrections_tensors(c, names, 4 * 256);
    for (int i = 0; i < n; i++)
        if (st_copy_tensor(st, names[i].name, names[i].rows, names[i].cols, (float *)names[i].data) != 0) {
            corrections_free(c);
            return -1;
        }
    for (int i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (strncmp(name, "corrections.", 12) != 0) continue;
        int known = 0;
        for (int k = 0; k < n; k++) known |= strcmp(names[k].name, name) == 0;
        if (!known) {
            qc_error("%s: unexpected tensor '%s' for %d sites of hidden %ld", st->path, name, c->n_sites, h);
            corrections_free(c);
            return -1;
        }
    }
    return 1;
}

double kl_forward_backward(float *dlogits, const float *logits, const float *target_logits, int N, int V, float dloss) {
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int n = 0; n < N; n++) {
        const float *z = logits + (long)n * V, *t = target_logits + (long)n * V;
        double zmax = z[0], tmax = t[0];
        for (int v = 1; v < V; v++) {
            zmax = fmax(zmax, z[v]);
            tmax = fmax(tmax, t[v]);
        }
        double zs = 0.0, ts = 0.0;
        for (int v = 0; v < V; v++) {
            zs += exp(z[v] - zmax);
            ts += exp(t[v] - tmax);
        }
        double zlog = log(zs) + zmax, tlog = log(ts) + tmax, kl = 0.0;
        for (int v = 0; v < V; v++) {
            double lp = t[v] - tlog, lq = z[v] - zlog, p = exp(lp);
            kl += p * (lp - lq);
            if (dlogits) dlogits[(long)n * V + v] = (float)((exp(lq) - p) * dloss);
        }
        total += kl;
    }
    return total / N;
}
