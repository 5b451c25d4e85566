/* commands: one entry point per subcommand; each returns the process exit status
 * (0 ok, 1 runtime error, 2 usage error). */
#ifndef QCORR_COMMANDS_H
#define QCORR_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_correct(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* Shared by quantize and correct. Return 0 or an exit status (message already printed). */
#include "common.h"
int parse_scheme_flags(const char *command, int bits, const char *granularity, int asymmetric, const char *scope,
                       int act_bits, const char *scale_dtype, QuantScheme *s);
/* "f16" -> SCALE_F16 for --scale-dtype; 0, or an exit status (message printed) */
int parse_scale_dtype_flag(const char *command, const char *text, ScaleDtype *out);
int load_float_checkpoint(const char *command, const char *path, int max_batch, LoadedModel *lm);

#endif
