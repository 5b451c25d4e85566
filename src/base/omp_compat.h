/* omp_compat: OpenMP's thread queries, or single-thread stand-ins when built with OPENMP=0. */
#ifndef QCORR_OMP_COMPAT_H
#define QCORR_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif
#endif
