#!/bin/sh
# Runs every cmocka suite given as arguments, then the command-line and sweep tests, and closes with one
# line "N passed, N failed, N skipped", after the reason of every skip ("skip - ..." lines: a cmocka
# test skips through skip_because, tests/testutil.h; a shell suite prints the line itself). A cmocka
# suite that skips more tests than it names reasons for fails. Exits non-zero if anything failed or a
# suite crashed.
passed=0; failed=0; skipped=0; crashed=""; reasons=""
# note_skips OUTPUT: adds the output's "skip - " lines to the reasons and sets named to their count
note_skips() {
    lines=$(printf '%s\n' "$1" | grep '^skip - ')
    named=0
    if [ -n "$lines" ]; then
        reasons="$reasons$lines
"
        named=$(printf '%s\n' "$lines" | wc -l | tr -d ' ')
    fi
}
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' | tail -n 1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' | tail -n 1)
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test(s).*/\1/p' | tail -n 1)
    note_skips "$out"
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
    if [ "${s:-0}" -gt "$named" ]; then
        echo "FAIL - $t skipped ${s:-0} test(s) and named a reason for $named (skip_because, tests/testutil.h)"
        failed=$((failed + 1))
    fi
    if [ $rc -ne 0 ] && [ -z "$f" ]; then crashed="$crashed $t"; failed=$((failed + 1)); fi
done
# shell_suite NAME FILE: runs a shell suite that closes with "NAME: N passed, M failed" (its "skip - "
# lines are its skips); a suite that is not there fails (passing it unseen would hide a whole suite)
shell_suite() {
    if [ ! -f "$2" ]; then
        echo "FAIL - shell suite $2 is missing"
        crashed="$crashed $2"
        failed=$((failed + 1))
        return
    fi
    out=$(sh "$2" 2>&1); rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E "^$1: [0-9]+ passed, [0-9]+ failed\$" | tail -n 1)
    p=$(printf '%s' "$line" | sed -n "s/^$1: \([0-9]*\) passed.*/\1/p")
    f=$(printf '%s' "$line" | sed -n 's/.* \([0-9]*\) failed$/\1/p')
    note_skips "$out"
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + named))
    if [ $rc -ne 0 ] && [ "${f:-0}" = 0 ]; then crashed="$crashed $2"; failed=$((failed + 1)); fi
}
shell_suite cli tests/cli_test.sh
shell_suite fuzz tests/fuzz_cli_test.sh
shell_suite sweep tests/sweep_test.sh
shell_suite layout tests/layout_test.sh
shell_suite kernels tests/kernels_test.sh
[ -n "$crashed" ] && echo "crashed or failed to report:$crashed"
[ -n "$reasons" ] && printf 'skipped:\n%s' "$reasons"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
