#!/usr/bin/env bash
# Stop the single-node Slurm test cluster started by start_cluster.sh.
#
# Jobs still queued or running are cancelled first (so no slurmstepd / job process outlives
# slurmd), then each daemon is stopped through its pid file, in reverse start order:
#   slurmd -> slurmctld -> slurmdbd -> mariadbd -> munged
# SIGTERM, wait up to BENCH_SLURM_STOP_WAIT seconds (default 30), then SIGKILL.
# No process is looked up by name. The state folder (database, job history) is kept, so a
# later start_cluster.sh continues with the same job ids and sacct history; delete
# $BENCH_SLURM_DIR (default /tmp/bench-slurm) after stopping for a clean slate.
set -uo pipefail

STATE=${BENCH_SLURM_DIR:-/tmp/bench-slurm}
WAIT=${BENCH_SLURM_STOP_WAIT:-30}
log() { echo "stop_cluster.sh: $*"; }

[[ $(id -u) -eq 0 ]] || { echo "stop_cluster.sh: must run as root" >&2; exit 1; }
if [[ ! -d $STATE ]]; then
    log "no state folder $STATE: nothing to stop"
    exit 0
fi
STATE=$(cd "$STATE" && pwd -P)
export SLURM_CONF=$STATE/etc/slurm.conf

pid_of() {   # pid_of PIDFILE COMM -> prints pid if the file names a live process called COMM*
    local f=$1 comm=$2 pid
    [[ -s $f ]] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] || return 1
    echo "$pid"
}

# Pids of this cluster's slurmstepd processes (they are reparented to init, so not children of
# slurmd, and they overwrite their environment): executable slurmstepd* AND working directory
# or an open file (the slurmd log it inherits) inside $STATE. Used to wait for job steps to end
# and, as a last resort, to kill exactly those pids; a slurmstepd of another Slurm install on
# the same machine is never hit.
stepd_pids() {
    local p exe cwd
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        [[ ${exe##*/} == slurmstepd* ]] || continue
        cwd=$(readlink "$p/cwd" 2>/dev/null || true)
        if [[ $cwd == "$STATE"/* ]] ||
            find "$p/fd" -mindepth 1 -maxdepth 1 -lname "$STATE/*" 2>/dev/null | grep -q .; then
            echo "${p#/proc/}"
        fi
    done
}

rc=0
stop_daemon() {   # stop_daemon NAME PIDFILE
    local name=$1 f=$2 pid i
    if ! pid=$(pid_of "$f" "$name"); then
        log "$name not running"
        rm -f "$f"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    local z=0
    for ((i = 0; i < WAIT * 5; i++)); do
        [[ -d /proc/$pid ]] || break
        # The daemon has exited once it is a zombie; reaping is up to its parent (init). Some
        # container inits reap lazily, so give it 5 s to vanish, then count it as gone anyway.
        if [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]]; then
            ((++z >= 25)) && break
        fi
        sleep 0.2
    done
    if [[ -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
        log "$name (pid $pid) did not exit after ${WAIT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
        [[ -d /proc/$pid ]] && { log "ERROR: $name (pid $pid) still there"; rc=1; }
    fi
    log "$name stopped (pid $pid)"
    rm -f "$f"
}

# 1. Cancel every job while the controller is still up, and wait for the steps to finish.
if pid_of "$STATE/run/slurmctld.pid" slurmctld >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for ((i = 0; i < WAIT * 5; i++)); do
            [[ -z $(squeue -h -t R,CG,PD,S -o %A 2>/dev/null) && -z $(stepd_pids) ]] && break
            sleep 0.2
        done
    fi
fi

stop_daemon slurmd "$STATE/run/slurmd.pid"

# slurmstepd of jobs slurmd could not clean up (should not happen after the scancel above).
left=$(stepd_pids | tr '\n' ' ')
if [[ -n ${left// /} ]]; then
    log "WARNING: slurmstepd still running (pids $left): SIGKILL to those pids"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null
fi

stop_daemon slurmctld "$STATE/run/slurmctld.pid"
stop_daemon slurmdbd "$STATE/run/slurmdbd.pid"
stop_daemon mariadbd "$STATE/db/mariadbd.pid"
stop_daemon munged "$STATE/munge/munged.pid"

if ((rc == 0)); then log "all stopped (state kept in $STATE)"; fi
exit $rc
