/* kernels: see kernels.h. CPU features come from GCC/Clang's __builtin_cpu_supports, which also
 * checks that the OS saves the AVX and AVX-512 registers (XCR0), so a path marked supported
 * runs. */
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

extern const KernelTable kernels_generic, kernels_avx2, kernels_avx512;

static const KernelTable *const paths[KERNEL_PATH_COUNT] = {&kernels_generic, &kernels_avx2, &kernels_avx512};

static int path_limit = KERNEL_PATH_COUNT; /* kernels_limit_paths */
/* the table in use; NULL until the first kernels() or select. Written by the main thread before
 * any parallel region reads it (every reader is a kernel entry point called from serial code) */
static const KernelTable *active;

static int cpu_runs(int i) {
    if (i >= path_limit) return 0;
#if defined(__x86_64__) || defined(__i386__)
    switch (i) {
    case 0: return 1;
    case 1: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 2: /* what -march=x86-64-v4 compiles for, and AVX2 + FMA besides */
        return cpu_runs(1) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512cd");
    }
    return 0;
#else
    return i == 0;
#endif
}

void kernels_limit_paths(int n) {
    path_limit = n < 1 ? 1 : n > KERNEL_PATH_COUNT ? KERNEL_PATH_COUNT : n;
    for (int i = 0; i < KERNEL_PATH_COUNT; i++)
        if (active == paths[i] && !cpu_runs(i)) active = NULL; /* chosen again at the next call */
}

const KernelTable *kernels_path(int i) { return i >= 0 && i < KERNEL_PATH_COUNT ? paths[i] : NULL; }
int kernels_path_supported(int i) { return i >= 0 && i < KERNEL_PATH_COUNT && cpu_runs(i); }

const char *kernels_supported_list(void) {
    static char list[64];
    list[0] = '\0';
    for (int i = 0; i < KERNEL_PATH_COUNT; i++)
        if (cpu_runs(i)) {
            if (list[0]) strcat(list, ", ");
            strcat(list, paths[i]->name);
        }
    return list;
}

static const KernelTable *best_path(void) {
    for (int i = KERNEL_PATH_COUNT - 1; i > 0; i--)
        if (cpu_runs(i)) return paths[i];
    return paths[0];
}


/* the path named `name`, or NULL with a qc_error */
static const KernelTable *lookup(const char *name, const char *what) {
    if (!name || !name[0]) return best_path();
    for (int i = 0; i < KERNEL_PATH_COUNT; i++)
        if (strcmp(name, paths[i]->name) == 0) {
            if (cpu_runs(i)) return paths[i];
            qc_error("%s%s: this CPU does not support it (it supports %s)", what, name, kernels_supported_list());
            return NULL;
        }
    qc_error("%s%s: unknown kernel path (choose generic, avx2 or avx512; this CPU supports %s)", what, name,
             kernels_supported_list());
    return NULL;
}

int kernels_select(const char *name) {
    const KernelTable *t = lookup(name, "kernel path ");
    if (!t) return -1;
    active = t;
    return 0;
}

int kernels_init_from_env(void) {
    const KernelTable *t = lookup(getenv("QCORR_KERNELS"), "QCORR_KERNELS=");
    if (!t) return -1;
    active = t;
    return 0;
}

const KernelTable *kernels(void) {
    if (!active) {
        const KernelTable *t = lookup(getenv("QCORR_KERNELS"), "QCORR_KERNELS=");
        if (!t) {
            qc_clear_error(); /* reported by kernels_init_from_env, which the CLI calls first */
            t = best_path();
        }
        active = t;
    }
    return active;
}

const char *kernels_name(void) { return kernels()->name; }
