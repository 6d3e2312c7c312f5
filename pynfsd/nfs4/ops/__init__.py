"""NFSv4.0 operation handlers, one module per op group; importing this fills the op table."""

from pynfsd.nfs4.ops import attr, client, dirs, fh, io, lock, open  # noqa: F401
