#!/bin/sh
# POSIX sh. Submits a qcorr sweep to Slurm (README: Sweeps, Slurm):
# a job array with one task per shard, each running
#     qcorr sweep --out OUT_DIR --shard ${SLURM_ARRAY_TASK_ID}/N [extra flags...]
# on the shared OUT_DIR, then a job that depends on the whole array (afterok) and runs
#     qcorr report OUT_DIR
#
# usage: scripts/slurm-sweep.sh [-n SHARDS] [-p PARTITION] [-c CPUS_PER_TASK] [-t TIME]
#                               [-m MEM] [-q QCORR] [-j JOB_NAME] OUT_DIR [qcorr sweep flags...]
#
#   -n SHARDS         array tasks = shards (default 4)
#   -p PARTITION      Slurm partition (default: the cluster's default partition)
#   -c CPUS_PER_TASK  cores per shard, exported as OMP_NUM_THREADS (default 2)
#   -t TIME           time limit of each shard, Slurm syntax (default 24:00:00)
#   -m MEM            memory per shard, Slurm syntax (default: the cluster's default)
#   -q QCORR          the qcorr binary (default: build/qcorr beside this script's repository)
#   -j JOB_NAME       job name (default qcorr-sweep; the report job gets JOB_NAME-report)
#
# Every flag after OUT_DIR goes to every shard unchanged (--preset, --seeds, --data, ...);
# without --preset qcorr uses its own default (quick). OUT_DIR must be on a file system that
# every node sees. Logs: OUT_DIR/slurm-<array job id>_<task>.out and
# OUT_DIR/slurm-<report job id>.out. Prints the two job ids.
#
# SBATCH (environment) is the sbatch command to use (default sbatch); SLURM_SWEEP_DRY_RUN=1
# prints the two batch scripts instead of submitting them.
set -eu

me=$(basename "$0")
usage() {
    echo "usage: $me [-n SHARDS] [-p PARTITION] [-c CPUS_PER_TASK] [-t TIME] [-m MEM] [-q QCORR] [-j JOB_NAME] OUT_DIR [qcorr sweep flags...]" >&2
    echo "(defaults: 4 shards, default partition, 2 cpus per task, 24:00:00; details at the top of $0)" >&2
    exit "${1:-2}"
}
die() { echo "$me: $*" >&2; exit 1; }
bad() { echo "$me: $*" >&2; exit 2; }

# Quote one word for sh: 'it'"'"'s' style, safe for any bytes but NUL.
q() {
    _q=$(printf '%sx' "$1" | sed "s/'/'\"'\"'/g")
    printf "'%s'" "${_q%x}"
}

shards=4 partition='' cpus=2 time_limit=24:00:00 mem='' qcorr='' name=qcorr-sweep
while getopts n:p:c:t:m:q:j:h opt; do
    case $opt in
    n) shards=$OPTARG ;;
    p) partition=$OPTARG ;;
    c) cpus=$OPTARG ;;
    t) time_limit=$OPTARG ;;
    m) mem=$OPTARG ;;
    q) qcorr=$OPTARG ;;
    j) name=$OPTARG ;;
    h) usage 0 ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
out=$1
shift

case $shards in '' | *[!0-9]* | 0*) bad "-n: a positive integer is needed, not '$shards'" ;; esac
case $cpus in '' | *[!0-9]* | 0*) bad "-c: a positive integer is needed, not '$cpus'" ;; esac
for a in "$@"; do
    case $a in
    --out | --out=* | --shard | --shard=*) bad "$a is set by this script (OUT_DIR and -n)" ;;
    esac
done

