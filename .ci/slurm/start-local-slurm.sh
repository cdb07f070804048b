#!/usr/bin/env bash
# start-local-slurm.sh -- single-node ("localhost") Slurm cluster for CI.
#
# The project's own copy (issue #6), adapted from the tested recipe in
# shared/slurm/start-local-slurm.sh: adds SLURM_NODE_CPUS / SLURM_NODE_MEM_MB so
# the one node can advertise the size of a real GPU node, and defaults to 8 fake GPUs.
#
# Usage (as root, Debian 12):
#   start-local-slurm.sh [start]   install (if needed) + configure + start, wait until node idle
#   start-local-slurm.sh stop      stop slurmd, slurmctld, slurmdbd, mariadb, munged (by pid file)
#   start-local-slurm.sh status    show daemons / sinfo
#
# Idempotent: re-running 'start' on a running cluster only checks it (and
# restarts daemons whose config file changed).  No systemd needed (works in
# containers / firecracker VMs where PID 1 is not systemd and policy-rc.d
# blocks service starts); on a systemd host it works too (daemons are simply
# started by hand, not as units).
#
# Environment knobs:
#   SLURM_WITH_DBD=1      1: slurmdbd + MariaDB, so `sacct`/`sacctmgr` work
#                         (snakemake-executor-plugin-slurm works with defaults)
#                         0: no accounting (then run snakemake with
#                         --slurm-status-command squeue and no slurm_account)
#   SLURM_FAKE_GPUS=8     number of fake GPUs (GRES gpu) on the node, 0 = none.
#                         They are /dev/null-like char devices, so --gpus=N /
#                         --gres=gpu:N jobs schedule and get CUDA_VISIBLE_DEVICES.
#   SLURM_NODE_CPUS=      CPUs / memory (MB) the node advertises; empty = the
#   SLURM_NODE_MEM_MB=    hardware's (slurmd -C).  Larger values make slurmd
#                         trust slurm.conf (SlurmdParameters=config_overrides),
#                         so the cluster profile's real per-rule requests
#                         (e.g. 4 CPUs + 32 GB per GPU job) schedule on a small
#                         CI machine.  Nothing is enforced (no cgroups): jobs
#                         just share the real cores and memory.
#   SLURM_PARTITION=debug partition name (the only, default partition)
#   SLURM_ACCOUNT=ci      account created in slurmdbd (if SLURM_WITH_DBD=1)
#   SLURM_ACCOUNT_USERS="root"  users added to that account
#   SLURM_WAIT_S=60       how long to wait for the node to become idle
set -euo pipefail

ACTION=${1:-start}
WITH_DBD=${SLURM_WITH_DBD:-1}
FAKE_GPUS=${SLURM_FAKE_GPUS:-8}
NODE_CPUS=${SLURM_NODE_CPUS:-}
NODE_MEM_MB=${SLURM_NODE_MEM_MB:-}
PARTITION=${SLURM_PARTITION:-debug}
ACCOUNT=${SLURM_ACCOUNT:-ci}
ACCOUNT_USERS=${SLURM_ACCOUNT_USERS:-root}
WAIT_S=${SLURM_WAIT_S:-60}

CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
FAKEDEV_DIR=/var/lib/slurm/fakegpu
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
DB_PASS=slurmdbpass   # local CI only; MariaDB listens on localhost

log() { echo "[local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() { # stop_pidfile NAME PIDFILE
    local name=$1 pf=$2 pid i
    if running "$pf"; then
        pid=$(cat "$pf")
        log "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$pf"
}

