#!/bin/sh
# shellcheck disable=SC2086 # $GRID and $SMALL are flag lists, split on purpose
# sweep_test: `qcorr sweep` end to end on a tiny grid (README: Sweeps):
#   1. SIGKILL at several moments (mid float training, mid run, between records, after a
#      quantization) and restart: every run exactly once, no temporaries, rows equal to an
#      uninterrupted reference sweep on every deterministic column (all but seconds_*);
#   2. two shards at once into one directory; --jobs 2 (claims, a dead worker's claim, a live
#      process's claim, SIGTERM to the parent, SIGKILL of a worker, and resume);
#   3. a restart with other settings is refused, naming the key, leaving the directory as it was;
#   4. corrupt records are reported, moved aside and re-run;
#   5. bad input: one line on stderr, exit 2 (usage) or 1 (runtime), nothing created;
#   6. a full disk (LD_PRELOAD shim tests/fault_write.c) while writing checkpoints, records and
#      the summary: one line naming the file, no temporaries, no half record; a rerun completes;
#   7. --dry-run prints the plan and creates nothing.
# Prints "ok - ..." / "FAIL - ..." per check and ends with "sweep: N passed, M failed".
# Run from the repository root (the corpus is found from there): QCORR=build/qcorr sh tests/sweep_test.sh
set -u