# Absolute paths: the jobs may start in another directory on another node.
here=$(cd "$(dirname "$0")" && pwd)
[ -n "$qcorr" ] || qcorr=$here/../build/qcorr
case $qcorr in /*) ;; *) qcorr=$(pwd)/$qcorr ;; esac
qdir=$(cd "$(dirname "$qcorr")" 2>/dev/null && pwd) || die "no directory for $qcorr"
qcorr=$qdir/$(basename "$qcorr")
[ -x "$qcorr" ] || die "$qcorr is not an executable (run make first, or pass -q)"
mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)

sbatch_cmd=${SBATCH:-sbatch}
if [ "${SLURM_SWEEP_DRY_RUN:-0}" != 1 ]; then
    command -v "$sbatch_cmd" >/dev/null 2>&1 || die "$sbatch_cmd not found (is Slurm installed? scripts/slurm-local.sh sets one up)"
fi

# The sweep flags, each quoted, for the batch script.
flags=
for a in "$@"; do flags="$flags $(q "$a")"; done

# Common sbatch options, as positional parameters so nothing is re-split.
set -- --parsable --chdir="$out"
[ -n "$partition" ] && set -- "$@" --partition="$partition"

array_script=$(cat <<EOF
#!/bin/sh
# qcorr sweep shard \${SLURM_ARRAY_TASK_ID}/$shards, written by $me
export OMP_NUM_THREADS=\${SLURM_CPUS_PER_TASK:-$cpus}
echo "shard \${SLURM_ARRAY_TASK_ID}/$shards on \$(hostname), \$OMP_NUM_THREADS threads, started \$(date -u +%FT%TZ)"
$(q "$qcorr") sweep --out $(q "$out") --shard "\${SLURM_ARRAY_TASK_ID}/$shards"$flags
rc=\$?
echo "shard \${SLURM_ARRAY_TASK_ID}/$shards exited \$rc at \$(date -u +%FT%TZ)"
exit \$rc
EOF
)

report_script=$(cat <<EOF
#!/bin/sh
# qcorr report after every shard succeeded, written by $me
echo "report on \$(hostname), started \$(date -u +%FT%TZ)"
$(q "$qcorr") report $(q "$out")
rc=\$?
echo "report exited \$rc at \$(date -u +%FT%TZ)"
exit \$rc
EOF
)

if [ "${SLURM_SWEEP_DRY_RUN:-0}" = 1 ]; then
    echo "# sbatch $* --job-name=$name --array=1-$shards --cpus-per-task=$cpus --time=$time_limit${mem:+ --mem=$mem} --output=$out/slurm-%A_%a.out"
    printf '%s\n' "$array_script"
    echo "# sbatch $* --job-name=$name-report --dependency=afterok:<array id> --kill-on-invalid-dep=yes --time=1:00:00 --output=$out/slurm-%j.out"
    printf '%s\n' "$report_script"
    exit 0
fi

# --parsable prints "jobid" or "jobid;cluster".
array_id=$(printf '%s\n' "$array_script" | "$sbatch_cmd" "$@" \
    --job-name="$name" --array="1-$shards" --ntasks=1 --cpus-per-task="$cpus" \
    --time="$time_limit" ${mem:+"--mem=$mem"} --output="$out/slurm-%A_%a.out") ||
    die "sbatch of the shard array failed"
array_id=${array_id%%;*}
case $array_id in '' | *[!0-9]*) die "sbatch printed '$array_id', not a job id" ;; esac

report_id=$(printf '%s\n' "$report_script" | "$sbatch_cmd" "$@" \
    --job-name="$name-report" --dependency="afterok:$array_id" --kill-on-invalid-dep=yes \
    --ntasks=1 --cpus-per-task=1 --time=1:00:00 --output="$out/slurm-%j.out") ||
    die "sbatch of the report job failed (the array $array_id is queued: scancel $array_id)"
report_id=${report_id%%;*}

echo "array job:  $array_id ($shards shards of: $qcorr sweep --out $out$flags)"
echo "report job: $report_id (after every shard succeeds: $qcorr report $out)"
echo "logs:       $out/slurm-${array_id}_<shard>.out, $out/slurm-$report_id.out"
echo "watch:      squeue -j $array_id,$report_id   (sacct -j $array_id,$report_id where accounting is on)"
