#!/bin/sh
# run_bench: `make bench`. Prints the machine's facts, then for each model size alternates a qcorr
# bench process and a PyTorch process (bench/torch_step.py) for several rounds, so background noise
# hits both, and prints a table of medians across rounds. Usage: run_bench.sh path/to/bench
# Environment: BENCH_ROUNDS (default 3), BENCH_SIZES (default "64x2 128x4 256x6"),
# BENCH_THREADS (default nproc), BENCH_PYTHON (default /usr/bin/python3), QCORR_DATA (corpus),
# QCORR_KERNELS (qcorr's kernel path; unset: the best the CPU runs). OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE are printed as set, then unset for both engines' processes: the ratio targets
# are stated for OpenBLAS choosing its kernels itself. BENCH_OPENBLAS_CORETYPE, if set, is given
# to both engines as OPENBLAS_CORETYPE instead (e.g. Haswell, to stand in for an AVX2 machine on
# a CPU that OpenBLAS does not know).
set -u
BENCH=${1:-build/bench/bench}
ROUNDS=${BENCH_ROUNDS:-3}
SIZES=${BENCH_SIZES:-"64x2 128x4 256x6"}
THREADS=${BENCH_THREADS:-$(nproc)}
PYTHON=${BENCH_PYTHON:-/usr/bin/python3}
HERE=$(dirname "$0")

if [ ! -x "$BENCH" ]; then echo "run_bench: $BENCH: no bench binary (run 'make bench')" >&2; exit 1; fi

# Timed steps per size: enough for a median, small enough that the whole run stays near 5 minutes
# on 2 idle cores (a 256x6 step takes seconds). Sets steps, warmup, evals.
steps_for() {
    case "$1" in
        64x2) steps=20 warmup=3 evals=8 ;;
        128x4) steps=8 warmup=2 evals=4 ;;
        *) steps=3 warmup=1 evals=2 ;;
    esac
}

# The corpus, by qcorr's search order (README: Data) (no --data flag here); random tokens without one.
DATA=""
for candidate in "${QCORR_DATA:-}" data/tinyshakespeare.txt ../shared/data/tinyshakespeare.txt; do
    if [ -n "$candidate" ] && [ -r "$candidate" ]; then DATA=$candidate; break; fi
done

HAVE_TORCH=0
TORCH_VERSION=""
if TORCH_VERSION=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null); then HAVE_TORCH=1; fi

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo "== qcorr bench: batch 32 x context 128, 4 heads, float32, medians over $ROUNDS alternated rounds"
echo "machine: nproc $(nproc), CPU ${cpu_model:-unknown}, threads used $THREADS"
# Both engines wait the way qcorr does by default (see src/cli/main.c): passive, unless set.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# what both engines' processes run with: OpenBLAS's own choice of kernels unless asked otherwise
blas_env="-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
[ -n "${BENCH_OPENBLAS_CORETYPE:-}" ] && blas_env="$blas_env OPENBLAS_CORETYPE=$BENCH_OPENBLAS_CORETYPE"
echo "env: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}" \
    "(the runs below: both unset${BENCH_OPENBLAS_CORETYPE:+, then OPENBLAS_CORETYPE=$BENCH_OPENBLAS_CORETYPE from BENCH_OPENBLAS_CORETYPE})" \
    "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset} OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
if ! kernels=$("$BENCH" --kernels); then exit 1; fi # a QCORR_KERNELS this CPU cannot run: the bench said why
echo "qcorr kernels: $kernels${QCORR_KERNELS:+, forced by QCORR_KERNELS=$QCORR_KERNELS}"
echo "tokens: ${DATA:-random (no corpus found)}"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (other processes make every number noisy)"
if [ "$HAVE_TORCH" = 1 ]; then
    torch_cpu=$("$PYTHON" -c 'import torch; print([l.split(":")[1].strip() for l in torch.__config__.show().splitlines() if "CPU capability" in l][0])' 2>/dev/null)
    echo "PyTorch $TORCH_VERSION ($PYTHON), torch.set_num_threads($THREADS), its own kernels' CPU capability: ${torch_cpu:-unknown}"
