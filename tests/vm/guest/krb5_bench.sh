#!/bin/sh
# Kernel-client dd benchmark per security flavour (bench/kernel_krb5_bench.py); /init runs it as
# /workload.sh (busybox sh). For each repetition and each flavour in SECS: mount
# EXPORT_PATH/<flavour> with sec=<flavour>, write SIZE_MB MiB from /dev/zero with dd
# conv=fsync, drop caches, read it back. Each timed phase sits between
# "@@PAUSE mark begin|end <phase> <flavour> <rep>" (the host reads the server's CPU time there);
# the guest prints "@@KBENCH <phase> <flavour> <rep> <bytes> <centiseconds>".
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA SECS SIZE_MB REPEAT
. /config
. /krb5/gssd.sh
M=/mnt/bench
exec 9< /dev/ttyS1
stty -F /dev/ttyS1 -echo 2>/dev/null || true

mark() {
    echo "@@PAUSE mark $*"
    read -r reply <&9
    [ "$reply" = go ] || echo "@@BENCHFAIL host answered '$reply' to mark $*"
}

# /proc/uptime in centiseconds ("12.34 ..." -> 1234; the 1xx trick avoids octal "0x")
uptime_cs() {
    read -r up _ < /proc/uptime
    echo $(( ${up%.*} * 100 + 1${up#*.} - 100 ))
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# timed PHASE SEC REP COMMAND...: run COMMAND between the host's CPU marks
timed() {
    t_phase=$1 t_sec=$2 t_rep=$3
    shift 3
    drop_caches
    mark begin "$t_phase" "$t_sec" "$t_rep"
    t0=$(uptime_cs)
    "$@" 2> /tmp/dd.err || echo "@@BENCHFAIL $t_phase $t_sec: $(tr '\n' ' ' < /tmp/dd.err)"
    t1=$(uptime_cs)
    mark end "$t_phase" "$t_sec" "$t_rep"
    echo "@@KBENCH $t_phase $t_sec $t_rep $((SIZE_MB * 1048576)) $((t1 - t0))"
}

one_flavour() {  # one_flavour SEC REP
    mkdir -p $M
    if ! mount -t nfs4 -o "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA,sec=$1" \
            "$SERVER_IP:$EXPORT_PATH/$1" $M 2> /tmp/mount.err; then
        echo "@@BENCHFAIL mount sec=$1: $(tr '\n' ' ' < /tmp/mount.err)"
        return
    fi
    [ "$2" != 1 ] || echo "@@MOUNT $1 $(grep " $M nfs4 " /proc/mounts)"
    timed write "$1" "$2" dd if=/dev/zero of=$M/big bs=1M count="$SIZE_MB" conv=fsync
    timed read "$1" "$2" dd if=$M/big of=/dev/null bs=1M
    size=$(stat -c %s $M/big)
    [ "$size" = $((SIZE_MB * 1048576)) ] || echo "@@BENCHFAIL $1: file size $size"
    rm -f $M/big
    umount $M
}

load_krb5_modules
start_gssd || { echo "@@BENCHFAIL rpc.gssd did not open its pipe"; gssd_log; exit 1; }
rep=1
while [ $rep -le "${REPEAT:-1}" ]; do
    for sec in $SECS; do one_flavour "$sec" $rep; done
    rep=$((rep + 1))
done
echo "@@KBENCHDONE"
