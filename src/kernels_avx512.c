/* kernels_avx512: the AVX-512 path (-march=x86-64-v4 from the Makefile: F, BW, DQ, VL, CD;
 * Skylake-SP, Ice Lake, Sapphire Rapids, Zen 4 and later, all with at least 1 MiB of L2 per
 * core): 512-bit vectors, and gemm's register tile and cache blocks sized for them. */
#include "kernels.h"

#define KERNEL(name) name##_avx512
#define KERNEL_TABLE kernels_avx512
#define KERNEL_PATH_NAME "avx512"
#define VEC_FLOATS 16
#define TILE_ROWS 12
#define TILE_VECS 2
#define PANEL_BYTES_IN_CACHE (512 * 1024)
#define A_CHUNK_BYTES (256 * 1024)
#define KERNEL_WEIGHT_GRADIENT 0

#include "kernels_gemm.h"
#include "kernels_ops.h"
