#!/bin/sh
# The export and credential caches seen by the kernel client; /init runs it as /workload.sh
# (busybox sh). The server exports subdirectories of EXPORT_PATH to this guest by host name,
# wildcard and netgroup (resolved on the server through its own /etc), one each to names and
# netgroups that are not this guest, one ro export the host flips to rw and back, and a
# directory owned by a user's 40th group with and without manage-gids.
# One line "@@RESULT <name> PASS|FAIL <detail>" per check; "@@PAUSE <what>" asks the host to
# act (reload: edit the exports and `pynfsd exportfs -r`; sighup: edit them back, flush the
# caches and SIGHUP; end: read the caches).
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA USER_ID USER_GID
. /config
export TZ=UTC LC_ALL=C

. /guestlib.sh
opts() { echo "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA$1"; }

# nfs_mount NAME [EXTRA]: mount EXPORT_PATH/NAME on /mnt/NAME; errors in /tmp/NAME.err
nfs_mount() {
    mkdir -p "/mnt/$1"
    timeout 120 mount -t nfs4 -o "$(opts "$2")" "$SERVER_IP:$EXPORT_PATH/$1" "/mnt/$1" \
        2> "/tmp/$1.err"
}

# An export this guest matches: mount, write, read back after dropping the caches.
check_allowed() {
    if ! nfs_mount "$1"; then
        result "mount_$1" "FAIL mount: $(oneline "/tmp/$1.err")"
        return
    fi
    text="written by the guest through $1"
    if ! echo "$text" > "/mnt/$1/guest-file" 2> "/tmp/$1.err"; then
        result "mount_$1" "FAIL write: $(oneline "/tmp/$1.err")"
        return
    fi
    drop_caches
    back=$(cat "/mnt/$1/guest-file" 2>&1)
    if [ "$back" = "$text" ]; then
        result "mount_$1" "PASS wrote and read back /mnt/$1/guest-file"
    else
        result "mount_$1" "FAIL read back '$back'"
    fi
}

# An export only for other clients: the mount must fail.
check_refused() {
    if nfs_mount "$1"; then
        listed=$(ls "/mnt/$1" 2>&1 | tr '\n' ' ')
        umount "/mnt/$1"
        result "refused_$1" "FAIL mounted, listing: $listed"
    else
        result "refused_$1" "PASS mount refused: $(oneline "/tmp/$1.err")"
    fi
}

# wait_write WANT FILE: retry until a write's outcome is WANT (ok or refused)
wait_write() { retry_until "$1" try_write "$2"; }

check_reload() {
    if ! nfs_mount flip ",actimeo=1"; then
        result ro_before_reload "FAIL mount: $(oneline /tmp/flip.err)"
        return
    fi
    if try_write /mnt/flip/before; then
        result ro_before_reload "FAIL a write to the ro export succeeded"
    else
        result ro_before_reload "PASS write refused: $(oneline /tmp/write.err)"
    fi
    host_pause reload
    if tries=$(wait_write ok /mnt/flip/after-reload); then
        result rw_after_reload "PASS write succeeded (attempt $tries), same mount"
    else
        result rw_after_reload "FAIL still refused after 30 tries: $(oneline /tmp/write.err)"
    fi
    host_pause sighup
    if tries=$(wait_write refused /mnt/flip/after-sighup); then
        result ro_after_sighup "PASS write refused again (attempt $tries): $(oneline /tmp/write.err)"
    else
        result ro_after_sighup "FAIL writes still succeed after 30 tries"
    fi
}

# as_user NAME: as USER_ID with no supplementary groups, write and read a file in the
# directory owned by the user's 40th group on export NAME; output in /tmp/NAME.user
as_user() {
    file="/mnt/$1/g40/by-user"
    asuser "$USER_ID" "$USER_GID" sh -c \
        "grep Groups: /proc/self/status && echo 'the 40th group lets me in' > $file && cat $file" \
        > "/tmp/$1.user" 2>&1
}

# After the reload and the SIGHUP (and the flushes they bring), the mounts of the exports
# that did not change read what they wrote and write again.
check_unchanged() {
    for name in byname bywild bynetgroup; do
        if ! grep -q " /mnt/$name nfs4 " /proc/mounts; then
            result unchanged_after_reload "FAIL /mnt/$name is not mounted"
            return
        fi
        drop_caches
        back=$(cat "/mnt/$name/guest-file" 2>&1)
        if [ "$back" != "written by the guest through $name" ]; then
            result unchanged_after_reload "FAIL read back on $name: $back"
            return
        fi
        if ! ( echo "after the reload" > "/mnt/$name/after-reload" ) 2> /tmp/write.err; then
            result unchanged_after_reload "FAIL write on $name: $(oneline /tmp/write.err)"
            return
        fi
    done
    result unchanged_after_reload PASS
}

check_groups() {
    for name in managed unmanaged; do
        nfs_mount "$name" || { result "groups_$name" "FAIL mount: $(oneline "/tmp/$name.err")"; return; }
    done
    if as_user managed; then
        result groups_managed "PASS $(oneline /tmp/managed.user)"
    else
        result groups_managed "FAIL $(oneline /tmp/managed.user)"
    fi
    if as_user unmanaged; then
        result groups_unmanaged "FAIL access without manage-gids: $(oneline /tmp/unmanaged.user)"
    else
        result groups_unmanaged "PASS refused: $(oneline /tmp/unmanaged.user)"
    fi
}

exec 9< /dev/ttyS1
stty -F /dev/ttyS1 -echo 2>/dev/null || true
for name in byname bywild bynetgroup; do check_allowed $name; done
for name in othername othergroup; do check_refused $name; done
check_reload
check_unchanged
check_groups
host_pause end
cd /
for m in /mnt/*; do grep -q " $m nfs4 " /proc/mounts && umount "$m"; done
if grep -q " nfs4 " /proc/mounts; then result unmount "FAIL $(grep ' nfs4 ' /proc/mounts)"; else result unmount PASS; fi
