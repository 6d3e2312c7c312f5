"""Data types shared by the exports parser, client matching, the resolver and the pseudo-fs.

Everything here is a frozen, slotted dataclass: an exports table, once parsed, never changes;
reloading the table builds new objects.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

Squash = Literal["root", "none", "all"]
ClientKind = Literal["host", "network", "wildcard", "netgroup", "anonymous"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The user and group that squashed requests are mapped to unless anonuid/anongid say otherwise.
NOBODY_ID = 65534


class ExportsError(ValueError):
    """A malformed exports table; ``str()`` is ``file:line: message`` when the place is known."""

    def __init__(self, message: str, filename: str | None = None, lineno: int | None = None):
        self.message = message
        self.filename = filename
        self.lineno = lineno
        super().__init__(self._format())

    @classmethod
    def at(cls, origin: Origin, message: str) -> ExportsError:
        """The error for ``message`` at ``origin`` (an exports line or a ``--export``)."""
        return cls(message, origin.source, origin.lineno)

    def _format(self) -> str:
        if self.filename is None:
            return self.message
        if self.lineno is None:
            return f"{self.filename}: {self.message}"
        return f"{self.filename}:{self.lineno}: {self.message}"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an export was written: line ``lineno`` of the exports file ``source``, or a
    command-line argument (``source`` is ``--export #N``, ``lineno`` None)."""

    source: str
    lineno: int | None = None

    def __str__(self) -> str:
        return self.source if self.lineno is None else f"{self.source}:{self.lineno}"


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """The effective options of one client of one export (see exports(5)).

    ``sec`` lists the allowed RPC security flavours in the administrator's order of preference
    (``sys``, ``krb5``, ``krb5i``, ``krb5p``, ``none``). ``fsid`` is the ``fsid=`` value as written:
    an ``int``, the string ``"root"`` or a UUID string (lower case hex, as written); ``pseudo_root``
    is true for ``fsid=0`` and ``fsid=root``. ``flags`` holds the options without a field of
    their own, after resolving opposite pairs (the last one written wins): ``crossmnt`` (the
    NFS layer crosses into filesystems mounted inside the export, see
    :mod:`pynfsd.nfs4.crossing`) and those accepted without effect (``sync``,
    ``no_subtree_check``, ``nohide``, ``mountpoint=/x`` ...). ``raw`` is every option in the
    order written, defaults from ``-opts`` first.
    """

    rw: bool = False
    sec: tuple[str, ...] = ("sys",)
    squash: Squash = "root"
    anonuid: int = NOBODY_ID
    anongid: int = NOBODY_ID
    fsid: int | str | None = None
    pseudo_root: bool = False
    secure: bool = True
    flags: frozenset[str] = frozenset()
    raw: tuple[str, ...] = ()

    def has(self, flag: str) -> bool:
        """True when the flag option ``flag`` (e.g. ``"async"``, ``"crossmnt"``) is in force."""
        return flag in self.flags


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One client specification of an export line.

    ``kind`` decides precedence (exports(5)): ``host`` (an address or a host name), ``network``
    (CIDR or address/netmask), ``wildcard`` (a host name pattern with ``*``, ``?`` or ``[...]``),
    ``netgroup`` (``@group``) and ``anonymous`` (a lone ``*``). ``network`` is the parsed network
    for ``network`` and for ``host`` specs that are addresses (a /32 or /128), else None.
    """

    pattern: str
    kind: ClientKind
    network: IPNetwork | None = field(default=None, compare=True)


@dataclass(frozen=True, slots=True)
class ExportEntry:
    """One exported directory (absolute, normalised) and its clients in the order written.

    ``origins`` says where each client was written (one per client, in the same order; empty
    for entries built in code); errors and warnings about the entry name them."""

    path: str
    clients: tuple[tuple[ClientSpec, ExportOptions], ...]
    origins: tuple[Origin, ...] = field(default=(), compare=False)

    @property
    def origin(self) -> Origin | None:
        """Where the path was first written."""
        return self.origins[0] if self.origins else None


@dataclass(frozen=True, slots=True)
class ClientExport:
    """An export as one particular client may use it.

    ``fsid`` is an unsigned 64-bit number identifying the exported file system: the ``fsid=``
    value when numeric, else derived stably from the path (or the UUID); see
    :func:`pynfsd.exports.resolver.export_fsid`.
    """

    path: str
    options: ExportOptions
    fsid: int
