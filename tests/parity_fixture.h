/* parity_fixture: what the test_parity_* suites share — opening a fixture written by
 * tools/pytorch_reference.py, copying its tensors out with their shapes checked, and comparing
 * a C result with a reference tensor while printing max abs / rel differences, one line each. */
#ifndef QCORR_PARITY_FIXTURE_H
#define QCORR_PARITY_FIXTURE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "quant/quant.h"
#include "testutil.h"

/* Paths are relative to the repository root (make test runs from there). */
static inline void fixture_open(SafeTensors *st, const char *path) {
    if (st_read(st, path) != 0)
        fail_msg("%s (run from the repository root; regenerate with /usr/bin/python3 tools/pytorch_reference.py)",
                 qc_last_error());
}

/* A malloc'ed aligned copy of tensor `name`, which must hold exactly `numel` values. */
static inline float *fixture_floats(const SafeTensors *st, const char *name, size_t numel) {
    const StTensor *t = st_find(st, name);
    if (!t) fail_msg("%s: tensor '%s' is missing: regenerate with tools/pytorch_reference.py", st->path, name);
    if (t->numel != numel) fail_msg("%s: tensor '%s' has %zu values, expected %zu", st->path, name, t->numel, numel);
    float *out = malloc(numel * sizeof(float) + 1);
    assert_non_null(out);
    memcpy(out, t->data, numel * sizeof(float));
    return out;
}

/* The shape of a 1-D or 2-D tensor: rows, and cols (1 for a vector). */
static inline void fixture_shape(const SafeTensors *st, const char *name, int *rows, int *cols) {
    const StTensor *t = st_find(st, name);
    if (!t) fail_msg("%s: tensor '%s' is missing: regenerate with tools/pytorch_reference.py", st->path, name);
    if (t->ndim < 1 || t->ndim > 2) fail_msg("%s: tensor '%s' has %d dimensions, expected 1 or 2", st->path, name, t->ndim);
    *rows = (int)t->shape[0];
    *cols = t->ndim == 2 ? (int)t->shape[1] : 1;
}

static inline const char *fixture_meta(const SafeTensors *st, const char *key) {
    const char *v = st_meta(st, key);
    if (!v) fail_msg("%s: metadata '%s' is missing", st->path, key);
    return v;
}

static inline double fixture_meta_number(const SafeTensors *st, const char *key) {
    const char *v = fixture_meta(st, key);
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end) fail_msg("%s: metadata '%s' = '%s' is not a number", st->path, key, v);
    return x;
}

/* Token ids stored as float32 (exact below 2^24), checked to lie in [0, V). */
static inline int32_t *fixture_ids(const SafeTensors *st, const char *name, size_t n, int V) {
    float *values = fixture_floats(st, name, n);
    int32_t *ids = malloc(n * sizeof(int32_t) + 1);
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) {
        if (!(values[i] >= 0 && values[i] < V && values[i] == floorf(values[i])))
            fail_msg("%s: %s[%zu] = %g is not a token id below %d", st->path, name, i, values[i], V);
        ids[i] = (int32_t)values[i];
    }
    free(values);
    return ids;
}

/* Relative comparison as test_parity does: |c - ref| / max(|ref|, floor_fraction * max|ref|),
 * the max over the tensor must be <= rel_tol. Prints one line; returns 1 if within. */
static inline int compare_floats(const char *label, const float *got, const float *want, size_t n, double floor_fraction,
                                 double rel_tol) {
    double largest = 0.0;
    for (size_t i = 0; i < n; i++) largest = fmax(largest, fabs((double)want[i]));
    double floor = fmax(floor_fraction * largest, 1e-30);
    double rel = max_rel_diff(got, want, n, floor), abs_diff = max_abs_diff(got, want, n);
    int ok = rel <= rel_tol;
    printf("%-7s %-46s max rel %.3e  max abs %.3e  (|max| %.3e, tol %.0e)\n", ok ? "OK" : "NOT OK", label, rel, abs_diff,
           largest, rel_tol);
    return ok;
}

/* Exact comparison (0 and -0 count as equal): the number of values that differ; *max_abs (if
 * given) is raised to the largest |difference|. Prints a line for a tensor that differs. */
static inline size_t compare_exact(const char *label, const float *got, const float *want, size_t n, double *max_abs) {
    size_t mismatches = 0;
    for (size_t i = 0; i < n; i++) mismatches += !(got[i] == want[i]);
    double abs_diff = max_abs_diff(got, want, n);
    if (max_abs) *max_abs = fmax(*max_abs, abs_diff);
    if (mismatches) printf("NOT OK  %-46s %zu of %zu values differ, max abs %.3e\n", label, mismatches, n, abs_diff);
    return mismatches;
}

static inline int compare_scalar(const char *label, double got, double want, double tol) {
    double diff = fabs(got - want);
    int ok = diff <= tol;
    printf("%-7s %-46s c %.9g  torch %.9g  diff %.3e (tol %.0e)\n", ok ? "OK" : "NOT OK", label, got, want, diff, tol);
    return ok;
}

/* The reference writes quantizer fixtures for the scale dtypes f64 (the scale kept exact in
 * double: SCALE_EXACT), f32, f16 and bf16. Sets s's scale dtype: 0, or -1 for a name the C
 * quantizer does not know (the caller then skips). */
static inline int scheme_set_scale_dtype(QuantScheme *s, const char *dtype) {
    return scale_dtype_parse(dtype, &s->scale_dtype);
}

#endif
