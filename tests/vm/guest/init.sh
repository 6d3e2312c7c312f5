#!/bin/sh
# /init of the test guest (busybox sh). Loads the NFS client modules, configures eth0 from
# /config, runs /workload.sh and powers off. The host reads everything from ttyS0.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo /bin/false > /proc/sys/kernel/modprobe   # everything is loaded below; no upcalls
. /config
while read -r module; do
    insmod "$module" || echo "@@WARN insmod $module failed"
done < /etc/modules.order
hostname "${GUEST_NAME:-guest}"
ip link set lo up
ip link set eth0 up
ip addr add "$GUEST_IP/$GUEST_PREFIX" dev eth0
echo "@@BOOTED $(uname -r)"
sh /workload.sh
echo "@@EXIT $?"
sync
poweroff -f
