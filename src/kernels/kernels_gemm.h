/* kernels_gemm: the body of gemm, gemm_rows and gemm_at_b (gemm.h), included once by each
 * kernels_<path>.c, which first defines
 *   KERNEL(name)   the name with the path's suffix (gemm_avx512, ...)
 *   VEC_FLOATS     floats per vector value: 8 (AVX: one register; SSE: two) or 16 (AVX-512)
 *   TILE_ROWS      rows of gemm's register tile
 *   TILE_VECS      vectors across it: a panel of packed op(B) is TILE_VECS * VEC_FLOATS wide
 *   AT_B_ROWS, AT_B_VECS   the same for gemm_at_b
 *   ATT_ROWS       query rows per block of attention (gemm_rows's tile height)
 *   PANEL_BYTES_IN_CACHE, A_CHUNK_BYTES   cache blocking (below)
 * Every output element is one chain of fused multiply-adds in k order whatever the tile, so gemm
 * gives the same bits on every path compiled with FMA (avx2, avx512). Measurements: gemm.c. */
#include <stdlib.h>
#include <string.h>

#include "base/omp_compat.h"
#include "base/util.h"
#include "kernels/gemm.h"

/* VEC_FLOATS floats as one value (GCC/Clang vector extensions): a scalar times a vec broadcasts
 * the scalar, and with -ffp-contract=fast acc += a * b is one fused multiply-add where the
 * target has FMA. Loads and stores go through memcpy: one unaligned vector move. */
typedef float vec __attribute__((vector_size(VEC_FLOATS * 4)));
#if defined(__GNUC__) && !defined(__clang__)
/* where a vec is wider than the target's registers GCC warns that passing one by value has its
 * own ABI; these helpers are static and inlined */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
static inline vec load_vec(const float *p) { vec x; memcpy(&x, p, sizeof x); return x; }
static inline void store_vec(float *p, vec x) { memcpy(p, &x, sizeof x); }

enum { PANEL = TILE_VECS * VEC_FLOATS, AT_B_PANEL = AT_B_VECS * VEC_FLOATS };
/* the accumulators of the largest tile (macros: tile_w's cases are chosen by #if) */
#define MAX_ROWS (TILE_ROWS > AT_B_ROWS ? TILE_ROWS : AT_B_ROWS)
#define MAX_VECS (TILE_VECS > AT_B_VECS ? TILE_VECS : AT_B_VECS)
#if MAX_VECS > 4 || MAX_ROWS < ATT_ROWS || MAX_VECS < 2
#error "tile_w has cases for 1 to 4 vectors; gemm_rows needs tiles of ATT_ROWS rows by 2 vectors"
#endif

/* The register tile: R rows (R <= MAX_ROWS) by VEC_FLOATS*W columns (W <= MAX_VECS),
 * c (+)= A(r, k) b[k] summed over k in [k0, k1), with A(r, k) = a[r*sam + k*sak]. always_inline
 * with constant R and W, so the loops unroll and the R*W accumulators stay in registers for the
 * whole k loop: per k, W loads of b, R broadcasts of A and R*W multiply-adds. bias (W vectors,
 * or NULL) is added once, before the prior value of c when accumulating. */
static inline __attribute__((always_inline)) void tile(int R, int W, float *c, long ldc, const float *a, long sam,
                                                       long sak, const float *b, long ldb, int k0, int k1,
                                                       const float *bias, int accumulate) {
    vec acc[MAX_ROWS][MAX_VECS] = {{{0}}};
    for (int k = k0; k < k1; k++) {
        vec bk[MAX_VECS];
        for (int w = 0; w < W; w++) bk[w] = load_vec(b + (long)k * ldb + VEC_FLOATS * w);
        for (int r = 0; r < R; r++) {
            float ark = a[r * sam + (long)k * sak];
            for (int w = 0; w < W; w++) acc[r][w] += ark * bk[w];
        }
    }
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) {
            float *cp = c + r * ldc + VEC_FLOATS * w;
            vec x = acc[r][w];
            if (bias) x += load_vec(bias + VEC_FLOATS * w);
            store_vec(cp, accumulate ? load_vec(cp) + x : x);
        }
}

/* tile() with W a run-time value in [1, MAX_VECS], each case compiled with its constant */
static inline __attribute__((always_inline)) void tile_w(int R, int W, float *c, long ldc, const float *a, long sam,
                                                         long sak, const float *b, long ldb, int k0, int k1,
                                                         const float *bias, int accumulate) {
    switch (W) {
    case 1: tile(R, 1, c, ldc, a, sam, sak, b, ldb, k0, k1, bias, accumulate); break;
#if MAX_VECS > 1
    case 2: tile(R, 2, c, ldc, a, sam, sak, b, ldb, k0, k1, bias, accumulate); break;
#endif
#if MAX_VECS > 2
    case 3: tile(R, 3, c, ldc, a, sam, sak, b, ldb, k0, k1, bias, accumulate); break;
#endif
#if MAX_VECS > 3
    case 4: tile(R, 4, c, ldc, a, sam, sak, b, ldb, k0, k1, bias, accumulate); break;
#endif
    }
}

