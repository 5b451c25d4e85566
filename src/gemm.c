/* gemm: see gemm.h. Why our own: at batch 32 x context 128 every linear layer is a product of
 * 4096 rows by 64-1024 columns. OpenBLAS 0.3.21 (its Zen kernels, 2 threads) packs both operands,
 * zeroes C and splits the work the way large general shapes want; with a depth of 64 it reaches
 * about half the ~74 GFLOP/s it reaches on large squares on this VM. Side by side in one process,
 * this 4 x 16 register tile over a packed copy of op(B) ran the layer shapes 1.3-2.1x faster at
 * d_model 64, 1.1-1.5x at 128 and 1.0-1.3x at 256 (the VM is noisy; those ratios held across
 * runs). It runs at the FMA throughput of a Zen core: per k, 8 fused multiply-adds on 4 rows by
 * 16 columns, fed by 2 loads and 4 broadcasts. */
#include "gemm.h"

#include <stdlib.h>
#include <string.h>

#include "omp_compat.h"
#include "util.h"

/* Eight floats as one value (GCC/Clang vector extensions): one AVX register where the target has
 * AVX, two SSE registers otherwise; a scalar times a v8 broadcasts the scalar, and with
 * -ffp-contract=fast acc += a * b is one fused multiply-add. Loads and stores go through memcpy,
 * which compiles to one unaligned vector move. */
typedef float v8 __attribute__((vector_size(32)));
#if defined(__GNUC__) && !defined(__clang__)
/* without AVX GCC warns that passing a v8 by value has its own ABI; these helpers are static */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
static inline v8 load8(const float *p) { v8 x; memcpy(&x, p, sizeof x); return x; }
static inline void store8(float *p, v8 x) { memcpy(p, &x, sizeof x); }

/* The register tile: R rows (R <= 4) by 8*W columns (W <= 2), c (+)= A(r, k) b[k] summed over
 * k in [k0, k1), with A(r, k) = a[r*sam + k*sak]. always_inline with constant R and W, so the
 * loops unroll and the 8 accumulators stay in registers for the whole k loop: per k, two loads
 * of b, four broadcasts of A and eight multiply-adds. bias (8*W floats, or NULL) is added once. */
static inline __attribute__((always_inline)) void tile(int R, int W, float *c, long ldc, const float *a, long sam,
                                                       long sak, const float *b, long ldb, int k0, int k1,
                                                       const float *bias, int accumulate) {
    v8 acc[4][2] = {{{0}}};
    for (int k = k0; k < k1; k++) {
        v8 bk[2];
        for (int w = 0; w < W; w++) bk[w] = load8(b + (long)k * ldb + 8 * w);
        for (int r = 0; r < R; r++) {
            float ark = a[r * sam + (long)k * sak];
            for (int w = 0; w < W; w++) acc[r][w] += ark * bk[w];
        }
    }
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) {
            float *cp = c + r * ldc + 8 * w;
            v8 x = acc[r][w];
            if (bias) x += load8(bias + 8 * w);
            store8(cp, accumulate ? load8(cp) + x : x);
        }
}

void gemm_rows(int R, int N, float *c, long ldc, const float *a, long sam, long sak, const float *b, long ldb, int k0,
               int k1, int accumulate) {
    int n = 0;
    if (R == 4) {
        for (; n + 16 <= N; n += 16) tile(4, 2, c + n, ldc, a, sam, sak, b + n, ldb, k0, k1, NULL, accumulate);
        for (; n + 8 <= N; n += 8) tile(4, 1, c + n, ldc, a, sam, sak, b + n, ldb, k0, k1, NULL, accumulate);
    } else {
        for (int r = 0; r < R; r++) {
            int m = 0;
            for (; m + 16 <= N; m += 16)
                tile(1, 2, c + r * ldc + m, ldc, a + r * sam, sam, sak, b + m, ldb, k0, k1, NULL, accumulate);
            for (; m + 8 <= N; m += 8)
                tile(1, 1, c + r * ldc + m, ldc, a + r * sam, sam, sak, b + m, ldb, k0, k1, NULL, accumulate);
        }
        n = N - N % 8;
    }
    for (int r = 0; r < R; r++) /* the last N % 8 columns */
        for (int m = n; m < N; m++) {
            float s = accumulate ? c[r * ldc + m] : 0.0f;
            for (int k = k0; k < k1; k++) s += a[r * sam + (long)k * sak] * b[(long)k * ldb + m];
            c[r * ldc + m] = s;
        }
}

/* op(B) packed as panels of 16 columns: panel j holds op(B)[k][16j .. 16j+15] at
 * pack[(j*K + k)*16 ..], the last panel zero-padded, so the tile reads one 64-byte line per k. */
enum { PANEL = 16 };
static GrowBuffer pack_buffer;

