/* test_util: the file primitives every writer and reader goes through — read_file refuses what is
 * not a regular file without waiting on it; no writer replaces what is not a regular file; stale
 * temporaries of dead processes are cleared; flag numbers are plain decimals; every atomic write
 * syncs the directory after its rename (fsync is interposed below to watch it). */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ============================ read_file ============================ */

/* A FIFO with no writer: opening it for reading would block forever, so read_file must refuse it
 * by its type first. The alarm turns a hang into a failure (SIGALRM ends the suite). */
static void test_read_file_refuses_fifo_without_waiting(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/pipe", test_tmpdir());
    assert_int_equal(mkfifo(path, 0644), 0);
    size_t size;
    alarm(10);
    uint8_t *data = read_file(path, &size);
    alarm(0);
    assert_null(data);
    if (!strstr(qc_last_error(), path) || !strstr(qc_last_error(), "not a regular file")) fail_msg("error: %s", qc_last_error());
    unlink(path);
}

/* A directory and a missing file are refused naming the path; a regular file reads whole. */
static void test_read_file_types(void **state) {
    (void)state;
    size_t size;
    assert_null(read_file(test_tmpdir(), &size));
    if (!strstr(qc_last_error(), "not a regular file")) fail_msg("directory: %s", qc_last_error());
    char path[1024];
    snprintf(path, sizeof path, "%s/missing", test_tmpdir());
    assert_null(read_file(path, &size));
    if (!strstr(qc_last_error(), path)) fail_msg("missing: %s", qc_last_error());
    snprintf(path, sizeof path, "%s/text", test_tmpdir());
    assert_int_equal(write_file_atomic(path, "abc\ndef", 7), 0);
    uint8_t *data = read_file(path, &size);
    assert_non_null(data);
    assert_int_equal(size, 7);
    assert_memory_equal(data, "abc\ndef", 8); /* and a NUL after the bytes */
    free(data);
}

/* ============================ outputs that are not regular files ============================ */

static int count_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* rename replaces whatever the path names: as root, `--out /dev/null` renamed a checkpoint over
 * the device. Every atomic writer refuses a path that exists and is not a regular file (a FIFO
 * stands for the device here), leaves it as it was and no temporary beside it. */
static void test_atomic_writes_never_replace_a_fifo(void **state) {
    (void)state;
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/special", test_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    assert_int_equal(mkfifo(path, 0644), 0);
    qc_clear_error();
    assert_int_equal(write_file_atomic(path, "abc", 3), -1);
    if (!strstr(qc_last_error(), path) || !strstr(qc_last_error(), "not a regular file")) fail_msg("write_file_atomic: %s", qc_last_error());
    AtomicFile f;
    assert_int_equal(atomic_file_open(&f, path), 0);
    assert_int_equal(atomic_file_printf(&f, "step,loss\n"), 0);
    assert_int_equal(atomic_file_commit(&f), -1);
    if (!strstr(qc_last_error(), "not a regular file")) fail_msg("atomic_file_commit: %s", qc_last_error());
    atomic_file_discard(&f);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if (!S_ISFIFO(st.st_mode)) fail_msg("%s is no longer a FIFO", path);
    assert_int_equal(count_temporaries(dir), 0);
}

/* The check before any work: an empty path, a directory or a FIFO is refused, naming what it is;
 * a regular file (replaced) and a new name are fine. */
static void test_check_output_path(void **state) {
    (void)state;
    char path[1024];
    assert_int_equal(check_output_path(""), -1);
    if (!strstr(qc_last_error(), "empty")) fail_msg("empty: %s", qc_last_error());
    assert_int_equal(check_output_path(test_tmpdir()), -1);
    if (!strstr(qc_last_error(), "a directory")) fail_msg("directory: %s", qc_last_error());
    snprintf(path, sizeof path, "%s/check.fifo", test_tmpdir());
    assert_int_equal(mkfifo(path, 0644), 0);
    assert_int_equal(check_output_path(path), -1);
    if (!strstr(qc_last_error(), path) || !strstr(qc_last_error(), "a FIFO")) fail_msg("FIFO: %s", qc_last_error());
    snprintf(path, sizeof path, "%s/check.regular", test_tmpdir());
    assert_int_equal(check_output_path(path), 0);
    assert_int_equal(write_file_atomic(path, "x", 1), 0);
    assert_int_equal(check_output_path(path), 0);
}

/* kill -9 mid training leaves m.train.csv.tmp.HOST.PID.XXXXXX that no later run cleared: the
 * temporaries of a path left by dead processes of this host go; a live process's, another
 * host's and another path's stay. */