/* Attention's products: R rows (blocks of ATT_ROWS, the last one shorter), op(B) = B read in
 * place, N of any width. */
static inline __attribute__((always_inline)) int row_tiles(int R, int N, float *c, long ldc, const float *a, long sam,
                                                           long sak, const float *b, long ldb, int k0, int k1,
                                                           int accumulate) {
    int n = 0;
    for (; n + 2 * VEC_FLOATS <= N; n += 2 * VEC_FLOATS)
        tile(R, 2, c + n, ldc, a, sam, sak, b + n, ldb, k0, k1, NULL, accumulate);
    for (; n + VEC_FLOATS <= N; n += VEC_FLOATS) tile(R, 1, c + n, ldc, a, sam, sak, b + n, ldb, k0, k1, NULL, accumulate);
    return n;
}

static void KERNEL(gemm_rows)(int R, int N, float *c, long ldc, const float *a, long sam, long sak, const float *b,
                              long ldb, int k0, int k1, int accumulate) {
    int n = 0;
    if (R == ATT_ROWS)
        n = row_tiles(ATT_ROWS, N, c, ldc, a, sam, sak, b, ldb, k0, k1, accumulate);
    else
        for (int r = 0; r < R; r++) n = row_tiles(1, N, c + r * ldc, ldc, a + r * sam, sam, sak, b, ldb, k0, k1, accumulate);
    for (int r = 0; r < R; r++) /* the last N % VEC_FLOATS columns */
        for (int m = n; m < N; m++) {
            float s = accumulate ? c[r * ldc + m] : 0.0f;
            for (int k = k0; k < k1; k++) s += a[r * sam + (long)k * sak] * b[(long)k * ldb + m];
            c[r * ldc + m] = s;
        }
}

/* op(B) packed as panels of PANEL columns: panel j holds op(B)[k][PANEL j ..] at
 * pack[(j*K + k)*PANEL ..], the last panel zero-padded, so the tile reads whole lines per k. */
static GrowBuffer pack_buffer;

/* Rows rb of a thread's share, tiles of rows by panel j: the columns [n0, n0 + width) of C. */
static inline __attribute__((always_inline)) void panel_rows(int rows, float *c, int ldc, const float *a, int lda,
                                                             const float *pj, int K, int width, const float *bias,
                                                             const float *bias_pad, int accumulate) {
    if (width == PANEL) {
        if (rows == TILE_ROWS)
            tile(TILE_ROWS, TILE_VECS, c, ldc, a, lda, 1, pj, PANEL, 0, K, bias, accumulate);
        else
            for (int r = 0; r < rows; r++)
                tile(1, TILE_VECS, c + (long)r * ldc, ldc, a + (long)r * lda, lda, 1, pj, PANEL, 0, K, bias, accumulate);
        return;
    }
    /* the last, narrow panel: whole vectors into scratch (only as many as it needs), then its columns */
    int W = (width + VEC_FLOATS - 1) / VEC_FLOATS;
    float out[TILE_ROWS * PANEL];
    if (rows == TILE_ROWS)
        tile_w(TILE_ROWS, W, out, PANEL, a, lda, 1, pj, PANEL, 0, K, bias_pad, 0);
    else
        for (int r = 0; r < rows; r++)
            tile_w(1, W, out + r * PANEL, PANEL, a + (long)r * lda, lda, 1, pj, PANEL, 0, K, bias_pad, 0);
    for (int r = 0; r < rows; r++)
        for (int col = 0; col < width; col++)
            c[(long)r * ldc + col] = (accumulate ? c[(long)r * ldc + col] : 0.0f) + out[r * PANEL + col];
}

static int KERNEL(gemm)(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_transposed,
                        const float *bias, float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return 0;
    int panels = (N + PANEL - 1) / PANEL;
    float *pack = grow_buffer(&pack_buffer, (size_t)panels * PANEL * (K > 0 ? K : 1) + PANEL);
    if (!pack) return -1;
    float *bias_pad = pack + (size_t)panels * PANEL * K; /* the last panel's bias, zero-padded */
    int group = PANEL_BYTES_IN_CACHE / (int)((size_t)(K > 0 ? K : 1) * PANEL * sizeof(float));
    if (group < 1) group = 1;
    int row_blocks = (M + TILE_ROWS - 1) / TILE_ROWS;
    /* row blocks per chunk: A_CHUNK_BYTES of A, at least one */
    int chunk = A_CHUNK_BYTES / (int)(TILE_ROWS * (size_t)(K > 0 ? K : 1) * sizeof(float));
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
                    int m0 = rb * TILE_ROWS, rows = M - m0 < TILE_ROWS ? M - m0 : TILE_ROWS;
                    const float *a = A + (long)m0 * lda;
                    for (int j = g0; j < g1; j++) {
                        int n0 = j * PANEL, width = N - n0 < PANEL ? N - n0 : PANEL;
                        panel_rows(rows, C + (long)m0 * ldc + n0, ldc, a, lda, pack + (size_t)j * K * PANEL, K, width,
                                   bias ? bias + n0 : NULL, bias_pad, accumulate);
                    }
                }
            }
    }
    return 0;
}

