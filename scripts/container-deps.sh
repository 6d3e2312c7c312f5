#!/bin/sh
# Install what the container tests (tests/container) need and make the image's base locally.
# Idempotent; must run as root.
#
# - podman, runc, debootstrap and podman-compose (through scripts/apt-install.sh: no service
#   started or left enabled);
# - the base image `debian:bookworm-slim` that docker/Dockerfile starts from: no image registry
#   may be reachable, so it is made with debootstrap (minbase) from the mirror apt uses and
#   imported as localhost/debian:bookworm-slim (also tagged docker.io/library/debian:bookworm-slim),
#   only when `podman image exists` says it is missing;
# - tests/container/containers.conf (runc, explicit ulimits) is what the tests pass in
#   CONTAINERS_CONF; it is used here too.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
sh "$REPO/scripts/apt-install.sh" --recommends podman runc debootstrap podman-compose

export CONTAINERS_CONF="$REPO/tests/container/containers.conf"
BASE=localhost/debian:bookworm-slim

if ! podman image exists "$BASE"; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*\/debian\/*\)$/\1/p' /etc/apt/sources.list.d/*.sources \
                 2>/dev/null | head -n 1)
    if [ -z "$mirror" ]; then
        mirror=$(sed -n 's/^deb \(\[[^]]*\] \)*\([^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list \
                     2>/dev/null | head -n 1)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d /var/tmp/pynfsd-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "container-deps: debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
        || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/var/log/* "$rootfs"/tmp/*
    tar -C "$rootfs" -c . | podman import --quiet \
        --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
    podman tag "$BASE" docker.io/library/debian:bookworm-slim
    rm -rf "$rootfs"
    trap - EXIT
fi
echo "container-deps: podman $(podman version --format '{{.Client.Version}}'), base image" \
     "$BASE $(podman image inspect --format '{{.Size}}' "$BASE") bytes"
