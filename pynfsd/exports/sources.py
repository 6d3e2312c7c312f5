"""The exports table of a server from its sources: an exports file and ``--export`` arguments.

Theory of operation: the lines of the ``--exports`` file come first, then each ``--export``
argument (named ``--export #N`` in messages); :func:`merge_entries` joins lines for the same
path, warning with both places as exportfs(8) does.  Every exported directory is then checked
once at start-up, so a typo fails before the server listens, with the ``file:line`` that
wrote it: a missing path "does not exist", anything else "is not a directory".  Errors are
:class:`ExportsError`; warnings (a path written twice, an exports file with no export, as
exportfs(8) accepts it) go to the ``pynfsd.exports`` logger.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence

from .parse import merge_entries, parse_export_line, read_exports
from .types import ExportEntry, ExportsError, Origin

log = logging.getLogger("pynfsd.exports")


def gather_exports(exports_file: str | None, export_args: Sequence[str]) -> tuple[ExportEntry, ...]:
    """The merged exports of an exports file and ``--export`` lines, directories checked."""
    lines = list(read_exports(exports_file)) if exports_file else []
    lines += [parse_export_line(arg, number) for number, arg in enumerate(export_args, start=1)]
    if exports_file and not lines:
        log.warning("%s: no exports in the file; clients see an empty pseudo-filesystem", exports_file)
    entries = merge_entries(lines)
    for entry in entries:
        check_directory(entry)
    return entries


def check_directory(entry: ExportEntry) -> None:
    """Raise :class:`ExportsError` at the entry's first line unless its path is a directory."""
    problem = directory_problem(entry.path)
    if problem is not None:
        where = entry.origin or Origin("<exports>")
        raise ExportsError.at(where, f"{entry.path}: {problem}")


def directory_problem(path: str) -> str | None:
    """Why ``path`` cannot be exported, or None when it is a directory."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return "does not exist"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a component of the path is not a directory)"
        return f"cannot access: {e.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    return None
