/* kernels_avx512: the AVX-512 path (-march=x86-64-v4 from the Makefile: F, BW, DQ, VL, CD;
 * Skylake-SP, Ice Lake, Sapphire Rapids, Zen 4 and later, all with at least 1 MiB of L2 per
 * core): 512-bit vectors, gemm's cache blocks doubled for that L2, and the weight gradient in
 * gemm_at_b. Tiles chosen on a 2-core Xeon (Emerald Rapids), one thread, every layer's product
 * at d_model 64 / 128 / 256 summed, variants alternated in one process: gemm (forward + input
 * gradient) 8 x 32 took 5.95 / 21.3 / 108 ms, against 6.41 / 22.2 / 113 for 12 x 32, 6.17 / 22.0
 * / 114 for 6 x 64 and 5.94 / 21.4 / 120 for 4 x 64; gemm_at_b 6 x 64 took 3.59 / 12.0 / 64.7 ms,
 * against 3.78 / 13.6 / 73.5 for 12 x 32 and 3.62 / 12.6 / 76.3 for 8 x 32. Attention in blocks of
 * 8 query rows (a register tile of 8 x 32 for the scores, 8 x 16 for P V): one attention
 * backward (batch 32, one thread) 3.02 / 5.50 / 10.8 ms with 4 rows, 2.99 / 4.89 / 8.81 with 8,
 * the forward within 7% either way. */
#include "kernels/kernels.h"

#define KERNEL(name) name##_avx512
#define KERNEL_TABLE kernels_avx512
#define KERNEL_PATH_NAME "avx512"
#define VEC_FLOATS 16
#define TILE_ROWS 8
#define TILE_VECS 2
#define AT_B_ROWS 6
#define ATT_ROWS 8
#define AT_B_VECS 4
#define PANEL_BYTES_IN_CACHE (512 * 1024)
#define A_CHUNK_BYTES (256 * 1024)
#define KERNEL_WEIGHT_GRADIENT 1

#include "kernels/kernels_gemm.h"
#include "kernels/kernels_ops.h"