QCORR=${QCORR:-build/qcorr}
case $QCORR in /*) ;; *) QCORR=$PWD/$QCORR ;; esac
unset QCORR_DATA
CORPUS=data/tinyshakespeare.txt # the one qcorr finds from the repository root
[ -f "$CORPUS" ] || CORPUS=../shared/data/tinyshakespeare.txt
PY=/usr/bin/python3 # only to check that JSON files parse (skipped where missing)
# the engine is deterministic for a fixed thread count: the reference and every resumed sweep
# must produce the same numbers
OMP_NUM_THREADS=1
export OMP_NUM_THREADS

passed=0
failed=0
BG=""   # background qcorr processes still to reap on exit
T=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-sweep.XXXXXX") || { echo "FAIL - mktemp"; echo "sweep: 0 passed, 1 failed"; exit 1; }
T=$(cd "$T" && pwd -P)
cleanup() { # only our own sweeps that are still running (reaped ones are off the list)
    for p in $BG; do kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
START=$(date +%s)

ok() { passed=$((passed + 1)); echo "ok - $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    shift
    for line in "$@"; do printf '%s\n' "$line" | sed 's/^/#   /'; done
}
show() { sed 's/^/#   | /' "$1" | head -n "${2:-5}"; }

if [ ! -x "$QCORR" ]; then
    fail "binary $QCORR exists (build it with make)"
    echo "sweep: $passed passed, $failed failed"
    exit 1
fi

# The tiny grid: 2 seeds x 2 sizes x (bits 2, 4 and the control arm 32) x every 1 x hidden {0, 8}.
GRID="--sizes 16x1,24x1 --ctx 16 --heads 2 --train-steps 200 --train-batch 8 --steps 8 --batch 4 --calib-tokens 1024 --seeds 1,2 --bits 2,4 --every 1 --hidden 0,8"
TRAIN_STEPS=200
FLOATS="s1_16x1 s1_24x1 s2_16x1 s2_24x1"
for s in 1 2; do
    for z in 16x1 24x1; do
        for b in 2 4 32; do
            for h in 0 8; do echo "s${s}_${z}_b${b}_e1_h${h}_train"; done
        done
    done
done | sort >"$T/expected.ids"
N_RUNS=$(wc -l <"$T/expected.ids" | tr -d ' ')

# ---------------------------------------------------------------- helpers

# run ids recorded in DIR/runs/*.json and listed in DIR/summary.csv (sorted, duplicates kept)
record_ids() { (cd "$1/runs" && for f in *.json; do [ -e "$f" ] && echo "${f%.json}"; done) | sort; }
summary_ids() { [ -f "$1/summary.csv" ] && sed 1d "$1/summary.csv" | cut -d, -f1 | sort; }
n_records() { set -- "$1"/runs/*.json; [ -e "$1" ] && echo $# || echo 0; }
temporaries() { find "$1" -name '*.tmp.*'; }
# a listing of every path and every file's checksum, to prove a directory untouched
snapshot() { (cd "$1" && find . | sort && find . -type f -exec cksum {} + | sort -k 3); }
# CSV with the commas inside quoted fields replaced by ';', so fields split on ','
mask() { awk '{ o = ""; q = 0; for (i = 1; i <= length($0); i++) { c = substr($0, i, 1); if (c == "\"") q = !q; else if (c == "," && q) c = ";"; o = o c } print o }' "$1"; }

# compare_rows REF_CSV CSV [COLUMN_REGEX]: rows of CSV against the reference row with the same
# run_id on every column but seconds_* (or only those matching the regex); prints the
# differences and fails on any.
compare_rows() {
    mask "$1" >"$T/cmp.ref"
    mask "$2" >"$T/cmp.cur"
    awk -F, -v only="${3:-}" '
        FNR == 1 { if (NR == 1) for (i = 1; i <= NF; i++) name[i] = $i; next }
        NR == FNR { ref[$1] = $0; next }
        {
            if (!($1 in ref)) { print "row " $1 " is not in the reference"; bad = 1; next }
            split(ref[$1], r, ",")
            for (i = 1; i <= NF; i++) {
                if (name[i] ~ /^seconds_/ || (only != "" && name[i] !~ only)) continue
                if (($i "") != (r[i] "")) {
                    if (!(name[i] in cols)) { cols[name[i]] = 0; list = list " " name[i] }
                    cols[name[i]]++
                    if (shown++ < 4) print name[i] " of " $1 ": reference " r[i] ", got " $i
                    bad = 1
                }
            }
        }
        END {
            if (list != "") { s = "differing columns:"; n = split(list, L, " "); for (k = 1; k <= n; k++) s = s " " L[k] " (" cols[L[k]] " rows)"; print s }
            exit bad
        }' "$T/cmp.ref" "$T/cmp.cur"
}

# check_complete NAME DIR [EXPECTED_IDS] [REF_CSV [COLUMN_REGEX]]: every run of the grid once in
# runs/ and in summary.csv, no temporaries, and (with REF_CSV) rows equal to the reference's.
check_complete() {
    name=$1 dir=$2 exp=${3:-$T/expected.ids}
    record_ids "$dir" >"$T/got.records"
    summary_ids "$dir" >"$T/got.summary"
    if cmp -s "$exp" "$T/got.records"; then ok "$name: runs/ holds every run of the grid exactly once ($(wc -l <"$exp" | tr -d ' ') records)"
    else fail "$name: runs/ holds every run of the grid exactly once" "diff expected got:" "$(diff "$exp" "$T/got.records" | grep '^[<>]' | head -n 6)"; fi
    if cmp -s "$exp" "$T/got.summary"; then ok "$name: summary.csv lists every run exactly once"
    else fail "$name: summary.csv lists every run exactly once" "diff expected got:" "$(diff "$exp" "$T/got.summary" | grep '^[<>]' | head -n 6)"; fi
    if [ -x "$PY" ]; then
        if bad=$(cd "$dir" && "$PY" -c 'import json,sys
bad=[f for f in sys.argv[1:] if not f.endswith("*.json")]
out=[]
for f in bad:
    try: json.load(open(f), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except Exception as e: out.append("%s: %s" % (f, e))
print("\n".join(out)); sys.exit(1 if out else 0)' manifest.json runs/*.json floats/*.json quant/*.json); then
            ok "$name: manifest, records and sidecars are valid JSON"
        else fail "$name: manifest, records and sidecars are valid JSON" "$bad"; fi
    else
        echo "skip - $name: valid JSON: $PY is missing"
    fi
    tmps=$(temporaries "$dir")
    if [ -z "$tmps" ]; then ok "$name: no temporary file (*.tmp.*) left"; else fail "$name: no temporary file (*.tmp.*) left" "$tmps"; fi
    if [ $# -ge 4 ]; then
        what="every deterministic column"
        [ $# -ge 5 ] && what="the columns matching $5"
        if [ "$(head -n 1 "$4")" != "$(head -n 1 "$dir/summary.csv")" ]; then
            fail "$name: summary.csv header equals the reference's"
        elif diffs=$(compare_rows "$4" "$dir/summary.csv" "${5:-}"); then ok "$name: summary.csv rows equal the reference's on $what"
        else
            fail "$name: summary.csv rows equal the reference's on $what (FINDING)" "$(printf '%s\n' "$diffs" | sed -n '1,6p')"
        fi
    fi
}

# Background sweeps, watched and killed by pid.
start_sweep() { # start_sweep LOG ARGS...: sets PID
    log=$1
    shift
    "$QCORR" sweep $GRID "$@" >"$log" 2>&1 </dev/null &
    PID=$!
    BG="$BG $PID"
}
# wait_until CONDITION... : polls every 20 ms for up to 60 s; 0 when the condition holds,
# 1 on timeout, 2 when the watched process exited first
wait_until() {
    i=0
    while [ $i -lt 3000 ]; do
        "$@" && return 0
        kill -0 "$PID" 2>/dev/null || { "$@" && return 0; return 2; }
        sleep 0.02
        i=$((i + 1))
    done
    return 1
}
forget() { BG=$(echo " $BG " | sed "s/ $1 / /"); }
reap() { wait "$1" 2>/dev/null; r=$?; forget "$1"; return $r; } # 2>/dev/null: no "Killed" notice
# wait_bounded PID SECONDS: waits for a background process, killing it past the bound
wait_bounded() {
    i=0
    while kill -0 "$1" 2>/dev/null; do
        if [ $i -ge $(($2 * 10)) ]; then kill -9 "$1" 2>/dev/null; break; fi
        sleep 0.1
        i=$((i + 1))
    done
    reap "$1"
}

# ---------------------------------------------------------------- reference

# The reference runs uninterrupted in the background while check 1 kills and resumes its copy
# (each sweep is single-threaded; two cores).
REF=$T/ref
t0=$(date +%s)
"$QCORR" sweep $GRID --out "$REF" >"$T/ref.log" 2>&1 </dev/null &
REF_PID=$!
BG="$BG $REF_PID"

# ---------------------------------------------------------------- 1. kill -9 and resume

D=$T/killed
# the float model's training log: written to a temporary beside its name until training ends
float_log() { find "$D/floats" \( -name "$1.train.csv" -o -name "$1.train.csv.tmp.*" \) 2>/dev/null | head -n 1; }
mid_float() { [ -n "$(float_log "$1")" ] && [ ! -e "$D/floats/$1.safetensors" ]; }
records_at_least() { [ "$(n_records "$D")" -ge "$1" ]; }
mid_run() { [ -e "$D/logs/$1.correct.csv" ] && [ ! -e "$D/runs/$1.json" ]; }
after_quantize() { [ -e "$D/quant/$1.json" ] && [ ! -e "$D/runs/$2.json" ]; }

# attempt N DESCRIPTION CONDITION...: starts the sweep, kills it with SIGKILL once the condition
# holds, and checks the restart did not redo anything finished before it started.
attempt=0
attempt() {
    attempt=$((attempt + 1))
    desc=$1
    shift
    record_ids "$D" 2>/dev/null >"$T/before.records"
    (cd "$D/runs" 2>/dev/null && for f in *.json; do [ -e "$f" ] && cksum "$f"; done) >"$T/before.cksum"
    before_floats=""
    for f in $FLOATS; do [ -e "$D/floats/$f.safetensors" ] && before_floats="$before_floats $f"; done
    start_sweep "$T/kill$attempt.log" --out "$D"
    if [ "$1" = "-" ]; then
        wait_bounded "$PID" 120
        rc=$?
        if [ $rc = 0 ]; then ok "kill/resume: the final restart completes (exit 0)"
        else fail "kill/resume: the final restart completes" "exit $rc"; show "$T/kill$attempt.log"; fi
    else
        wait_until "$@"
        w=$?
        kill -0 "$PID" 2>/dev/null && kill -9 "$PID"
        reap "$PID"
        rc=$?
        state="$(n_records "$D") records"
        [ -n "$(temporaries "$D")" ] && state="$state, a temporary left by the killed writer"
        if [ "$1" = mid_float ]; then
            log=$(float_log "$2")
            state="$state, ${log#"$D/"} at step $(($(wc -l <"$log") - 1)) of $TRAIN_STEPS"
            # the log is whole (header, every step, the final line) or not there at all
            if [ -e "$D/floats/$2.train.csv" ] && [ "$(wc -l <"$D/floats/$2.train.csv" | tr -d ' ')" != $((TRAIN_STEPS + 2)) ]; then
                fail "kill/resume: SIGKILL $desc leaves no half-written floats/$2.train.csv" "$(wc -l <"$D/floats/$2.train.csv" | tr -d ' ') lines"
            fi
        fi
        case $w in
        0) if [ $rc = 137 ]; then ok "kill/resume: SIGKILL $desc (then: $state)"
           else fail "kill/resume: SIGKILL $desc" "the sweep exited $rc before the kill"; show "$T/kill$attempt.log"; fi ;;
        1) fail "kill/resume: SIGKILL $desc" "the moment never came within 60 s" ;;
        *) fail "kill/resume: SIGKILL $desc" "the sweep exited ($rc) before the moment came"; show "$T/kill$attempt.log" ;;
        esac
    fi
    # nothing finished before this start was redone by it
    redone=""
    while read -r id; do grep -Eq "run $id( |\$)" "$T/kill$attempt.log" && redone="$redone $id"; done <"$T/before.records"
    for f in $before_floats; do grep -q "float model $f step" "$T/kill$attempt.log" && redone="$redone $f(retrained)"; done
    if [ -z "$redone" ]; then ok "kill/resume: start $attempt redid none of the $(wc -l <"$T/before.records" | tr -d ' ') finished runs or $(echo "$before_floats" | wc -w | tr -d ' ') float models"
    else fail "kill/resume: start $attempt redid no finished work" "redone:$redone"; fi
    (cd "$D/runs" 2>/dev/null && while read -r _ _ f; do cksum "$f"; done <"$T/before.cksum") 2>/dev/null >"$T/after.cksum"
    cmp -s "$T/before.cksum" "$T/after.cksum" || fail "kill/resume: start $attempt left earlier records byte-identical" "$(diff "$T/before.cksum" "$T/after.cksum" | head -n 4)"
}

t0=$(date +%s)
attempt "mid float training of the first model (its log, no checkpoint)" mid_float s1_16x1
attempt "after 2 records (between records)" records_at_least 2
attempt "mid run s1_24x1_b2_e1_h8_train (its correction log, no record)" mid_run s1_24x1_b2_e1_h8_train
attempt "mid float training of s2_16x1 (earlier groups done)" mid_float s2_16x1
attempt "after quantizing s2_24x1 to 4 bits, before its first run" after_quantize s2_24x1_b4 s2_24x1_b4_e1_h0_train
attempt "after $((N_RUNS - 2)) records (two runs left)" records_at_least $((N_RUNS - 2))
attempt "completion" -
t_kill=$(($(date +%s) - t0))
wait_bounded "$REF_PID" 120
rc=$?
t_ref=$(($(date +%s) - t0))
if [ $rc = 0 ]; then ok "reference sweep of $N_RUNS runs exits 0 (${t_ref}s, beside check 1)"; else fail "reference sweep of $N_RUNS runs exits 0" "exit $rc"; show "$T/ref.log"; fi
check_complete "reference" "$REF"
RUN_BYTES=$(wc -c <"$REF/runs/s1_16x1_b2_e1_h0_train.json" | tr -d ' ')
check_complete "kill/resume" "$D" "$T/expected.ids" "$REF/summary.csv"
for f in $FLOATS; do
    n=$(wc -l <"$D/floats/$f.train.csv" 2>/dev/null | tr -d ' ')
    [ "$n" = $((TRAIN_STEPS + 2)) ] || fail "kill/resume: floats/$f.train.csv has a header, $TRAIN_STEPS steps and the final line" "$n lines"
done
echo "# kill/resume: ${t_kill}s for $attempt starts"

# ---------------------------------------------------------------- 2. two shards at once

S=$T/shards
t0=$(date +%s)
start_sweep "$T/shard1.log" --out "$S" --shard 1/2
P1=$PID
start_sweep "$T/shard2.log" --out "$S" --shard 2/2
P2=$PID
wait_bounded "$P1" 120
rc1=$?
wait_bounded "$P2" 120
rc2=$?
t_shard=$(($(date +%s) - t0))
if [ $rc1 = 0 ] && [ $rc2 = 0 ]; then ok "shards: 1/2 and 2/2 started together both exit 0 (${t_shard}s)"
else fail "shards: 1/2 and 2/2 started together both exit 0" "exit $rc1 and $rc2"; show "$T/shard1.log"; show "$T/shard2.log"; fi
check_complete "shards" "$S" "$T/expected.ids" "$REF/summary.csv"
set -- "$S"/floats/*.safetensors
n_ckpt=$#
[ -e "$1" ] || n_ckpt=0
if [ "$n_ckpt" = 4 ]; then ok "shards: 4 float checkpoints, one per (seed, size)"; else fail "shards: 4 float checkpoints, one per (seed, size)" "found $n_ckpt"; fi
once=1
why=""
for f in $FLOATS; do
    n=$(cat "$T/shard1.log" "$T/shard2.log" | grep -c "float model $f step $TRAIN_STEPS/$TRAIN_STEPS")
    [ "$n" = 1 ] || { once=0; why="$why $f trained $n times;"; }
    # header, steps 1..TRAIN_STEPS, then the final line "TRAIN_STEPS,,,,,VAL_LOSS"
    if ! awk -F, -v steps=$TRAIN_STEPS '
        NR == 1 { ok = ($0 == "step,loss,lr,grad_norm,tokens_per_s,val_loss"); next }
        NR <= steps + 1 { if ($1 != NR - 1 || $2 == "") ok = 0; next }
        NR == steps + 2 { if ($1 != steps || $2 != "" || $6 == "") ok = 0; next }
        { ok = 0 }
        END { exit !(ok && NR == steps + 2) }' "$S/floats/$f.train.csv"; then
        once=0
        why="$why floats/$f.train.csv is not a header, $TRAIN_STEPS steps and the final line ($(wc -l <"$S/floats/$f.train.csv" | tr -d ' ') lines);"
    fi
done
if [ $once = 1 ]; then ok "shards: each float model trained once (one log line each; train.csv = header + $TRAIN_STEPS steps + final line)"
else fail "shards: each float model trained once" "$why"; fi
# the partition: float-model groups stay together, no run in both shards
grep -o 'run s[^ ]* done' "$T/shard1.log" | sort >"$T/shard1.runs"
grep -o 'run s[^ ]* done' "$T/shard2.log" | sort >"$T/shard2.runs"
both=$(comm -12 "$T/shard1.runs" "$T/shard2.runs")
g1=$(sed 's/^run \(s[0-9]*_[0-9x]*\)_.*/\1/' "$T/shard1.runs" | sort -u | tr '\n' ' ' | sed 's/ $//')
g2=$(sed 's/^run \(s[0-9]*_[0-9x]*\)_.*/\1/' "$T/shard2.runs" | sort -u | tr '\n' ' ' | sed 's/ $//')
if [ -z "$both" ] && [ "$(cat "$T/shard1.runs" "$T/shard2.runs" | wc -l | tr -d ' ')" = "$N_RUNS" ] && [ -n "$g1" ] && [ -n "$g2" ]; then
    ok "shards: disjoint halves of whole float-model groups (1/2: $g1; 2/2: $g2)"