/* gemm_at_b: C (M, N) += A^T B with A (K, M) and B (K, N) row-major, K long (the weight
 * gradient dW += dY^T X over the batch's rows). The depth goes by blocks of GEMM_AT_B_DEPTH rows;
 * per block each thread packs the panels of B it owns into its own scratch (no barrier between
 * blocks), then runs tiles of A^T rows over them, the A rows read in place (a tile's AT_B_ROWS
 * columns of A are contiguous in each row of A, and stay in L1 while the tile passes over the
 * thread's panels). Each element of C gets, per depth block in order, one chain of fused
 * multiply-adds added into it: the same bits whatever the thread count. */
static GrowBuffer at_b_scratch;

static int KERNEL(gemm_at_b)(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    int panels = (N + AT_B_PANEL - 1) / AT_B_PANEL, row_blocks = (M + AT_B_ROWS - 1) / AT_B_ROWS;
    size_t per_thread = (size_t)GEMM_AT_B_DEPTH * AT_B_PANEL * panels;
    float *scratch = grow_buffer(&at_b_scratch, per_thread * (size_t)omp_get_max_threads());
    if (!scratch) return -1;
#pragma omp parallel
    {
        int threads = omp_get_num_threads(), me = omp_get_thread_num();
        /* the panels split between threads when there are enough of them, else the rows of C */
        int p0 = 0, p1 = panels, rb0 = 0, rb1 = row_blocks;
        if (panels >= threads) {
            p0 = (int)((long)panels * me / threads);
            p1 = (int)((long)panels * (me + 1) / threads);
        } else {
            rb0 = (int)((long)row_blocks * me / threads);
            rb1 = (int)((long)row_blocks * (me + 1) / threads);
        }
        float *mine = scratch + per_thread * me;
        for (int k0 = 0; k0 < K; k0 += GEMM_AT_B_DEPTH) {
            int kc = K - k0 < GEMM_AT_B_DEPTH ? K - k0 : GEMM_AT_B_DEPTH;
            for (int j = p0; j < p1; j++) {
                float *pj = mine + (size_t)(j - p0) * GEMM_AT_B_DEPTH * AT_B_PANEL;
                int n0 = j * AT_B_PANEL, width = N - n0 < AT_B_PANEL ? N - n0 : AT_B_PANEL;
                for (int k = 0; k < kc; k++) {
                    memcpy(pj + (size_t)k * AT_B_PANEL, B + (long)(k0 + k) * ldb + n0, width * sizeof(float));
                    for (int c = width; c < AT_B_PANEL; c++) pj[(size_t)k * AT_B_PANEL + c] = 0.0f;
                }
            }
            for (int rb = rb0; rb < rb1; rb++) {
                int m0 = rb * AT_B_ROWS, rows = M - m0 < AT_B_ROWS ? M - m0 : AT_B_ROWS;
                const float *a = A + (long)k0 * lda + m0; /* A^T (r, k) = a[r + k * lda] */
                for (int j = p0; j < p1; j++) {
                    const float *pj = mine + (size_t)(j - p0) * GEMM_AT_B_DEPTH * AT_B_PANEL;
                    int n0 = j * AT_B_PANEL, width = N - n0 < AT_B_PANEL ? N - n0 : AT_B_PANEL;
                    float *c = C + (long)m0 * ldc + n0;
                    if (rows == AT_B_ROWS && width == AT_B_PANEL) {
                        tile(AT_B_ROWS, AT_B_VECS, c, ldc, a, 1, lda, pj, AT_B_PANEL, 0, kc, NULL, 1);
                        continue;
                    }
                    /* an edge: whole vectors into scratch, then the columns that exist */
                    int W = (width + VEC_FLOATS - 1) / VEC_FLOATS;
                    float out[AT_B_ROWS * AT_B_PANEL];
                    for (int r = 0; r < rows; r++) tile_w(1, W, out + r * AT_B_PANEL, AT_B_PANEL, a + r, 1, lda, pj, AT_B_PANEL, 0, kc, NULL, 0);
                    for (int r = 0; r < rows; r++)
                        for (int col = 0; col < width; col++) c[(long)r * ldc + col] += out[r * AT_B_PANEL + col];
                }
            }
        }
    }
    return 0;
}
