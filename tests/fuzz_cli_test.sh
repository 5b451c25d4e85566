#!/bin/sh
# fuzz_cli_test: every subcommand's every flag (read from its --help, so a new flag is fuzzed the
# day it is added) fed a table of bad values by the flag's kind — empty, negative, huge, NaN, inf,
# trailing garbage; for paths a directory, a FIFO, a missing file, a name too long, a corrupt
# file — plus stdout on /dev/full or closed, and OMP_NUM_THREADS out of range. Each trial asserts
# the exit status (2 usage, 1 runtime), exactly one line on stderr that starts "qcorr" and names
# the flag or the path at fault, nothing on stdout, nothing new under the test's directory (every
# trial runs there, so a file dropped in the working directory counts) and every FIFO still a FIFO.
# Never a device as --out: only stdout is sent to /dev/full.
# Prints "ok - ..." only for failures' context, "FAIL - ..." per failed trial, a count line
# "fuzz: tried N bad inputs: C clear errors, D defects" and ends with "fuzz: N passed, M failed".
# Run from the repository root: QCORR=build/qcorr sh tests/fuzz_cli_test.sh
set -u
set -f # values are used verbatim, never globbed

QCORR=${QCORR:-build/qcorr}
case $QCORR in /*) ;; *) QCORR=$PWD/$QCORR ;; esac
unset QCORR_DATA
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # set, so qcorr does not re-execute itself to set it: half the start-up
export OMP_NUM_THREADS OMP_WAIT_POLICY
TIMEOUT=10 # a trial that hangs (a FIFO read, a runaway thread count) fails instead of stalling

passed=0
failed=0
tried=0   # trials of bad input
defects=0 # trials whose answer was not a clear error
T=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-fuzz.XXXXXX") || { echo "FAIL - mktemp"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
T=$(cd "$T" && pwd -P)
IO=$T.io # each trial's stdout/stderr and listings: outside the watched tree
mkdir "$IO" || { echo "FAIL - mkdir $IO"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
trap 'rm -rf "$T" "$IO"' EXIT
trap 'exit 1' INT TERM

ok() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    shift
    for line in "$@"; do printf '%s\n' "$line" | sed 's/^/#   /'; done
}
show() { cut -c 1-240 "$1" | sed 's/^/#   | /' | head -n 4; }

if [ ! -x "$QCORR" ]; then
    fail "binary $QCORR exists (build it with make)"
    echo "fuzz: $passed passed, $failed failed"
    exit 1
fi

# ---- fixtures (F) and the trials' working directory (W): both watched ----
F=$T/fix
W=$T/work
mkdir "$F" "$W"
# a corpus over 'ab \n' from a fixed LCG (exact in awk's doubles)
awk 'BEGIN { s = 7; split("ab ba aab bab abba b a", w, " "); out = ""
    while (length(out) < 3000) { s = (s * 69069 + 1) % 4294967296; i = int(s / 65536) % 7 + 1
        s = (s * 69069 + 1) % 4294967296; out = out w[i] (int(s / 65536) % 100 < 15 ? "\n" : " ") }
    printf "%s", substr(out, 1, 3000) }' >"$F/ab.txt"
AB=$F/ab.txt
head -c 150 "$AB" >"$F/short.txt"    # a train split, but a validation split under one window of 17
: >"$F/empty.txt"
printf 'not a checkpoint\n' >"$F/text.safetensors"
printf '{"seeds":[1],"seeds":[2]}' >"$F/dup.json"
printf '{"seeds":[1' >"$F/cut.json"
mkdir "$F/dir" "$F/dir.safetensors"
mkfifo "$F/fifo" "$F/fifo.safetensors"
FIFOS="$F/fifo $F/fifo.safetensors"
LONG=$(printf '%05000d' 0) # a path component far past NAME_MAX, and a value past any buffer
TF="--d-model 16 --layers 1 --heads 2 --ctx 16 --batch 4 --steps 3 --quiet"
M=$F/m.safetensors
# shellcheck disable=SC2086
if ! "$QCORR" train --data "$AB" --out "$M" $TF >"$IO/out" 2>"$IO/err"; then
    fail "fixture: train a 16x1 model"; show "$IO/err"
    echo "fuzz: $passed passed, $failed failed"
    exit 1
fi
GRID="--sizes 16x1 --ctx 16 --heads 2 --train-steps 5 --train-batch 4 --steps 2 --batch 4 --calib-tokens 64 --seeds 1 --bits 2 --every 1 --hidden 0 --no-control --quiet"
SWEEP=$F/sweep
# shellcheck disable=SC2086
if ! "$QCORR" sweep $GRID --data "$AB" --out "$SWEEP" >"$IO/out" 2>"$IO/err" || [ ! -s "$SWEEP/summary.csv" ]; then
    fail "fixture: a one-run sweep"; show "$IO/err"
fi
# summary.csv variants the report must refuse: a non-finite number, a run counted twice
mkdir "$F/rep-nan" "$F/rep-inf" "$F/rep-dup" "$F/rep-fifo"
awk -F, -v OFS=, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "loss_quant") c = i } NR == 2 { $c = "nan" } { print }' \
    "$SWEEP/summary.csv" >"$F/rep-nan/summary.csv"
awk -F, -v OFS=, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "loss_float") c = i } NR == 2 { $c = "1e999" } { print }' \
    "$SWEEP/summary.csv" >"$F/rep-inf/summary.csv"
{ cat "$SWEEP/summary.csv"; tail -n 1 "$SWEEP/summary.csv"; } >"$F/rep-dup/summary.csv"
cp "$SWEEP/summary.csv" "$F/rep-fifo/summary.csv"
mkfifo "$F/rep-fifo/report.md"
FIFOS="$FIFOS $F/rep-fifo/report.md"

# ---- one trial ----
# trial CODE NEEDLE DESCRIPTION -- COMMAND...: runs COMMAND in $W (stdin /dev/null, stdout to
# $IO/out unless STDOUT says otherwise); NEEDLE ("" for none) must appear in the one stderr line.
# Written to start few processes (shell tests in place of wc, grep, tr): a thousand trials run
# on a loaded two-core machine.
NL='
'
STDOUT=
trial() {
    code=$1 needle=$2 desc=$3
    shift 4
    tried=$((tried + 1))
    before=$(find "$T" | sort)
    case $STDOUT in
    full) timeout $TIMEOUT "$@" >/dev/full 2>"$IO/err" </dev/null ;;
    closed) timeout $TIMEOUT "$@" >&- 2>"$IO/err" </dev/null ;;
    *) timeout $TIMEOUT "$@" >"$IO/out" 2>"$IO/err" </dev/null ;;
    esac
    rc=$?
    [ -n "$STDOUT" ] && : >"$IO/out"
    after=$(find "$T" | sort)
    err=$(cat "$IO/err"; echo .)
    err=${err%.}
    why=""
    [ "$rc" = "$code" ] || why="$why exit $rc, expected $code;"
    case $err in
    *"$NL"*"$NL"* | "" | *[!"$NL"]) why="$why stderr is not exactly one line;" ;;
    esac
    case $err in qcorr*) ;; *) why="$why stderr does not start with 'qcorr';" ;; esac
    if [ -n "$needle" ]; then
        case $err in *"$needle"*) ;; *) why="$why stderr does not name '$(printf '%.60s' "$needle")';" ;; esac
    fi
    [ -s "$IO/out" ] && why="$why stdout is not empty;"
    if [ "$before" != "$after" ]; then
        printf '%s\n' "$before" >"$IO/before"
        printf '%s\n' "$after" >"$IO/after"
        left=$(comm -13 "$IO/before" "$IO/after")
        [ -n "$left" ] && why="$why left behind: $(printf '%s\n' "$left" | head -n 5 | tr '\n' ' ');"
        # removed, so that the next trial starts from the same tree
        printf '%s\n' "$left" | sort -r | while read -r f; do [ -n "$f" ] && rm -rf "$f"; done
    fi
    for p in $FIFOS; do
        if [ ! -p "$p" ]; then
            why="$why $p is no longer a FIFO;"
            rm -rf "$p"
            mkfifo "$p"
        fi
    done
    if [ -z "$why" ]; then ok
    else
        defects=$((defects + 1))
        fail "$desc" "$why"
        show "$IO/err"
    fi
}

cd "$W" || exit 1 # every trial runs here, so a file dropped in the working directory is seen

# the valid command each subcommand's bad values are added to (the bad value comes last: the
# last of a repeated flag wins); each must succeed on its own, or every trial would be moot
base() {
    case $1 in
    train) echo "train --data $AB --out $W/t.safetensors $TF" ;;
    eval) echo "eval --model $M --data $AB" ;;
    sample) echo "sample --model $M --chars 5 --prompt ab" ;;
    quantize) echo "quantize --model $M --out $W/q.safetensors --quantizer gptq --data $AB --calib-tokens 64" ;;
    correct) echo "correct --model $M --data $AB --steps 2 --batch 4 --calib-tokens 64 --quiet --out $W/c.safetensors" ;;
    sweep) echo "sweep $GRID --data $AB --out $W/sw" ;;
    report) echo "report $SWEEP" ;;
    esac
}
COMMANDS="train eval sample quantize correct sweep report"
for cmd in $COMMANDS; do
    # shellcheck disable=SC2046
    if "$QCORR" $(base $cmd) >"$IO/out" 2>"$IO/err" </dev/null; then ok
    else fail "base command of $cmd succeeds: $(base $cmd)"; show "$IO/err"; fi
    find "$W" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    rm -f "$SWEEP/report.md"
    rm -rf "$SWEEP/plots"
done

# ---- numbers: every N and X flag of every subcommand ----
NUMBERS="'' -7 99999999999999999999 nan inf 12abc 0x10"
for cmd in $COMMANDS; do
    flags=$("$QCORR" $cmd --help 2>/dev/null | sed -n 's/^  \(--[a-z0-9-]*\) [NX] .*/\1/p')
    for flag in $flags; do
        for v in $NUMBERS; do
            [ "$v" = "''" ] && v=""
            # shellcheck disable=SC2046
            trial 2 "$flag" "$cmd $flag '$v'" -- "$QCORR" $(base $cmd) "$flag" "$v"
        done
        trial 2 "$flag" "$cmd $flag= (inline, empty)" -- "$QCORR" $(base $cmd) "$flag="
    done
    # a flag that takes no value, given one
    for flag in $("$QCORR" $cmd --help 2>/dev/null | sed -n 's/^  \(--[a-z0-9-]*\)  .*/\1/p' | grep -v '^--help$'); do
        # shellcheck disable=SC2046
        trial 2 "$flag" "$cmd $flag=1" -- "$QCORR" $(base $cmd) "$flag=1"
    done