else
    echo "PyTorch not installed: ratios skipped"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qcorr-bench.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM # (a trap that only cleaned up would let the rounds go on)

# field FILE KEY: the numeric or string value of KEY in each one-line JSON object of FILE
field() {
    sed -n "s/.*\"$2\": *\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1"
}
# median of the numbers on stdin ("-" if none)
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# A private copy of the binary: a concurrent `make` or `make clean` cannot pull it away mid-run.
cp "$BENCH" "$TMP/bench" || exit 1
BENCH=$TMP/bench

# run_one ENGINE SIZE ROUND STEPS WARMUP EVALS: one process, its JSON line appended to $TMP/SIZE.ENGINE
run_one() {
    engine=$1 size=$2 round=$3
    if [ "$engine" = qcorr ]; then
        data_flag="--random-tokens"; [ -n "$DATA" ] && data_flag="--data $DATA"
        # shellcheck disable=SC2086  # data flags split on purpose
        # shellcheck disable=SC2086  # blas_env splits on purpose
        line=$(env $blas_env "$BENCH" --size "$size" --steps "$4" --warmup "$5" --eval-steps "$6" --threads "$THREADS" $data_flag --json)
    else
        data_flag=""; [ -n "$DATA" ] && data_flag="--data $DATA"
        # shellcheck disable=SC2086
        line=$(env $blas_env "$PYTHON" "$HERE/torch_step.py" --size "$size" --steps "$4" --warmup "$5" --eval-steps "$6" \
               --threads "$THREADS" $data_flag --json)
    fi
    rc=$?
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        echo "run_bench: $engine failed at size $size (exit $rc)" >&2
        return 1
    fi
    echo "$line" >>"$TMP/$size.$engine"
    echo "$round $(echo "$line" | field /dev/stdin step_ms) $(echo "$line" | field /dev/stdin best_step_ms)" \
        >>"$TMP/$size.$engine.times"
    printf '  round %d/%d %-6s %-5s %9.1f ms/step\n' "$round" "$ROUNDS" "$size" "$engine" \
        "$(echo "$line" | field /dev/stdin step_ms)" >&2
}

status=0
for size in $SIZES; do
    steps_for "$size"
    for f in qcorr torch qcorr.times torch.times; do : >"$TMP/$size.$f"; done
    round=1
    while [ "$round" -le "$ROUNDS" ]; do
        # the order flips every round (qcorr first, then torch first, ...) so a drifting background
        # load favours neither engine
        order="qcorr torch"
        [ $((round % 2)) -eq 0 ] && order="torch qcorr"
        for engine in $order; do
            [ "$engine" = torch ] && [ "$HAVE_TORCH" != 1 ] && continue
            run_one "$engine" "$size" "$round" "$steps" "$warmup" "$evals" || status=1
        done
        round=$((round + 1))
    done
done

# ratio_of SIZE COLUMN: qcorr speed over torch speed from the .times files. COLUMN 2: the median of
# per-round ratios of median step times (each pair ran back to back); COLUMN 3: the ratio of the
# fastest steps seen in any round (background load only ever slows a step, so the minimum is the
# least noisy estimate of each engine's own speed).
ratio_of() {
    if [ "$2" = 2 ]; then
        awk 'NR == FNR { torch[$1] = $2; next } ($1 in torch) && $2 > 0 { print torch[$1] / $2 }' \
            "$TMP/$1.torch.times" "$TMP/$1.qcorr.times" | median
    else
        awk 'NR == FNR { if (t == "" || $3 < t) t = $3; next } { if (q == "" || $3 < q) q = $3 }
             END { if (t == "" || q == "" || q <= 0) print "-"; else print t / q }' \
            "$TMP/$1.torch.times" "$TMP/$1.qcorr.times"
    fi
}

