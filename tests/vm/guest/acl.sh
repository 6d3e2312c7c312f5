#!/bin/sh
# NFSv4 ACLs through the kernel client with nfs4-acl-tools; /init runs it as /workload.sh
# (busybox sh). The host made EXPORT_PATH/secret (mode 0600, owned by OWNER_ID). The owner
# gives USER_ID a read ACE with nfs4_setfacl, USER_ID reads, a chmod from the client shows in
# the ACL, and after the ACE is removed USER_ID is refused. "@@PAUSE getfacl-<when>" asks the
# host to record `getfacl` of the file on the server.
# One line "@@RESULT <name> PASS|FAIL <detail>" per check.
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA OWNER_ID USER_ID
. /config
export TZ=UTC LC_ALL=C PATH=/bin:/usr/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu

. /guestlib.sh
F=/mnt/acl/secret
owner() { asuser "$OWNER_ID" "$OWNER_ID" "$@"; }
reader_cat() { asuser "$USER_ID" "$USER_ID" cat "$F" > /dev/null 2>&1; }
# check NAME WANT: USER_ID's read must come out WANT (ok or refused), retried past caches
check() {
    if tries=$(retry_until "$2" reader_cat); then
        result "$1" "PASS read $2 (attempt $tries)"
    else
        result "$1" "FAIL read never $2"
    fi
}
show() { nfs4_getfacl "$F" 2>&1 | grep -v '^#' | tr '\n' ' '; }
# as_owner NAME CMD...: run CMD as the owner; the result line carries the ACL afterwards
as_owner() {
    name=$1
    shift
    if owner "$@" 2> /tmp/owner.err; then
        result "$name" "PASS $(show)"
    else
        result "$name" "FAIL $(oneline /tmp/owner.err)"
    fi
}

mkdir -p /mnt/acl
if ! timeout 120 mount -t nfs4 -o "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA,actimeo=1" \
        "$SERVER_IP:$EXPORT_PATH" /mnt/acl 2> /tmp/mount.err; then
    result mount "FAIL $(oneline /tmp/mount.err)"
    exit 1
fi
result mount PASS

check refused_before refused
result getfacl_before "PASS $(show)"
as_owner setfacl nfs4_setfacl -a "A::$USER_ID:rtcy" "$F"
check granted ok
host_pause getfacl-granted

as_owner chmod chmod 0600 "$F"
check refused_after_chmod refused
host_pause getfacl-chmod
owner chmod 0640 "$F"
check granted_again ok

as_owner removed nfs4_setfacl -x "A::$USER_ID:rtcy" "$F"
check refused_after_removal refused
host_pause getfacl-removed

umount /mnt/acl && result unmount PASS || result unmount FAIL
