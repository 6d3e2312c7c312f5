#!/bin/sh
# Leave no daemon that the test dependencies bring enabled at boot (idempotent, as root).
#
# The packages scripts/*-deps.sh install enable these services on a systemd or sysvinit host:
#   nfs-ganesha    nfs-ganesha.service, nfs-ganesha-lock.service (port 2049)
#   rpcbind        rpcbind.service, rpcbind.socket, /etc/init.d/rpcbind (port 111), and
#   nfs-common     nfs-client.target, /etc/init.d/nfs-common: both dependencies of nfs-ganesha
#   nfs-kernel-server  nfs-server.service (alias nfs-kernel-server.service),
#                  nfs-blkmap.service (wanted by nfs-client.target), /etc/init.d/nfs-kernel-server;
#                  the units nfs-server pulls in when started (nfs-mountd, nfs-idmapd,
#                  rpc-statd, rpc-statd-notify, nfsdcld, rpc-svcgssd, rpc-gssd,
#                  auth-rpcgss-module, proc-fs-nfsd.mount) have no [Install] section and are
#                  only checked
#   krb5-kdc       krb5-kdc.service, /etc/init.d/krb5-kdc (port 88)
#   krb5-admin-server  krb5-admin-server.service, /etc/init.d/krb5-admin-server (port 749)
#   gssproxy       gssproxy.service
#   etcd-server    etcd.service (alias etcd2.service), /etc/init.d/etcd (ports 2379, 2380);
#                  the tests start their own etcd members as child processes
#   podman         podman.service, podman.socket, podman-restart.service,
#                  podman-auto-update.timer; containernetworking-plugins: cni-dhcp.socket
# Each unit that exists is disabled with deb-systemd-helper (which also records the choice,
# so a package upgrade does not enable it again) or systemctl; each init script with
# update-rc.d NAME disable (its S links become K links). `sh scripts/no-services.sh --check`
# only lists what is still enabled, and which of the NFS daemons (DAEMONS) is running, and
# exits 1 if anything is.
set -eu

UNITS="nfs-ganesha.service nfs-ganesha-lock.service rpcbind.service rpcbind.socket
       nfs-client.target krb5-kdc.service krb5-admin-server.service gssproxy.service
       podman.service podman.socket podman-restart.service podman-auto-update.timer
       podman-auto-update.service cni-dhcp.service cni-dhcp.socket
       nfs-server.service nfs-kernel-server.service nfs-blkmap.service nfs-mountd.service
       nfs-idmapd.service rpc-statd.service rpc-statd-notify.service nfsdcld.service
       rpc-svcgssd.service rpc-gssd.service auth-rpcgss-module.service proc-fs-nfsd.mount
       etcd.service"
INITSCRIPTS="krb5-kdc krb5-admin-server rpcbind nfs-common nfs-kernel-server gssproxy nfs-ganesha
             etcd"
# Daemons of rpcbind, nfs-common, nfs-kernel-server and etcd-server: none may be running after
# the tests (the tests run rpc.mountd only as their own child process, inside `pynfsd
# nfs-utils`, and etcd members only as children of tests/etcd_cluster.py, which kills them).
DAEMONS="rpcbind rpc.mountd rpc.idmapd rpc.statd sm-notify blkmapd nfsdcld rpc.gssd rpc.svcgssd
         etcd"

running_daemons() {   # "NAME PID" for each process whose command name is one of DAEMONS
    for comm in /proc/[0-9]*/comm; do
        name=$(cat "$comm" 2>/dev/null) || continue
        for d in $DAEMONS; do
            # /proc/PID/comm holds at most 15 characters
            if [ "$name" = "$(printf %.15s "$d")" ]; then
                pid=${comm#/proc/}; echo "$d ${pid%/comm}"
            fi
        done
    done
}

enabled_links() {   # systemd "wants"/"requires" links and S links left for our daemons
    for u in $UNITS; do
        ls -d /etc/systemd/system/*.wants/"$u" /etc/systemd/system/*.requires/"$u" 2>/dev/null || true
    done
    for s in $INITSCRIPTS; do
        ls -d /etc/rc[0-6S].d/S[0-9][0-9]"$s" 2>/dev/null || true
    done
}

if [ "${1:-}" = "--check" ]; then
    left=$(enabled_links)
    running=$(running_daemons)
    status=0
    if [ -n "$left" ]; then echo "still enabled:"; echo "$left"; status=1; fi
    if [ -n "$running" ]; then echo "running:"; echo "$running"; status=1; fi
    [ "$status" = 0 ] && echo "no-services: none of the test dependencies' daemons is enabled" \
        "or running"
    exit "$status"
fi

for u in $UNITS; do
    [ -e "/lib/systemd/system/$u" ] || [ -e "/usr/lib/systemd/system/$u" ] || continue
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper disable "$u" >/dev/null 2>&1 || true
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --quiet --no-reload "$u" >/dev/null 2>&1 || true
    fi
done
for s in $INITSCRIPTS; do
    [ -e "/etc/init.d/$s" ] || continue
    if command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d "$s" disable >/dev/null 2>&1 || true
    fi
done
left=$(enabled_links)
if [ -n "$left" ]; then
    echo "no-services: could not disable:" >&2
    echo "$left" >&2
    exit 1
fi
echo "no-services: no daemon of the test dependencies is enabled"