wait_for() { # wait_for SECONDS DESCRIPTION CMD...
    local secs=$1 what=$2 i; shift 2
    for i in $(seq 1 $((secs * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "timed out after ${secs}s waiting for: $what"
}

install_if_changed() { # install_if_changed SRC DEST MODE -> returns 0 if changed
    local src=$1 dst=$2 mode=$3
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then rm -f "$src"; return 1; fi
    install -m "$mode" -o root -g root "$src" "$dst"; rm -f "$src"; return 0
}

do_stop() {
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
    stop_pidfile slurmdbd "$DBD_PID"
    if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then
        log "stopping mariadb"; service mariadb stop >/dev/null 2>&1 || true
    fi
    stop_pidfile munged "$MUNGE_PID"
    log "stopped"
}

do_status() {
    local n
    for n in "munged:$MUNGE_PID" "slurmdbd:$DBD_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        if running "${n#*:}"; then echo "${n%%:*}: running (pid $(cat "${n#*:}"))"; else echo "${n%%:*}: not running"; fi
    done
    sinfo 2>&1 || true
}

do_start() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    local t0=$SECONDS

    # ---- 1. packages -------------------------------------------------------
    local pkgs="slurmctld slurmd slurm-client munge" missing=""
    [ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        local aptlog=${TMPDIR:-/tmp}/local-slurm-apt.log
        # policy-rc.d (containers) may refuse to start services: harmless, we start them below
        # shellcheck disable=SC2086  # word splitting of $missing is intended
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >"$aptlog" 2>&1 \
            || { tail -n 40 "$aptlog" >&2; die "apt-get failed (full log: $aptlog)"; }
        log "packages installed after $((SECONDS - t0))s"
    fi

    # ---- 2. host basics ----------------------------------------------------
    if ! getent hosts "$(hostname)" >/dev/null; then
        log "adding $(hostname) to /etc/hosts"
        printf '\n127.0.0.1 %s\n' "$(hostname)" >> /etc/hosts
    fi
    mkdir -p "$CONF_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating munge key"
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key

    # ---- 3. config files ---------------------------------------------------
    # Node line from the hardware, renamed to 'localhost' (slurmd is started with -N localhost)
    local hw cpus mem node_line gres_line="" changed_ctld=0 changed_dbd=0
    hw=$(slurmd -C | head -n1)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    node_line="NodeName=localhost NodeAddr=127.0.0.1 ${hw#NodeName=* }"
    local overrides=""
    if [ -n "$NODE_CPUS$NODE_MEM_MB" ]; then
        # advertise a bigger node than the hardware: flat topology, slurmd trusts slurm.conf
        cpus=${NODE_CPUS:-$cpus}; mem=${NODE_MEM_MB:-$mem}
        node_line="NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem"
        overrides="SlurmdParameters=config_overrides"
    fi
    if [ "$FAKE_GPUS" -gt 0 ]; then
        mkdir -p "$FAKEDEV_DIR"
        for i in $(seq 0 $((FAKE_GPUS - 1))); do
            [ -c "$FAKEDEV_DIR/nvidia$i" ] || mknod "$FAKEDEV_DIR/nvidia$i" c 1 3   # same as /dev/null
        done
        node_line="$node_line Gres=gpu:$FAKE_GPUS"
        gres_line="GresTypes=gpu"
    fi

    local tmp; tmp=$(mktemp)
    cat > "$tmp" <<EOF
# generated by start-local-slurm.sh -- single-node CI cluster
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
# no cgroups at all: plain process tracking, no CPU binding/confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without this a job with no --mem gets the whole node's memory (blocks others)
DefMemPerCPU=1000
$gres_line
$overrides
EOF
    if [ "$WITH_DBD" = 1 ]; then
        cat >> "$tmp" <<EOF
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
# store sbatch --comment (the plugin puts rule name/wildcards there; used by --slurm-efficiency-report)
AccountingStoreFlags=job_comment
EOF
    else
        cat >> "$tmp" <<EOF
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
EOF
    fi
    cat >> "$tmp" <<EOF
$node_line State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    install_if_changed "$tmp" "$CONF_DIR/slurm.conf" 644 && changed_ctld=1

    tmp=$(mktemp)
    if [ "$FAKE_GPUS" -gt 0 ]; then
        printf 'AutoDetect=off\nNodeName=localhost Name=gpu File=%s/nvidia[0-%d]\n' \
            "$FAKEDEV_DIR" $((FAKE_GPUS - 1)) > "$tmp"
    else
        : > "$tmp"
    fi
    install_if_changed "$tmp" "$CONF_DIR/gres.conf" 644 && changed_ctld=1

    if [ "$WITH_DBD" = 1 ]; then
        tmp=$(mktemp)
        cat > "$tmp" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
        install_if_changed "$tmp" "$CONF_DIR/slurmdbd.conf" 600 && changed_dbd=1
    fi

    # ---- 4. munged ---------------------------------------------------------
    if ! munge -n </dev/null >/dev/null 2>&1; then
        log "starting munged"
        mkdir -p /run/munge; chown munge:munge /run/munge; chmod 755 /run/munge
        runuser -u munge -- /usr/sbin/munged
        wait_for 10 "munged" bash -c 'munge -n </dev/null | unmunge'
    fi

    # ---- 5. MariaDB + slurmdbd --------------------------------------------
    if [ "$WITH_DBD" = 1 ]; then
        if ! mysqladmin ping >/dev/null 2>&1; then
            log "starting mariadb"
            service mariadb start >/dev/null
            wait_for 30 "mariadb" mysqladmin ping
        fi
        mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
                  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
                  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
        if [ "$changed_dbd" = 1 ]; then stop_pidfile slurmdbd "$DBD_PID"; fi
        if ! running "$DBD_PID"; then
            log "starting slurmdbd"
            /usr/sbin/slurmdbd
            # slurmdbd listens on 6819 once its DB schema is ready
            wait_for 60 "slurmdbd port 6819" bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'
        fi
    else
        stop_pidfile slurmdbd "$DBD_PID"
    fi

    # ---- 6. slurmctld + slurmd --------------------------------------------
    if [ "$changed_ctld" = 1 ]; then
        stop_pidfile slurmd "$SLURMD_PID"
        stop_pidfile slurmctld "$CTLD_PID"
    fi
    if ! running "$CTLD_PID"; then
        log "starting slurmctld"
        /usr/sbin/slurmctld
    fi
    wait_for 30 "slurmctld" bash -c 'scontrol ping | grep -q UP'
    if ! running "$SLURMD_PID"; then
        log "starting slurmd"
        /usr/sbin/slurmd -N localhost
    fi

    # ---- 7. accounts (slurmctld registers cluster 'ci' in slurmdbd itself) -
    if [ "$WITH_DBD" = 1 ]; then
        wait_for 30 "cluster registered in slurmdbd" bash -c 'sacctmgr -n -P show cluster format=cluster | grep -qx ci'
        if ! sacctmgr -n -P show account "$ACCOUNT" format=account | grep -qx "$ACCOUNT"; then
            sacctmgr -i add account "$ACCOUNT" Description=ci Organization=ci >/dev/null
        fi
        for u in $ACCOUNT_USERS; do
            if ! sacctmgr -n -P show assoc where user="$u" account="$ACCOUNT" format=user | grep -qx "$u"; then
                sacctmgr -i add user "$u" Account="$ACCOUNT" >/dev/null
            fi
        done
    fi

    # ---- 8. wait for the node ---------------------------------------------
    local state="" i
    for i in $(seq 1 $((WAIT_S * 2))); do
        state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -n1 || true)
        case "$state" in
            idle|mixed|allocated) break ;;
            *drain*|down*|*fail*)
                scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    case "$state" in
        idle|mixed|allocated) ;;
        *) scontrol show node localhost >&2 || true
           tail -n 30 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
           die "node not ready (state: '${state:-unknown}')" ;;
    esac
    log "cluster up: node localhost $state, cpus=$cpus mem=${mem}M gpus=$FAKE_GPUS dbd=$WITH_DBD ($((SECONDS - t0))s)"
}

case "$ACTION" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