else fail "shards: disjoint halves of whole float-model groups" "in both: $both" "1/2: $g1; 2/2: $g2"; fi
for g in $g1; do case " $g2 " in *" $g "*) fail "shards: group $g split across shards" ;; esac; done

# ---------------------------------------------------------------- 2b. --jobs

has_claim() { set -- "$1"/claims/*.claim; [ -e "$1" ]; }
claim_pids() { for f in "$1"/claims/*.claim; do [ -e "$f" ] && sed -n '1s/.*\.//p' "$f"; done | sort -u; } # line 1: HOST.PID
# start_jobs DIR LOG: a --jobs 2 sweep in the background, returning once a worker has claimed a group
start_jobs() {
    "$QCORR" sweep $GRID --out "$1" --jobs 2 --threads 2 >"$2" 2>&1 </dev/null &
    PID=$!
    BG="$BG $PID"
    wait_until has_claim "$1"
}
# resume_jobs NAME DIR LOG: the same command again completes the grid with the reference's rows
resume_jobs() {
    "$QCORR" sweep $GRID --out "$2" --jobs 2 --threads 2 >"$3" 2>&1 </dev/null
    rc=$?
    if [ $rc = 0 ]; then ok "$1: the same command resumes"; else fail "$1: the same command resumes" "exit $rc"; show "$3"; fi
    check_complete "$1, resumed" "$2" "$T/expected.ids" "$REF/summary.csv"
}

# two worker processes of one thread share the groups through claim files: the same rows
J=$T/jobs
t0=$(date +%s)
"$QCORR" sweep $GRID --out "$J" --jobs 2 --threads 2 >"$T/jobs.log" 2>&1 </dev/null
rc=$?
if [ $rc = 0 ]; then ok "jobs: --jobs 2 exits 0 ($(($(date +%s) - t0))s)"; else fail "jobs: --jobs 2 exits 0" "exit $rc"; show "$T/jobs.log"; fi
check_complete "jobs" "$J" "$T/expected.ids" "$REF/summary.csv"
set -- "$J"/claims/*.claim
if [ $# = 4 ] && [ -e "$1" ]; then ok "jobs: one claim per float-model group ($(for f in "$@"; do sed -n 1p "$f"; done | sort -u | wc -l | tr -d ' ') worker(s) took them)"
else fail "jobs: one claim per float-model group" "$(ls "$J/claims" 2>&1 | head -n 5)"; fi
# a dead process's claim is cleared and its group run again; a live process's is left to it
host=$(hostname | tr './' '__')
sh -c 'echo $$ >"$1"' sh "$T/dead.pid"
rm -f "$J"/runs/s1_16x1_*.json "$J"/runs/s2_24x1_*.json
echo "$host.$(cat "$T/dead.pid")" >"$J/claims/s1_16x1.claim"
echo "$host.$$" >"$J/claims/s2_24x1.claim"
"$QCORR" sweep $GRID --out "$J" --jobs 2 --threads 2 >"$T/jobs2.log" 2>&1 </dev/null
rc=$?
grep -v '^s2_24x1_' "$T/expected.ids" >"$T/expected.jobs2"
n_live=$(grep -c '^s2_24x1_' "$T/expected.ids")
if [ $rc = 0 ] && grep -q "$n_live of $N_RUNS runs are left to another sweep's workers" "$T/jobs2.log"; then
    ok "jobs: a live process's claim is left to it and said so ($n_live runs)"
else fail "jobs: a live process's claim is left to it and said so" "exit $rc"; show "$T/jobs2.log"; fi
check_complete "jobs, a dead worker's claim taken again" "$J" "$T/expected.jobs2" "$REF/summary.csv"
# a group claimed by a worker of the same --jobs parent (a teammate, here a stand-in that does
# nothing: the claim's team line names the parent's pid, which `exec` hands to qcorr) is joined
# once its float model exists: the other workers take its quantized models, each by one claim
J7=$T/jobs7
cp -R "$J" "$J7"
rm -rf "$J7"/claims "$J7"/runs/s1_24x1_*.json
mkdir -p "$J7/claims"
sh -c 'printf "%s.%s\nteam %s.%s\n" "$1" "$2" "$1" "$$" >"$3/claims/s1_24x1.claim"; exec "$4" sweep $5 --out "$3" --jobs 2 --threads 2' \
    sh "$host" "$$" "$J7" "$QCORR" "$GRID" >"$T/jobs7.log" 2>&1 </dev/null
rc=$?
n_models=$(ls "$J7/claims/models" 2>/dev/null | grep -c '^s1_24x1_b')
if [ $rc = 0 ] && [ "$n_models" = 3 ] && ! grep -q "left to another sweep" "$T/jobs7.log"; then
    ok "jobs: a teammate's group is joined, its 3 quantized models claimed one by one"
else fail "jobs: a teammate's group is joined, its 3 quantized models claimed one by one" "exit $rc, $n_models model claims"; show "$T/jobs7.log"; fi
check_complete "jobs, a teammate's group joined" "$J7" "$T/expected.ids" "$REF/summary.csv"
# a teammate still training the group's float model (its checkpoint not there yet) is waited for,
# then joined; a teammate that dies before it is there is not (its runs are left, and said so)
team_jobs() { # team_jobs DIR LOG OWNER_PID: --jobs 2 in the background, DIR's s1_24x1 claimed for OWNER_PID
    sh -c 'printf "%s.%s\nteam %s.%s\n" "$1" "$2" "$1" "$$" >"$3/claims/s1_24x1.claim"; exec "$4" sweep $5 --out "$3" --jobs 2 --threads 2' \
        sh "$host" "$3" "$1" "$QCORR" "$GRID" >"$2" 2>&1 </dev/null &
    PID=$!
    BG="$BG $PID"
}
for case in waited gone; do
    J8=$T/jobs8-$case
    cp -R "$J" "$J8"
    rm -rf "$J8"/claims "$J8"/runs/s1_24x1_*.json "$J8"/quant/s1_24x1_*
    mkdir -p "$J8/claims"
    mv "$J8/floats/s1_24x1.safetensors" "$J8/floats/held.safetensors"
    sleep 600 &
    owner=$!
    BG="$BG $owner"
    team_jobs "$J8" "$T/jobs8-$case.log" "$owner"
    sleep 6 # the workers are in their second pass within a second or two (every other group is done)
    if [ $case = waited ]; then mv "$J8/floats/held.safetensors" "$J8/floats/s1_24x1.safetensors"; else kill -9 "$owner"; fi
    wait_bounded "$PID" 60
    rc=$?
    kill -9 "$owner" 2>/dev/null
    n_left=$(grep -c '^s1_24x1_' "$T/expected.ids")
    if [ $case = waited ]; then
        if [ $rc = 0 ] && ! grep -q "left to another sweep" "$T/jobs8-$case.log"; then ok "jobs: a teammate's float model is waited for, then its group joined"
        else fail "jobs: a teammate's float model is waited for, then its group joined" "exit $rc"; show "$T/jobs8-$case.log"; fi
        check_complete "jobs, a teammate's float model waited for" "$J8" "$T/expected.ids" "$REF/summary.csv"
    elif [ $rc = 0 ] && grep -q "$n_left of $N_RUNS runs are left to another sweep's workers" "$T/jobs8-$case.log" && [ ! -e "$J8/floats/s1_24x1.safetensors" ]; then
        ok "jobs: a teammate gone before its float model is not waited for ($n_left runs left, said so)"
    else fail "jobs: a teammate gone before its float model is not waited for" "exit $rc"; show "$T/jobs8-$case.log"; fi
done
# SIGTERM to the parent: the workers stop after their current run, the parent exits non-zero;
# the same command again completes the grid
J3=$T/jobs3
start_jobs "$J3" "$T/jobs3.log"
kill -TERM "$PID"
wait_bounded "$PID" 60
rc=$?
left=0
for w in $(claim_pids "$J3"); do kill -0 "$w" 2>/dev/null && left=$((left + 1)); done
n_done=$(n_records "$J3")
if [ $rc != 0 ] && [ "$left" = 0 ] && [ "$n_done" -lt "$N_RUNS" ] && grep -q "interrupted" "$T/jobs3.log" && [ -z "$(temporaries "$J3")" ]; then
    ok "jobs: SIGTERM stops the parent and its workers ($n_done of $N_RUNS runs kept, no temporaries)"
else fail "jobs: SIGTERM stops the parent and its workers" "exit $rc, $left processes left, $n_done records"; show "$T/jobs3.log"; fi
resume_jobs "jobs, after SIGTERM" "$J3" "$T/jobs4.log"

# SIGKILL of one worker: the parent names it, stops the other after its current run and exits
# non-zero; the same command clears the dead worker's claim and completes the grid
J5=$T/jobs5
start_jobs "$J5" "$T/jobs5.log"
worker=$(claim_pids "$J5" | head -n 1)
[ -n "$worker" ] && kill -9 "$worker"
wait_bounded "$PID" 60
rc=$?
if [ -n "$worker" ] && [ $rc != 0 ] && grep -q "pid $worker) was killed by signal 9" "$T/jobs5.log"; then
    ok "jobs: SIGKILL of a worker is reported and the sweep exits non-zero"
else fail "jobs: SIGKILL of a worker is reported and the sweep exits non-zero" "worker '$worker', exit $rc"; show "$T/jobs5.log"; fi
resume_jobs "jobs, after a killed worker" "$J5" "$T/jobs6.log"

# ---------------------------------------------------------------- 3. other settings refused

snapshot "$REF" >"$T/ref.snap"
head -c 300000 /work/shared/data/tinyshakespeare.txt >"$T/other.txt" 2>/dev/null || head -c 300000 data/tinyshakespeare.txt >"$T/other.txt" 2>/dev/null
refused() { # refused KEY FLAGS...: a restart of the reference with FLAGS must be refused naming KEY
    key=$1
    shift
    "$QCORR" sweep $GRID --out "$REF" "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    why=""
    [ $rc != 0 ] || why="$why exit 0;"
    [ "$(wc -l <"$T/err" | tr -d ' ')" = 1 ] || why="$why $(wc -l <"$T/err" | tr -d ' ') lines on stderr;"
    grep -qF "$key" "$T/err" || why="$why the message does not name $key;"
    [ -s "$T/out" ] && why="$why output on stdout;"
    snapshot "$REF" >"$T/snap"
    cmp -s "$T/ref.snap" "$T/snap" || why="$why the directory changed;"
    if [ -z "$why" ]; then ok "refused: restart with $* exits $rc naming $key, directory untouched"
    else fail "refused: restart with $* exits non-zero naming $key, directory untouched" "$why"; show "$T/err"; fi
}
refused grid.bits --bits 2,8
refused grid.seeds --seeds 1,2,3
refused grid.sizes --sizes 16x1
refused grid.hidden --hidden 0,16
refused grid.control --no-control
refused correction.steps --steps 9
refused correction.lr --lr 0.01
refused float_training.steps --train-steps 41
refused float_training.steps.24x1 --sizes 16x1,24x1:41
refused grid.granularities --granularity tensor
refused data_sha256 --data "$T/other.txt"
# the same settings from another shard or with --quiet are the same sweep
"$QCORR" sweep $GRID --out "$REF" --shard 2/2 --quiet >"$T/out" 2>"$T/err" </dev/null
rc=$?
snapshot "$REF" >"$T/snap"
if [ $rc = 0 ] && [ ! -s "$T/err" ] && cmp -s "$T/ref.snap" "$T/snap"; then ok "a finished sweep restarted with --shard 2/2 --quiet is accepted and changes nothing"
else fail "a finished sweep restarted with --shard 2/2 --quiet is accepted and changes nothing" "exit $rc"; show "$T/err"; diff "$T/ref.snap" "$T/snap" | head -n 5; fi

# six starts at once into one new directory, each with its own --steps: exactly one makes the
# directory its own (and finishes), the others refuse it naming correction.steps, and every
# record there is the winner's (the manifest is created exclusively, not checked-then-written)
R=$T/race
pids=""
for k in 1 2 3 4 5 6; do
    "$QCORR" sweep --sizes 16x1 --ctx 16 --heads 2 --train-steps 20 --train-batch 8 --steps "$k" --batch 4 \
        --calib-tokens 256 --seeds 1 --bits 2 --every 1 --hidden 0 --no-control --quiet --out "$R" \
        >"$T/race$k.out" 2>"$T/race$k.err" </dev/null &
    pids="$pids $!"
    BG="$BG $!"
done
won=0 refusals=0 why="" k=0
for p in $pids; do
    k=$((k + 1))
    wait "$p"
    rc=$?
    if [ $rc = 0 ]; then won=$((won + 1)); winner=$k
    elif [ $rc = 1 ] && [ "$(wc -l <"$T/race$k.err" | tr -d ' ')" = 1 ] && grep -q "holds a different sweep: correction.steps" "$T/race$k.err"; then
        refusals=$((refusals + 1))
    else why="$why start $k: exit $rc: $(head -n 2 "$T/race$k.err" | tr '\n' ' ');"; fi
done
steps=$([ -f "$R/summary.csv" ] && mask "$R/summary.csv" | sed 1d | cut -d, -f26 | sort -u | tr '\n' ' ')
[ $won = 1 ] || why="$why $won starts ran;"
[ $refusals = 5 ] || why="$why $refusals refused;"
[ "$steps" = "${winner:-?} " ] || why="$why summary.csv steps: $steps(winner ${winner:-none});"
if [ -z "$why" ]; then ok "race: 6 starts at once with different --steps: one runs (--steps $winner), 5 refuse naming correction.steps"
else fail "race: 6 starts at once with different --steps: exactly one runs, the others refuse" "$why"; fi

# ---------------------------------------------------------------- 4. corrupt records

C=$T/corrupt
cp -R "$REF" "$C"
head -c 100 "$REF/runs/s1_16x1_b2_e1_h8_train.json" >"$C/runs/s1_16x1_b2_e1_h8_train.json"   # truncated
echo 'garbage, not JSON' >"$C/runs/s1_24x1_b4_e1_h0_train.json"
: >"$C/runs/s2_16x1_b32_e1_h8_train.json"                                                      # empty
echo '{"run_id": "s2_24x1_b2_e1_h0_train", "seed": 2}' >"$C/runs/s2_24x1_b2_e1_h0_train.json"   # fields missing
CORRUPT="s1_16x1_b2_e1_h8_train s1_24x1_b4_e1_h0_train s2_16x1_b32_e1_h8_train s2_24x1_b2_e1_h0_train"
"$QCORR" sweep $GRID --out "$C" --quiet >"$T/out" 2>"$T/err" </dev/null
rc=$?
if [ $rc = 0 ]; then ok "corrupt: the restart over 4 corrupt records exits 0"
else fail "corrupt: the restart over 4 corrupt records exits 0" "exit $rc"; show "$T/err"; fi
for id in $CORRUPT; do
    f=$C/runs/$id.json
    if [ "$(grep -cF "$f" "$T/err")" = 1 ] && grep -F "$f" "$T/err" | grep -qi corrupt; then ok "corrupt: one stderr line names runs/$id.json as corrupt"
    else fail "corrupt: one stderr line names runs/$id.json as corrupt"; show "$T/err"; fi
    [ -f "$f.corrupt" ] || fail "corrupt: runs/$id.json moved to runs/$id.json.corrupt"
    grep -q "^$id," "$C/summary.csv" || fail "corrupt: $id re-run and in summary.csv"
done
n_err=$(wc -l <"$T/err" | tr -d ' ')
[ "$n_err" = 4 ] || fail "corrupt: stderr holds only the 4 reports" "$n_err lines"
check_complete "corrupt" "$C" "$T/expected.ids" "$REF/summary.csv" '^loss_'
# a corrupt manifest is refused, not overwritten
cp "$C/manifest.json" "$T/manifest.keep"
echo '{"qcorr_manifest": 1, "grid"' >"$C/manifest.json"
snapshot "$C" >"$T/c.snap"
"$QCORR" sweep $GRID --out "$C" --quiet >"$T/out" 2>"$T/err" </dev/null
rc=$?
snapshot "$C" >"$T/snap"
if [ $rc = 1 ] && [ "$(wc -l <"$T/err" | tr -d ' ')" = 1 ] && grep -qF "$C/manifest.json" "$T/err" && cmp -s "$T/c.snap" "$T/snap"; then
    ok "corrupt: an unreadable manifest.json is refused (exit 1, one line naming it), directory untouched"
else fail "corrupt: an unreadable manifest.json is refused (exit 1, one line naming it), directory untouched" "exit $rc"; show "$T/err"; fi

# ---------------------------------------------------------------- 5. bad input

W=$T/work
mkdir "$W"
echo "not a directory" >"$W/file"
echo '{"seeds": [1], "bits": [2' >"$W/bad.json"
echo '{"seeds": [1], "colour": [2]}' >"$W/unknown.json"
echo '{"bits": [9]}' >"$W/bits9.json"
echo '{"bits": [4, 4]}' >"$W/twice.json"
echo '{"sizes": ["64x"]}' >"$W/size.json"
# expect_error DESCRIPTION CODE NEEDLE... -- ARGS... (after `qcorr sweep`)
expect_error() {
    desc=$1 code=$2
    shift 2
    needles=""
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        needles="$needles$1
"
        shift
    done
    [ $# -gt 0 ] && shift
    snapshot "$W" >"$T/w.before"
    "$QCORR" sweep "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    snapshot "$W" >"$T/w.after"
    why=""
    [ "$rc" = "$code" ] || why="$why exit status $rc, expected $code;"
    lines=$(wc -l <"$T/err" | tr -d ' ')
    [ "$lines" = 1 ] || why="$why $lines lines on stderr, expected 1;"
    head -n 1 "$T/err" | grep -q '^qcorr' || why="$why stderr does not start with 'qcorr';"
    [ -s "$T/out" ] && why="$why output on stdout;"
    cmp -s "$T/w.before" "$T/w.after" || why="$why files created or changed;"
    printf '%s' "$needles" >"$T/needles"
    while IFS= read -r n; do grep -qF -- "$n" "$T/err" || why="$why message lacks '$n';"; done <"$T/needles"
    if [ -z "$why" ]; then ok "bad input: $desc (exit $code)"; else fail "bad input: $desc" "$why"; show "$T/err" 3; fi
}
O=$W/out
expect_error "unknown --preset" 2 "--preset" "nope" -- --preset nope --out "$O"
expect_error "--sizes 64x" 2 "--sizes" "64x" -- --sizes 64x --out "$O"
expect_error "--sizes x2" 2 "--sizes" "x2" -- --sizes x2 --out "$O"
expect_error "--sizes 64*2" 2 "--sizes" "64*2" -- --sizes '64*2' --out "$O"
expect_error "--sizes 64x2x3" 2 "--sizes" "64x2x3" -- --sizes 64x2x3 --out "$O"
expect_error "--sizes 0x2" 2 "--sizes" "0x2" -- --sizes 0x2 --out "$O"
expect_error "--sizes empty" 2 "--sizes" -- --sizes , --out "$O"
expect_error "--sizes 64x2:0 (no float steps)" 2 "--sizes" "0" -- --sizes 64x2:0 --out "$O"
expect_error "--sizes 64x2:ten" 2 "--sizes" "ten" -- --sizes 64x2:ten --out "$O"
expect_error "--sizes 64x2,64x2:9 (a size twice)" 2 "--sizes" "64x2" "twice" -- --sizes 64x2,64x2:9 --out "$O"
expect_error "--shard 0/2" 2 "--shard" "0/2" -- --shard 0/2 --out "$O"
expect_error "--shard 3/2" 2 "--shard" "3/2" -- --shard 3/2 --out "$O"
expect_error "--shard 1/0" 2 "--shard" "1/0" -- --shard 1/0 --out "$O"
expect_error "--shard 1" 2 "--shard" -- --shard 1 --out "$O"
expect_error "--shard 1/2x" 2 "--shard" "1/2x" -- --shard 1/2x --out "$O"
expect_error "--bits 9" 2 "--bits" "9" -- --bits 9 --out "$O"
expect_error "--bits 1" 2 "--bits" "1" -- --bits 1 --out "$O"
expect_error "--bits 2,2 (a value twice)" 2 "--bits" -- --bits 2,2 --out "$O"
expect_error "--seeds abc" 2 "--seeds" "abc" -- --seeds abc --out "$O"
expect_error "--methods foo" 2 "--methods" "foo" -- --methods foo --out "$O"
expect_error "--methods train,train (a method twice)" 2 "--methods" "train" "twice" -- --methods train,train --out "$O"
expect_error "--quantizers rtn,foo" 2 "--quantizers" "foo" "rtn, mse or gptq" -- --quantizers rtn,foo --out "$O"
expect_error "--quantizers gptq,gptq (a quantizer twice)" 2 "--quantizers" "gptq" "twice" -- --quantizers gptq,gptq --out "$O"
expect_error "no --out" 2 "--out" -- --bits 2
expect_error "--out is an existing regular file" 2 "$W/file" "not a directory" -- $GRID --out "$W/file"
expect_error "--grid missing file" 1 "$W/missing.json" -- --grid "$W/missing.json" --out "$O"
expect_error "--grid invalid JSON" 2 "$W/bad.json" -- --grid "$W/bad.json" --out "$O"
expect_error "--grid unknown key" 2 "$W/unknown.json" "colour" -- --grid "$W/unknown.json" --out "$O"
expect_error "--grid bits [9]" 2 "$W/bits9.json" "bits" -- --grid "$W/bits9.json" --out "$O"
expect_error "--grid sizes [\"64x\"]" 2 "$W/size.json" "64x" -- --grid "$W/size.json" --out "$O"
expect_error "--grid bits [4, 4] (a value twice)" 2 "$W/twice.json" "bits" "4" "twice" -- --grid "$W/twice.json" --out "$O"
# a grid file with a key twice: cJSON keeps both and reads the first
echo '{"seeds": [1], "seeds": [2]}' >"$W/dupkey.json"
expect_error "--grid with the key seeds twice" 2 "$W/dupkey.json" "seeds" "twice" -- --grid "$W/dupkey.json" --out "$O"
# an empty element of a list flag is refused, not skipped
expect_error "--seeds 1,,2 (an empty element)" 2 "--seeds" "1,,2" -- --seeds 1,,2 --out "$O"
expect_error "--bits 2, (a trailing comma)" 2 "--bits" -- --bits 2, --out "$O"
expect_error "--methods ,train (a leading comma)" 2 "--methods" -- --methods ,train --out "$O"
# a corpus whose validation split holds no window of the grid's context: refused naming the
# corpus before the directory is made, so the corrected command is not refused as another sweep
head -c 150 "$CORPUS" >"$W/short.txt"
expect_error "a corpus too short for one validation window" 1 "$W/short.txt" "validation split" -- $GRID --data "$W/short.txt" --out "$O"

# ---------------------------------------------------------------- 6. full disk

SMALL="--seeds 1 --sizes 16x1"   # one float model, 6 runs: the reference's s1_16x1 rows
grep '^s1_16x1_' "$T/expected.ids" >"$T/small.ids"
t0=$(date +%s)
if cc -shared -fPIC -o "$T/fault_write.so" tests/fault_write.c -ldl 2>"$T/cc.err"; then
    ok "fault: tests/fault_write.c builds"
    F=$T/full
    # full PREFIX BUDGET DESCRIPTION FILE_NEEDLE: a sweep under the shim must fail cleanly
    full() {
        prefix=$1 budget=$2 desc=$3 needle=$4
        mkdir -p "$F/runs"
        env LD_PRELOAD="$T/fault_write.so" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
            FAULT_WRITE_PREFIX="$prefix" FAULT_WRITE_BUDGET="$budget" \
            "$QCORR" sweep $GRID $SMALL --out "$F" --quiet >"$T/out" 2>"$T/err" </dev/null
        rc=$?
        why=""
        [ $rc = 1 ] || why="$why exit $rc, expected 1;"
        [ "$(wc -l <"$T/err" | tr -d ' ')" = 1 ] || why="$why $(wc -l <"$T/err" | tr -d ' ') lines on stderr;"
        grep -q "$needle" "$T/err" || why="$why the message does not name the file ($needle);"
        grep -q "No space left on device" "$T/err" || why="$why no 'No space left on device';"
        tmps=$(temporaries "$F")
        [ -z "$tmps" ] || why="$why temporaries left: $tmps;"
        # every record present is whole: as many lines as the reference's and a closing brace
        for f in "$F"/runs/*.json; do
            [ -e "$f" ] || continue
            id=${f##*/}
            [ "$(wc -l <"$f")" = "$(wc -l <"$REF/runs/$id")" ] && [ "$(tail -n 1 "$f")" = "}" ] || why="$why half-written record runs/$id;"
        done
        if [ -z "$why" ]; then ok "fault: full disk $desc: exit 1, one line naming the file and ENOSPC, no temporary, no half record ($(n_records "$F") records)"
        else fail "fault: full disk $desc: exit 1, one line naming the file and ENOSPC, no temporary, no half record" "$why"; show "$T/err" 3; fi
    }
    full "$F/floats/s1_16x1.train.csv" 0 "for the float training log" "floats/s1_16x1.train.csv"
    [ -e "$F/floats/s1_16x1.train.csv" ] && fail "fault: no float training log after its failed write"
    # a start that failed before any work removes the manifest it made: a corrected command (other
    # settings) into the same directory is not refused as "a different sweep"
    if [ ! -e "$F/manifest.json" ]; then ok "fault: a sweep that failed before any work leaves no manifest behind"
    else fail "fault: a sweep that failed before any work leaves no manifest behind"; fi
    env LD_PRELOAD="$T/fault_write.so" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        FAULT_WRITE_PREFIX="$F/floats/s1_16x1.train.csv" FAULT_WRITE_BUDGET=0 \
        "$QCORR" sweep $GRID $SMALL --train-steps 7 --out "$F" --quiet >"$T/out" 2>"$T/err" </dev/null
    if grep -q "No space left on device" "$T/err" && ! grep -q "different sweep" "$T/err"; then
        ok "fault: after it, a command with other settings starts in the same directory (it fails on the disk, not on the manifest)"
    else fail "fault: after it, a command with other settings starts in the same directory"; show "$T/err" 3; fi
    full "$F/floats/s1_16x1.safetensors" 0 "for the float checkpoint" "floats/s1_16x1.safetensors"
    [ -e "$F/floats/s1_16x1.safetensors" ] && fail "fault: no float checkpoint after its failed write"
    [ -e "$F/floats/s1_16x1.train.csv" ] && fail "fault: no float training log beside no float checkpoint"
    full "$F/floats/s1_16x1.json" 0 "for the float sidecar (a crash between checkpoint and sidecar)" "floats/s1_16x1.json"
    # finished work (a float model) belongs to its manifest: that one stays
    if [ -e "$F/manifest.json" ]; then ok "fault: a sweep that failed after its float model keeps its manifest"
    else fail "fault: a sweep that failed after its float model keeps its manifest"; fi
    full "$F/runs/" $((RUN_BYTES * 5 / 2)) "at the third record (after $((RUN_BYTES * 5 / 2)) bytes)" "runs/s1_16x1_b4_e1_h0_train.json"
    n=$(n_records "$F")
    [ "$n" = 2 ] || fail "fault: the two records that fitted are kept" "$n records"
    [ "$(summary_ids "$F" | wc -l | tr -d ' ')" = 2 ] || fail "fault: summary.csv lists the two records"
    full "$F/summary.csv" 0 "for summary.csv" "summary.csv"
    [ "$(summary_ids "$F" | wc -l | tr -d ' ')" = 2 ] || fail "fault: the old summary.csv is kept whole when its rewrite fails"
    "$QCORR" sweep $GRID $SMALL --out "$F" --quiet >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ $rc = 0 ]; then ok "fault: the rerun without the shim exits 0"
    else fail "fault: the rerun without the shim exits 0" "exit $rc"; show "$T/err"; fi
    check_complete "fault" "$F" "$T/small.ids" "$REF/summary.csv" '^loss_'
