#!/bin/sh
# Kerberos driver; /init runs it as /workload.sh (busybox sh). Loads the crypto modules the krb5
# mechanism needs, starts rpc.gssd with the machine keytab (/etc/krb5.keytab, principal
# nfs/guest.test), checks that sec=sys is refused on a krb5-only export (CHECK_WRONGSEC=1) and
# that a mount without sec= negotiates a krb5 flavour, then runs the standard workload
# (/krb5/workload.sh, with its ONLY= selection) once per flavour in SECS, each on the export's
# subdirectory of that name, after a line "@@SEC <flavour>" (the host files results under it).
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA SECS CHECK_WRONGSEC + workload's
. /config
. /krb5/gssd.sh

# run_test in the workload re-enters it as /workload.sh: put it there. This shell keeps
# reading its own file through the descriptor it has open (rename keeps the inode).
mv /workload.sh /krb5/driver.sh
cp /krb5/workload.sh /workload.sh
cp /config /krb5/config.base

result() { echo "@@RESULT $1 $2"; }

opts() { echo "vers=4.0,port=$NFS_PORT$MOUNT_EXTRA$1"; }

# sec=sys on an export that lists only krb5 flavours: the mount fails (the client gets
# NFS4ERR_WRONGSEC on the LOOKUP into the export, RFC 7530 §3.3, and an explicit sec= makes that
# EPERM) or, mounted, every access is refused.
check_sys_refused() {
    mkdir -p /mnt/sys
    if mount -t nfs4 -o "$(opts ,sec=sys)" "$SERVER_IP:$EXPORT_PATH" /mnt/sys 2> /tmp/sys.err; then
        if ls /mnt/sys > /dev/null 2>&1 || touch /mnt/sys/sys-was-here 2>/dev/null; then
            umount /mnt/sys
            result sys_refused "FAIL sec=sys mount of the krb5-only export can read or write"
            return
        fi
        umount /mnt/sys
        result sys_refused "PASS mounted, every access refused"
        return
    fi
    result sys_refused "PASS mount refused: $(tr '\n' ' ' < /tmp/sys.err)"
}

# No sec=: the client asks SECINFO and must land on a krb5 flavour.
check_negotiated() {
    mkdir -p /mnt/auto
    if ! mount -t nfs4 -o "$(opts)" "$SERVER_IP:$EXPORT_PATH" /mnt/auto 2> /tmp/auto.err; then
        result sec_negotiated "FAIL mount without sec=: $(tr '\n' ' ' < /tmp/auto.err)"
        return
    fi
    line=$(grep " /mnt/auto nfs4 " /proc/mounts)
    listed=$(ls /mnt/auto | tr '\n' ' ')
    umount /mnt/auto
    case "$line" in
        *sec=krb5,*|*sec=krb5i,*|*sec=krb5p,*) result sec_negotiated "PASS $line ($listed)";;
        *) result sec_negotiated "FAIL negotiated: $line";;
    esac
}

# what the workload leaves in /tmp (a fifo, lock flags), not gssd's machine credential cache
clean_tmp() {
    for f in /tmp/*; do
        case "$f" in /tmp/krb5cc*|/tmp/gssd.log) ;; *) rm -rf "$f";; esac
    done
}

load_krb5_modules
if start_gssd; then
    result gssd PASS
else
    result gssd "FAIL rpc.gssd did not open its pipe"
    gssd_log
    exit 1
fi
if [ "${CHECK_WRONGSEC:-0}" = 1 ]; then
    check_sys_refused
    check_negotiated
fi
for sec in $SECS; do
    echo "@@SEC $sec"
    { cat /krb5/config.base
      echo "EXPORT_PATH='$EXPORT_PATH/$sec'"
      echo "MOUNT_EXTRA='$MOUNT_EXTRA,sec=$sec'"
    } > /config
    clean_tmp
    sh /workload.sh
done
echo "@@SEC -"
gssd_log 30
