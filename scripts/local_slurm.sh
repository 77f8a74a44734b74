#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying hydra/launcher=slurm, srun DDP and requeue without a real
# cluster (tests/test_slurm.py runs on it; .ci/run starts it before the tests). Needs root on Debian/Ubuntu.
#
#   sudo scripts/local_slurm.sh          # install slurm-wlm + munge when missing, (re)start, wait until idle
#   sudo scripts/local_slurm.sh stop     # stop slurmctld and slurmd (munged stays)
#   ... [stop] --force                   # also a cluster this script did not set up (see below)
#
# Idempotent: a second run reuses daemons that run with the same slurm.conf, and restarts them when it changed.
# The node is this machine with its real CPUs and memory (slurmd -C); no cgroups, no accounting database.
# It only touches a cluster it set up itself, marked by $CONF_DIR/.cifar_lit_local (written with its slurm.conf; a
# slurm.conf it wrote before the marker existed counts too): a machine with another slurm.conf, or SLURM daemons
# in /run/slurm*.pid, is left alone unless --force. A fresh machine (no slurm.conf, no daemons) is set up.
# CIFAR_LIT_SLURM_CONF_DIR and CIFAR_LIT_SLURM_PID_DIR (default /etc/slurm, /run) are for tests/test_local_slurm.py.
set -euo pipefail

CONF_DIR=${CIFAR_LIT_SLURM_CONF_DIR:-/etc/slurm}
PID_DIR=${CIFAR_LIT_SLURM_PID_DIR:-/run}
CONF=$CONF_DIR/slurm.conf
MARKER=$CONF_DIR/.cifar_lit_local
HEADER="# written by scripts/local_slurm.sh: a one-node test cluster"
export SLURM_CONF=$CONF  # daemons and commands read this slurm.conf (the default one unless the variable is set)
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm

die() { echo "local_slurm: $*" >&2; exit 1; }

action=start force=false
for arg in "$@"; do
    case "$arg" in
        stop) action=stop ;;
        --force) force=true ;;
        *) die "unknown argument $arg (usage: local_slurm.sh [stop] [--force])" ;;
    esac
done

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# whose cluster is this? ours: the marker, or a slurm.conf this script wrote before it had one
ours=false
if [ -e "$MARKER" ] || { [ -s "$CONF" ] && [ "$(head -1 "$CONF")" = "$HEADER" ]; }; then
    ours=true
elif [ -e "$CONF" ] || running "$PID_DIR/slurmctld.pid" || running "$PID_DIR/slurmd.pid"; then
    $force || die "$CONF or the daemons of $PID_DIR/slurm*.pid are not this script's (no $MARKER): not touching \
another SLURM; --force to $action it anyway"
fi

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons)"

stop_pidfile() {  # stop the daemon whose pid is in $1, if it still runs, and wait for it to go
    local pidfile=$1 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$pidfile"
}

if [ "$action" = stop ]; then
    stop_pidfile "$PID_DIR/slurmd.pid"
    stop_pidfile "$PID_DIR/slurmctld.pid"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and this is not a Debian/Ubuntu system"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

# munge: the authentication every SLURM daemon and command uses
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n >/dev/null || die "munged did not start"
fi

# slurm.conf for this node: its real CPUs and memory, as slurmd measures them
host=$(hostname -s)
node=$(slurmd -C | head -1 | sed -E "s/^NodeName=[^ ]+/NodeName=$host NodeAddr=127.0.0.1/; s/ UpTime.*//")
mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS"
new_conf=$(mktemp)
cat >"$new_conf" <<EOF
$HEADER
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$PID_DIR/slurmctld.pid
SlurmdPidFile=$PID_DIR/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=2
MinJobAge=300
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
touch "$MARKER"  # before anything of ours runs: a cluster this script set up
if running "$PID_DIR/slurmctld.pid" && running "$PID_DIR/slurmd.pid" && cmp -s "$new_conf" "$CONF"; then
    rm -f "$new_conf"
    echo "local_slurm: reusing the running cluster"
else
    stop_pidfile "$PID_DIR/slurmd.pid"
    stop_pidfile "$PID_DIR/slurmctld.pid"
    mv "$new_conf" "$CONF"
    chmod 644 "$CONF"
    /usr/sbin/slurmctld
    /usr/sbin/slurmd
fi

# wait until the node takes jobs
for _ in $(seq 60); do
    state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mix|alloc) echo "local_slurm: node $host is $state"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
die "node $host did not become idle (state: ${state:-none}); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
