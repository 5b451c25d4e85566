/* methods: see methods.h. */
#include "tables/methods.h"

#include <stdio.h>
#include <string.h>

#define QUANTIZER_INFO(id, name, data, gram, ops) {name, data, gram},
#define KIND_INFO(id, name, place, ops, solve) {name, place},
#define METHOD_INFO(id, name, kind, trains, solves, tunes, takes) {name, kind, trains, solves, tunes, takes},
const QuantizerInfo quantizer_info[QUANTIZER_COUNT] = {QUANTIZERS(QUANTIZER_INFO)};
const CorrectionKindInfo kind_info[KIND_COUNT] = {CORRECTION_KINDS(KIND_INFO)};
const MethodInfo method_info[METHOD_COUNT] = {CORRECTION_METHODS(METHOD_INFO)};

const char *quantizer_name(QuantizerId id) { return quantizer_info[id].name; }
const char *kind_name(CorrectionKindId id) { return kind_info[id].name; }
const char *method_name(CorrectMethod id) { return method_info[id].name; }

int quantizer_is_default(QuantizerId q) { return q == 0; }

int quantizer_by_name(const char *name) {
    for (int i = 0; i < QUANTIZER_COUNT; i++)
        if (strcmp(quantizer_info[i].name, name) == 0) return i;
    return -1;
}

int kind_by_name(const char *name) {
    for (int i = 0; i < KIND_COUNT; i++)
        if (strcmp(kind_info[i].name, name) == 0) return i;
    return -1;
}

int method_by_name(const char *name) {
    for (int i = 0; i < METHOD_COUNT; i++)
        if (strcmp(method_info[i].name, name) == 0) return i;
    return -1;
}

/* "a, b or c" */
static void join_names(char *out, size_t size, const char *const *names, int n) {
    out[0] = 0;
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
}

void quantizer_names(char *out, size_t size) {
    const char *names[QUANTIZER_COUNT];
    for (int i = 0; i < QUANTIZER_COUNT; i++) names[i] = quantizer_info[i].name;
    join_names(out, size, names, QUANTIZER_COUNT);
}

void method_names(char *out, size_t size) {
    const char *names[METHOD_COUNT];
    for (int i = 0; i < METHOD_COUNT; i++) names[i] = method_info[i].name;
    join_names(out, size, names, METHOD_COUNT);
}

CorrectionKindId method_kind(CorrectMethod m, int hidden) {
    if (method_info[m].kind != KIND_BY_HIDDEN) return method_info[m].kind;
    return hidden == 0 ? KIND_LINEAR : KIND_MLP;
}

int method_uses_hidden(CorrectMethod m) { return method_info[m].kind == KIND_BY_HIDDEN; }

int method_uses_every(CorrectMethod m) {
    CorrectionKindId k = method_info[m].kind;
    return k == KIND_BY_HIDDEN || (k != KIND_NONE && kind_info[k].placement == PLACE_STREAM);
}

int method_corrects(CorrectMethod m) { return method_info[m].kind != KIND_NONE || method_info[m].tunes != TUNE_NONE; }

TuneTarget method_tunes(CorrectMethod m) { return method_info[m].tunes; }

int method_tunes_grid(CorrectMethod m) {
    TuneTarget t = method_info[m].tunes;
    return t == TUNE_WEIGHTS || t == TUNE_SCALES || t == TUNE_CLIP || t == TUNE_ROUNDING;
}

int method_fits_weight_error(CorrectMethod m) { return kind_info[method_kind(m, 0)].placement == PLACE_LINEAR; }

int method_has_control(CorrectMethod m) {
    return (method_corrects(m) && method_uses_every(m)) || method_info[m].tunes == TUNE_NORMS || method_info[m].tunes == TUNE_WEIGHTS;
}
