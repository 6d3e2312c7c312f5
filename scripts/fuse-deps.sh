#!/bin/sh
# Install what pyfuse3 needs to build and what `pynfsd serve --nfsd-fs` needs to mount:
# fuse3 (fusermount3), libfuse3-dev, pkg-config, gcc and python3-dev, through
# scripts/apt-install.sh (no service started or left enabled). Idempotent; must run as root.
# Run it before `scripts/install test`, which builds pyfuse3 from its source distribution.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
sh "$REPO/scripts/apt-install.sh" fuse3 libfuse3-dev pkg-config gcc python3-dev
