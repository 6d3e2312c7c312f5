#!/bin/sh
# Kernel-client benchmark workload, run by /init in the guest (busybox sh, no python).
# Timing happens here, in the guest, from /proc/uptime (10 ms resolution; phases last seconds).
# Each timed phase is bracketed by "@@PAUSE mark begin|end PHASE REP" so the host can read the
# server's CPU time (and start/stop a profiler) outside the timed window. Results:
#   @@BENCH <phase> <rep> <centiseconds> <amount>   (amount: MiB for write/read, files otherwise)
#   @@MOUNT <line of /proc/mounts>   @@OPS <op> <count>   (client-side view, for diagnosis)
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA SIZE_MB FILES REPEAT
. /config
M=/mnt/nfs
B=$M/bench
export LC_ALL=C

say() { echo "$*" > /dev/console; }
fail() { say "@@BENCHFAIL $*"; exit 1; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now_cs() { read -r up _ < /proc/uptime; echo "${up%.*}${up#*.}"; }  # "12.34" -> 1234

host_pause() {
    say "@@PAUSE $1"
    read -r reply <&9
    [ "$reply" = go ] || fail "host answered '$reply' to pause $1"
}

# timed PHASE REP AMOUNT CMD...: run CMD between the two marks and report its duration.
timed() {
    phase=$1; rep=$2; amount=$3; shift 3
    host_pause "mark begin $phase $rep"
    t0=$(now_cs)
    "$@" || fail "$phase rep $rep: '$*' failed"
    t1=$(now_cs)
    host_pause "mark end $phase $rep"
    say "@@BENCH $phase $rep $((t1 - t0)) $amount"
}

names() { seq 0 $((FILES - 1)) | sed 's/^/f/'; }

p_write() { dd if=/dev/zero of=$B/big bs=1M count="$SIZE_MB" conv=fsync 2>/dev/null; }
p_read() { dd if=$B/big of=/dev/null bs=1M 2>/dev/null; }
p_create() {
    i=0
    while [ $i -lt "$FILES" ]; do echo "file $i" > f$i || return 1; i=$((i + 1)); done
    sync
}
p_stat() { names | xargs stat -c %s > /tmp/sizes; }   # LOOKUP + GETATTR each, no READDIR
p_remove() { names | xargs rm; }

one_round() {
    rep=$1
    drop_caches
    timed write "$rep" "$SIZE_MB" p_write
    [ "$(stat -c %s $B/big)" = $((SIZE_MB * 1048576)) ] || fail "size of big after write"
    drop_caches
    timed read "$rep" "$SIZE_MB" p_read
    rm $B/big
    mkdir $B/small && cd $B/small || fail "mkdir small"
    drop_caches
    timed create "$rep" "$FILES" p_create
    drop_caches
    timed stat "$rep" "$FILES" p_stat
    [ "$(grep -c . /tmp/sizes)" = "$FILES" ] || fail "stat printed $(grep -c . /tmp/sizes) sizes"
    drop_caches
    timed remove "$rep" "$FILES" p_remove
    [ -z "$(ls -A)" ] || fail "files left after remove"
    cd / && rmdir $B/small
}

exec 9< /dev/ttyS1
stty -F /dev/ttyS1 -echo 2>/dev/null || true
mkdir -p $M
mount -t nfs4 -o "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA" "$SERVER_IP:$EXPORT_PATH" $M \
    || fail "mount"
say "@@MOUNT $(grep " $M nfs4 " /proc/mounts)"
mkdir -p $B || fail "mkdir $B"
t0=$(now_cs)   # untimed warm-up: the first OPEN waits out a grace period, if the server has one
echo warm > $B/warm && rm $B/warm || fail "warm-up file"
say "@@WARMUP $(($(now_cs) - t0))"
rep=1
while [ $rep -le "${REPEAT:-1}" ]; do one_round $rep; rep=$((rep + 1)); done
rmdir $B
host_pause "mark done"
sed -n '/^\tper-op/,/^$/p' /proc/self/mountstats \
    | awk '$2 ~ /^[0-9]+$/ && $2 > 0 {sub(":", "", $1); print "@@OPS", $1, $2}'
cd / && umount $M || fail "umount"
say "@@BENCHDONE"
