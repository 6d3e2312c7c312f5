"""What the start-up log says about each export: its effective options as ``exportfs -v``
shows them, and the mount command a client would use.

Pure functions of the exports table: the options are those in force after defaults and
opposite pairs are resolved (``ExportOptions``), in exportfs's order; a lone ``*`` is shown
as ``*``.  The mount command names the path the client sees: the pseudo-filesystem puts an
export at its own path, or below the ``fsid=0`` export at the path relative to it (RFC 7530
§7); an export outside that one is unreachable.  The ``fsid=0`` export is the one written for
the same client, else the one for ``*``: which one a client really gets depends on its
address, so this is what the administrator meant, not a guarantee.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from .types import NOBODY_ID, ClientSpec, ExportEntry, ExportOptions


def option_text(options: ExportOptions) -> str:
    """``rw,sec=sys,secure,root_squash,no_all_squash,...``: the options in force."""
    items = ["rw" if options.rw else "ro", "sec=" + ":".join(options.sec),
             "secure" if options.secure else "insecure",
             "no_root_squash" if options.squash == "none" else "root_squash",
             "all_squash" if options.squash == "all" else "no_all_squash"]  # fmt: skip
    if options.anonuid != NOBODY_ID:
        items.append(f"anonuid={options.anonuid}")
    if options.anongid != NOBODY_ID:
        items.append(f"anongid={options.anongid}")
    if options.fsid is not None:
        items.append(f"fsid={options.fsid}")
    return ",".join(items + sorted(options.flags))


def export_lines(entry: ExportEntry) -> list[str]:
    """One ``PATH  CLIENT(OPTIONS)`` line per client, as ``exportfs -v`` lists them."""
    return [f"{entry.path}  {spec.pattern}({option_text(options)})" for spec, options in entry.clients]


def pseudo_path(entries: Sequence[ExportEntry], path: str, spec: ClientSpec) -> str | None:
    """The path a client matching ``spec`` mounts to reach ``path``; None when it cannot."""
    roots = {s.pattern: e.path for e in reversed(entries) for s, o in e.clients if o.pseudo_root}
    base = roots.get(spec.pattern, roots.get("*", "/"))
    if base != "/" and path != base and not path.startswith(base + "/"):
        return None
    return "/" + posixpath.relpath(path, base).removeprefix(".")


def mount_command(host: str, port: int, path: str, options: ExportOptions) -> str:
    """``mount -t nfs4 -o vers=4.0,port=N[,sec=F] HOST:PATH /mnt``."""
    server = f"[{host}]" if ":" in host else host
    sec = "" if options.sec[0] == "sys" else f",sec={options.sec[0]}"
    return f"mount -t nfs4 -o vers=4.0,port={port}{sec} {server}:{path} /mnt"


def mount_lines(entries: Sequence[ExportEntry], entry: ExportEntry, host: str, port: int) -> list[str]:
    """The distinct mount commands for ``entry`` (one per path and first flavour)."""
    lines: list[str] = []
    for spec, options in entry.clients:
        seen = pseudo_path(entries, entry.path, spec)
        line = mount_command(host, port, seen, options) if seen is not None else None
        if line is not None and line not in lines:
            lines.append(line)
    return lines


def unreachable(entries: Sequence[ExportEntry], entry: ExportEntry) -> list[str]:
    """The clients of ``entry`` that cannot reach it: it is outside their ``fsid=0`` export."""
    return [s.pattern for s, _ in entry.clients if pseudo_path(entries, entry.path, s) is None]
