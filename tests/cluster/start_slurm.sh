#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying `snakemake --profile slurm` locally and for CI
# (tests/cluster/). Needs root and Debian/Ubuntu (apt); installs slurm-wlm and munge if missing.
#
#   tests/cluster/start_slurm.sh start DIR   install if needed, start munged, slurmctld and slurmd
#                                            with state, spool, logs and keys under DIR (idempotent:
#                                            daemons already running from DIR are left alone)
#   tests/cluster/start_slurm.sh stop DIR    stop exactly the daemons started from DIR (by pid)
#   tests/cluster/start_slurm.sh env DIR     print the environment lines the clients need
#
# Then, in the same shell:  eval "$(tests/cluster/start_slurm.sh env DIR)"; sinfo; sbatch ...
# The cluster: one node named after this host, 2 CPUs (SLURM_TEST_CPUS), no GPU, no accounting
# (so jobs are tracked with squeue: DKD_SLURM_STATUS_COMMAND=squeue), ports 6817/6818 unless
# SLURM_TEST_PORT (slurmctld; slurmd uses the next one) says otherwise; the default partition
# `debug` holds that node alone. A second node `n2` (a second slurmd on this host, port + 2, as
# SLURM's multiple-slurmd mode allows) joins it in the partition `multi`, for multi-node jobs.
# SLURM_TEST_OWNER_PID names the process the cluster serves (the test session): once that process
# is gone, a later `start` stops this cluster's daemons and takes over /etc/slurm/slurm.conf
# (SLURM_TEST_SYSTEM_CONF) from it; a cluster without an owner, or whose owner runs, is never touched.
set -euo pipefail

usage() { echo "usage: $0 start|stop|env DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
cpus=${SLURM_TEST_CPUS:-2}
port=${SLURM_TEST_PORT:-6817}
node=$(hostname -s)

client_env() {
    echo "export SLURM_CONF=$dir/slurm.conf"
}

start_time() {  # the start time of process $1 (field 22 of /proc/PID/stat; the name may hold spaces)
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

owner_alive() {  # the owner recorded in folder $1 still runs (the same process: pid and start time)
    local pid started
    read -r pid started < "$1/owner" 2>/dev/null || return 1
    [[ -n $started && $(start_time "$pid") == "$started" ]]
}

alive() {  # the pid in file $1 runs program $2 (daemons remove their pid files as they exit)
    local pid
    pid=$(cat "$1" 2>/dev/null) && [[ -n $pid ]] && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null
}

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    [[ $(id -u) -eq 0 ]] || { echo "start_slurm.sh: slurm-wlm and munge are missing; installing them needs root" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    chmod 700 "$dir/munge"
    [[ -s $dir/munge/munge.key ]] || { head -c 1024 /dev/urandom > "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"; }
    # Memory is not a consumable resource (CR_CPU) and RealMemory is the config's (config_overrides),
    # so jobs asking for a GPU node's memory (64 GB for a distillation) still fit on a small machine.
    cat > "$dir/slurm.conf.tmp" <<CONF
ClusterName=dkdtest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
# A requeued job may start again after cred_expire seconds (SLURM default: 120).
MinJobAge=300
SchedulerParameters=sched_interval=5,bf_interval=5
KillWait=15
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 Port=$((port + 1)) CPUs=$cpus RealMemory=1000000 State=UNKNOWN
NodeName=n2 NodeHostname=$node NodeAddr=127.0.0.1 Port=$((port + 2)) CPUs=$cpus RealMemory=1000000 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=multi Nodes=$node,n2 MaxTime=INFINITE State=UP
CONF
    mv "$dir/slurm.conf.tmp" "$dir/slurm.conf"
}

# Clients read SLURM_CONF, but the job step plugin of Snakemake's SLURM executor
# (snakemake-executor-plugin-slurm-jobstep 0.6) drops every SLURM_* variable before its `srun`,
# so that srun finds the configuration only at the default path: link it there, never over a
# configuration of another cluster.
system_conf=${SLURM_TEST_SYSTEM_CONF:-/etc/slurm/slurm.conf}

link_system_conf() {
    local other
    if [[ -L $system_conf && $(readlink "$system_conf") == "$dir/slurm.conf" ]]; then
        return
    fi
    if [[ -L $system_conf && ! -e $system_conf ]]; then  # left by a cluster whose folder is gone
        rm -f "$system_conf"
    elif [[ -L $system_conf ]]; then
        other=$(dirname "$(readlink "$system_conf")")
        if [[ -e $other/owner ]] && ! owner_alive "$other"; then  # left by a killed test session
            echo "start_slurm.sh: stopping the cluster of $other (its test session is gone)" >&2
            "$0" stop "$other"
        fi
    fi
    if [[ -L $system_conf ]]; then
        echo "start_slurm.sh: $system_conf links to $(readlink "$system_conf"): a cluster whose test" \
            "session still runs, or one started by hand; not replacing it (stop it: $0 stop $other)" >&2
        exit 1
    elif [[ -e $system_conf ]]; then
        echo "start_slurm.sh: $system_conf exists (another cluster's configuration); not replacing it" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$system_conf")"
    ln -s "$dir/slurm.conf" "$system_conf"
}

start() {
    install_packages
    write_config
    if [[ -n ${SLURM_TEST_OWNER_PID:-} ]]; then
        echo "$SLURM_TEST_OWNER_PID $(start_time "$SLURM_TEST_OWNER_PID")" > "$dir/owner"
    fi
    link_system_conf
    export SLURM_CONF=$dir/slurm.conf
    if ! alive "$dir/munged.pid" munged; then
        munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
            --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"
    fi
    alive "$dir/slurmctld.pid" slurmctld || slurmctld -f "$dir/slurm.conf"
    mkdir -p "$dir/spool/$node" "$dir/spool/n2"
    alive "$dir/slurmd-$node.pid" slurmd || slurmd -N "$node" -f "$dir/slurm.conf"
    alive "$dir/slurmd-n2.pid" slurmd || slurmd -N n2 -f "$dir/slurm.conf"
    for _ in $(seq 60); do  # until the node takes jobs
        if [[ $(sinfo -h -N -o %t 2>/dev/null | grep -cE '^(idle|mix|alloc)') -ge 3 ]]; then  # a node per partition
            echo "start_slurm.sh: cluster up ($node, $cpus CPUs; n2 in partition multi); $(client_env)"
            return
        fi
        sleep 1
    done
    echo "start_slurm.sh: the nodes did not become idle in 60 s; logs in $dir/log" >&2
    sinfo -N -l >&2 || true
    exit 1
}

stop() {
    local name
    for name in "slurmd-$node" slurmd-n2 slurmctld munged; do
        if alive "$dir/$name.pid" "${name%%-*}"; then
            kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
            for _ in $(seq 30); do alive "$dir/$name.pid" "${name%%-*}" || break; sleep 0.5; done
        fi
        rm -f "$dir/$name.pid"
    done
    if [[ -L $system_conf && $(readlink "$system_conf") == "$dir/slurm.conf" ]]; then
        rm -f "$system_conf"
    fi
}

case $action in
    start) start ;;
    stop) stop ;;
    env) client_env ;;
    *) usage ;;
esac
