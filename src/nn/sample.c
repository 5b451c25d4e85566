/* sample: see sample.h. Each step runs the same ops as the batched forward on a single row,
 * so cached generation and gpt_forward agree to rounding (a test checks it). */
#include "nn/sample.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "kernels/ops.h"
#include "nn/actquant.h"

int sample_state_init(SampleState *s, GPT *m, const ModelHook *hook) {
    memset(s, 0, sizeof *s);
    const GPTConfig *c = &m->config;
    size_t C = (size_t)c->d_model, P = (size_t)c->ctx, L = (size_t)c->n_layer;
    s->model = m;
    s->hook = hook;
    if (act_check_ready(m) != 0) return -1;
    size_t total = 2 * L * P * C + C * (1 + 1 + 3 + 1 + 4 + 4) + (size_t)c->n_head * P + (size_t)c->vocab_size + 2;
    float *mem = qc_aligned_alloc(total * sizeof(float), "sampling cache");
    if (!mem) return -1;
    s->key_cache = mem; mem += L * P * C;
    s->value_cache = mem; mem += L * P * C;
    s->x = mem; mem += C;
    s->ln = mem; mem += C;
    s->qkv = mem; mem += 3 * C;
    s->atty = mem; mem += C;
    s->fch = mem; mem += 4 * C;
    s->fch_gelu = mem; mem += 4 * C;
    s->scores = mem; mem += (size_t)c->n_head * P;
    s->logits = mem; mem += (size_t)c->vocab_size;
    s->stats = mem;
    return 0;
}

void sample_state_free(SampleState *s) {
    free(s->key_cache);
    memset(s, 0, sizeof *s);
}

const float *sample_step(SampleState *s, int token) {
    GPT *m = s->model;
    const GPTConfig *c = &m->config;
    int C = c->d_model, NH = c->n_head, hs = C / NH, P = c->ctx, pos = s->pos;
    float scale = 1.0f / sqrtf((float)hs);
    GlobalParams g = global_view(m, m->params);
    float *x = s->x;
    m->act.window = 1; /* a step's tensor is its one token */
    for (int i = 0; i < C; i++) x[i] = g.wte[(long)token * C + i] + g.wpe[(long)pos * C + i];
    for (int l = 0; l < c->n_layer; l++) {
        LayerParams p = layer_view(m, m->params, l);
        float *kc = s->key_cache + (size_t)l * P * C, *vc = s->value_cache + (size_t)l * P * C;
        layernorm_forward(s->ln, s->stats, s->stats + 1, x, p.ln_1_weight, p.ln_1_bias, 1, C);
        int li = l * LINEARS_PER_BLOCK;
        linear_forward(m, s->hook, li + LINEAR_QKV, s->qkv, s->ln, 1, 0);
        /* the cache holds the keys and values as the batched forward quantizes them */
        act_keys_values(m, l, s->qkv, 1);
        memcpy(kc + (size_t)pos * C, s->qkv + C, (size_t)C * sizeof(float));
        memcpy(vc + (size_t)pos * C, s->qkv + 2 * C, (size_t)C * sizeof(float));
        for (int h = 0; h < NH; h++) {
            const float *q = s->qkv + h * hs;
            float *sc = s->scores + (size_t)h * P;
            float maxv = -INFINITY, sum = 0.0f;
            for (int t = 0; t <= pos; t++) {
                const float *k = kc + (size_t)t * C + h * hs;
                float d = 0.0f;
                for (int i = 0; i < hs; i++) d += q[i] * k[i];
                sc[t] = d * scale;
                if (sc[t] > maxv) maxv = sc[t];
            }
            for (int t = 0; t <= pos; t++) {
                sc[t] = expf(sc[t] - maxv);
                sum += sc[t];
            }
            for (int t = 0; t <= pos; t++) sc[t] /= sum;
        }
        act_probs_rows(m, l, s->scores, NH, pos + 1, P);
        for (int h = 0; h < NH; h++) {
            const float *sc = s->scores + (size_t)h * P;
            float *y = s->atty + h * hs;
            for (int i = 0; i < hs; i++) y[i] = 0.0f;
            for (int t = 0; t <= pos; t++) {
                float a = sc[t];
                const float *v = vc + (size_t)t * C + h * hs;
                for (int i = 0; i < hs; i++) y[i] += a * v[i];
            }
        }
        linear_forward(m, s->hook, li + LINEAR_ATTN_PROJ, x, s->atty, 1, 1);
        layernorm_forward(s->ln, s->stats, s->stats + 1, x, p.ln_2_weight, p.ln_2_bias, 1, C);
        linear_forward(m, s->hook, li + LINEAR_FC, s->fch, s->ln, 1, 0);
        gelu_forward(s->fch_gelu, s->fch, 4 * C);
        linear_forward(m, s->hook, li + LINEAR_MLP_PROJ, x, s->fch_gelu, 1, 1);
        if (act_correction_float(m)) { /* the hook on the float output, then the stream quantized */
            act_stream_into(m, l, x, s->hook && s->hook->after_block ? s->hook->after_block(s->hook->ctx, l, x, 1) : x, 1);
            continue;
        }
        act_stream(m, l, x, 1);
        if (s->hook && s->hook->after_block) {
            float *y = s->hook->after_block(s->hook->ctx, l, x, 1);
            if (y != x) memcpy(x, y, (size_t)C * sizeof(float));
        }
    }
    layernorm_forward(s->ln, s->stats, s->stats + 1, x, g.ln_f_weight, g.ln_f_bias, 1, C);
    linear_forward(m, s->hook, c->n_layer * LINEARS_PER_BLOCK, s->logits, s->ln, 1, 0);
    s->pos++;
    return s->logits;
}

