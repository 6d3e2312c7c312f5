#!/bin/sh
# Install what the etcd recovery tests (tests/etcd_cluster.py and the tests that use it) need:
# Debian's `etcd-server` (the etcd binary; the tests start their own members as child
# processes on loopback) and `etcd-client` (etcdctl, for inspecting a cluster by hand), through
# scripts/apt-install.sh: no service is started, and scripts/no-services.sh leaves the
# package's etcd.service / init script disabled. Idempotent; as root.
set -eu

sh "$(dirname "$0")/apt-install.sh" etcd-server etcd-client

for tool in /usr/bin/etcd /usr/bin/etcdctl; do
    [ -x "$tool" ] || { echo "etcd-deps: $tool missing after install" >&2; exit 1; }
done
echo "etcd-deps: all present: etcd-server, etcd-client"
