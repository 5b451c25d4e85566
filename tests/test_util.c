/* test_util: the file primitives every writer and reader goes through — read_file refuses what is
 * not a regular file without waiting on it. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_file_refuses_fifo_without_waiting),
        cmocka_unit_test(test_read_file_types),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
