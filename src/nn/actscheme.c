/* actscheme: see actscheme.h. */
#include "nn/actscheme.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static const char *point_names[] = {"inputs", "stream", "kv", "probs"};
static const char *granularity_names[] = {"token", "tensor", "static"};

void act_scheme_default(ActScheme *a) {
    memset(a, 0, sizeof *a);
    a->granularity = ACT_TOKEN;
    a->calib = ACT_CALIB_MINMAX;
    a->percentile = ACT_PERCENTILE_DEFAULT;
}

void act_scheme_inputs(ActScheme *a, int bits) {
    act_scheme_default(a);
    a->bits = bits;
    a->points = bits ? ACT_POINT_INPUTS : 0;
}

int act_scheme_on(const ActScheme *a) { return a->points != 0; }

int act_point_bits(const ActScheme *a, unsigned point) {
    if (!(a->points & point)) return 0;
    return point == ACT_POINT_KV ? a->kv_bits : a->bits;
}

int act_scheme_check(const ActScheme *a) {
    if (a->points & ~ACT_POINTS_ALL) { qc_error("unknown activation quantization points 0x%x", a->points); return -1; }
    if (a->bits != 0 && (a->bits < 2 || a->bits > 8)) {
        qc_error("%d activation bits are not supported (0 for off, or 2..8)", a->bits);
        return -1;
    }
    if (a->kv_bits != 0 && (a->kv_bits < 2 || a->kv_bits > 8)) {
        qc_error("%d key/value bits are not supported (0 for off, or 2..8)", a->kv_bits);
        return -1;
    }
    int others = (a->points & ~ACT_POINT_KV) != 0;
    if (others != (a->bits != 0)) {
        qc_error(a->bits ? "%d activation bits but no point to quantize (inputs, stream or probs)"
                         : "activation points without activation bits (%d)", a->bits);
        return -1;
    }
    if (((a->points & ACT_POINT_KV) != 0) != (a->kv_bits != 0)) {
        qc_error("key/value bits %d without the kv point, or the point without bits", a->kv_bits);
        return -1;
    }
    if (a->granularity < ACT_TOKEN || a->granularity > ACT_STATIC) { qc_error("unknown activation granularity %d", (int)a->granularity); return -1; }
    if (a->calib < ACT_CALIB_MINMAX || a->calib > ACT_CALIB_MSE) { qc_error("unknown activation calibration %d", (int)a->calib); return -1; }
    if (a->calib == ACT_CALIB_PERCENTILE && !(a->percentile >= 50.0 && a->percentile <= 100.0)) {
        qc_error("activation percentile %g is outside [50, 100]", a->percentile);
        return -1;
    }
    if (a->correction_float && !(a->points & ACT_POINT_STREAM)) {
        qc_error("a stream correction reads the float stream only where the stream is quantized (the stream point)");
        return -1;
    }
    if (a->correction_float != 0 && a->correction_float != 1) { qc_error("correction reads %d: expected 0 or 1", a->correction_float); return -1; }
    return 0;
}

int act_parse_correction_reads(const char *text, int *out) {
    if (strcmp(text, "quantized") == 0) *out = 0;
    else if (strcmp(text, "float") == 0) *out = 1;
    else {
        qc_error("correction reads '%s': expected quantized or float", text);
        return -1;
    }
    return 0;
}

const char *act_correction_reads_name(int correction_float) { return correction_float ? "float" : "quantized"; }

int act_parse_granularity(const char *text, ActGranularity *out) {
    for (int g = 0; g < 3; g++)
        if (strcmp(text, granularity_names[g]) == 0) {
            *out = (ActGranularity)g;
            return 0;
        }
    qc_error("activation granularity '%s' is not token, tensor or static", text);
    return -1;
}

const char *act_granularity_name(ActGranularity g) { return granularity_names[g]; }

