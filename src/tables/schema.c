/* schema: see schema.h. The table below is generated from SCHEMA_COLUMNS; the parsers keep the
 * messages the report always gave, so a bad cell is named the same way whatever its column. */
#include "tables/schema.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const SchemaColumn schema_columns[SCHEMA_N_COLUMNS] = {
#define SCHEMA_DESCRIBE(name, type, flags, min, max) {#name, SCHEMA_##type, flags, min, max, offsetof(RunRecord, name)},
    SCHEMA_COLUMNS(SCHEMA_DESCRIBE)
#undef SCHEMA_DESCRIBE
};

void run_record_clear(RunRecord *r) {
    for (int k = 0; k < SCHEMA_N_COLUMNS; k++) {
        const SchemaColumn *c = &schema_columns[k];
        if (c->type == SCHEMA_STRING) *schema_string(r, c) = NULL;
        else if (c->type == SCHEMA_INTEGER) *schema_integer(r, c) = SCHEMA_NO_INTEGER;
        else *schema_real(r, c) = NAN;
    }
}

int schema_is_set(const RunRecord *r, const SchemaColumn *c) {
    if (c->type == SCHEMA_STRING) return schema_get_string(r, c) != NULL;
    if (c->type == SCHEMA_INTEGER) return schema_get_integer(r, c) != SCHEMA_NO_INTEGER;
    return !isnan(schema_get_real(r, c));
}

int schema_parse_cell(RunRecord *r, const SchemaColumn *c, const char *text, char *why, size_t why_size) {
    if (c->type == SCHEMA_STRING) {
        *schema_string(r, c) = text;
        return 0;
    }
    if (!text[0]) return 0; /* empty: left unset */
    char *end;
    if (c->type == SCHEMA_INTEGER) {
        errno = 0;
        long v = strtol(text, &end, 10);
        if (errno || *end || end == text) { snprintf(why, why_size, "'%s' is not an integer", text); return -1; }
        if (v < c->min || v > c->max) { snprintf(why, why_size, "%ld is outside %ld..%ld", v, c->min, c->max); return -1; }
        *schema_integer(r, c) = v;
        return 0;
    }
    double v = strtod(text, &end);
    if (*end || end == text) { snprintf(why, why_size, "'%s' is not a number", text); return -1; }
    /* an undefined value is an empty cell; "nan", "inf" or an overflowing 1e999 would pass into
     * every mean as if it were a result */
    if (!isfinite(v)) { snprintf(why, why_size, "'%s' is not a finite number", text); return -1; }
    *schema_real(r, c) = v;
    return 0;
}

int schema_set_number(RunRecord *r, const SchemaColumn *c, double v, char *why, size_t why_size) {
    if (c->type == SCHEMA_REAL) {
        *schema_real(r, c) = v;
        return 0;
    }
    /* the range first: converting a double outside long's range is undefined behaviour */
    if (!(v >= (double)c->min && v <= (double)c->max && fabs(v) < 9.0e18) || v != (double)(long)v) {
        snprintf(why, why_size, "\"%s\" is %.17g, not an integer in %ld..%ld", c->name, v, c->min, c->max);
        return -1;
    }
    *schema_integer(r, c) = (long)v;
    return 0;
}

static void write_number(FILE *f, double x) {
    if (x == (double)(long long)x && fabs(x) < 1e15) fprintf(f, "%lld", (long long)x);
    else fprintf(f, "%.9g", x);
}

void schema_write_cell(FILE *f, const RunRecord *r, const SchemaColumn *c) {
    if (!schema_is_set(r, c)) return;
    if (c->type == SCHEMA_INTEGER) {
        write_number(f, (double)schema_get_integer(r, c));
        return;
    }
    if (c->type == SCHEMA_REAL) {
        write_number(f, schema_get_real(r, c));
        return;
    }
    const char *s = schema_get_string(r, c);
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void schema_write_summary_header(FILE *f) {
    int first = 1;
    for (int k = 0; k < SCHEMA_N_COLUMNS; k++)
        if (schema_columns[k].flags & SCHEMA_SUMMARY) {
            fprintf(f, "%s%s", first ? "" : ",", schema_columns[k].name);
            first = 0;
        }
    fputc('\n', f);
}

void schema_write_summary_row(FILE *f, const RunRecord *r) {
    int first = 1;
    for (int k = 0; k < SCHEMA_N_COLUMNS; k++)
        if (schema_columns[k].flags & SCHEMA_SUMMARY) {
            if (!first) fputc(',', f);
            schema_write_cell(f, r, &schema_columns[k]);
            first = 0;
        }
    fputc('\n', f);
}
