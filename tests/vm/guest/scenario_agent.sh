#!/bin/sh
# Scenario agent, run by /init in the guest (busybox sh): the host drives the guest one shell
# command at a time, so a scenario with several guests is written (and timed) on the host.
#
# Protocol on the consoles: the guest prints "@@PAUSE cmd" on ttyS0 and reads one line from
# ttyS1: "LIMIT COMMAND..." runs COMMAND (with the helper functions below) in its own session,
# killed after LIMIT seconds; its output comes back as "@@OUT <line>" lines, then "@@RC <rc>".
# "go" asks again; "quit" ends the agent (init then powers the guest off).
# Background jobs started by a command keep running; they should write to /dev/console.
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA UNIQUE_ID GUEST_NAME
. /config
. /guestlib.sh
M=/mnt/nfs
export TZ=UTC LC_ALL=C PATH=/bin

say() { echo "$*" > /dev/console; }

# nfs_identity: the co_ownerid uniquifier (empty: the kernel uses the hostname alone)
nfs_identity() {
    f=/sys/fs/nfs/net/nfs_client/identifier
    [ -e $f ] || { echo "no $f in this kernel"; return 1; }
    if [ -n "${UNIQUE_ID:-}" ]; then printf '%s' "$UNIQUE_ID" > $f; fi
    echo "hostname=$(hostname) identifier=$(cat $f)"
}

nfs_mount() {
    mkdir -p $M
    mount -t nfs4 -o "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA" "$SERVER_IP:$EXPORT_PATH" $M
    grep " $M nfs4 " /proc/mounts
}

# writer FILE TAG COUNT INTERVAL_MS: lockwriter in the background, reporting on the console
writer() {
    lockwriter "$M/$1" "$2" "$3" "$4" > /dev/console 2>&1 &
    echo "lockwriter pid $!"
}

# holder FILE: hold a whole-file fcntl write lock until the guest ends; "@@HELD FILE" when granted
holder() {
    ( locktest fcntl ex "$M/$1" hold 100000 "/tmp/held.$1" /tmp/never 0 0 > /dev/console 2>&1 ) &
    echo $! > "/tmp/holder.$1"
    while [ ! -e "/tmp/held.$1" ]; do sleep 0.1; done
    say "@@HELD $1"
}

# holding FILE: the holder process of FILE is still alive
holding() { kill -0 "$(cat "/tmp/holder.$1")" && echo "holder of $1 alive"; }

# try FILE: one non-blocking whole-file fcntl write lock attempt; prints granted or denied
try() {
    if locktest fcntl ex "$M/$1" try 0 0; then echo granted; else
        rc=$?; [ $rc = 1 ] && echo denied || return $rc
    fi
}

# ops: the RPCs this client sent on the mount, per op ("OPS OPEN 3"), from mountstats
ops() { mount_ops $M; }

# keep_dirty: written pages stay in the page cache until close, fsync or a recall
keep_dirty() {
    echo 360000 > /proc/sys/vm/dirty_writeback_centisecs
    echo 360000 > /proc/sys/vm/dirty_expire_centisecs
}

# hold_open FILE r|w [TEXT]: a background process keeps FILE open (w: after writing TEXT over
# the start of the existing FILE, kept dirty under keep_dirty: helpers/holdwrite.c) until
# `release FILE`
hold_open() {
    f=$1
    mode=$2
    rm -f "/tmp/ready.$f"
    if [ "$mode" = w ]; then
        holdwrite "$M/$f" "/tmp/ready.$f" "$3" > /dev/console 2>&1 &
    else
        sleep 100000 < "$M/$f" &
        : > "/tmp/ready.$f"
    fi
    echo $! > "/tmp/open.$f"
    while [ ! -e "/tmp/ready.$f" ]; do kill -0 $! || return 1; sleep 0.1; done
    echo "holding $f ($mode) in pid $!"
}

release() { kill "$(cat "/tmp/open.$1")" && rm "/tmp/open.$1"; }

nfs_log() { dmesg | grep -iE 'nfs|rpc|lockd' | grep -vE 'Regist|FS-Cache' | tail -n "${1:-8}"; }

if [ "${1:-}" = exec ]; then   # re-entered by the loop below: run one command
    eval "$2"
    exit $?
fi

exec 9< /dev/ttyS1
stty -F /dev/ttyS1 -echo 2>/dev/null || true
say "@@READY $(hostname)"
n=0
while :; do
    say "@@PAUSE cmd"
    read -r line <&9 || break
    case "$line" in go) continue;; quit) break;; esac
    limit=${line%% *}
    cmd=${line#* }
    n=$((n + 1))
    setsid sh /workload.sh exec "$cmd" > "/tmp/out.$n" 2>&1 &
    pid=$!
    ( sleep "$limit"; echo "killed after ${limit}s" >> "/tmp/out.$n"; kill -9 -"$pid" ) \
        > /dev/null 2>&1 &
    watchdog=$!
    wait $pid
    rc=$?
    kill $watchdog 2>/dev/null
    sed 's/^/@@OUT /' "/tmp/out.$n"
    say "@@RC $rc"
done
say "@@AGENT-END"