else
    fail "fault: tests/fault_write.c builds"
    show "$T/cc.err"
fi
t_fault=$(($(date +%s) - t0))
echo "# fault: ${t_fault}s"

# ---------------------------------------------------------------- 7. --dry-run

"$QCORR" sweep $GRID --out "$T/dry" --dry-run >"$T/out" 2>"$T/err" </dev/null
rc=$?
why=""
[ $rc = 0 ] || why="$why exit $rc;"
grep -q "4 float models" "$T/out" || why="$why no '4 float models';"
grep -q "$N_RUNS runs" "$T/out" || why="$why no '$N_RUNS runs';"
grep -Eq "estimated wall time: [0-9.]+ min" "$T/out" || why="$why no estimated time;"
[ -e "$T/dry" ] && why="$why it created $T/dry;"
if [ -z "$why" ]; then ok "dry-run: prints 4 float models, $N_RUNS runs and an estimate, creates nothing"
else fail "dry-run: prints the plan and creates nothing" "$why"; show "$T/out"; show "$T/err"; fi
# a size's own float budget ("16x1:7") replaces --train-steps for that size only
"$QCORR" sweep $GRID --sizes 16x1:7,24x1 --out "$T/dry" --dry-run >"$T/out" 2>"$T/err" </dev/null
rc=$?
if [ $rc = 0 ] && grep -Eq "^ +16x1 +2 float models x 7 steps" "$T/out" && grep -Eq "^ +24x1 +2 float models x 200 steps" "$T/out" &&
    [ ! -e "$T/dry" ]; then ok "dry-run: --sizes 16x1:7,24x1 plans 7 float steps for 16x1 and --train-steps' 200 for 24x1"
