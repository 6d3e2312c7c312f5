"""The NFSv4 pseudo-file system (RFC 7530 §7.3): one namespace joining a client's exports.

Theory of operation: :meth:`PseudoFs.build` takes the exports one client may use and makes a
tree of path components. A node whose ``export`` is set is the root of that export; a node with
``covering`` None is a pure pseudo directory (read-only, fsid ``PSEUDO_ROOT_FSID``, lists only
the names leading to exports, RFC 7530 §7.3). Nodes below an export exist only on the way to a
nested export: the NFS layer asks the backend first and uses ``children`` to notice when a
LOOKUP reaches a nested export (RFC 7530 §7.7, mount point crossing).

When an export carries ``fsid=0``/``fsid=root`` it *is* the root (as with knfsd): the other
exports appear at their path relative to it and exports outside it are unreachable.
Without one, the root is a synthesised directory ``/`` and exports appear at their own paths.

Every node has a stable 16-byte ``id`` (a hash of its client-visible path) for filehandles;
:meth:`PseudoFs.find_by_id` maps it back. The tree is immutable once built.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .types import ClientExport


def node_id(path: str) -> bytes:
    """Stable 16-byte id of the pseudo node at client-visible ``path``."""
    return hashlib.blake2b(b"pseudo\0" + os.fsencode(path), digest_size=16).digest()


@dataclass(eq=False, slots=True)
class PseudoNode:
    """A directory in the client's namespace.

    ``path`` is what the client sees; ``real_path`` the server directory it stands for;
    ``covering`` the export this node lies in (itself mounted here or above), None for pure
    pseudo directories; ``sec`` the flavours allowed here (for pure pseudo nodes the ordered
    union of those of the exports below).
    """

    path: str
    real_path: str
    name: bytes
    parent: PseudoNode | None
    export: ClientExport | None = None
    covering: ClientExport | None = None
    children: dict[bytes, PseudoNode] = field(default_factory=dict)
    sec: tuple[str, ...] = ()
    id: bytes = b""

    @property
    def fileid(self) -> int:
        """A 64-bit file id for GETATTR of pure pseudo directories, derived from ``id``."""
        return int.from_bytes(self.id[:8], "big") | 1

    @property
    def is_pseudo(self) -> bool:
        """True for a pure pseudo directory (not inside any export)."""
        return self.covering is None


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c]


def _is_below(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _union(flavours: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    out: list[str] = []
    for sec in flavours:
        out.extend(f for f in sec if f not in out)
    return tuple(out)


class PseudoFs:
    """A client's namespace of exports; build it with :meth:`build`."""

    def __init__(self, root: PseudoNode, unreachable: tuple[ClientExport, ...]) -> None:
        self.root = root
        #: Exports hidden because they are outside the ``fsid=0`` export.
        self.unreachable = unreachable
        self._by_id = {n.id: n for n in _walk(root)}

    @classmethod
    def build(cls, exports: Iterable[ClientExport]) -> PseudoFs:
        ordered = sorted(exports, key=lambda e: (len(_components(e.path)), e.path))
        top = next((e for e in ordered if e.options.pseudo_root), None)
        base = top.path if top is not None else "/"
        root = PseudoNode(path="/", real_path=base, name=b"", parent=None)
        hidden: list[ClientExport] = []
        for export in ordered:
            if not _is_below(export.path, base):
                hidden.append(export)
                continue
            node = _make_path(root, _components(export.path)[len(_components(base)) :])
            node.export = export
        _finish(root, None)
        return cls(root, tuple(hidden))

    def lookup(self, node: PseudoNode, name: bytes) -> PseudoNode | None:
        """The child ``name`` of ``node``, or None."""
        return node.children.get(name)

    def parent(self, node: PseudoNode) -> PseudoNode | None:
        """The parent of ``node``; None for the root (LOOKUPP there is NFS4ERR_NOENT)."""
        return node.parent

    def find_by_id(self, ident: bytes) -> PseudoNode | None:
        """The node whose ``id`` is ``ident``, or None (a stale pseudo filehandle)."""
        return self._by_id.get(ident)

    def find_path(self, path: str) -> PseudoNode | None:
        """The node at client-visible ``path`` (e.g. ``"/srv/a"``), or None."""
        node: PseudoNode | None = self.root
        for comp in _components(path):
            node = node.children.get(os.fsencode(comp)) if node is not None else None
        return node

    def exports(self) -> Iterator[ClientExport]:
        """The reachable exports, parents before children."""
        return (n.export for n in _walk(self.root) if n.export is not None)

    def __iter__(self) -> Iterator[PseudoNode]:
        return _walk(self.root)


def _make_path(root: PseudoNode, comps: list[str]) -> PseudoNode:
    node = root
    for comp in comps:
        key = os.fsencode(comp)
        child = node.children.get(key)
        if child is None:
            child = PseudoNode(
                path=posixpath.join(node.path, comp),
                real_path=posixpath.join(node.real_path, comp),
                name=key,
                parent=node,
            )
            node.children[key] = child
        node = child
    return node


def _finish(node: PseudoNode, covering: ClientExport | None) -> tuple[str, ...]:
    """Fill ``covering``, ``sec`` and ``id`` top-down; return the flavours of the subtree."""
    node.id = node_id(node.path)
    node.covering = node.export or covering
    below = [_finish(c, node.covering) for c in node.children.values()]
    if node.covering is not None:
        node.sec = node.covering.options.sec
    else:
        node.sec = _union(below)
    return _union([node.sec, *below])


def _walk(node: PseudoNode) -> Iterator[PseudoNode]:
    yield node
    for child in node.children.values():
        yield from _walk(child)
