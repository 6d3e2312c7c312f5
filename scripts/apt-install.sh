#!/bin/sh
# Install Debian packages without starting any service, then leave none of their daemons
# enabled: the test suite starts its own KDC, gssproxy and NFS-Ganesha processes and needs no
# system service (and a system nfs-ganesha would take port 2049 from `pynfsd serve`).
#
# Usage: sh scripts/apt-install.sh [--recommends] PKG...    (as root; idempotent)
#
# Only packages that are not installed yet are installed. While apt-get runs,
# /usr/sbin/policy-rc.d answers 101 ("action forbidden"), so neither invoke-rc.d nor
# deb-systemd-invoke starts anything; a policy-rc.d that was there before is put back
# afterwards. Then scripts/no-services.sh disables the daemons these packages enable at boot.
set -eu

recommends="--no-install-recommends"
if [ "${1:-}" = "--recommends" ]; then recommends=""; shift; fi

missing=""
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    policy=/usr/sbin/policy-rc.d
    saved="$policy.pynfsd-saved"
    [ -e "$saved" ] && { echo "apt-install: $saved exists (an earlier run was interrupted);" \
        "restore or remove it first" >&2; exit 2; }
    had_policy=no
    if [ -e "$policy" ]; then mv "$policy" "$saved"; had_policy=yes; fi
    restore() {
        rm -f "$policy"
        if [ "$had_policy" = yes ]; then mv "$saved" "$policy"; fi
    }
    trap restore EXIT
    trap 'exit 130' INT TERM
    printf '#!/bin/sh\n# written by pynfsd scripts/apt-install.sh while apt-get runs\nexit 101\n' \
        > "$policy"
    chmod 755 "$policy"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y $recommends $missing
    restore
    trap - EXIT INT TERM
fi
sh "$(dirname "$0")/no-services.sh"
