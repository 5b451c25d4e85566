/* args: one table-driven flag parser for every subcommand, so each command's flags, ranges and
 * --help text live in one array. Usage errors print one line and make the command exit 2. */
#ifndef QCORR_ARGS_H
#define QCORR_ARGS_H

/* ARG_STRING refuses an empty value (an empty path or name is always a mistake: `--out ""` would
 * write ".train.csv" into the working directory); ARG_TEXT is a string that may be empty. */
typedef enum { ARG_INT, ARG_FLOAT, ARG_STRING, ARG_TEXT, ARG_FLAG } ArgType;

typedef struct {
    const char *name;   /* "--steps" */
    ArgType type;
    void *target;       /* int*, double*, const char** (STRING, TEXT), int* */
    double min, max;    /* numeric range, inclusive */
    const char *help;
} ArgSpec;

enum { ARGS_OK = 0, ARGS_HELP = 1, ARGS_USAGE = 2 };

/* Parses argv[0..argc) (after the subcommand). On --help prints usage and the table to stdout. */
int args_parse(const char *command, const char *summary, const ArgSpec *specs, int n_specs, int argc, char **argv);

/* Prints "qcorr <command>: <last error>" on stderr and returns 1 (a runtime error). */
int command_failed(const char *command);
/* Prints "qcorr <command>: <message>" on stderr and returns 2 (a usage error). */
int usage_error(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
