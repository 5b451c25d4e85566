/* commands: one entry point per subcommand; each returns the process exit status
 * (0 ok, 1 runtime error, 2 usage error). */
#ifndef QCORR_COMMANDS_H
#define QCORR_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);

#endif
