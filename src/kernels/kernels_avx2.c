/* kernels_avx2: the AVX2 + FMA path (-march=x86-64-v3 from the Makefile: Haswell, Zen 1 and
 * later), tuned on a 2-core Zen 1 (512 KiB of L2 per core): gemm's 4 x 16 register tile and cache
 * blocking are those measured in gemm.c; the weight gradient stays with OpenBLAS, which ran it
 * near that machine's peak (README, Speed). tests/kernels_test.sh checks with objdump that this
 * object holds no AVX-512 instruction. */
#include "kernels/kernels.h"

#define KERNEL(name) name##_avx2
#define KERNEL_TABLE kernels_avx2
#define KERNEL_PATH_NAME "avx2"
#define VEC_FLOATS 8
#define TILE_ROWS 4
#define TILE_VECS 2
#define AT_B_ROWS 4
#define ATT_ROWS 4
#define AT_B_VECS 2
#define PANEL_BYTES_IN_CACHE (320 * 1024)
#define A_CHUNK_BYTES (128 * 1024)
#define KERNEL_WEIGHT_GRADIENT 0

#include "kernels/kernels_gemm.h"
#include "kernels/kernels_ops.h"
