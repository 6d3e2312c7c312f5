#!/bin/sh
# Install everything the Linux-kernel-client VM tests (tests/vm, tests/e2e) need, and the
# benchmarks' peer and tools (NFS-Ganesha; gcc also builds bench/loadgen's generator).
# Idempotent: re-running only installs what is missing. Must run as root.
# The guest kernel and initramfs are cached in $PYNFSD_VM_CACHE or /var/cache/pynfsd-vm (about
# 500 MB, kept between runs; remove that directory to reclaim the space).
set -eu

PKGS="qemu-system-x86 busybox-static gcc libc6-dev cpio kmod iproute2 xz-utils \
      nfs-ganesha nfs-ganesha-vfs"

# Installed with no service started or left enabled (nfs-ganesha would take port 2049).
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $PKGS

# The guest kernel is fetched with apt-get download, which needs the package lists too.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
    apt-get update
fi

# Fetch the guest kernel (apt-get download) and build the cached base initramfs now, so a
# missing package shows up here and not as a slow first test. Cache: $PYNFSD_VM_CACHE or
# /var/cache/pynfsd-vm.
REPO=$(cd "$(dirname "$0")/.." && pwd)
(cd "$REPO" && "${PYTHON:-python3}" -c '
from tests.vm.initramfs import base_initramfs
from tests.vm.kernel import guest_kernel
kernel = guest_kernel()
print("vm-deps: guest kernel", kernel.version, "initramfs", base_initramfs(kernel))
')
echo "vm-deps: all present:$(echo " $PKGS" | tr -s ' ')"
