/* data: see data.h. SHA-256 is implemented here (FIPS 180-4) so verifying the corpus needs no
 * extra library; it is tested against the standard's test vectors. */
#include "nn/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int corpus_find(const char *flag_path, char *out, size_t out_size) {
    const char *env = getenv("QCORR_DATA");
    const char *candidates[] = {"data/tinyshakespeare.txt", "../shared/data/tinyshakespeare.txt"};
    if (flag_path) {
        snprintf(out, out_size, "%s", flag_path);
        return 0;
    }
    if (env && *env) {
        snprintf(out, out_size, "%s", env);
        return 0;
    }
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        if (access(candidates[i], R_OK) == 0) {
            snprintf(out, out_size, "%s", candidates[i]);
            return 0;
        }
    }
    qc_error("no corpus found: QCORR_DATA is not set and neither data/tinyshakespeare.txt nor "
             "../shared/data/tinyshakespeare.txt exists (run 'make data')");
    return -1;
}

void vocab_from_bytes(Vocab *v, const uint8_t *present_bytes, int count) {
    int seen[256] = {0};
    for (int i = 0; i < count; i++) seen[present_bytes[i]] = 1;
    v->size = 0;
    for (int b = 0; b < 256; b++) {
        v->id_of[b] = -1;
        if (seen[b]) {
            v->id_of[b] = (int16_t)v->size;
            v->bytes[v->size++] = (uint8_t)b;
        }
    }
}

int corpus_load(Corpus *c, const char *path, const Vocab *vocab) {
    memset(c, 0, sizeof *c);
    size_t n;
    uint8_t *text = read_file(path, &n);
    if (!text) return -1;
    return corpus_from_bytes(c, text, n, path, vocab);
}

int corpus_from_bytes(Corpus *c, uint8_t *text, size_t n, const char *path, const Vocab *vocab) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    c->text = text;
    c->n = n;
    if (c->n < 2) {
        qc_error("%s: corpus is empty or too short (%zu bytes)", path, c->n);
        corpus_free(c);
        return -1;
    }
    if (memchr(c->text, 0, c->n)) {
        qc_error("%s: corpus contains a NUL byte: not a text file", path);
        corpus_free(c);
        return -1;
    }
    if (vocab) {
        c->vocab = *vocab;
    } else {
        uint8_t present[256];
        int count = 0, seen[256] = {0};
        for (size_t i = 0; i < c->n; i++) seen[c->text[i]] = 1;
        for (int b = 0; b < 256; b++)
            if (seen[b]) present[count++] = (uint8_t)b;
        vocab_from_bytes(&c->vocab, present, count);
    }
    c->ids = qc_malloc(c->n * sizeof(int32_t), "corpus ids");
    if (!c->ids) { corpus_free(c); return -1; }
    for (size_t i = 0; i < c->n; i++) {
        int id = c->vocab.id_of[c->text[i]];
        if (id < 0) {
            uint8_t b = c->text[i];
            if (b >= 32 && b < 127)
                qc_error("%s: character '%c' (byte %u, offset %zu) is not in the checkpoint's vocabulary", path, b, b, i);
            else
                qc_error("%s: byte %u at offset %zu is not in the checkpoint's vocabulary", path, b, i);
            corpus_free(c);
            return -1;
        }
        c->ids[i] = id;
    }
    c->n_train = (size_t)(0.9 * (double)c->n);
    c->n_val = c->n - c->n_train;
    return 0;
}

int corpus_check_windows(const Corpus *c, int ctx) {
    const char *split = c->n_train < (size_t)ctx + 1 ? "train" : c->n_val < (size_t)ctx + 1 ? "validation" : NULL;
    if (!split) return 0;
    qc_error("%s: the %s split (%zu characters) is shorter than one window of %d", c->path, split,
             split[0] == 't' ? c->n_train : c->n_val, ctx + 1);
    return -1;
}

void corpus_free(Corpus *c) {
    free(c->text);
    free(c->ids);
    c->text = NULL;
    c->ids = NULL;
}

int vocab_to_string(const Vocab *v, char *out, size_t out_size) {
    size_t k = 0;
    for (int i = 0; i < v->size; i++) {
        uint8_t b = v->bytes[i];
        if (k + 3 > out_size) { qc_error("vocabulary string too long"); return -1; }
        if (b < 0x80) {
            out[k++] = (char)b;
        } else {
            out[k++] = (char)(0xC0 | (b >> 6));
            out[k++] = (char)(0x80 | (b & 0x3F));
        }
    }
    out[k] = 0;
    return 0;
}

int vocab_from_string(Vocab *v, const char *utf8) {
    uint8_t bytes[256];
    int count = 0;
    const uint8_t *p = (const uint8_t *)utf8;
    while (*p) {
        uint8_t b;
        if (*p < 0x80) {
            b = *p++;
        } else if ((*p == 0xC2 || *p == 0xC3) && (p[1] & 0xC0) == 0x80) {
            b = (uint8_t)(((p[0] & 0x03) << 6) | (p[1] & 0x3F));
            p += 2;
        } else {
            qc_error("vocabulary holds a character outside U+0001..U+00FF");
            return -1;
        }
        if (count == 256) { qc_error("vocabulary has more than 256 entries"); return -1; }
        for (int i = 0; i < count; i++)
            if (bytes[i] == b) { qc_error("vocabulary repeats byte %u", b); return -1; }
        if (count > 0 && b < bytes[count - 1]) { qc_error("vocabulary is not sorted"); return -1; }
        bytes[count++] = b;
    }
    if (count < 1) { qc_error("vocabulary is empty"); return -1; }
    vocab_from_bytes(v, bytes, count);
    return 0;
}

void sample_windows(const int32_t *ids, size_t n, int B, int T, Rng *rng, int32_t *inputs, int32_t *targets) {
    for (int b = 0; b < B; b++) {
        size_t start = (size_t)rng_below(rng, n - (size_t)T);
        memcpy(inputs + (size_t)b * T, ids + start, (size_t)T * sizeof(int32_t));
        memcpy(targets + (size_t)b * T, ids + start + 1, (size_t)T * sizeof(int32_t));
    }
}

/* ---- SHA-256 ---- */
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t block[64]) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 | (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void sha256_hex(const uint8_t *data, size_t n, char out[65]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha256_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rem = n - i;
    memcpy(tail, data + i, rem);
    tail[rem] = 0x80;
    size_t tail_len = rem + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++) tail[tail_len - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha256_block(h, tail);
    if (tail_len == 128) sha256_block(h, tail + 64);
    for (int k = 0; k < 8; k++) snprintf(out + 8 * k, 9, "%08x", h[k]);
}
