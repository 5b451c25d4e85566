/* util: errors, checked allocation, the seeded RNG, timers, number parsing and atomic file writes.
 * Library code never exits: it records one message with qc_error() and returns -1 up to the CLI. */
#ifndef QCORR_UTIL_H
#define QCORR_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* ---- errors: one message per failure, read by the CLI, printed as one line on stderr ---- */
void qc_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *qc_last_error(void);
void qc_clear_error(void);

/* ---- checked allocation: NULL (with an error naming what) on failure ---- */
void *qc_malloc(size_t bytes, const char *what);
void *qc_calloc(size_t count, size_t size, const char *what);
/* 64-byte aligned, for the big flat buffers the kernels stream through */
void *qc_aligned_alloc(size_t bytes, const char *what);

/* A kernel's scratch that only grows: at least `floats` floats, 64-byte aligned, reallocated
 * (contents lost) when too small, so a run allocates it a few times at most. NULL, with no
 * error set, if the allocation fails: the kernels then compute another way. */
typedef struct { float *data; size_t floats; } GrowBuffer;
float *grow_buffer(GrowBuffer *b, size_t floats);

/* ---- RNG: xorshift64*, deterministic across platforms ---- */
typedef struct { uint64_t state; } Rng;
void rng_seed(Rng *rng, uint64_t seed);
uint32_t rng_u32(Rng *rng);
float rng_uniform(Rng *rng);            /* [0, 1) */
uint64_t rng_below(Rng *rng, uint64_t n); /* [0, n), n > 0 */
float rng_normal(Rng *rng);             /* N(0, 1), Box-Muller */

/* ---- stopping: a flag that long loops poll between steps, so a stop finishes or abandons the
 * current unit of work cleanly (outputs are atomic either way). The CLI's signal handlers set it
 * (src/cli/common.c); the library only reads it and never ends the process itself. ---- */
#include <signal.h>
extern volatile sig_atomic_t qc_stop_signal; /* the signal number, 0 while running */

/* ---- time ---- */
double now_seconds(void);

/* ---- files ---- */
/* Reads a whole file; NULL (error names the file) on failure. */
uint8_t *read_file(const char *path, size_t *size_out);
/* Writes path atomically: a temporary file beside it, fsync, rename, fsync of the directory. */
int write_file_atomic(const char *path, const void *data, size_t size);
/* Same, from several pieces (header + payload) without concatenating them first. */
int write_file_atomic_parts(const char *path, const void *const *parts, const size_t *sizes, int n_parts);
/* Creates path with data, whole, unless it exists: 0 created, 1 it existed (left as it was),
 * -1 error. Of several processes racing to create one path, exactly one gets 0. */
int write_file_new(const char *path, const void *data, size_t size);

/* A file written a piece at a time that appears whole or not at all: the pieces go to a
 * temporary beside path (visible while it grows: PATH.tmp.HOST.PID.XXXXXX), commit fsyncs it,
 * renames it to path and syncs the directory; discard removes the temporary unless committed and
 * ends every AtomicFile. Errors name path and the reason (strerror). */
typedef struct {
    int fd;
    char *path, *tmp;
} AtomicFile;
int atomic_file_open(AtomicFile *f, const char *path);
int atomic_file_printf(AtomicFile *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int atomic_file_commit(AtomicFile *f);
void atomic_file_discard(AtomicFile *f); /* after a commit too (it frees); safe twice */

/* "HOST.PID" of this process (dots in the host name replaced), as temporary names carry it. */
int process_owner_tag(char *out, size_t size);
/* 1 if tag ("HOST.PID...") names a process of this host that no longer exists; 0 for a live
 * one, another host's, or a tag that does not parse. */
int process_is_gone(const char *tag);
/* 1 if name is a temporary file of write_file_atomic left by a dead process on this host. */
int is_stale_temporary(const char *name);
/* Fails (naming the path) unless a file can be created beside path: checked before long work. */
int check_writable(const char *path);
/* Fails (naming the path and what it is) for an empty path, or one that exists and is not a
 * regular file — a directory, FIFO or device node is never replaced by an output. */
int check_output_path(const char *path);
/* Removes path's temporaries (path.tmp.HOST.PID.XXXXXX) left by dead processes of this host. */
void remove_stale_temporaries_of(const char *path);

/* ---- number parsing for flags: -1 with an error naming the flag on bad input ---- */
int parse_int(const char *flag, const char *text, long min, long max, long *out);
int parse_float(const char *flag, const char *text, double min, double max, double *out);

#endif
