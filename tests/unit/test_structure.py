"""The layout rules of docs/HABITS.md, checked on the source: no module over 600 lines, no
import circle among pynfsd's modules (TYPE_CHECKING imports included), and nothing below the
NFS server module names it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 600


def _sources() -> list[Path]:
    files = [*ROOT.joinpath("pynfsd").rglob("*.py"), *ROOT.joinpath("xdr").glob("*.py")]
    return sorted(f for f in files if "gen" not in f.relative_to(ROOT).parts[1:2])


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports (a name imported from a package is the
    package's submodule when there is one)."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m in known} - {_module(path)}


def _graph() -> dict[str, set[str]]:
    files = _sources()
    known = {_module(f) for f in files}
    return {_module(f): _imports(f, known) for f in files}


def test_no_module_is_over_600_lines() -> None:
    long = {str(f.relative_to(ROOT)): n for f in _sources()
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_import_circle() -> None:
    graph = _graph()
    done: set[str] = set()
    circles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            circles.append(path[path.index(m):] + [m])
            return
        if m in done:
            return
        for n in sorted(graph.get(m, ())):
            # a package's __init__ re-exporting its own modules is not a circle through them
            if not n.startswith(m + ".") or m not in graph:
                visit(n, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    assert circles == []


def test_nothing_below_the_nfs_server_names_it() -> None:
    graph = _graph()
    users = sorted(m for m, deps in graph.items() if "pynfsd.nfs4.server" in deps)
    assert all(not m.startswith("pynfsd.nfs4.") for m in users), users