echo
echo "size   | qcorr tok/s | torch tok/s | ratio | ratio best | GFLOP/s | % sgemm peak | eval tok/s qcorr / torch | peak MB qcorr / torch"
echo "-------|-------------|-------------|-------|------------|---------|--------------|--------------------------|----------------------"
for size in $SIZES; do
    q="$TMP/$size.qcorr"; t="$TMP/$size.torch"
    q_tps=$(field "$q" train_tokens_per_s | median)
    gflops=$(field "$q" train_gflops | median)
    frac=$(field "$q" peak_fraction | median)
    q_eval=$(field "$q" eval_tokens_per_s | median)
    q_mb=$(field "$q" peak_rss_mb | median)
    t_tps="-"; t_eval="-"; t_mb="-"; ratio="-"; ratio_best="-"
    if [ "$HAVE_TORCH" = 1 ] && [ -s "$t" ]; then
        t_tps=$(field "$t" train_tokens_per_s | median)
        t_eval=$(field "$t" eval_tokens_per_s | median)
        t_mb=$(field "$t" peak_rss_mb | median)
        ratio=$(ratio_of "$size" 2)
        ratio_best=$(ratio_of "$size" 3)
    fi
    awk -v s="$size" -v q="$q_tps" -v t="$t_tps" -v r="$ratio" -v rb="$ratio_best" -v g="$gflops" -v f="$frac" \
        -v qe="$q_eval" -v te="$t_eval" -v qm="$q_mb" -v tm="$t_mb" '
        function num(x, fmt) { return x == "-" || x == "" ? "-" : sprintf(fmt, x) }
        BEGIN {
            printf "%-6s | %11s | %11s | %5s | %10s | %7s | %12s | %11s / %-11s | %9s / %s\n", s, num(q, "%.0f"),
                num(t, "%.0f"), num(r, "%.2fx"), num(rb, "%.2fx"), num(g, "%.1f"),
                num(f == "" || f == "-" ? "-" : 100 * f, "%.0f%%"), num(qe, "%.0f"), num(te, "%.0f"),
                num(qm, "%.0f"), num(tm, "%.0f")
        }'
done

echo
echo "correction-training step (base frozen, a site after every block, ce, batch 32 x 128), median ms over rounds:"
echo "size   | hidden | qcorr ms | torch ms | ratio | qcorr with cached prefix ms | ratio cached"
echo "-------|--------|----------|----------|-------|-----------------------------|-------------"
for size in $SIZES; do
    q="$TMP/$size.qcorr"; t="$TMP/$size.torch"
    for h in 0 64; do
        qm=$(field "$q" "corr_h${h}_ms" | median)
        qc=$(field "$q" "corr_cached_h${h}_ms" | median)
        tm="-"
        [ "$HAVE_TORCH" = 1 ] && [ -s "$t" ] && tm=$(field "$t" "corr_h${h}_ms" | median)
        awk -v s="$size" -v h="$h" -v q="$qm" -v c="$qc" -v t="$tm" '
            function num(x, fmt) { return x == "-" || x == "" ? "-" : sprintf(fmt, x) }
            BEGIN {
                r = (t == "-" || q == "-" || q <= 0) ? "-" : t / q
                rc = (t == "-" || c == "-" || c <= 0) ? "-" : t / c
                printf "%-6s | %6s | %8s | %8s | %5s | %27s | %s\n", s, h, num(q, "%.1f"), num(t, "%.1f"),
                    num(r, "%.2fx"), num(c, "%.1f"), num(rc, "%.2fx")
            }'
    done
done
echo "ratio: the same step in both engines (the whole frozen forward, backward from the loss down to the"
echo "first site); ratio cached: qcorr's step as the sweep runs it, the stream below the first site read"
echo "from a cache built once per calibration set (PyTorch column unchanged)."

# target_row SIZE STEP TARGET TORCH_MS QCORR_MS GFLOP PEAK: one row of the targets table
target_row() {
    awk -v s="$1" -v step="$2" -v x="$3" -v t="$4" -v q="$5" -v g="$6" -v p="$7" '
        function ok(v) { return v != "" && v != "-" && v + 0 > 0 }
        BEGIN {
            if (!ok(t) || !ok(q) || !ok(g)) { printf "%-6s | %-21s | %4.1fx | (no PyTorch time)\n", s, step, x; exit }
            need = t / x; rate = g / (need / 1e3)
            share = ok(p) ? sprintf("%.0f%%", 100 * rate / p) : "-"
            now = ok(p) ? sprintf("%.0f%%", 100 * g / (q / 1e3) / p) : "-"
            printf "%-6s | %-21s | %4.1fx | %8.1f | %8.1f | %7.2f | %7.1f | %13s | %.2fx at %s of peak\n",
                s, step, x, t, need, g, rate, share, t / q, now
        }'
}

