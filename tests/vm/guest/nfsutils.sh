#!/bin/sh
# The kernel client against a pynfsd administered by the real nfs-utils; /init runs it as
# /workload.sh (busybox sh). EXPORT_PATH/share is exported to this guest by host name only in
# the exports rpc.mountd reads (the server's own table gives it to another host), so it mounts
# only through mountd's answers. NFS_PORT is the port of the socket rpc.nfsd passed the server.
# One line "@@RESULT <name> PASS|FAIL <detail>" per check; "@@PAUSE <what>" asks the host to
# act (mountd: exportfs -ra and start rpc.mountd; clients: run nfsdclnts while this guest
# holds a lock; ro: exportfs -o ro; unexport: exportfs -u; end: stop rpc.mountd).
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA
. /config
export TZ=UTC LC_ALL=C

. /guestlib.sh
M=/mnt/share

read_back() { cat "$M/guest-file" > /tmp/read.out 2> /tmp/write.err; }

check_mount() {
    mkdir -p $M
    if ! timeout 120 mount -t nfs4 -o "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA,actimeo=1" \
            "$SERVER_IP:$EXPORT_PATH/share" $M 2> /tmp/mount.err; then
        result mount "FAIL mount: $(oneline /tmp/mount.err)"
        return
    fi
    text="written by the guest through mountd"
    if ! echo "$text" > $M/guest-file 2> /tmp/write.err; then
        result mount "FAIL write: $(oneline /tmp/write.err)"
        return
    fi
    drop_caches
    back=$(cat $M/guest-file 2>&1)
    if [ "$back" = "$text" ]; then
        result mount "PASS wrote and read back $M/guest-file: $(grep " $M " /proc/mounts)"
    else
        result mount "FAIL read back '$back'"
    fi
}

# Hold an open file with a whole-file fcntl lock while the host runs nfsdclnts.
check_lock() {
    lockwriter $M/locked-file held 100000 200 > /tmp/lock.out 2>&1 &
    holder=$!
    n=0
    while [ $n -lt 60 ] && ! grep -q "@@LOCKED" /tmp/lock.out; do
        n=$((n + 1))
        sleep 1
    done
    if grep -q "@@LOCKED" /tmp/lock.out; then
        result locked "PASS lock held by pid $holder"
    else
        result locked "FAIL $(oneline /tmp/lock.out)"
    fi
    host_pause clients
    kill "$holder"
    wait "$holder"
}

exec 9< /dev/ttyS1
stty -F /dev/ttyS1 -echo 2>/dev/null || true
host_pause mountd
check_mount
check_lock
host_pause ro
if tries=$(retry_until refused try_write $M/after-ro); then
    result ro_live "PASS write refused (attempt $tries), same mount: $(oneline /tmp/write.err)"
else
    result ro_live "FAIL writes still succeed after 30 tries"
fi
if read_back; then
    result ro_reads "PASS $(oneline /tmp/read.out)"
else
    result ro_reads "FAIL $(oneline /tmp/write.err)"
fi
host_pause unexport
if tries=$(retry_until refused read_back); then
    result unexported "PASS read refused (attempt $tries): $(oneline /tmp/write.err)"
else
    result unexported "FAIL reads still succeed after 30 tries"
fi
host_pause end
cd /
umount -f -l $M 2> /dev/null
if grep -q " nfs4 " /proc/mounts; then result unmount "FAIL $(grep ' nfs4 ' /proc/mounts)"; else result unmount PASS; fi