else fail "dry-run: --sizes 16x1:7,24x1 plans 7 float steps for 16x1 and 200 for 24x1" "exit $rc"; show "$T/out"; show "$T/err"; fi
# --jobs: the work shared by 2 one-thread workers (at least half of it, at most all of it; the
# quick preset, whose work is big enough to read in tenths of a minute)
"$QCORR" sweep --preset quick --out "$T/dry" --dry-run --jobs 2 --threads 2 >"$T/out" 2>"$T/err" </dev/null
rc=$?
share=$(sed -n 's/^estimated wall time: \([0-9.]*\) min on this machine with 2 workers of 1 thread (\([0-9.]*\) min of work.*/\1 \2/p' "$T/out")
if [ $rc = 0 ] && [ -n "$share" ] && echo "$share" | awk '{ exit !($2 > 0 && $1 >= $2 / 2 - 0.05 && $1 <= $2 + 0.05) }' &&
    [ ! -e "$T/dry" ]; then ok "dry-run: --jobs 2 estimates the work shared by 2 one-thread workers ($share min)"
else fail "dry-run: --jobs 2 estimates the work shared by 2 one-thread workers" "exit $rc, '$share'"; show "$T/out"; show "$T/err"; fi
# a corpus with fewer validation windows than the timing batch of 32 (it once overran the timing
# batch's buffer: "malloc(): corrupted top size")
head -c 4000 "$CORPUS" >"$T/small-corpus.txt"
"$QCORR" sweep $GRID --data "$T/small-corpus.txt" --out "$T/dry" --dry-run >"$T/out" 2>"$T/err" </dev/null
rc=$?
if [ $rc = 0 ] && grep -Eq "estimated wall time: [0-9.]+ min" "$T/out" && [ ! -e "$T/dry" ]; then
    ok "dry-run: a corpus of 4000 characters (24 validation windows of 17) is planned, and nothing created"
