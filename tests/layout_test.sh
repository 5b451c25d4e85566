#!/bin/sh
# layout_test: the rules of the house that no compiler checks (docs/DESIGN.md) — the library never ends
# the process (only the CLI decides), src/ is in folders by layer and its includes point down the
# layers, the report reads files and includes nothing of the model, no source file in src/ is over
# 600 lines, and the test runner cannot pass a suite it did not run nor hide a skip.
# Prints "ok - ..." / "FAIL - ..." per check and ends with "layout: N passed, M failed".
# Run from the repository root after a build: BUILD=build sh tests/layout_test.sh
set -u

BUILD=${BUILD:-build}
CC=${CC:-cc}
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    shift
    for line in "$@"; do printf '%s\n' "$line" | sed 's/^/#   /'; done
}

# ---- the library never calls exit: its errors return -1 up to the CLI (nm: what it links to)
LIB=$BUILD/libqcorr.a
if [ ! -f "$LIB" ]; then
    fail "the library $LIB exists (build it with make)"
else
    calls=$(nm -A -u "$LIB" 2>/dev/null | grep -E ' U (exit|_exit|_Exit|quick_exit|abort)$' | sed 's/:[^:]* U / calls /' | sort -u)
    if [ -z "$calls" ]; then ok "no object of $LIB calls exit, _exit, _Exit, quick_exit or abort"
    else fail "no object of $LIB calls exit, _exit, _Exit, quick_exit or abort" "$calls"; fi
fi

