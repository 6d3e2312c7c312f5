"""Exports: the exports(5) parser, client matching, the resolver interface and the pseudo-fs.

The NFS layer needs only :class:`ExportResolver` (``await resolver.exports_for(addr)``),
:class:`ClientExport` and :class:`PseudoFs`; the CLI uses :func:`load_exports` and
:func:`parse_export_line`.
"""

from .match import ReverseLookup, best_match, system_reverse_lookup
from .parse import load_exports, parse_export_line, parse_exports
from .pseudofs import PseudoFs, PseudoNode
from .resolver import PSEUDO_ROOT_FSID, ExportResolver, StaticExportResolver, export_fsid
from .types import (
    NOBODY_ID,
    ClientExport,
    ClientKind,
    ClientSpec,
    ExportEntry,
    ExportOptions,
    ExportsError,
    Squash,
)

__all__ = [
    "NOBODY_ID",
    "PSEUDO_ROOT_FSID",
    "ClientExport",
    "ClientKind",
    "ClientSpec",
    "ExportEntry",
    "ExportOptions",
    "ExportResolver",
    "ExportsError",
    "PseudoFs",
    "PseudoNode",
    "ReverseLookup",
    "Squash",
    "StaticExportResolver",
    "best_match",
    "export_fsid",
    "load_exports",
    "parse_export_line",
    "parse_exports",
    "system_reverse_lookup",
]
