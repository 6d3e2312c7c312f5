"""NFSv4.0 operation handlers, one module per op group; `build_op_table` gathers them."""

from pynfsd.nfs4.ops import attr, client, deleg, dirs, fh, io, lock, open
from pynfsd.nfs4.optable import OpTable, collect

#: The modules whose `@op` handlers make up the table.
OP_MODULES = (attr, client, deleg, dirs, fh, io, lock, open)


def build_op_table() -> OpTable:
    """The op table of every handler (`pynfsd.nfs4.optable`)."""
    return collect(OP_MODULES)
