/* kernels: the hot loops (matrix products, attention, GELU, LayerNorm, cross-entropy) exist once
 * per instruction set, each compiled in its own file with its own -m flags (kernels_generic.c,
 * kernels_avx2.c, kernels_avx512.c over the shared bodies kernels_gemm.h and kernels_ops.h), and
 * one table per set says where they are. The table in use is chosen once, at run time, from the
 * CPU's features, or forced with QCORR_KERNELS=generic|avx2|avx512; gemm.c and ops.c call
 * through it, so a portable build (NATIVE=0) still runs AVX2 or AVX-512 code where the CPU has it. */
#ifndef QCORR_KERNELS_H
#define QCORR_KERNELS_H

#include <stdint.h>

typedef struct {
    const char *name; /* "generic", "avx2", "avx512": the QCORR_KERNELS value */
    /* gemm.h's gemm and gemm_rows */
    int (*gemm)(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_transposed,
                const float *bias, float *C, int ldc, int accumulate);
    void (*gemm_rows)(int R, int N, float *c, long ldc, const float *a, long sam, long sak, const float *b, long ldb,
                      int k0, int k1, int accumulate);
    /* gemm.h's gemm_at_b; matmul_backward forms the weight gradient with it where the flag is
     * set, with the BLAS elsewhere (whichever measured faster on the path's CPUs) */
    int (*gemm_at_b)(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc);
    int weight_gradient_by_gemm_at_b;
    /* ops.h's functions of the same names */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int N, int C);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, int N, int C);
    void (*column_sum_add)(float *out, const float *inp, int N, int C);
    void (*attention_forward)(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
    void (*attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C,
                               int NH);
    void (*gelu_forward)(float *out, const float *inp, long N);
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, long N);
    void (*gelu_forward_saving)(float *out, float *th, const float *inp, long N);
    void (*gelu_backward_saved)(float *dinp, const float *inp, const float *th, const float *dout, long N);
    void (*residual_forward)(float *out, const float *a, const float *b, long N);
    double (*crossentropy_forward_backward)(float *dlogits, const float *logits, const int32_t *targets, int N, int V,
                                            float dloss);
    /* exp of n floats, the softmax's and GELU's exponential (for the tests and the bench) */
    void (*exp_array)(float *out, const float *in, long n);
    /* ops.h's hadamard_forward: out (rows, n) = the normalized Walsh-Hadamard transform of
     * signs . in, row by row (n a power of two; out may alias in) */
    void (*hadamard)(float *out, const float *in, const float *signs, long rows, int n);
} KernelTable;

/* The table in use. The first call chooses it: QCORR_KERNELS if set to a path this CPU runs,
 * else the best path it runs (an unusable QCORR_KERNELS is reported by kernels_init_from_env,
 * which a program calls first; kernels() alone falls back to the best path). */
const KernelTable *kernels(void);
/* The name of the table in use ("avx512", ...): for --json outputs and the bench. */
const char *kernels_name(void);

/* Reads QCORR_KERNELS (unset or empty: the best path) and makes that path the one in use.
 * Returns 0, or -1 with one qc_error line naming the value and the paths this CPU supports. The
 * command-line tool calls it at startup and exits 1 on -1. */
int kernels_init_from_env(void);
/* Makes the named path the one in use (NULL or "": the best). -1 with qc_error if unknown or
 * not supported by this CPU. Not to be called while kernels run (tests switch between calls). */
int kernels_select(const char *name);

/* Every path, best last, and whether this CPU (and OS) runs it. */
enum { KERNEL_PATH_COUNT = 3 };
const KernelTable *kernels_path(int i);
int kernels_path_supported(int i);
/* "generic, avx2, avx512": the paths this CPU runs, for messages */
const char *kernels_supported_list(void);
/* For tests: act as if the CPU ran only the first n paths (n >= 1; KERNEL_PATH_COUNT: all it
 * really runs), so that the refusal of a path the CPU lacks is exercised on any machine. */
void kernels_limit_paths(int n);

#endif