/* Overflowing weights give infinite or NaN logits, from which every pick is the last byte
 * ("zzzz"): an error, not a text. */
static int outputs_finite(const float *logits, int V, int character) {
    for (int v = 0; v < V; v++)
        if (!isfinite(logits[v])) {
            qc_error("the model's outputs are not finite at character %d (weights too large?)", character);
            return -1;
        }
    return 0;
}

static int pick_token(const float *logits, int V, float temperature, Rng *rng) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (temperature <= 0.0f) return best;
    double sum = 0.0, probs[256];
    for (int v = 0; v < V; v++) sum += probs[v] = exp((logits[v] - logits[best]) / temperature);
    double r = rng_uniform(rng) * sum;
    for (int v = 0; v < V; v++) {
        r -= probs[v];
        if (r < 0) return v;
    }
    return V - 1;
}

int sample_text(GPT *m, const Vocab *v, const ModelHook *hook, const char *prompt, int n_chars, float temperature,
                uint64_t seed, FILE *out) {
    int P = m->config.ctx;
    size_t plen = strlen(prompt);
    int *history = qc_malloc(((size_t)n_chars + plen + 1) * sizeof(int), "sample history");
    if (!history) return -1;
    size_t n = 0;
    for (size_t i = 0; i < plen; i++) {
        int id = v->id_of[(uint8_t)prompt[i]];
        if (id < 0) {
            qc_error("prompt character '%c' (byte %u) is not in the checkpoint's vocabulary", prompt[i], (uint8_t)prompt[i]);
            free(history);
            return -1;
        }
        history[n++] = id;
    }
    if (n == 0) history[n++] = v->id_of['\n'] >= 0 ? v->id_of['\n'] : 0;
    SampleState s;
    if (sample_state_init(&s, m, hook) != 0) { free(history); return -1; }
    Rng rng;
    rng_seed(&rng, seed);
    size_t start = n > (size_t)P ? n - (size_t)P : 0;
    const float *logits = NULL;
    for (size_t i = start; i < n; i++) logits = sample_step(&s, history[i]);
    /* nothing is printed until the model is known to give numbers */
    int rc = outputs_finite(logits, m->config.vocab_size, 1);
    if (rc == 0) fwrite(prompt, 1, plen, out);
    for (int k = 0; k < n_chars && rc == 0; k++) {
        int tok = pick_token(logits, m->config.vocab_size, temperature, &rng);
        history[n++] = tok;
        /* a lost write (a full disk, a closed stream) ends the generation at once: 100M
         * characters into /dev/full would otherwise run for hours to no one */
        if (fputc(v->bytes[tok], out) == EOF || ferror(out)) {
            qc_error("cannot write the text: %s", strerror(errno));
            rc = -1;
            break;
        }
        if (k + 1 == n_chars) break;
        if (s.pos == P) { /* context full: restart the cache from the most recent half */
            s.pos = 0;
            for (size_t i = n - (size_t)P / 2; i < n - 1; i++) sample_step(&s, history[i]);
        }
        logits = sample_step(&s, tok);
        rc = outputs_finite(logits, m->config.vocab_size, k + 2);
    }
    if (rc == 0 && fflush(out) != 0) {
        qc_error("cannot write the text: %s", strerror(errno));
        rc = -1;
    }
    sample_state_free(&s);
    free(history);
    return rc;
}