int act_parse_calib(const char *text, ActScheme *a) {
    if (strcmp(text, "minmax") == 0) { a->calib = ACT_CALIB_MINMAX; return 0; }
    if (strcmp(text, "mse") == 0) { a->calib = ACT_CALIB_MSE; return 0; }
    if (strcmp(text, "percentile") == 0) {
        a->calib = ACT_CALIB_PERCENTILE;
        a->percentile = ACT_PERCENTILE_DEFAULT;
        return 0;
    }
    if (strncmp(text, "percentile:", 11) == 0) {
        double p;
        if (parse_float("percentile", text + 11, 50.0, 100.0, &p) != 0) return -1;
        a->calib = ACT_CALIB_PERCENTILE;
        a->percentile = p;
        return 0;
    }
    qc_error("activation calibration '%s' is not minmax, percentile, percentile:P or mse", text);
    return -1;
}

void act_describe_calib(const ActScheme *a, char *out, size_t size) {
    if (a->calib == ACT_CALIB_MINMAX) snprintf(out, size, "minmax");
    else if (a->calib == ACT_CALIB_MSE) snprintf(out, size, "mse");
    else snprintf(out, size, "percentile:%.17g", a->percentile);
}

int act_parse_points(const char *text, unsigned *out) {
    unsigned points = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int p = 0; p < 4; p++)
            if (strcmp(tok, point_names[p]) == 0) found = p;
        if (found < 0) {
            qc_error("unknown activation point '%s' (inputs, stream, kv, probs)", tok);
            return -1;
        }
        points |= 1u << found;
    }
    if (!points) { qc_error("empty list of activation points"); return -1; }
    *out = points;
    return 0;
}

void act_describe_points(unsigned points, char *out, size_t size) {
    out[0] = 0;
    for (int p = 0; p < 4; p++)
        if (points & (1u << p)) snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", point_names[p]);
}

static void append(char *out, size_t size, const char *part) {
    size_t n = strlen(out);
    snprintf(out + n, size - n, "%s%s", n ? ":" : "", part);
}

void act_scheme_describe(const ActScheme *a, char *out, size_t size) {
    out[0] = 0;
    if (!act_scheme_on(a)) {
        snprintf(out, size, "none");
        return;
    }
    char part[64];
    if (a->bits) {
        snprintf(part, sizeof part, "int%d", a->bits);
        append(out, size, part);
    }
    if (a->granularity == ACT_TENSOR) append(out, size, "tensor");
    if (a->granularity == ACT_STATIC) {
        char calib[40];
        act_describe_calib(a, calib, sizeof calib);
        if (a->calib == ACT_CALIB_PERCENTILE) snprintf(part, sizeof part, "static-p%.17g", a->percentile);
        else snprintf(part, sizeof part, "static-%s", calib);
        append(out, size, part);
    }
    if (a->asymmetric) append(out, size, "asym");
    if (a->bits && a->points != ACT_POINT_INPUTS) {
        act_describe_points(a->points, part, sizeof part);
        append(out, size, part);
    }
    if (a->kv_bits && a->kv_bits != a->bits) {
        snprintf(part, sizeof part, "kv=int%d", a->kv_bits);
        append(out, size, part);
    }
    if (a->correction_float) append(out, size, "reads-float");
}

int act_site_count(int n_layer) { return n_layer * ACT_SITES_PER_BLOCK + 1; }

void act_site_name(int n_layer, int site, char *out, size_t size) {
    static const char *block_sites[ACT_SITES_PER_BLOCK] = {
        "attn.c_attn.input_range", "attn.c_proj.input_range", "mlp.c_fc.input_range", "mlp.c_proj.input_range",
        "output_range", "attn.key_range", "attn.value_range", "attn.probs_range",
    };
    if (site == n_layer * ACT_SITES_PER_BLOCK) snprintf(out, size, "lm_head.input_range");
    else snprintf(out, size, "transformer.h.%d.%s", site / ACT_SITES_PER_BLOCK, block_sites[site % ACT_SITES_PER_BLOCK]);
}

unsigned act_site_point(int n_layer, int site) {
    if (site == n_layer * ACT_SITES_PER_BLOCK) return ACT_POINT_INPUTS;
    switch (site % ACT_SITES_PER_BLOCK) {
    case ACT_SITE_STREAM: return ACT_POINT_STREAM;
    case ACT_SITE_KEY:
    case ACT_SITE_VALUE: return ACT_POINT_KV;
    case ACT_SITE_PROBS: return ACT_POINT_PROBS;
    default: return ACT_POINT_INPUTS;
    }
}
