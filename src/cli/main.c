/* main: `qcorr <command> [flags]` — dispatches to one function per subcommand. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "cli/commands.h"
#include "kernels/kernels.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command commands[] = {
    {"train", cmd_train, "train a float GPT on the corpus"},
    {"eval", cmd_eval, "validation loss and perplexity of a checkpoint"},
    {"sample", cmd_sample, "generate text from a checkpoint"},
    {"quantize", cmd_quantize, "fake-quantize a float checkpoint's weights"},
    {"correct", cmd_correct, "quantize, fit correction layers, report recovery"},
    {"sweep", cmd_sweep, "run or resume a grid of experiments into a directory"},
    {"report", cmd_report, "write report.md and SVG plots from a sweep's summary.csv"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: qcorr <command> [flags]   (qcorr <command> --help for its flags)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
}

/* OpenMP's default spin-waiting makes a step up to 6x slower when another process holds a core
 * (measured on the 2-core development VM); sleeping waits cost about 1% on an idle machine.
 * libgomp reads OMP_WAIT_POLICY before main runs, so when the user has not chosen one, qcorr
 * sets "passive" and re-executes itself once. OMP_WAIT_POLICY=active restores spinning. */
static void prefer_passive_waiting(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then run as we are */
}

/* OMP_NUM_THREADS is the thread count when --threads is not given, so it is held to what
 * --threads takes (1..1024): 100000 crashed in the first parallel region and 5000 hung, and libgomp
 * answers 0 or "abc" with warnings of its own before main runs. So it is read earlier still,
 * from the ELF pre-initialisation array, which runs before any shared library's constructor; a
 * value out of range is kept for main to refuse, and its entry renamed in place (the environment
 * is still the kernel's copy on the stack) so that neither libgomp nor OpenBLAS reads it. */
#define MAX_THREADS 1024
static char refused_omp_threads[64];
static int omp_threads_refused;

static void screen_omp_num_threads(int argc, char **argv, char **envp) {
    (void)argc, (void)argv;
    static const char key[] = "OMP_NUM_THREADS=";
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, key, sizeof key - 1) != 0) continue;
        const char *v = *e + sizeof key - 1;
        long n = 0;
        int digits = 0;
        for (const char *c = v; *c >= '0' && *c <= '9' && n <= MAX_THREADS; c++, digits++) n = n * 10 + (*c - '0');
        if (digits > 0 && v[digits] == 0 && n >= 1 && n <= MAX_THREADS) continue;
        snprintf(refused_omp_threads, sizeof refused_omp_threads, "%s", v);
        omp_threads_refused = 1;
        (*e)[0] = '_'; /* _MP_NUM_THREADS: no longer the variable */
    }
}
__attribute__((section(".preinit_array"), used)) static void (*const screen_omp_entry)(int, char **, char **) =
    screen_omp_num_threads;

/* A closed stdin, stdout or stderr would hand its number to the next file opened (a checkpoint's
 * temporary), and the command's output would go into that file: each is held by /dev/null opened
 * read-only, so a write to a closed stdout fails (EBADF) as it should, and nothing is misdirected. */
static void hold_standard_descriptors(void) {
    for (int fd = 0; fd <= 2; fd++) /* in order, so the lowest free number open() takes is fd */
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && open("/dev/null", O_RDONLY) < 0) return;
}

/* stdout is checked once, at exit, for every command: a write lost to a full disk or a closed
 * descriptor fails the command (exit 1, one line) instead of passing silently. A command that
 * failed already keeps its own line and status. */
static int finish_stdout(const char *command, int rc) {
    errno = 0;
    int lost = fflush(stdout) != 0 || ferror(stdout);
    int err = lost ? errno : 0;
    if (fclose(stdout) != 0 && !lost) lost = 1, err = errno;
    if (!lost || rc != 0) return rc;
    fprintf(stderr, "qcorr%s%s: cannot write to stdout: %s\n", command ? " " : "", command ? command : "",
            err ? strerror(err) : "a write failed");
    return 1;
}

static int run(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "qcorr: missing command (see 'qcorr --help')\n");
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return finish_stdout(NULL, 0);
    }
    /* QCORR_KERNELS names a kernel path: a wrong one is refused before any work */
    if (kernels_init_from_env() != 0) {
        fprintf(stderr, "qcorr: %s\n", qc_last_error());
        return 2;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return finish_stdout(commands[i].name, commands[i].run(argc - 2, argv + 2));
    fprintf(stderr, "qcorr: unknown command '%s' (see 'qcorr --help')\n", argv[1]);
    return 2;
}

int main(int argc, char **argv) {
    hold_standard_descriptors();
    if (omp_threads_refused) {
        fprintf(stderr, "qcorr: OMP_NUM_THREADS='%s': expected a number of threads in 1..%d (as --threads takes), or leave it unset\n",
                refused_omp_threads, MAX_THREADS);
        return 2;
    }
    prefer_passive_waiting(argv);
    return run(argc, argv);
}