if [ "$HAVE_TORCH" = 1 ]; then
    echo
    echo "issue 15's ratio targets against this run: the step time each target needs, its FLOPs (bench.c:"
    echo "training_step_flops, correction_step_flops, forward_flops), the GFLOP/s that time needs and its share"
    echo "of the sgemm peak measured in the same processes (over 100%: out of reach of this machine's fp32 FMA"
    echo "units). Issue 15 also asks 256x6 training to run at >= 50% of that peak."
    echo "size   | step                  | goal  | torch ms | needs ms |   GFLOP | GFLOP/s | share of peak | qcorr now (median times)"
    echo "-------|-----------------------|-------|----------|----------|---------|---------|---------------|-------------------------"
    for size in $SIZES; do
        q="$TMP/$size.qcorr"; t="$TMP/$size.torch"
        [ -s "$t" ] || continue
        peak=$(field "$q" sgemm_peak_gflops | median)
        case "$size" in 64x2) goal=3 ;; 128x4) goal=2 ;; 256x6) goal=1.5 ;; *) goal="" ;; esac
        if [ -n "$goal" ]; then
            target_row "$size" training "$goal" "$(field "$t" step_ms | median)" "$(field "$q" step_ms | median)" \
                "$(field "$q" step_gflop | median)" "$peak"
        fi
        target_row "$size" evaluation 2 "$(field "$t" eval_ms | median)" "$(field "$q" eval_ms | median)" \
            "$(field "$q" eval_gflop | median)" "$peak"
        for h in 0 64; do
            tm=$(field "$t" "corr_h${h}_ms" | median)
            target_row "$size" "correction h$h" 2 "$tm" "$(field "$q" "corr_h${h}_ms" | median)" \
                "$(field "$q" "corr_h${h}_gflop" | median)" "$peak"
            target_row "$size" "correction h$h cached" 2 "$tm" "$(field "$q" "corr_cached_h${h}_ms" | median)" \
                "$(field "$q" "corr_cached_h${h}_gflop" | median)" "$peak"
        done
    done
fi

echo
echo "step breakdown, median ms: forward+loss / zero_grad+backward / clip+AdamW; sgemm peak measured by each qcorr run:"
for size in $SIZES; do
    q="$TMP/$size.qcorr"; t="$TMP/$size.torch"
    line=$(printf '%-6s qcorr %s / %s / %s' "$size" "$(field "$q" forward_ms | median)" \
        "$(field "$q" backward_ms | median)" "$(field "$q" optimizer_ms | median)")
    if [ "$HAVE_TORCH" = 1 ] && [ -s "$t" ]; then
        line="$line | torch $(field "$t" forward_ms | median) / $(field "$t" backward_ms | median) / $(field "$t" optimizer_ms | median)"
    fi
    echo "$line | sgemm peak $(field "$q" sgemm_peak_gflops | median) GFLOP/s = best of OpenBLAS" \
        "$(field "$q" openblas_sgemm_gflops | median) (core $(field "$q" openblas_core | head -n 1)) and qcorr" \
        "$(field "$q" qcorr_sgemm_gflops | median) (kernels $(field "$q" kernels | head -n 1))" |
        awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+$/) $i = sprintf("%.1f", $i); print }'
done
echo "tok/s, GFLOP/s, eval tok/s, MB: medians over rounds of each process's median step (batch 32 x 128 tokens)."
echo "ratio = qcorr/torch speed, median of per-round ratios; ratio best = ratio of the fastest single steps."
echo "GFLOP/s = matrix-product FLOPs of one step (bench/bench.c: training_step_flops; attention over the"
echo "causal triangle) / median step time; % sgemm peak = that over the best rate of cblas_sgemm and of qcorr's"
echo "gemm on squares of 1024-2048, measured in-process."
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
exit $status