/* Cache blocking, for this VM's Zen cores (512 KiB of L2 each): a thread takes its rows by
 * chunks of A_CHUNK_BYTES of A, and passes over each chunk with groups of panels of up to
 * PANEL_BYTES_IN_CACHE, so both stay in L2 together. Every layer of the 64x2 and 128x4 models
 * fits in one group (the packed weight is read from L2 by every row); the 256x6 model's bigger
 * weights go by several groups over an A chunk that stays in L2, rather than re-reading the
 * 4-16 MiB of activations from memory once per group. */
enum { PANEL_BYTES_IN_CACHE = 320 * 1024, A_CHUNK_BYTES = 128 * 1024 };

int gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_transposed, const float *bias,
         float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return 0;
    int panels = (N + PANEL - 1) / PANEL;
    float *pack = grow_buffer(&pack_buffer, (size_t)panels * PANEL * (K > 0 ? K : 1) + PANEL);
    if (!pack) return -1;
    float *bias_pad = pack + (size_t)panels * PANEL * K; /* the last panel's bias, zero-padded */
    int group = PANEL_BYTES_IN_CACHE / (int)((size_t)(K > 0 ? K : 1) * PANEL * sizeof(float));
    if (group < 1) group = 1;
    int row_blocks = (M + 3) / 4;
    /* row blocks per chunk: A_CHUNK_BYTES of A, at least one */
    int chunk = A_CHUNK_BYTES / (int)(4 * (size_t)(K > 0 ? K : 1) * sizeof(float));
    if (chunk < 1) chunk = 1;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int j = 0; j < panels; j++) {
            float *pj = pack + (size_t)j * K * PANEL;
            int n0 = j * PANEL, width = N - n0 < PANEL ? N - n0 : PANEL;
            if (b_transposed) {
                for (int c = 0; c < width; c++)
                    for (int k = 0; k < K; k++) pj[(size_t)k * PANEL + c] = B[(long)(n0 + c) * ldb + k];
            } else {
                for (int k = 0; k < K; k++) memcpy(pj + (size_t)k * PANEL, B + (long)k * ldb + n0, width * sizeof(float));
            }
            for (int c = width; c < PANEL; c++)
                for (int k = 0; k < K; k++) pj[(size_t)k * PANEL + c] = 0.0f;
            if (width < PANEL) {
                for (int c = 0; c < PANEL; c++) bias_pad[c] = bias && c < width ? bias[n0 + c] : 0.0f;
            }
        }
        /* (the implicit barrier of the loop above: every panel is packed before any is read) */
        int threads = omp_get_num_threads(), me = omp_get_thread_num();
        int rb0 = (int)((long)row_blocks * me / threads), rb1 = (int)((long)row_blocks * (me + 1) / threads);
        /* by chunks of rows whose A stays in L2 while every panel group passes over it */
        for (int c0 = rb0; c0 < rb1; c0 += chunk)
        for (int g0 = 0; g0 < panels; g0 += group) {
            int g1 = g0 + group < panels ? g0 + group : panels;
            for (int rb = c0; rb < rb1 && rb < c0 + chunk; rb++) {
                int m0 = rb * 4, rows = M - m0 < 4 ? M - m0 : 4;
                const float *a = A + (long)m0 * lda;
                for (int j = g0; j < g1; j++) {
                    const float *pj = pack + (size_t)j * K * PANEL;
                    int n0 = j * PANEL, width = N - n0 < PANEL ? N - n0 : PANEL;
                    float *c = C + (long)m0 * ldc + n0;
                    if (width == PANEL) {
                        const float *bj = bias ? bias + n0 : NULL;
                        if (rows == 4)
                            tile(4, 2, c, ldc, a, lda, 1, pj, PANEL, 0, K, bj, accumulate);
                        else
                            for (int r = 0; r < rows; r++)
                                tile(1, 2, c + (long)r * ldc, ldc, a + (long)r * lda, lda, 1, pj, PANEL, 0, K, bj,
                                     accumulate);
                    } else { /* the last, narrow panel: a full tile into scratch, then its columns */
                        float out[4 * PANEL];
                        if (rows == 4)
                            tile(4, 2, out, PANEL, a, lda, 1, pj, PANEL, 0, K, bias_pad, 0);
                        else
                            for (int r = 0; r < rows; r++)
                                tile(1, 2, out + r * PANEL, PANEL, a + (long)r * lda, lda, 1, pj, PANEL, 0, K,
                                     bias_pad, 0);
                        for (int r = 0; r < rows; r++)
                            for (int col = 0; col < width; col++)
                                c[(long)r * ldc + col] = (accumulate ? c[(long)r * ldc + col] : 0.0f) + out[r * PANEL + col];
                    }
                }
            }
        }
    }
    return 0;
}