done

# ---- strings: by what the flag names ----
# string_values CMD FLAG: lines "CODE|NEEDLE|VALUE" (NEEDLE @ stands for the value itself)
string_values() {
    case "$1 $2" in
    "train --out" | "quantize --out" | "correct --out")
        echo "2|--out|"
        echo "2|@|$F/dir"
        echo "2|@|$F/dir.safetensors"
        echo "2|@|$F/fifo.safetensors"
        echo "1|@|$F/none/m.safetensors"
        echo "1|@|$AB/m.safetensors"
        echo "1|$F/0000000000|$F/$LONG.safetensors" ;;
    "sweep --out")
        echo "2|--out|"
        echo "2|@|$F/fifo"
        echo "2|@|$AB"
        echo "1|@|$AB/sub" ;;
    *" --model" | *" --reference")
        echo "2|$2|"
        echo "1|@|$F/dir.safetensors"
        echo "1|@|$F/fifo.safetensors"
        echo "1|@|$F/none.safetensors"
        echo "1|@|$F/text.safetensors"
        echo "1|@|$AB"
        echo "1|$F/0000000000|$F/$LONG.safetensors" ;;
    *" --data")
        echo "2|--data|"
        echo "1|@|$F/dir"
        echo "1|@|$F/fifo"
        echo "1|@|$F/none.txt"
        echo "1|@|$F/empty.txt"
        echo "1|$F/0000000000|$F/$LONG.txt"
        [ "$1" != quantize ] && echo "1|@|$F/short.txt" ;;
    "sweep --grid")
        echo "2|--grid|"
        echo "1|@|$F/dir"
        echo "1|@|$F/fifo"
        echo "1|@|$F/none.json"
        echo "2|@|$F/dup.json"
        echo "2|@|$F/cut.json" ;;
    "sample --prompt")
        echo "1|--prompt|z" ;;
    "sweep --seeds" | "sweep --bits" | "sweep --every" | "sweep --hidden" | "sweep --correction-bits" | \
        "sweep --corrected-bits" | "sweep --steps" | "sweep --calib-tokens")
        for v in "" "," "2,,4" ",2" "2," "nan" "-7" "99999999999999999999" "2x" "2,2" "1e3" " 2"; do echo "2|$2|$v"; done ;;
    "sweep --sizes")
        for v in "" "," "16x1,,24x1" "16x" "x1" "0x1" "16x1:0" "16x1:abc" "16x1:" "16x1,16x1" "16x1x2" "$LONG"; do echo "2|$2|$v"; done ;;
    "sweep --shard")
        for v in "" "0/1" "2/1" "1/0" "a/b" "1/2x" "1" "-1/2"; do echo "2|$2|$v"; done ;;
    *)  # names from a table or a small grammar (granularity, scope, quantizer, method, ...)
        for v in "" "bogus" "nan" "-7" "$LONG"; do echo "2|$2|$v"; done ;;
    esac
}
for cmd in $COMMANDS; do
    for flag in $("$QCORR" $cmd --help 2>/dev/null | sed -n 's/^  \(--[a-z0-9-]*\) S .*/\1/p'); do
        string_values $cmd $flag >"$IO/values"
        while IFS='|' read -r code needle v; do
            [ "$needle" = "@" ] && needle=$v
            # shellcheck disable=SC2046
            trial "$code" "$needle" "$cmd $flag '$(printf '%.60s' "$v")'" -- "$QCORR" $(base $cmd) "$flag" "$v" </dev/null
        done <"$IO/values"
    done