static void test_stale_temporaries_of_a_path(void **state) {
    (void)state;
    char dir[512], tag[128], path[1024];
    snprintf(dir, sizeof dir, "%s/stale", test_tmpdir());
    assert_int_equal(mkdir(dir, 0755), 0);
    process_owner_tag(tag, sizeof tag);
    char host[128];
    memcpy(host, tag, sizeof host);
    *strrchr(host, '.') = 0; /* HOST of HOST.PID */
    const char *gone[] = {"m.train.csv.tmp.%s.99999999.AbCdEf"};
    const char *kept[] = {"m.train.csv.tmp.%s.%ld.GhIjKl", "m.train.csv.tmp.otherhost.99999999.MnOpQr", "n.train.csv.tmp.%s.99999999.StUvWx"};
    char name[400];
    snprintf(name, sizeof name, gone[0], host);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(write_file_atomic(path, "", 0), 0);
    for (int i = 0; i < 3; i++) {
        if (i == 0) snprintf(name, sizeof name, kept[0], host, (long)getpid());
        else if (i == 1) snprintf(name, sizeof name, "%s", kept[1]);
        else snprintf(name, sizeof name, kept[2], host);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        assert_int_equal(write_file_atomic(path, "", 0), 0);
    }
    snprintf(path, sizeof path, "%s/m.train.csv", dir);
    remove_stale_temporaries_of(path);
    assert_int_equal(count_temporaries(dir), 3);
    snprintf(name, sizeof name, gone[0], host);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, F_OK) == 0) fail_msg("%s (a dead process's) is still there", name);
}

/* ============================ flag numbers ============================ */

/* Decimal numbers only: strtol and strtod took " 3" (leading blanks), and strtod "0x10" as 16,
 * so --grad-clip 0x10 trained with a clip of 16. */
static void test_flag_numbers_are_plain_decimals(void **state) {
    (void)state;
    const char *bad[] = {"", " 3", "3 ", "0x10", "inf", "nan", "infinity", "1e999", "3x", "--3", "1,5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        long l;
        double d;
        if (parse_int("--n", bad[i], -100, 100, &l) == 0) fail_msg("parse_int took '%s' as %ld", bad[i], l);
        if (parse_float("--x", bad[i], -1e9, 1e9, &d) == 0) fail_msg("parse_float took '%s' as %g", bad[i], d);
        if (!strstr(qc_last_error(), "--x")) fail_msg("'%s': %s", bad[i], qc_last_error());
    }
    long l;
    double d;
    assert_int_equal(parse_int("--n", "-7", -100, 100, &l), 0);
    assert_int_equal(l, -7);
    assert_int_equal(parse_int("--n", "+4", -100, 100, &l), 0);
    assert_int_equal(l, 4);
    assert_int_equal(parse_float("--x", "3e-3", 0, 1, &d), 0);
    assert_true(d == 3e-3);
    assert_int_equal(parse_float("--x", "-.5", -1, 1, &d), 0);
    assert_true(d == -0.5);
}

/* ============================ directory sync ============================ */

/* fsync, interposed: the library's calls land here (the test links libqcorr.a statically). It
 * notes a sync of the watched directory made while the watched file already had its final name,
 * i.e. after the rename: the sync that makes the rename itself survive a power cut. */
static struct {
    const char *dir, *file;
    int synced_after_rename;
} watch;

int fsync(int fd) {
    struct stat st, dir_st, file_st;
    if (watch.dir && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && stat(watch.dir, &dir_st) == 0 &&
        st.st_dev == dir_st.st_dev && st.st_ino == dir_st.st_ino && stat(watch.file, &file_st) == 0)
        watch.synced_after_rename = 1;
    return (int)syscall(SYS_fsync, fd);
}

static void watch_file(char *dir, size_t dir_size, char *file, size_t file_size, const char *name) {
    snprintf(dir, dir_size, "%s/sync-%s", test_tmpdir(), name);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(file, file_size, "%s/%s", dir, name);
    watch.dir = dir;
    watch.file = file;
    watch.synced_after_rename = 0;
}

static void test_atomic_writes_sync_the_directory(void **state) {
    (void)state;
    char dir[512], file[1024];
    watch_file(dir, sizeof dir, file, sizeof file, "record.json");
    assert_int_equal(write_file_atomic(file, "{}", 2), 0);
    if (!watch.synced_after_rename) fail_msg("write_file_atomic: no fsync of %s after the rename", dir);

    watch_file(dir, sizeof dir, file, sizeof file, "manifest.json");
    assert_int_equal(write_file_new(file, "{}", 2), 0);
    if (!watch.synced_after_rename) fail_msg("write_file_new: no fsync of %s after the link", dir);

    watch_file(dir, sizeof dir, file, sizeof file, "m.train.csv");
    AtomicFile log;
    assert_int_equal(atomic_file_open(&log, file), 0);
    assert_int_equal(atomic_file_printf(&log, "step,loss\n1,2.5\n"), 0);
    assert_int_equal(atomic_file_commit(&log), 0);
    atomic_file_discard(&log);
    if (!watch.synced_after_rename) fail_msg("atomic_file_commit: no fsync of %s after the rename", dir);
    watch.dir = NULL;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_file_refuses_fifo_without_waiting),
        cmocka_unit_test(test_read_file_types),
        cmocka_unit_test(test_atomic_writes_never_replace_a_fifo),
        cmocka_unit_test(test_check_output_path),
        cmocka_unit_test(test_stale_temporaries_of_a_path),
        cmocka_unit_test(test_flag_numbers_are_plain_decimals),
        cmocka_unit_test(test_atomic_writes_sync_the_directory),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
