#!/bin/sh
# Install everything the Linux-kernel-client VM tests (tests/vm, tests/e2e) need.
# Idempotent: re-running only installs what is missing. Must run as root.
set -eu

PKGS="qemu-system-x86 busybox-static gcc libc6-dev cpio kmod iproute2 xz-utils \
      nfs-ganesha nfs-ganesha-vfs"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

export DEBIAN_FRONTEND=noninteractive
# The guest kernel is fetched with apt-get download, which needs the package lists too.
if [ -n "$missing" ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
    apt-get update
fi
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $missing
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
