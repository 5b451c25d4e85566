/* gemm: see gemm.h. The products themselves live in kernels_gemm.h, compiled once per
 * instruction set (kernels.h); these entry points call the set chosen for this CPU.
 *
 * Why our own: at batch 32 x context 128 every linear layer is a product of 4096 rows by 64-1024
 * columns. OpenBLAS 0.3.21 (its Zen kernels, 2 threads) packs both operands, zeroes C and splits
 * the work the way large general shapes want; with a depth of 64 it reaches about half the
 * ~74 GFLOP/s it reaches on large squares on a 2-core Zen 1 VM. Side by side in one process, the
 * avx2 path's 4 x 16 register tile over a packed copy of op(B) ran the layer shapes 1.3-2.1x
 * faster at d_model 64, 1.1-1.5x at 128 and 1.0-1.3x at 256 (the VM is noisy; those ratios held
 * across runs). It runs at the FMA throughput of a Zen core: per k, 8 fused multiply-adds on 4
 * rows by 16 columns, fed by 2 loads and 4 broadcasts. */
#include "kernels/gemm.h"

#include "kernels/kernels.h"

int gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_transposed, const float *bias,
         float *C, int ldc, int accumulate) {
    return kernels()->gemm(M, N, K, A, lda, B, ldb, b_transposed, bias, C, ldc, accumulate);
}

void gemm_rows(int R, int N, float *c, long ldc, const float *a, long sam, long sak, const float *b, long ldb, int k0,
               int k1, int accumulate) {
    kernels()->gemm_rows(R, N, c, ldc, a, sam, sak, b, ldb, k0, k1, accumulate);
}

int gemm_at_b(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc) {
    return kernels()->gemm_at_b(M, N, K, A, lda, B, ldb, C, ldc);
}