done

# ---- report's one argument, DIR ----
trial 2 "DIR" "report ''" -- "$QCORR" report ""
for d in "$F/none" "$F/fifo" "$AB" "$F/dir"; do trial 1 "$d" "report $d" -- "$QCORR" report "$d"; done
trial 1 "line 2" "report: summary.csv with loss_quant nan" -- "$QCORR" report "$F/rep-nan"
trial 1 "line 2" "report: summary.csv with loss_float 1e999 (inf)" -- "$QCORR" report "$F/rep-inf"
trial 1 "line 3" "report: summary.csv with a run id twice" -- "$QCORR" report "$F/rep-dup"
trial 2 "report.md" "report: DIR/report.md is a FIFO" -- "$QCORR" report "$F/rep-fifo"
trial 2 "" "report: two DIRs" -- "$QCORR" report "$SWEEP" "$SWEEP"

# ---- stdout lost: every command that prints, its help too ----
for STDOUT in full closed; do
    D=$IO/outputs # outputs of commands that succeed up to their printing: outside the watched tree
    mkdir -p "$D/rep"
    trial 1 "stdout" "qcorr --help, stdout $STDOUT" -- "$QCORR" --help
    for cmd in $COMMANDS; do trial 1 "stdout" "$cmd --help, stdout $STDOUT" -- "$QCORR" $cmd --help; done
    trial 1 "stdout" "train --json, stdout $STDOUT" -- "$QCORR" train --data "$AB" --out "$D/t.safetensors" $TF --json
    trial 1 "stdout" "eval, stdout $STDOUT" -- "$QCORR" eval --model "$M" --data "$AB"
    trial 1 "stdout" "eval --json, stdout $STDOUT" -- "$QCORR" eval --model "$M" --data "$AB" --json
    trial 1 "stdout" "sample, stdout $STDOUT" -- "$QCORR" sample --model "$M" --chars 5
    trial 1 "stdout" "sample --chars 100000000, stdout $STDOUT (stops at the first failed write)" -- "$QCORR" sample --model "$M" --chars 100000000
    trial 1 "stdout" "quantize, stdout $STDOUT" -- "$QCORR" quantize --model "$M" --out "$D/q.safetensors"
    trial 1 "stdout" "quantize --json, stdout $STDOUT" -- "$QCORR" quantize --model "$M" --out "$D/q.safetensors" --json
    trial 1 "stdout" "correct --json, stdout $STDOUT" -- "$QCORR" correct --model "$M" --data "$AB" --steps 2 --batch 4 --calib-tokens 64 --quiet --json
    trial 1 "stdout" "correct, stdout $STDOUT" -- "$QCORR" correct --model "$M" --data "$AB" --steps 2 --batch 4 --calib-tokens 64 --quiet
    # shellcheck disable=SC2086
    trial 1 "stdout" "sweep --dry-run, stdout $STDOUT" -- "$QCORR" sweep $GRID --data "$AB" --out "$D/sw" --dry-run
    cp "$SWEEP/summary.csv" "$D/rep/"
    trial 1 "stdout" "report, stdout $STDOUT" -- "$QCORR" report "$D/rep"
    trial 1 "stdout" "report --json, stdout $STDOUT" -- "$QCORR" report "$D/rep" --json
    rm -rf "$D"
done
STDOUT=

# ---- OMP_NUM_THREADS: refused like --threads, one line of qcorr's own ----
for cmd in $COMMANDS; do
    for v in 0 abc -1 100000 5000 "" "2,x" " 2"; do
        # shellcheck disable=SC2046
        trial 2 "OMP_NUM_THREADS" "$cmd with OMP_NUM_THREADS='$v'" -- env OMP_NUM_THREADS="$v" "$QCORR" $(base $cmd)
    done
done

echo "fuzz: tried $tried bad inputs: $((tried - defects)) clear errors, $defects defects"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