# ---- layers point down (docs/DESIGN.md: Layers): every source file of src/ sits in the folder of its
# layer, none at the top of src/ (the build compiles src/<layer>/*.c only), and it includes headers of
# its own layer or of the layers before it, written relative to src/ ("nn/model.h"). The order is the
# one the includes need; the one exception is the model's forward, which fake-quantizes the inputs of
# the quantized matrices (nn/actquant.c, the forward's activation quantization, includes quant/fakequant.h).
LAYERS="base tables kernels nn quant correct io sweep report cli"
LAYER_EXCEPTIONS="src/nn/actquant.c:quant/fakequant.h"
misplaced=$(find src -name '*.[ch]' | sort | awk -v layers="$LAYERS" '
    BEGIN { n = split(layers, l, " "); for (i = 1; i <= n; i++) known[l[i]] = 1 }
    { k = split($0, p, "/"); if (k != 3 || !(p[2] in known)) print $0 }')
n=$(find src -name '*.[ch]' | wc -l | tr -d ' ')
if [ "$n" -gt 0 ] && [ -z "$misplaced" ]; then ok "every file of src/ is in a layer's folder, none at the top ($n files; layers: $LAYERS)"
else fail "every file of src/ is in a layer's folder (src/<layer>/<file>; layers: $LAYERS)" "$misplaced"; fi
# shellcheck disable=SC2046
upward=$(awk -v layers="$LAYERS" -v exceptions="$LAYER_EXCEPTIONS" '
    BEGIN {
        n = split(layers, l, " "); for (i = 1; i <= n; i++) rank[l[i]] = i
        m = split(exceptions, e, " "); for (i = 1; i <= m; i++) allowed[e[i]] = 1
    }
    /^[ \t]*#[ \t]*include[ \t]*"/ {
        inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
        split(FILENAME, p, "/"); from = p[2]; to = inc; sub(/\/.*/, "", to)
        where = FILENAME ":" FNR ": "
        if (!(from in rank)) next
        if (index(inc, "/") == 0 || !(to in rank)) print where "\"" inc "\" is not written relative to src/ (\"" from "/...\")"
        else if (rank[to] > rank[from] && !((FILENAME ":" inc) in allowed)) print where from " includes " inc ", a layer above it"
    }' $(find src -name '*.[ch]' | sort))
if [ -z "$upward" ]; then ok "every include of src/ points down the layers (or within one), relative to src/"
else fail "every include of src/ points down the layers (or within one), relative to src/" "$upward"; fi
# tests/, bench/ and fuzz/ sit above the library and name its headers the same way
# shellcheck disable=SC2046
relative=$(grep -n -E '^[ \t]*#[ \t]*include[ \t]*"\.\./' $(find tests bench fuzz -name '*.[ch]' | sort) 2>/dev/null)
if [ -z "$relative" ]; then ok "tests/, bench/ and fuzz/ include the library's headers relative to src/"
else fail "tests/, bench/ and fuzz/ include the library's headers relative to src/" "$relative"; fi

# ---- the report (and the tables it shares) includes nothing of the model: the headers its sources
# pull in, transitively, as the compiler sees them, are of base, tables and report only; so the report
# reads files, and a change to the model cannot change it
REPORT_SOURCES=$(ls src/report/*.c src/tables/*.c 2>/dev/null)
if [ -z "$REPORT_SOURCES" ]; then
    fail "the report's sources exist (src/report/*.c)"
else
    # shellcheck disable=SC2086
    if deps=$($CC -std=c11 -D_GNU_SOURCE -Isrc -MM $REPORT_SOURCES 2>&1); then
        bad=$(printf '%s\n' "$deps" | tr ' \\' '\n\n' | grep -E '^src/.*\.h$' | grep -v -E '^src/(base|tables|report)/' | sort -u | tr '\n' ' ')
        if [ -z "$bad" ]; then ok "the report's sources include headers of base, tables and report only (nothing of the model)"
        else fail "the report's sources include headers of base, tables and report only (nothing of the model)" "included: $bad"; fi
    else
        fail "the report's sources preprocess" "$deps"
    fi
fi

# ---- files a newcomer can hold
long=$(find src -name '*.[ch]' -exec wc -l {} + | awk '$2 != "total" && $1 > 600 { print $2 " (" $1 " lines)" }')
n=$(find src -name '*.[ch]' | wc -l | tr -d ' ')
if [ "$n" -gt 0 ] && [ -z "$long" ]; then ok "no file of src/ is over 600 lines ($n files)"
else fail "no file of src/ is over 600 lines" "$long"; fi

# ---- the repository stands alone: no tracked file cites a specification outside it (its README and
# docs/DESIGN.md say it all) or a directory beside the checkout. The one path outside it that may
# appear is the corpus's last search location (README: Data), which a clone simply does not find.
# (The patterns are split so that this file does not match them.)
CORPUS_BESIDE="../shared/data/tinyshakespeare.txt"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    spec=$(git grep -n -I -E "S""PEC(\.md| sections?\b| ?§|\s*\$)" -- . 2>/dev/null | head -n 5)
    beside=$(git grep -n -I -F "../sha""red" -- . 2>/dev/null | sed "s|$CORPUS_BESIDE||g" | grep -F "../sha""red" | head -n 5)
    if [ -z "$spec" ]; then ok "no tracked file cites a specification section or file outside the repository"
    else fail "no tracked file cites a specification section or file outside the repository" "$spec"; fi
    if [ -z "$beside" ]; then ok "no tracked file refers to ../sha""red other than the corpus search location"
    else fail "no tracked file refers to ../sha""red other than the corpus search location" "$beside"; fi
else
    echo "skip - self-contained repository: not a git checkout (git grep reads the tracked files)"
fi

# ---- ops in one hop: `make tags` indexes every kernel body (KERNEL(name) in kernels_gemm.h and
# kernels_ops.h) under its own name
if ctags --version 2>/dev/null | grep -q 'Universal Ctags'; then
    TG=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-tags.XXXXXX")
    if make -s --no-print-directory tags TAGS_DIR="$TG" >"$TG/out" 2>&1 && [ -s "$TG/tags" ]; then
        bodies=$(sed -n 's/^static [a-z ]*KERNEL(\([a-z_0-9]*\))(.*/\1/p' src/kernels/kernels_gemm.h src/kernels/kernels_ops.h | sort -u)
        missing=""
        for name in $bodies; do
            grep -q "^$name	src/kernels/kernels_[a-z]*\.h	" "$TG/tags" || missing="$missing $name"
        done
        n=$(printf '%s\n' "$bodies" | grep -c .)
        if [ "$n" -ge 10 ] && [ -z "$missing" ]; then ok "make tags indexes all $n kernel bodies under their own names"
        else fail "make tags indexes every kernel body under its own name" "$n bodies found; missing:$missing"; fi
    else
        fail "make tags runs" "$(head -n 3 "$TG/out")"
    fi
    rm -rf "$TG"
else
    echo "skip - make tags: no Universal Ctags here (Debian: universal-ctags)"
fi

# ---- the runner: a shell suite that is missing fails the run, it does not pass it unseen
# (run_all.sh copied alone into an empty tree: every suite it names is missing there)
H=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-layout.XXXXXX") || { fail "mktemp"; H=""; }
if [ -n "$H" ]; then
    mkdir "$H/tests" && cp tests/run_all.sh "$H/tests/"
    out=$(cd "$H" && sh tests/run_all.sh 2>&1)
    rc=$?
    if [ $rc != 0 ] && printf '%s\n' "$out" | grep -q "tests/cli_test.sh"; then ok "run_all.sh fails when a shell suite is missing (exit $rc, naming it)"
    else fail "run_all.sh fails when a shell suite is missing" "exit $rc: $(printf '%s\n' "$out" | tail -n 2 | tr '\n' ' ')"; fi
    # a skip is counted and its reason shown; a cmocka skip without a reason fails the run (fake
    # suites: scripts that print what a cmocka suite and a shell suite print)
    for n in cli fuzz_cli sweep layout kernels; do printf 'echo "%s: 0 passed, 0 failed"\n' "${n%_cli}" >"$H/tests/${n}_test.sh"; done
    printf 'echo "skip - the sweep suite: no corpus"\necho "sweep: 1 passed, 0 failed"\n' >"$H/tests/sweep_test.sh"
    printf '#!/bin/sh\necho "skip - test_x: no corpus"\necho "[  PASSED  ] 2 test(s)."\necho "[  SKIPPED ] 1 test(s), listed below:"\n' >"$H/named"
    printf '#!/bin/sh\necho "[  PASSED  ] 2 test(s)."\necho "[  SKIPPED ] 1 test(s), listed below:"\n' >"$H/unnamed"
    chmod +x "$H/named" "$H/unnamed"
    out=$(cd "$H" && sh tests/run_all.sh "$H/named" 2>&1)
    rc=$?
    last=$(printf '%s\n' "$out" | tail -n 1)
    if [ $rc = 0 ] && [ "$last" = "3 passed, 0 failed, 2 skipped" ] && printf '%s\n' "$out" | grep -q "^skip - test_x: no corpus"; then
        ok "run_all.sh counts cmocka and shell skips in its closing line and lists their reasons ($last)"
    else fail "run_all.sh counts cmocka and shell skips in its closing line" "exit $rc: $(printf '%s\n' "$out" | tail -n 4 | tr '\n' ' ')"; fi
    out=$(cd "$H" && sh tests/run_all.sh "$H/unnamed" 2>&1)
    rc=$?
    if [ $rc != 0 ] && printf '%s\n' "$out" | grep -q "^FAIL - .*unnamed skipped 1 test(s) and named a reason for 0"; then
        ok "run_all.sh fails a suite that skips a test without naming why (exit $rc)"
    else fail "run_all.sh fails a suite that skips a test without naming why" "exit $rc: $(printf '%s\n' "$out" | tail -n 3 | tr '\n' ' ')"; fi
    rm -rf "$H"
fi

echo "layout: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
