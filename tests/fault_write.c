/* fault_write: an LD_PRELOAD shim that simulates a full disk for the sweep test.
 *
 *   FAULT_WRITE_PREFIX  absolute, symlink-free path prefix (e.g. /tmp/x/runs/); only write()s to
 *                       files whose /proc/self/fd path starts with it are counted
 *   FAULT_WRITE_BUDGET  bytes such files may receive in this process; past it write() fails with
 *                       ENOSPC (the write that crosses the budget is cut short, as a real disk does)
 *
 * Build: cc -shared -fPIC -o fault_write.so tests/fault_write.c -ldl
 * Only write() is interposed: it is what write_file_atomic and AtomicFile (the training log) use.
 * stdio inside glibc calls its internal __write, which this shim does not see. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static long long used; /* bytes written under the prefix so far */

ssize_t write(int fd, const void *buf, size_t n) {
    if (!real_write) {
        real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
        if (!real_write) { errno = ENOSYS; return -1; }
    }
    const char *prefix = getenv("FAULT_WRITE_PREFIX"), *budget_text = getenv("FAULT_WRITE_BUDGET");
    if (!prefix || !*prefix || !budget_text || fd <= 2) return real_write(fd, buf, n);
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int saved = errno;
    ssize_t k = readlink(link, path, sizeof path - 1);
    errno = saved;
    if (k <= 0) return real_write(fd, buf, n);
    path[k] = 0;
    if (strncmp(path, prefix, strlen(prefix)) != 0) return real_write(fd, buf, n);
    long long budget = atoll(budget_text);
    long long left = budget - __atomic_load_n(&used, __ATOMIC_SEQ_CST);
    if (left <= 0) {
        errno = ENOSPC;
        return -1;
    }
    if ((long long)n > left) n = (size_t)left;
    ssize_t w = real_write(fd, buf, n);
    if (w > 0) __atomic_add_fetch(&used, (long long)w, __ATOMIC_SEQ_CST);
    return w;
}
