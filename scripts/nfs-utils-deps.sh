#!/bin/sh
# Install what the nfs-utils interop tests (tests/e2e/test_nfs_utils.py, `pynfsd nfs-utils`)
# need: Debian's unmodified nfs-utils tools (exportfs, rpc.mountd, rpc.nfsd, nfsdclnts from
# nfs-kernel-server; nfs-common comes with it) and python3-yaml, which nfsdclnts (a script run
# by /usr/bin/python3) imports. Idempotent: re-running installs only what is missing. As root.
set -eu

PKGS="nfs-kernel-server python3-yaml"

# Installed with no service started or left enabled (scripts/no-services.sh): the tests run
# exportfs and rpc.mountd themselves, inside `pynfsd nfs-utils` namespaces.
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $PKGS

for tool in /usr/sbin/exportfs /usr/sbin/rpc.mountd /usr/sbin/rpc.nfsd /usr/sbin/nfsdclnts; do
    [ -x "$tool" ] || { echo "nfs-utils-deps: $tool missing after install" >&2; exit 1; }
done
/usr/bin/python3 -c 'import yaml' \
    || { echo "nfs-utils-deps: python3-yaml not importable by /usr/bin/python3" >&2; exit 1; }
echo "nfs-utils-deps: all present: $PKGS"
