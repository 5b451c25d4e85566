#!/bin/sh
# Runs every cmocka suite given as arguments, then the command-line and sweep tests, and closes with one
# line "N passed, N failed". Exits non-zero if anything failed or a suite crashed.
passed=0; failed=0; crashed=""
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' | tail -n 1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' | tail -n 1)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ $rc -ne 0 ] && [ -z "$f" ]; then crashed="$crashed $t"; failed=$((failed + 1)); fi
done
# shell_suite NAME FILE: runs a shell suite that closes with "NAME: N passed, M failed"; a suite
# that is not there fails (passing it unseen would hide a whole suite)
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
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ $rc -ne 0 ] && [ "${f:-0}" = 0 ]; then crashed="$crashed $2"; failed=$((failed + 1)); fi
}
shell_suite cli tests/cli_test.sh
shell_suite fuzz tests/fuzz_cli_test.sh
shell_suite sweep tests/sweep_test.sh
shell_suite layout tests/layout_test.sh
shell_suite kernels tests/kernels_test.sh
[ -n "$crashed" ] && echo "crashed or failed to report:$crashed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
