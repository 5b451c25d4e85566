#!/bin/sh
# POSIX sh. A single-node Slurm on this machine, to try scripts/slurm-sweep.sh for real.
#
# usage: scripts/slurm-local.sh [start]   install (if missing), configure and start munged,
#                                         slurmctld and slurmd; wait until the node is idle
#        scripts/slurm-local.sh status    what runs, and sinfo/squeue
#        scripts/slurm-local.sh stop      cancel every job of this cluster, stop the daemons
#
# For machines without systemd (containers, CI VMs): the daemons are started directly, as
# root, and found again through their pid files, so running `start` twice is harmless.
# Debian/Ubuntu only (apt-get); needs root. Writes /etc/slurm/slurm.conf (refusing to overwrite
# one it did not write), keeps state in /var/spool/slurmctld and /var/spool/slurmd, logs to
# /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd.log and /var/log/munge/munged.log.
# No accounting database, so sacct has nothing to show; finished jobs stay in `squeue -t all`
# and `scontrol show job` for 5 minutes (MinJobAge) and are logged for good, one line each
# with state and exit code, in /var/log/slurm/jobcomp.log.
set -eu

me=$(basename "$0")
die() { echo "$me: $*" >&2; exit 1; }
say() { echo "$me: $*"; }

conf=/etc/slurm/slurm.conf
marker="# written by scripts/slurm-local.sh"
ctld_pid=/run/slurmctld.pid
slurmd_pid=/run/slurmd.pid
munge_pid=/run/munge/munged.pid
logdir=/var/log/slurm
wait_s=${SLURM_LOCAL_WAIT:-90}

# pid from a pid file if that process is alive and is the named program, else nothing
alive() {
    [ -r "$1" ] || return 1
    _p=$(cat "$1" 2>/dev/null) || return 1
    case $_p in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$_p" 2>/dev/null || return 1
    grep -q "$2" "/proc/$_p/cmdline" 2>/dev/null || return 1
    echo "$_p"
}

install_packages() {
    if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 &&
        command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
        return 0
    fi
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
    if p=$(alive "$munge_pid" munged); then
        say "munged already runs (pid $p)"
    else
        if [ ! -s /etc/munge/munge.key ]; then
            say "creating /etc/munge/munge.key"
            if command -v mungekey >/dev/null 2>&1; then
                mungekey --create --keyfile=/etc/munge/munge.key
            else
                dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
            fi
        fi
        chown munge:munge /etc/munge /etc/munge/munge.key
        chmod 700 /etc/munge
        chmod 400 /etc/munge/munge.key
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge
        chmod 755 /run/munge
        rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
        # munged forks into the background itself, as the munge user
        runuser -u munge -- /usr/sbin/munged --pid-file="$munge_pid"
        i=0
        until munge -n </dev/null | unmunge >/dev/null 2>&1; do
            i=$((i + 1))
            [ $i -le 20 ] || die "munged does not answer; see /var/log/munge/munged.log"
            sleep 0.5
        done
        say "munged started (pid $(cat "$munge_pid"))"
    fi
}

