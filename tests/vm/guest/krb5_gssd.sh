#!/bin/sh
# Sourced by the Kerberos guest scripts (/krb5/gssd.sh): the crypto modules the krb5 mechanism
# loads on demand (the guest's modprobe upcall is off) and rpc.gssd with the machine keytab.
export PATH=/bin:/usr/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu

load_krb5_modules() {
    while read -r module; do
        insmod "$module" 2>/dev/null || echo "@@WARN insmod $module failed"
    done < /etc/krb5-modules.order
}

# start_gssd: rpc.gssd in the foreground (background job), log in /tmp/gssd.log; returns once
# it holds the pipe of the kernel's dummy gssd client open (then a sec=krb5* mount may start).
start_gssd() {
    mount -t rpc_pipefs rpc_pipefs /run/rpc_pipefs || return 1
    rpc.gssd -f -v -p /run/rpc_pipefs -k /etc/krb5.keytab > /tmp/gssd.log 2>&1 &
    gssd_pid=$!
    i=0
    until ls -l /proc/$gssd_pid/fd 2>/dev/null | grep -q 'rpc_pipefs/gssd/'; do
        i=$((i + 1))
        [ $i -lt 150 ] && [ -d /proc/$gssd_pid ] || return 1
        sleep 0.1
    done
}

gssd_log() { tail -n "${1:-40}" /tmp/gssd.log | sed 's/^/  [gssd] /'; }

# start_svcgssd: rpc.svcgssd (after start_gssd), log in /tmp/svcgssd.log: it accepts the
# RPCSEC_GSS contexts of the server's callbacks (nfs@<server> to nfs/<this host>)
start_svcgssd() {
    mkdir -p /var/tmp   # the acceptor's replay cache (krb5_0.rcache2)
    rpc.svcgssd -f -v -v > /tmp/svcgssd.log 2>&1 &
    svcgssd_pid=$!
    sleep 0.5
    [ -d /proc/$svcgssd_pid ]
}
