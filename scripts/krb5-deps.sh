#!/bin/sh
# Install what the Kerberos tests (tests/interop, bench/gss_perpacket.py) need: the MIT KDC and
# client tools (k5test builds a throwaway realm from them), the gssproxy daemon (tests of the
# gssproxy acceptor start their own), libkrb5-dev and gcc (python-gssapi has
# no Linux wheel and builds from source against krb5-config), then gssapi and k5test into the
# Python given as $1 (default: python3), with matplotlib for the bench's plot. Idempotent: re-running installs only what is missing.
# Must run as root.
set -eu

PY="${1:-python3}"
PKGS="krb5-kdc krb5-admin-server krb5-user libkrb5-dev gcc libc6-dev gssproxy"

# Installed with no service started or left enabled: the tests start their own KDCs and
# gssproxy daemons.
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $PKGS

if ! "$PY" -c 'import gssapi, k5test, matplotlib' >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "gssapi>=1.8" "k5test>=0.10" "matplotlib>=3.7"
fi
"$PY" -c 'import gssapi.raw.ext_krb5, k5test, matplotlib' \
    && echo "krb5-deps: all present: $(echo "$PKGS" | tr -s ' '), gssapi, k5test, matplotlib"