else fail "dry-run: a corpus of 4000 characters is planned" "exit $rc"; show "$T/out"; show "$T/err"; fi
# the timing runs the correction steps under the sweep's activation scheme; a static one needs
# ranges before its first forward (the timing model has made-up ones)
for g in static tensor; do
    "$QCORR" sweep $GRID --act-bits same --act-granularity $g --act-points inputs,stream,kv,probs --out "$T/dry" --dry-run >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ $rc = 0 ] && grep -Eq "estimated wall time: [0-9.]+ min" "$T/out" && [ ! -e "$T/dry" ]; then ok "dry-run: --act-bits same --act-granularity $g is timed under its activation scheme"
    else fail "dry-run: --act-bits same --act-granularity $g is timed under its activation scheme" "exit $rc"; show "$T/out"; show "$T/err"; fi
done
snapshot "$REF" >"$T/ref.snap"
"$QCORR" sweep $GRID --out "$REF" --dry-run >"$T/out" 2>"$T/err" </dev/null
rc=$?
snapshot "$REF" >"$T/snap"
if [ $rc = 0 ] && cmp -s "$T/ref.snap" "$T/snap"; then ok "dry-run: on an existing sweep directory changes nothing"
else fail "dry-run: on an existing sweep directory changes nothing" "exit $rc"; fi

