/* gemm: qcorr's own single-precision matrix products for the shapes a small transformer has
 * (thousands of rows, 16 to 1024 columns and depth), where OpenBLAS's general path (packing
 * both operands, zeroing C, splitting among threads) runs well below the machine's peak. Each
 * kernel path has its register tiles (kernels_<path>.c: gemm's is 4 x 16 on generic and avx2,
 * 8 x 32 on avx512; gemm_at_b's 4 x 16 and 6 x 64), over the bodies in kernels_gemm.h; every
 * element is one chain in k order whatever the tile. Measurements: gemm.c, kernels_avx512.c. */
#ifndef QCORR_GEMM_H
#define QCORR_GEMM_H

/* C (M, N) = (accumulate ? C : 0) + bias (broadcast over rows; NULL: none) + A (M, K) . op(B),
 * all row-major with leading dimensions lda, ldb, ldc. op(B) is B (K, N) when b_transposed is
 * 0, and B^T with B stored (N, K) when it is 1 (a linear layer's weight, out = in . W^T).
 * Threads split the rows; each output element is summed by one thread in the same k order,
 * so results do not depend on the thread count. Calls must not overlap (a packed copy of op(B)
 * lives in a buffer that grows once and is reused). Returns 0, or -1 if that buffer cannot be
 * allocated, in which case C is untouched and the caller must compute the product another way. */
int gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_transposed, const float *bias,
         float *C, int ldc, int accumulate);

/* The fewest rows for which gemm is the faster choice: with fewer (sampling one token at a time)
 * packing op(B) costs as much as the product and the BLAS wins. From 16 rows on, every layer
 * shape of the three model sizes ran 1.0-2.1x OpenBLAS's rate side by side (gemm.c). */
enum { GEMM_MIN_ROWS = 16 };

/* The same product for R <= 4 rows with op(B) = B (row-major, ldb), A read through two strides
 * (A(r, k) = a[r*sam + k*sak]: sam = lda, sak = 1 is row-major, sam = 1, sak = lda transposed)
 * and the depth limited to [k0, k1): attention's per-head products, whose k range follows the
 * causal mask. Single-threaded, no buffer. */
void gemm_rows(int R, int N, float *c, long ldc, const float *a, long sam, long sak, const float *b, long ldb, int k0,
               int k1, int accumulate);

/* C (M, N) += A^T B, with A (K, M) and B (K, N) row-major (lda, ldb): a weight gradient
 * dW += dY^T X, whose depth K is the batch's rows. The depth goes by blocks of GEMM_AT_B_DEPTH
 * rows; each element of C gets, block by block, one chain over the block's k in order added into
 * it, whatever the thread count. Returns 0, or -1 (C untouched) if its scratch cannot be allocated. */
enum { GEMM_AT_B_DEPTH = 128 };
int gemm_at_b(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc);

#endif
