/* schema: the results of a sweep listed once — a run record's fields (runs/<id>.json), the columns
 * of summary.csv in their order, and what the report reads — as one X-macro and a typed RunRecord. */
#ifndef QCORR_SCHEMA_H
#define QCORR_SCHEMA_H

#include <limits.h>
#include <stddef.h>
#include <stdio.h>

typedef enum { SCHEMA_STRING, SCHEMA_INTEGER, SCHEMA_REAL } SchemaType;

/* Where a column lives and who needs it (flags):
 *   SCHEMA_SUMMARY  a column of summary.csv, in table order; without it the record alone holds it
 *   SCHEMA_RECORD   every run record holds it: a record without it is corrupt and runs again.
 *                   Leave it off a new column, so that records of an earlier version still count
 *                   (their value is empty in summary.csv)
 *   SCHEMA_READ     the report reads it where summary.csv has it (old files may not)
 *   SCHEMA_NEEDED   the report refuses a summary.csv without it (includes READ)
 *   SCHEMA_KEY      the report refuses a row where it is empty (includes NEEDED) */
#define SCHEMA_SUMMARY 1u
#define SCHEMA_RECORD 2u
#define SCHEMA_READ 4u
#define SCHEMA_NEEDED (8u | SCHEMA_READ)
#define SCHEMA_KEY (16u | SCHEMA_NEEDED)
#define SCHEMA_ROW (SCHEMA_SUMMARY | SCHEMA_RECORD) /* a summary column every record holds */
#define SCHEMA_MIN_INTEGER (LONG_MIN + 1)            /* LONG_MIN is SCHEMA_NO_INTEGER: empty */
#define SCHEMA_STEPS_AUTO (-1) /* the steps of a run trained by --steps auto (experiment.h's STEPS_AUTO) */

/* X(name, type, flags, min, max): one line per column. Integers outside [min, max] are refused
 * where read (records, summary.csv); min and max mean nothing for strings and reals (write 0, 0).
 * A real may be empty (JSON null): undefined, e.g. a recovery whose loss gap is too small.
 * A new column is one line here, after the summary columns that exist (tests/test_sweep.c holds
 * their order), usually SCHEMA_SUMMARY | SCHEMA_READ, plus the code that sets its value in
 * sweep_write_record (src/sweep/records.c) and the code of the report that uses it. */