# the transforms axis: a quantized model per transform (id and checkpoint _rotate), the scheme
# naming it, the manifest entry; the rotated model's lstsq corrections learn from the float model
# rotated alike: on this tiny model lstsq moves the loss by about 0.001 nats either way, and
# fitted to the unrotated float model's stream it made it 0.77 nats worse (2.794 -> 3.567)
X=$T/transforms
"$QCORR" sweep --sizes 16x1 --ctx 16 --heads 2 --train-steps 200 --train-batch 8 --batch 4 --calib-tokens 1024 --seeds 1 \
    --bits 4 --act-bits 4 --transforms none,rotate --methods none,lstsq --every 1 --no-control --quiet --out "$X" >"$T/out" 2>"$T/err" </dev/null
rc=$?
if [ $rc = 0 ] && [ -f "$X/quant/s1_16x1_b4_rotate.safetensors" ] && grep -q '"transforms"' "$X/manifest.json" &&
    $PY -c '
import csv, sys
rows = {r["run_id"]: r for r in csv.DictReader(open(sys.argv[1]))}
rot = rows["s1_16x1_b4_e1_h0_lstsq_rotate"]
assert "transform=rotate" in rot["scheme"] and "transform" not in rows["s1_16x1_b4_e1_h0_lstsq"]["scheme"], rot["scheme"]
assert abs(float(rot["loss_corrected"]) - float(rot["loss_quant"])) < 0.05, (rot["loss_quant"], rot["loss_corrected"])
assert len(rows) == 4, sorted(rows)
' "$X/summary.csv"; then ok "sweep --transforms none,rotate: a quantized model each, named; rotated lstsq fits the rotated float model"
else fail "sweep --transforms none,rotate: a quantized model each, named; rotated lstsq fits the rotated float model" "exit $rc"; show "$T/err"; fi
"$QCORR" sweep --sizes 16x1 --transforms none,spin --out "$T/bad" --dry-run >"$T/out" 2>"$T/err" </dev/null
rc=$?
if [ $rc = 2 ] && grep -q -- "--transforms" "$T/err" && grep -q "spin" "$T/err" && [ ! -e "$T/bad" ]; then ok "sweep --transforms none,spin is refused naming the flag and the value"
else fail "sweep --transforms none,spin is refused naming the flag and the value" "exit $rc"; show "$T/err"; fi

