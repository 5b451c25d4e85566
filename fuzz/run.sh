#!/bin/sh
# run: runs each libFuzzer harness for SECONDS at low priority over fuzz/corpus-NAME/ (new
# inputs are added there) and the committed fuzz/seeds/NAME/, then prints one line per harness:
# executions, coverage (cov: edges, ft: features) and crashes (crash/leak/timeout/oom files
# under build/fuzz/artifacts/NAME/). Exits 1 if any harness found something.
# Usage (from the repository root): sh fuzz/run.sh SECONDS build/fuzz/fuzz_NAME...
set -u
seconds=$1
shift
status=0
summary=""
for bin in "$@"; do
    harness=$(basename "$bin")
    name=${harness#fuzz_}
    art=build/fuzz/artifacts/$name
    log=build/fuzz/$harness.log
    mkdir -p "fuzz/corpus-$name" "fuzz/seeds/$name" "$art"
    before=$(ls "$art" | wc -l)
    echo "fuzz: $harness for $seconds s (log $log)"
    OMP_NUM_THREADS=1 nice -n 19 "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$art/" "fuzz/corpus-$name" "fuzz/seeds/$name" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
    found=$(($(ls "$art" | wc -l) - before))
    line="$harness: ${execs:-?} executions (${rate:-?}/s), ${cov:-cov: ? ft: ?}, crashes: $found"
    if [ $rc -ne 0 ] || [ "$found" -ne 0 ]; then
        status=1
        line="$line (exit $rc; see $log and $art/)"
    fi
    summary="$summary$line
"
done
printf '%s' "$summary"
exit $status
