#!/bin/sh
# Server CPU per operation workload (bench/cpu_per_op.py); /init runs it as /workload.sh
# (busybox sh). For each flavour in SECS: mount EXPORT_PATH/<flavour> with sec=<flavour>, then
# the phases, each between "@@PAUSE mark begin|end <phase> <flavour> <round>" (the host reads
# the server's CPU time there), with the mount's per-op RPC counts printed before and after
# (from /proc/self/mountstats, outside the marks):
#   create stat rename unlink   FILES files f0.. in one directory (/bin/fsops: no fork per
#                               file); stat starts from cold caches
#   readdir                     lists <flavour>/listing, which the host filled with ENTRIES
#                               files, LISTINGS times, each from cold caches
#   seqwrite seqread            SIZE_MB_<flavour> MiB with dd bs=1M (conv=fsync), read back cold
#   randread randwrite          RANDOM_OPS 4 KiB O_DIRECT preads/pwrites in that file
# Lines: @@CPUOP <phase> <flavour> <round> <amount> <centiseconds>  (amount: files, listings,
# MiB or I/Os), @@OPS before|after <phase> <flavour> <OP> <count>, @@MOUNT <flavour> <line>,
# @@BENCHFAIL <why>, and @@BENCHDONE at the end.
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA SECS ROUND FILES ENTRIES
# LISTINGS SIZE_MB_<flavour> RANDOM_OPS
. /config
. /guestlib.sh
. /krb5/gssd.sh
M=/mnt/bench
D=$M/dir
exec 9< /dev/ttyS1
stty -F /dev/ttyS1 -echo 2>/dev/null || true

# /proc/uptime in centiseconds ("12.34 ..." -> 1234; the 1xx trick avoids octal "0x")
uptime_cs() {
    read -r up _ < /proc/uptime
    echo $(( ${up%.*} * 100 + 1${up#*.} - 100 ))
}

# timed PHASE SEC AMOUNT COMMAND...: COMMAND between the host's CPU marks, RPCs counted around
timed() {
    t_phase=$1 t_sec=$2 t_amount=$3
    shift 3
    mount_ops $M "@@OPS before $t_phase $t_sec"
    host_pause "mark begin $t_phase $t_sec $ROUND"
    t0=$(uptime_cs)
    "$@" > /tmp/phase.out 2>&1 || echo "@@BENCHFAIL $t_phase $t_sec: $(oneline /tmp/phase.out)"
    t1=$(uptime_cs)
    host_pause "mark end $t_phase $t_sec $ROUND"
    mount_ops $M "@@OPS after $t_phase $t_sec"
    echo "@@CPUOP $t_phase $t_sec $ROUND $t_amount $((t1 - t0))"
}

metadata() {  # metadata SEC
    mkdir $D || { echo "@@BENCHFAIL $1: mkdir $D"; return; }
    timed create "$1" "$FILES" /bin/fsops create $D "$FILES"
    drop_caches
    timed stat "$1" "$FILES" /bin/fsops stat $D "$FILES"
    timed rename "$1" "$FILES" /bin/fsops rename $D "$FILES"
    timed unlink "$1" "$FILES" /bin/fsops unlink $D "$FILES"
    rmdir $D || echo "@@BENCHFAIL $1: $D not empty after unlink"
    timed readdir "$1" "$LISTINGS" /bin/fsops readdir $M/listing "$LISTINGS" 1
    grep -q "^fsops readdir $ENTRIES\$" /tmp/phase.out \
        || echo "@@BENCHFAIL $1: listed $(oneline /tmp/phase.out), not $ENTRIES entries"
}

data() {  # data SEC
    eval "mb=\${SIZE_MB_$1}"
    timed seqwrite "$1" "$mb" dd if=/dev/zero of=$M/big bs=1M count="$mb" conv=fsync
    size=$(stat -c %s $M/big)
    [ "$size" = $((mb * 1048576)) ] || echo "@@BENCHFAIL $1: file size $size"
    drop_caches
    timed seqread "$1" "$mb" dd if=$M/big of=/dev/null bs=1M
    timed randread "$1" "$RANDOM_OPS" /bin/fsops randread $M/big "$RANDOM_OPS" "$ROUND"
    timed randwrite "$1" "$RANDOM_OPS" /bin/fsops randwrite $M/big "$RANDOM_OPS" "$ROUND"
    rm -f $M/big
}

one_flavour() {  # one_flavour SEC
    mkdir -p $M
    if ! mount -t nfs4 -o "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA,sec=$1" \
            "$SERVER_IP:$EXPORT_PATH/$1" $M 2> /tmp/mount.err; then
        echo "@@BENCHFAIL mount sec=$1: $(oneline /tmp/mount.err)"
        return
    fi
    echo "@@MOUNT $1 $(grep " $M nfs4 " /proc/mounts)"
    # untimed warm-up: the first OPEN waits out a grace period, if the server has one
    echo warm > $M/warm && rm $M/warm || echo "@@BENCHFAIL $1: warm-up file"
    metadata "$1"
    data "$1"
    cd / && umount $M
}

load_krb5_modules
start_gssd || { echo "@@BENCHFAIL rpc.gssd did not open its pipe"; gssd_log; exit 1; }
for sec in $SECS; do one_flavour "$sec"; done
echo "@@BENCHDONE"
