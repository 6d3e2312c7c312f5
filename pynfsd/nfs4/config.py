"""The NFSv4 service's configuration (`ServerConfig`) and the defaults of its bounds.

Theory of operation: one `ServerConfig` is made by the CLI (or a test) and shared, as the same
object, by the server and every COMPOUND it runs, so a bound changed on it applies to the next
COMPOUND.  It sits below the COMPOUND loop and the handlers, which read their limits here
without knowing the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pynfsd.exports.mounts import DEFAULT_MAX_MOUNTS
from pynfsd.exports.types import ClientExport
from pynfsd.fs.backend import Backend
from pynfsd.nfs4.state.delegations import (
    DEFAULT_MAX_CLIENT_DELEGATIONS,
    DEFAULT_MAX_DELEGATIONS,
)

# Bounded work per COMPOUND (see pynfsd.nfs4.compound).  200 ops as knfsd's
# NFSD_MAX_OPS_PER_COMPOUND (raised from 50 for clients that walk long paths in one
# COMPOUND; the Linux client sends fewer than 10).  A reply holds one READ or READDIR of
# maxread bytes plus REPLY_HEADROOM for the ops around it and the tag.
DEFAULT_MAX_COMPOUND_OPS = 200
DEFAULT_IO_SIZE = 1 << 20
REPLY_HEADROOM = 64 << 10
DEFAULT_MAX_REPLY = DEFAULT_IO_SIZE + REPLY_HEADROOM


@dataclass
class ServerConfig:
    state_dir: str
    lease_time: int = 90
    grace_time: int = 90
    maxread: int = DEFAULT_IO_SIZE
    maxwrite: int = DEFAULT_IO_SIZE
    max_compound_ops: int = DEFAULT_MAX_COMPOUND_OPS
    max_reply: int = DEFAULT_MAX_REPLY  # bytes of COMPOUND4res
    workers: int = 16
    # filesystems mounted inside exports crossed per client view (crossmnt)
    max_mounts: int = DEFAULT_MAX_MOUNTS
    backend_factory: Callable[[ClientExport, str], Backend] | None = None
    # RPCSEC_GSS callbacks: the server's initiator name and keytab (None: AUTH_SYS only)
    callback_keytab: str | None = None
    callback_gss_name: str | None = None
    # delegations (pynfsd.nfs4.state.delegations): granted at all, and at most how many
    delegations: bool = True
    max_delegations: int = DEFAULT_MAX_DELEGATIONS
    max_client_delegations: int = DEFAULT_MAX_CLIENT_DELEGATIONS
    clock: Callable[[], float] = field(default=time.monotonic)
    wallclock_ns: Callable[[], int] = field(default=time.time_ns)

    def __post_init__(self) -> None:
        if self.max_compound_ops < 1:
            raise ValueError("max_compound_ops must be at least 1")
        if self.maxread + REPLY_HEADROOM > self.max_reply:
            # the announced maxread must fit in a reply (RFC 7530 §5.8.2.16)
            raise ValueError(f"maxread {self.maxread} needs max_reply >= maxread + {REPLY_HEADROOM}")

    @staticmethod
    def io_size_for(max_reply: int) -> int:
        """The maxread/maxwrite to announce for a reply size: the default, or what fits."""
        return max(0, min(DEFAULT_IO_SIZE, max_reply - REPLY_HEADROOM))
