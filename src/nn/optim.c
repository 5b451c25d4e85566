/* optim: see optim.h. Same update as torch.optim.AdamW (decoupled decay: p -= lr*wd*p first). */
#include "nn/optim.h"

#include <math.h>

static inline void adamw_span(float *params, const float *grads, float *m, float *v, size_t a, size_t b, float wd,
                              float b1c, float b2c, const AdamWStep *s) {
    for (size_t i = a; i < b; i++) {
        float g = grads[i];
        float mi = s->beta1 * m[i] + (1.0f - s->beta1) * g;
        float vi = s->beta2 * v[i] + (1.0f - s->beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = params[i] * (1.0f - s->lr * wd);
        params[i] = p - s->lr * (mi / b1c) / (sqrtf(vi / b2c) + s->eps);
    }
}

void adamw_update_spans(float *params, const float *grads, float *m, float *v, const size_t *offsets,
                        const size_t *counts, const unsigned char *decay, int n_spans, const AdamWStep *s) {
    float b1c = 1.0f - powf(s->beta1, (float)s->step);
    float b2c = 1.0f - powf(s->beta2, (float)s->step);
    enum { CHUNK = 4096 };
#pragma omp parallel
    for (int k = 0; k < n_spans; k++) {
        size_t n = counts[k], o = offsets[k];
        float wd = decay[k] ? s->weight_decay : 0.0f;
        /* every element is independent: no barrier between spans */
#pragma omp for schedule(static) nowait
        for (size_t c = 0; c < (n + CHUNK - 1) / CHUNK; c++) {
            size_t a = o + c * CHUNK, b = a + CHUNK < o + n ? a + CHUNK : o + n;
            adamw_span(params, grads, m, v, a, b, wd, b1c, b2c, s);
        }
    }
}

void adamw_update(float *params, const float *grads, float *m, float *v, size_t n, int decay, const AdamWStep *s) {
    size_t offset = 0;
    unsigned char d = (unsigned char)(decay != 0);
    adamw_update_spans(params, grads, m, v, &offset, &n, &d, 1, s);
}

float lr_schedule(int step, int total, int warmup, float lr, float min_lr) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (total <= warmup) return lr;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    if (progress > 1.0) progress = 1.0;
    return (float)(min_lr + 0.5 * (1.0 + cos(M_PI * progress)) * (lr - min_lr));
}

double clip_grad_norm(float *grads, size_t n, float max_norm) {
    double sum = 0.0;
    /* fixed chunks summed in order: the norm does not depend on the thread count */
    enum { CHUNK = 1 << 14 };
    size_t nchunks = (n + CHUNK - 1) / CHUNK;
    double partial[nchunks ? nchunks : 1];
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nchunks; c++) {
        size_t a = c * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        double s = 0.0;
        for (size_t i = a; i < b; i++) s += (double)grads[i] * grads[i];
        partial[c] = s;
    }
    for (size_t c = 0; c < nchunks; c++) sum += partial[c];
    double norm = sqrt(sum);
    if (max_norm > 0 && norm > max_norm) {
        float scale = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) grads[i] *= scale;
    }
    return norm;
}
