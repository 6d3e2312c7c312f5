#!/bin/sh
# Delegation benchmark workload, run by /init in the guest (busybox sh, no python): open, read
# and close each of the FILES files the host put in $EXPORT/files (f0 ... f<FILES-1>), ROUNDS
# times over. The open/read/close is the shell's own `read < FILE` (no fork per file). The RPCs
# the client sent during the rounds come from /proc/self/mountstats before and after; the time
# from /proc/uptime (10 ms resolution). Results:
#   @@MOUNT <line of /proc/mounts>   @@OPS before|after <op> <count>   @@TIME <centiseconds>
#   @@BENCHDONE, or @@BENCHFAIL <why>
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA FILES ROUNDS
. /config
. /guestlib.sh
M=/mnt/nfs
D=$M/files
export LC_ALL=C

say() { echo "$*" > /dev/console; }
fail() { say "@@BENCHFAIL $*"; exit 1; }
now_cs() { read -r up _ < /proc/uptime; echo "${up%.*}${up#*.}"; }  # "12.34" -> 1234

ops() { mount_ops $M "@@OPS $1" > /dev/console; }

rounds() {
    r=1
    while [ $r -le "$ROUNDS" ]; do
        i=0
        while [ $i -lt "$FILES" ]; do
            read -r line < "$D/f$i" || return 1
            i=$((i + 1))
        done
        r=$((r + 1))
    done
}

mkdir -p $M
mount -t nfs4 -o "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA" "$SERVER_IP:$EXPORT_PATH" $M \
    || fail "mount"
say "@@MOUNT $(grep " $M nfs4 " /proc/mounts)"
read -r line < "$M/warm" || fail "warm-up file"   # the first OPEN waits out any grace period
n=$(ls "$D" | wc -l)
[ "$n" = "$FILES" ] || fail "$n files in $D, not $FILES"
ops before
t0=$(now_cs)
rounds || fail "a read failed in the rounds"
t1=$(now_cs)
ops after
say "@@TIME $((t1 - t0))"
cd / && umount $M || fail "umount"
say "@@BENCHDONE"
