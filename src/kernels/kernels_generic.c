/* kernels_generic: the portable path, compiled for the x86-64 baseline (SSE2; the Makefile gives
 * this file its own -march): what any x86-64 CPU runs, and the code NATIVE=0 builds ran before
 * paths were chosen at run time. No FMA, so its products round differently from avx2/avx512. */
#include "kernels/kernels.h"

#define KERNEL(name) name##_generic
#define KERNEL_TABLE kernels_generic
#define KERNEL_PATH_NAME "generic"
#define VEC_FLOATS 8 /* a pair of SSE registers */
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