write_conf() {
    host=$(hostname -s)
    getent hosts "$host" >/dev/null 2>&1 || die "host name $host does not resolve (add it to /etc/hosts)"
    cpus=$(nproc --all)
    total=$(free -m | awk '/^Mem:/ {print $2}')
    mem=$((total * 9 / 10)) # a bit under what slurmd measures, or it drains the node
    new=$(cat <<EOF
$marker; rewritten by every start
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$logdir/slurmctld.log
SlurmdLogFile=$logdir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$logdir/jobcomp.log
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
    mkdir -p /etc/slurm
    if [ -e "$conf" ] && ! head -n 1 "$conf" | grep -qF "$marker"; then
        die "$conf exists and was not written by this script; move it away first"
    fi
    if [ -e "$conf" ] && [ "$(cat "$conf")" = "$new" ]; then
        return 0
    fi
    printf '%s\n' "$new" >"$conf.tmp"
    mv "$conf.tmp" "$conf"
    say "wrote $conf (node $host, $cpus CPUs, RealMemory=$mem MB)"
    conf_changed=1
}

start_slurm() {
    mkdir -p /var/spool/slurmctld /var/spool/slurmd "$logdir"
    if p=$(alive "$ctld_pid" slurmctld); then
        if [ "${conf_changed:-0}" = 1 ]; then
            say "slurmctld runs (pid $p); reloading the new configuration"
            scontrol reconfigure
        else
            say "slurmctld already runs (pid $p)"
        fi
    else
        # -i: ignore (discard) state that no longer matches this configuration
        slurmctld -i
        i=0
        until p=$(alive "$ctld_pid" slurmctld); do
            i=$((i + 1))
            [ $i -le 20 ] || die "slurmctld did not start; see $logdir/slurmctld.log"
            sleep 0.5
        done
        say "slurmctld started (pid $p)"
    fi
    if p=$(alive "$slurmd_pid" slurmd); then
        say "slurmd already runs (pid $p)"
    else
        slurmd
        i=0
        until p=$(alive "$slurmd_pid" slurmd); do
            i=$((i + 1))
            [ $i -le 20 ] || die "slurmd did not start; see $logdir/slurmd.log"
            sleep 0.5
        done
        say "slurmd started (pid $p)"
    fi
    host=$(hostname -s)
    i=0
    while :; do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1) || state=
        case $state in
        idle | mixed | allocated) break ;;
        esac
        i=$((i + 1))
        if [ $i -gt "$wait_s" ]; then
            sinfo -N -l >&2 || true
            tail -n 20 "$logdir/slurmctld.log" "$logdir/slurmd.log" >&2 || true
            die "node $host is '${state:-unknown}' after ${wait_s}s, not idle"
        fi
        sleep 1
    done
    say "node $host is $state after ${i}s"
    sinfo
}

stop_pid() { # pidfile name
    if p=$(alive "$1" "$2"); then
        kill "$p"
        i=0
        while kill -0 "$p" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -gt 30 ]; then
                say "$2 (pid $p) still runs after 15s; sending KILL"
                kill -9 "$p" 2>/dev/null || true
                break
            fi
            sleep 0.5
        done
        say "stopped $2 (pid $p)"
    else
        say "$2 is not running"
    fi
    rm -f "$1"
}

stop_all() {
    if alive "$ctld_pid" slurmctld >/dev/null && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        say "cancelling every job of this cluster:"
        squeue || true
        scancel --full --user=root 2>/dev/null || true
        for u in $(squeue -h -o %u 2>/dev/null | sort -u); do scancel --full --user="$u" || true; done
        i=0
        while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ $i -lt 30 ]; do
            i=$((i + 1))
            sleep 1
        done
    fi
    stop_pid "$slurmd_pid" slurmd
    stop_pid "$ctld_pid" slurmctld
    stop_pid "$munge_pid" munged
    # a step daemon orphaned by a job that outlived slurmd
    for p in $(ps -eo pid=,comm= | awk '$2 == "slurmstepd" {print $1}'); do
        say "ending leftover slurmstepd (pid $p)"
        kill "$p" 2>/dev/null || true
    done
}

status() {
    for d in munged slurmctld slurmd; do
        case $d in munged) f=$munge_pid ;; slurmctld) f=$ctld_pid ;; *) f=$slurmd_pid ;; esac
        if p=$(alive "$f" "$d"); then echo "$d: running (pid $p)"; else echo "$d: stopped"; fi
    done
    if alive "$ctld_pid" slurmctld >/dev/null; then
        sinfo || true
        squeue || true
    fi
}

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons)"
case ${1:-start} in
start)
    install_packages
    start_munge
    write_conf
    start_slurm
    ;;
stop) stop_all ;;
status) status ;;
-h | --help | help) sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' ;;
*) echo "usage: $me [start|status|stop]" >&2; exit 2 ;;
esac