# --act-bits same in a sweep: each run's activations (and keys and values) at its own weight
# bits, the control arm the float model; each quantized model is the one `quantize --bits B
# --act-bits B` makes (its loss as `eval` gives it)
X=$T/actsame
"$QCORR" sweep --sizes 16x1 --ctx 16 --heads 2 --train-steps 200 --train-batch 8 --batch 4 --calib-tokens 1024 --seeds 1 \
    --bits 2,4 --act-bits same --act-granularity tensor --act-asymmetric --act-points inputs,kv --methods none,lstsq --every 1 \
    --quiet --out "$X" >"$T/out" 2>"$T/err" </dev/null
rc=$?
ok_same=0
if [ $rc = 0 ]; then
    ok_same=1
    for b in 2 4; do
        "$QCORR" quantize --model "$X/floats/s1_16x1.safetensors" --bits $b --act-bits $b --act-granularity tensor --act-asymmetric \
            --act-points inputs,kv --out "$T/q$b.safetensors" >/dev/null 2>"$T/err" &&
            "$QCORR" eval --model "$T/q$b.safetensors" --data "$CORPUS" --json >"$T/e$b.json" 2>>"$T/err" || ok_same=0
    done
fi
if [ $ok_same = 1 ] && grep -q '"quant_act_bits":[[:space:]]*"same"' "$X/manifest.json" &&
    grep -q "activations at each run's weight bits, keys and values each run's weight bits" "$X/manifest.json" &&
    $PY -c '
import csv, json, sys
rows = {r["run_id"]: r for r in csv.DictReader(open(sys.argv[1]))}
assert len(rows) == 5, sorted(rows)
for b in (2, 4):
    r = rows["s1_16x1_b%d_none" % b]
    assert "act=int%d:tensor:asym:inputs,kv" % b in r["scheme"], r["scheme"]
    want = json.load(open(sys.argv[2 + (b == 4)]))["loss"]
    assert abs(float(r["loss_quant"]) - want) <= 1e-6 * abs(want), (b, r["loss_quant"], want)
c = rows["s1_16x1_b32_e1_h0_lstsq"]
assert "act=" not in c["scheme"] and c["loss_quant"] == c["loss_float"], (c["scheme"], c["loss_quant"], c["loss_float"])
' "$X/summary.csv" "$T/e2.json" "$T/e4.json"; then ok "sweep --act-bits same: each run's activations at its weight bits, as quantize makes them; the control arm float"
else fail "sweep --act-bits same: each run's activations at its weight bits, as quantize makes them; the control arm float" "exit $rc"; show "$T/err"; fi

# keys and values fixed at 8 bits are another sweep than keys and values that follow the weights
# (both describe as int8 before the bits are replaced); same with nothing to follow is refused
snapshot "$X" >"$T/same.snap"
"$QCORR" sweep --sizes 16x1 --ctx 16 --heads 2 --train-steps 200 --train-batch 8 --batch 4 --calib-tokens 1024 --seeds 1 \
    --bits 2,4 --act-bits same --act-granularity tensor --act-asymmetric --act-points inputs,kv --kv-bits 8 --methods none,lstsq --every 1 \
    --quiet --out "$X" >"$T/out" 2>"$T/err" </dev/null
rc=$?
snapshot "$X" >"$T/snap"
if [ $rc = 1 ] && grep -q "quant_act" "$T/err" && cmp -s "$T/same.snap" "$T/snap"; then ok "sweep --act-bits same: a restart with --kv-bits 8 is refused naming quant_act, the directory untouched"
else fail "sweep --act-bits same: a restart with --kv-bits 8 is refused naming quant_act, the directory untouched" "exit $rc"; show "$T/err"; fi
"$QCORR" sweep --sizes 16x1 --act-bits same --act-points kv --kv-bits 4 --out "$T/bad" --dry-run >"$T/out" 2>"$T/err" </dev/null
rc=$?
if [ $rc = 2 ] && grep -q -- "--act-bits same" "$T/err" && [ ! -e "$T/bad" ]; then ok "sweep --act-bits same with only a fixed --kv-bits is refused: nothing follows the weight bits"
else fail "sweep --act-bits same with only a fixed --kv-bits is refused: nothing follows the weight bits" "exit $rc"; show "$T/err"; fi

# --steps auto writes its rule into the manifest, --ema too (only when on, so older directories
# resume): a restart with another averaging is another sweep, refused naming the key
X=$T/ema
AUTO="--sizes 16x1 --ctx 16 --heads 2 --train-steps 50 --train-batch 8 --batch 4 --calib-tokens 1024 --seeds 1 --bits 2 --every 1 --hidden 0 --no-control --steps auto --max-steps 20 --eval-every 5 --quiet"
"$QCORR" sweep $AUTO --ema 0.9 --out "$X" >"$T/out" 2>"$T/err" </dev/null
rc=$?
if [ $rc = 0 ] && $PY -c '
import json, sys
st = json.load(open(sys.argv[1]))["correction"]["stopping"]
assert st["ema"] == 0.9 and "running average" in st["keeps"], st
' "$X/manifest.json"; then ok "sweep --steps auto --ema 0.9: the manifest's stopping rule names the average"
else fail "sweep --steps auto --ema 0.9: the manifest's stopping rule names the average" "exit $rc"; show "$T/err"; fi
snapshot "$X" >"$T/ema.snap"
"$QCORR" sweep $AUTO --out "$X" >"$T/out" 2>"$T/err" </dev/null
rc=$?
snapshot "$X" >"$T/snap"
if [ $rc = 1 ] && grep -q "correction.stopping" "$T/err" && cmp -s "$T/ema.snap" "$T/snap"; then ok "sweep --steps auto without --ema on an --ema 0.9 directory is refused naming correction.stopping"
else fail "sweep --steps auto without --ema on an --ema 0.9 directory is refused naming correction.stopping" "exit $rc"; show "$T/err"; fi

# scripts/sweep_flops.sh counts a run's steps through the blocks above the one holding its first
# site (and the head), never through that block: a 256x2 run at every 2 (its one site after the
# last block) trains through the head alone. 1,000 steps of batch 8 x ctx 128 at d 256: every 2
# 1000*8*128*(2*65*256 + 3*256^2) multiply-adds = 470.8 GFLOP; every 1 (sites after blocks 0 and 1)
# adds block 1: 1000*8*128*(2*(12*256^2 + 2*128*256 + 65*256) + 3*2*256^2) = 4363.3 GFLOP
mkdir -p "$T/flops"
for e in 1 2; do
    printf 'run_id,seed,size,d_model,n_layer,bits,every,hidden,steps,steps_run,stopped_by\nr,1,256x2,256,2,2,%s,0,1000,,\n' "$e" >"$T/flops/summary.csv"
    sh scripts/sweep_flops.sh "$T/flops" 128 8 16 256x2:0 >"$T/out" 2>"$T/err"
    eval "got_$e=\$(sed -n 's/^correction steps \([0-9]*\) GFLOP$/\1/p' \"\$T/out\")"
done
if [ "$got_2" = 471 ] && [ "$got_1" = 4363 ]; then ok "sweep_flops.sh: correction steps above the first site's block (every 2: 471 GFLOP, every 1: 4363)"
else fail "sweep_flops.sh: correction steps above the first site's block" "every 2: '$got_2' (want 471), every 1: '$got_1' (want 4363)"; show "$T/out" 9; show "$T/err"; fi

echo "# total $(($(date +%s) - START))s"
echo "sweep: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