#define SCHEMA_COLUMNS(X)                                                                       \
    X(run_id,              STRING,  SCHEMA_ROW,                 0, 0)                           \
    X(seed,                INTEGER, SCHEMA_ROW | SCHEMA_KEY,    SCHEMA_MIN_INTEGER, LONG_MAX)   \
    X(size,                STRING,  SCHEMA_ROW | SCHEMA_KEY,    0, 0)                           \
    X(d_model,             INTEGER, SCHEMA_ROW | SCHEMA_NEEDED, 1, 1000000)                     \
    X(n_layer,             INTEGER, SCHEMA_ROW | SCHEMA_NEEDED, 1, 1000000)                     \
    X(bits,                INTEGER, SCHEMA_ROW | SCHEMA_KEY,    1, 64)                          \
    X(scheme,              STRING,  SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(every,               INTEGER, SCHEMA_ROW | SCHEMA_KEY,    0, 1000000)                     \
    X(hidden,              INTEGER, SCHEMA_ROW | SCHEMA_KEY,    0, 100000000)                   \
    X(correction,          STRING,  SCHEMA_ROW | SCHEMA_READ,   0, 0)                           \
    X(method,              STRING,  SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(objective,           STRING,  SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(arm,                 STRING,  SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(loss_float,          REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(loss_quant,          REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(loss_corrected,      REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(ppl_float,           REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(ppl_quant,           REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(ppl_corrected,       REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(recovery_loss,       REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(recovery_ppl,        REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(recovery_flag,       STRING,  SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(gain_loss,           REAL,    SCHEMA_ROW | SCHEMA_NEEDED, 0, 0)                           \
    X(correction_params,   INTEGER, SCHEMA_ROW | SCHEMA_READ,   0, LONG_MAX)                    \
    X(correction_sites,    INTEGER, SCHEMA_ROW,                 0, LONG_MAX)                    \
    X(steps,               INTEGER, SCHEMA_ROW | SCHEMA_READ,   -1, LONG_MAX) /* -1: auto */     \
    X(calib_tokens,        INTEGER, SCHEMA_ROW | SCHEMA_NEEDED, 0, LONG_MAX)                    \
    X(seconds_train_float, REAL,    SCHEMA_ROW,                 0, 0)                           \
    X(seconds_quantize,    REAL,    SCHEMA_ROW,                 0, 0)                           \
    X(seconds_correct,     REAL,    SCHEMA_ROW,                 0, 0)                           \
    X(seconds_eval,        REAL,    SCHEMA_ROW,                 0, 0)                           \
    X(quantizer,           STRING,  SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(granularity,         STRING,  SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(correction_stored_bits, INTEGER, SCHEMA_SUMMARY | SCHEMA_READ, 2, 32)                     \
    X(loss_se_float,       REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(loss_se_quant,       REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(loss_se_corrected,   REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(gap_se,              REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(gain_se,             REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(kl_quant,            REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(kl_corrected,        REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(top1_quant,          REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(top1_corrected,      REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(model_bits_float,    REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(model_bits_quant,    REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(model_bits_corrected, REAL,   SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(correction_bits,     REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(bits_per_weight,     REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(steps_run,           INTEGER, SCHEMA_SUMMARY | SCHEMA_READ, 0, LONG_MAX)                  \
    X(best_step,           INTEGER, SCHEMA_SUMMARY | SCHEMA_READ, 0, LONG_MAX)                  \
    X(stopped_by,          STRING,  SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(heldout_objective,   REAL,    SCHEMA_SUMMARY | SCHEMA_READ, 0, 0)                         \
    X(host,                STRING,  0,                          0, 0)                           \
    X(finished_unix,       INTEGER, 0,                          SCHEMA_MIN_INTEGER, LONG_MAX)

/* One run, typed once: the sweep fills it, records and summary.csv are written from it, the
 * report reads rows into it. Empty values: NULL strings, SCHEMA_NO_INTEGER, NaN reals. Strings
 * are borrowed (from the parsed record or the CSV text). */
#define SCHEMA_CTYPE_STRING const char *
#define SCHEMA_CTYPE_INTEGER long
#define SCHEMA_CTYPE_REAL double
#define SCHEMA_NO_INTEGER LONG_MIN

typedef struct {
#define SCHEMA_DECLARE_FIELD(name, type, flags, min, max) SCHEMA_CTYPE_##type name;
    SCHEMA_COLUMNS(SCHEMA_DECLARE_FIELD)
#undef SCHEMA_DECLARE_FIELD
} RunRecord;

enum {
#define SCHEMA_DECLARE_INDEX(name, type, flags, min, max) SCHEMA_COLUMN_##name,
    SCHEMA_COLUMNS(SCHEMA_DECLARE_INDEX)
#undef SCHEMA_DECLARE_INDEX
    SCHEMA_N_COLUMNS
};

typedef struct {
    const char *name;
    SchemaType type;
    unsigned flags;
    long min, max;
    size_t offset; /* of the field in RunRecord */
} SchemaColumn;

extern const SchemaColumn schema_columns[SCHEMA_N_COLUMNS];

static inline int schema_has(const SchemaColumn *c, unsigned flags) { return (c->flags & flags) == flags; }
/* The field of column c in r, by its type: to write ... */
static inline const char **schema_string(RunRecord *r, const SchemaColumn *c) { return (const char **)((char *)r + c->offset); }
static inline long *schema_integer(RunRecord *r, const SchemaColumn *c) { return (long *)((char *)r + c->offset); }
static inline double *schema_real(RunRecord *r, const SchemaColumn *c) { return (double *)((char *)r + c->offset); }
/* ... and to read */
static inline const char *schema_get_string(const RunRecord *r, const SchemaColumn *c) { return *(const char *const *)((const char *)r + c->offset); }
static inline long schema_get_integer(const RunRecord *r, const SchemaColumn *c) { return *(const long *)((const char *)r + c->offset); }
static inline double schema_get_real(const RunRecord *r, const SchemaColumn *c) { return *(const double *)((const char *)r + c->offset); }

/* Every field empty. */
void run_record_clear(RunRecord *r);
/* Whether column c of r holds a value. */
int schema_is_set(const RunRecord *r, const SchemaColumn *c);
/* Sets column c of r from the text of a CSV cell ("" leaves it empty); -1 with the reason in why
 * ("'x' is not an integer", "70 is outside 1..64", "'x' is not a number", "'nan' is not a
 * finite number"). Strings are borrowed. */
int schema_parse_cell(RunRecord *r, const SchemaColumn *c, const char *text, char *why, size_t why_size);
/* Sets an integer column from a JSON number (a double); -1 with the reason unless it is an
 * integer within the column's bounds. */
int schema_set_number(RunRecord *r, const SchemaColumn *c, double v, char *why, size_t why_size);
/* Writes column c of r as a CSV cell: strings quoted when they hold a comma, quote or newline;
 * numbers as integers when whole (below 1e15), else %.9g; nothing when empty. */
void schema_write_cell(FILE *f, const RunRecord *r, const SchemaColumn *c);
/* Writes the header row of summary.csv: the SCHEMA_SUMMARY columns joined by commas, a newline. */
void schema_write_summary_header(FILE *f);
/* Writes r as a row of summary.csv (its SCHEMA_SUMMARY columns), a newline. */
void schema_write_summary_row(FILE *f, const RunRecord *r);

#endif
