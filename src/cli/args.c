/* args: see args.h. */
#include "cli/args.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"

static void print_help(const char *command, const char *summary, const ArgSpec *specs, int n) {
    printf("usage: qcorr %s [flags]\n\n%s\n\nflags:\n", command, summary);
    for (int i = 0; i < n; i++) {
        const ArgSpec *s = &specs[i];
        if (!s->name) continue; /* an unused slot (QUANTIZER_ARG_SPECS) */
        char left[64];
        const char *kind = s->type == ARG_INT ? " N" : s->type == ARG_FLOAT ? " X" : s->type == ARG_FLAG ? "" : " S";
        snprintf(left, sizeof left, "%s%s", s->name, kind);
        printf("  %-22s %s", left, s->help);
        if (s->type == ARG_INT && s->target) printf(" (default %d)", *(int *)s->target);
        if (s->type == ARG_FLOAT && s->target) printf(" (default %g)", *(double *)s->target);
        if ((s->type == ARG_STRING || s->type == ARG_TEXT) && s->target && *(const char **)s->target && **(const char **)s->target)
            printf(" (default %s)", *(const char **)s->target);
        printf("\n");
    }
    printf("  %-22s %s\n", "--help", "show this help");
}

int usage_error(const char *command, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "qcorr %s: %s\n", command, msg);
    return ARGS_USAGE;
}

int command_failed(const char *command) {
    fprintf(stderr, "qcorr %s: %s\n", command, qc_last_error());
    return 1;
}

int args_parse(const char *command, const char *summary, const ArgSpec *specs, int n_specs, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(command, summary, specs, n_specs);
            return ARGS_HELP;
        }
        char name[128];
        const char *inline_value = NULL;
        const char *eq = strchr(arg, '=');
        if (eq && strncmp(arg, "--", 2) == 0 && (size_t)(eq - arg) < sizeof name) {
            memcpy(name, arg, (size_t)(eq - arg));
            name[eq - arg] = 0;
            inline_value = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
        const ArgSpec *s = NULL;
        for (int k = 0; k < n_specs; k++)
            if (specs[k].name && strcmp(specs[k].name, name) == 0) s = &specs[k];
        if (!s) return usage_error(command, "unknown flag '%s' (see 'qcorr %s --help')", arg, command);
        if (s->type == ARG_FLAG) {
            if (inline_value) return usage_error(command, "%s takes no value", s->name);
            *(int *)s->target = 1;
            continue;
        }
        const char *value = inline_value;
        if (!value) {
            if (i + 1 >= argc) return usage_error(command, "%s needs a value", s->name);
            value = argv[++i];
        }
        if (s->type == ARG_STRING || s->type == ARG_TEXT) {
            if (s->type == ARG_STRING && !*value) return usage_error(command, "%s: an empty value", s->name);
            *(const char **)s->target = value;
        } else if (s->type == ARG_INT) {
            long v;
            if (parse_int(s->name, value, (long)s->min, (long)s->max, &v) != 0) return usage_error(command, "%s", qc_last_error());
            *(int *)s->target = (int)v;
        } else {
            double v;
            if (parse_float(s->name, value, s->min, s->max, &v) != 0) return usage_error(command, "%s", qc_last_error());
            *(double *)s->target = v;
        }
    }
    return ARGS_OK;
}
