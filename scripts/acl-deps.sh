#!/bin/sh
# Install what the ACL tests (tests/unit/test_compound_local_acl.py) need: Debian's `acl`
# package (setfacl and getfacl), through scripts/apt-install.sh (no service started or left
# enabled). Idempotent: re-running installs only what is missing. As root.
set -eu

sh "$(dirname "$0")/apt-install.sh" acl

for tool in /usr/bin/setfacl /usr/bin/getfacl; do
    [ -x "$tool" ] || { echo "acl-deps: $tool missing after install" >&2; exit 1; }
done
echo "acl-deps: all present: acl"
