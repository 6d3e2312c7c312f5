#!/bin/sh
# Install what the container tests (tests/container) need and make the image's base locally.
# Idempotent; must run as root.
#
# - podman, runc, debootstrap and podman-compose (through scripts/apt-install.sh: no service
#   started or left enabled);
# - the base image `debian:bookworm-slim` that docker/Dockerfile starts from: no image registry
#   may be reachable, so it is made with debootstrap (minbase) from the mirror apt uses and
#   imported as localhost/debian:bookworm-slim (also tagged docker.io/library/debian:bookworm-slim),
#   only when podman does not have it made by this recipe (label pynfsd.base=$RECIPE). Like
#   Docker's official slim image it keeps no documentation, man pages or translations, and
#   dpkg is told not to install them later;
# - tests/container/containers.conf (runc, explicit ulimits) is what the tests pass in
#   CONTAINERS_CONF; it is used here too.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
sh "$REPO/scripts/apt-install.sh" --recommends podman runc debootstrap podman-compose

export CONTAINERS_CONF="$REPO/tests/container/containers.conf"
BASE=localhost/debian:bookworm-slim
RECIPE=2    # change it when the recipe below changes: existing bases are then made again

made_by() {
    podman image inspect --format '{{index .Config.Labels "pynfsd.base"}}' "$BASE" 2>/dev/null
}

if [ "$(made_by || true)" != "$RECIPE" ]; then
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
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/pynfsd-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} +
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/* \
           "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
           "$rootfs"/tmp/*
    tar -C "$rootfs" -c . | podman import --quiet --change "LABEL pynfsd.base=$RECIPE" \
        --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
    podman tag "$BASE" docker.io/library/debian:bookworm-slim
    rm -rf "$rootfs"
    trap - EXIT
fi
echo "container-deps: podman $(podman version --format '{{.Client.Version}}'), base image" \
     "$BASE $(podman image inspect --format '{{.Size}}' "$BASE") bytes"
