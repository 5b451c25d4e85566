/* util: see util.h. The error buffer is thread-local so OpenMP workers cannot clobber it;
 * atomic writes go through mkstemp + fsync + rename so a crash never leaves a half file. */
#include "base/util.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char error_message[1024];

void qc_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
}
const char *qc_last_error(void) { return error_message[0] ? error_message : "unknown error"; }
void qc_clear_error(void) { error_message[0] = 0; }

void *qc_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) qc_error("out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}
void *qc_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) qc_error("out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}
void *qc_aligned_alloc(size_t bytes, const char *what) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        qc_error("out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    return p;
}

float *grow_buffer(GrowBuffer *b, size_t floats) {
    if (floats > b->floats) {
        free(b->data);
        b->data = NULL;
        b->floats = 0;
        if (posix_memalign((void **)&b->data, 64, floats * sizeof(float)) != 0) {
            b->data = NULL;
            return NULL;
        }
        b->floats = floats;
    }
    return b->data;
}

void rng_seed(Rng *rng, uint64_t seed) {
    /* splitmix64 scrambles small seeds (42, 123) into well-mixed non-zero states */
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    rng->state = z ? z : 0x2545F4914F6CDD1Dull;
}
uint32_t rng_u32(Rng *rng) {
    rng->state ^= rng->state >> 12;
    rng->state ^= rng->state << 25;
    rng->state ^= rng->state >> 27;
    return (uint32_t)((rng->state * 0x2545F4914F6CDD1Dull) >> 32);
}
float rng_uniform(Rng *rng) { return (rng_u32(rng) >> 8) / 16777216.0f; }
uint64_t rng_below(Rng *rng, uint64_t n) {
    uint64_t r = ((uint64_t)rng_u32(rng) << 32) | rng_u32(rng);
    return r % n;
}
float rng_normal(Rng *rng) {
    float u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

volatile sig_atomic_t qc_stop_signal = 0;

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint8_t *read_file(const char *path, size_t *size_out) {
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever; it is
     * refused below with every other file that is not a regular one */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { qc_error("%s: %s", path, strerror(errno)); return NULL; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        qc_error("%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *data = qc_malloc(size + 1, path);
    if (!data) { close(fd); return NULL; }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, data + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            qc_error("%s: read failed: %s", path, r < 0 ? strerror(errno) : "the file shrank while read");
            free(data);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    data[size] = 0;
    *size_out = size;
    return data;
}

/* Temporary names carry host and pid ("x.tmp.HOST.PID.XXXXXX") so a resumed sweep can delete
 * the leftovers of killed processes without touching a live writer's file on a shared disk. */
static void host_for_names(char *host, size_t size) {
    snprintf(host, size, "host");
    gethostname(host, size - 1);
    host[size - 1] = 0;
    for (char *c = host; *c; c++)
        if (*c == '.' || *c == '/') *c = '_';
}

int process_owner_tag(char *out, size_t size) {
    char host[64];
    host_for_names(host, sizeof host);
    return snprintf(out, size, "%s.%ld", host, (long)getpid());
}

static char *temporary_name(const char *path) {
    char tag[96];
    process_owner_tag(tag, sizeof tag);
    size_t len = strlen(path) + strlen(tag) + 16;
    char *tmp = qc_malloc(len, "temporary file name");
    if (tmp) snprintf(tmp, len, "%s.tmp.%s.XXXXXX", path, tag);
    return tmp;
}

int process_is_gone(const char *tag) {
    char host[64], their_host[64];
    host_for_names(host, sizeof host);
    long pid;
    if (sscanf(tag, "%63[^.].%ld", their_host, &pid) != 2) return 0;
    if (strcmp(their_host, host) != 0) return 0; /* another machine's process: not ours to judge */
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int is_stale_temporary(const char *name) {
    const char *mark = strstr(name, ".tmp.");
    return mark && process_is_gone(mark + 5);
}

/* A rename (or link) is an entry in the directory: until the directory itself is synced a power
 * cut can lose it, and with it a finished record. File systems that cannot sync a directory
 * (EINVAL) order the entry with the data anyway. */
static int sync_directory_of(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { qc_error("%s: cannot sync its directory: %s", path, strerror(errno)); return -1; }
    int rc = fsync(fd) == 0 || errno == EINVAL || errno == ENOTSUP ? 0 : -1;
    if (rc) qc_error("%s: cannot sync its directory: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/* Writes the parts to a fresh temporary beside path and syncs it; its name, or NULL on error. */
static char *write_temporary(const char *path, const void *const *parts, const size_t *sizes, int n_parts) {
    char *tmp = temporary_name(path);
    if (!tmp) return NULL;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        qc_error("%s: cannot write: %s", path, strerror(errno));
        free(tmp);
        return NULL;
    }
    for (int i = 0; i < n_parts; i++) {
        const uint8_t *p = parts[i];
        size_t left = sizes[i];
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                qc_error("%s: write failed: %s", path, w < 0 ? strerror(errno) : "short write");
                close(fd);
                unlink(tmp);
                free(tmp);
                return NULL;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) {
        qc_error("%s: sync failed: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return NULL;
    }
    if (close(fd) != 0) {
        qc_error("%s: cannot finish write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return NULL;
    }
    return tmp;
}

/* rename replaces whatever path names: a regular file is what a checkpoint or record replaces;
 * a device node, a FIFO or a socket (a symlink to one too) must never be renamed over */
static int refuse_special_target(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        qc_error("%s: exists and is not a regular file: not replaced", path);
        return -1;
    }
    return 0;
}

int write_file_atomic_parts(const char *path, const void *const *parts, const size_t *sizes, int n_parts) {
    char *tmp = write_temporary(path, parts, sizes, n_parts);
    if (!tmp) return -1;
    int refused = refuse_special_target(path) != 0;
    if (refused || rename(tmp, path) != 0) {
        if (!refused) qc_error("%s: cannot finish write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return sync_directory_of(path);
}

int write_file_new(const char *path, const void *data, size_t size) {
    const void *parts[1] = {data};
    size_t sizes[1] = {size};
    char *tmp = write_temporary(path, parts, sizes, 1);
    if (!tmp) return -1;
    /* link, unlike rename, fails when path exists: of writers racing, exactly one creates it,
     * and a reader never sees it half-written */
    int rc = 0;
    if (link(tmp, path) != 0) {
        rc = errno == EEXIST ? 1 : -1;
        if (rc < 0) qc_error("%s: cannot create: %s", path, strerror(errno));
    }
    unlink(tmp);
    free(tmp);
    return rc == 0 ? sync_directory_of(path) : rc;
}

int atomic_file_open(AtomicFile *f, const char *path) {
    f->fd = -1;
    f->path = strdup(path);
    f->tmp = temporary_name(path);
    if (!f->path || !f->tmp) {
        free(f->path), free(f->tmp);
        f->path = f->tmp = NULL;
        qc_error("%s: out of memory", path);
        return -1;
    }
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        qc_error("%s: cannot write: %s", path, strerror(errno));
        atomic_file_discard(f);
        return -1;
    }
    return 0;
}

int atomic_file_printf(AtomicFile *f, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) { qc_error("%s: a line longer than %zu bytes", f->path, sizeof line - 1); return -1; }
    const char *p = line;
    size_t left = (size_t)n;
    while (left > 0) {
        ssize_t w = write(f->fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            qc_error("%s: write failed: %s", f->path, w < 0 ? strerror(errno) : "short write");
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    return 0;
}

int atomic_file_commit(AtomicFile *f) {
    if (fchmod(f->fd, 0644) != 0 || fsync(f->fd) != 0) {
        qc_error("%s: sync failed: %s", f->path, strerror(errno));
        return -1;
    }
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) {
        qc_error("%s: cannot finish write: %s", f->path, strerror(errno));
        return -1;
    }
    if (refuse_special_target(f->path) != 0) return -1;
    if (rename(f->tmp, f->path) != 0) {
        qc_error("%s: cannot finish write: %s", f->path, strerror(errno));
        return -1;
    }
    free(f->tmp); /* renamed: nothing left to discard */
    f->tmp = NULL;
    return sync_directory_of(f->path);
}

void atomic_file_discard(AtomicFile *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    f->fd = -1;
    f->tmp = f->path = NULL;
}

int write_file_atomic(const char *path, const void *data, size_t size) {
    const void *parts[1] = {data};
    size_t sizes[1] = {size};
    return write_file_atomic_parts(path, parts, sizes, 1);
}

int check_writable(const char *path) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        qc_error("%s: is a directory", path);
        return -1;
    }
    char *tmp = temporary_name(path);
    if (!tmp) return -1;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        qc_error("%s: cannot write: %s", path, strerror(errno));
        free(tmp);
        return -1;
    }
    close(fd);
    unlink(tmp);
    free(tmp);
    return 0;
}

int check_output_path(const char *path) {
    struct stat st;
    if (!path[0]) {
        qc_error("an empty path");
        return -1;
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        const char *kind = S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                         : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "not a regular file";
        qc_error("%s exists and is %s: refusing to replace it", path, kind);
        return -1;
    }
    return 0;
}

void remove_stale_temporaries_of(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    size_t len = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        /* PATH.tmp.HOST.PID.XXXXXX of a process of this host that is gone */
        if (strncmp(e->d_name, base, len) != 0 || strncmp(e->d_name + len, ".tmp.", 5) != 0) continue;
        if (!process_is_gone(e->d_name + len + 5)) continue;
        char file[4096 + 256];
        snprintf(file, sizeof file, "%s/%s", dir, e->d_name);
        unlink(file);
    }
    closedir(d);
}

/* Decimal digits only: strtol and strtod also take leading blanks, and strtod hexadecimal
 * ("0x10" is 16), "inf", "nan" and "infinity", none of which a flag means */
static int plain_decimal(const char *text, int real) {
    if (!text || !*text) return 0;
    for (const char *c = text; *c; c++)
        if (!(*c >= '0' && *c <= '9') && *c != '-' && *c != '+' && !(real && (*c == '.' || *c == 'e' || *c == 'E'))) return 0;
    return 1;
}

int parse_int(const char *flag, const char *text, long min, long max, long *out) {
    if (text && strlen(text) > 20) { /* longer than any long, leading zeros or not */
        qc_error("%s: expected an integer, got '%.20s...' (%zu characters)", flag, text, strlen(text));
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long v = plain_decimal(text, 0) ? strtol(text, &end, 10) : 0;
    if (!plain_decimal(text, 0) || *end || errno) {
        qc_error("%s: expected an integer, got '%s'", flag, text ? text : "");
        return -1;
    }
    if (v < min || v > max) {
        qc_error("%s: %ld is out of range [%ld, %ld]", flag, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int parse_float(const char *flag, const char *text, double min, double max, double *out) {
    char *end = NULL;
    errno = 0;
    double v = plain_decimal(text, 1) ? strtod(text, &end) : 0;
    if (!plain_decimal(text, 1) || *end || errno || !isfinite(v)) {
        qc_error("%s: expected a number, got '%s'", flag, text ? text : "");
        return -1;
    }
    if (v < min || v > max) {
        qc_error("%s: %g is out of range [%g, %g]", flag, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}
