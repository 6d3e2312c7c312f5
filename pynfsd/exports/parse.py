"""The exports(5) parser: ``/etc/exports`` text -> :class:`ExportEntry` tuples.

A line is ``PATH [-DEFAULT_OPTS] CLIENT[(OPTS)] ...``. A client without options gets the
defaults; a path without clients is exported to everyone (``*``) with a warning, as is a
``(OPTS)`` token without a client. Lines for the same path are merged with a warning naming
both lines. Every error is an :class:`ExportsError` naming ``file:line`` (``--export #N`` for
the Nth ``--export`` argument), and every entry keeps the ``file:line`` of each client.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .lexer import Token, tokenize
from .options import OptionError, OptionState, apply_options, split_options
from .types import ClientSpec, ExportEntry, ExportOptions, ExportsError, Origin

log = logging.getLogger("pynfsd.exports")

_CLIENT_RE = re.compile(r"([^()]*)(?:\(([^()]*)\))?")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_WILDCARD_RE = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")
_NETGROUP_RE = re.compile(r"@[A-Za-z0-9_.-]+")
#: What ``--export DIR`` means on the command line.
CLI_DEFAULT_OPTIONS = "rw,root_squash,sec=sys"

ClientList = list[tuple[ClientSpec, ExportOptions]]


def parse_exports(text: str, filename: str = "<exports>") -> tuple[ExportEntry, ...]:
    """Parse a whole exports file; entries for the same path are merged, first line first."""
    return merge_entries(parse_lines(text, filename))


def parse_lines(text: str, filename: str = "<exports>") -> list[ExportEntry]:
    """One entry per line of an exports file, not merged, each client with its ``file:line``."""
    source = _Source(filename, numbered=True)
    return [_parse_line(tokens, source) for tokens in tokenize(text, filename)]


def load_exports(path: str | Path) -> tuple[ExportEntry, ...]:
    """Read and parse an exports file (UTF-8, undecodable bytes kept as surrogate escapes)."""
    return merge_entries(read_exports(path))


def read_exports(path: str | Path) -> list[ExportEntry]:
    """The lines of an exports file, as :func:`parse_lines`."""
    try:
        text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as e:
        what = "does not exist" if e.errno == errno.ENOENT else f"cannot read: {e.strerror}"
        raise ExportsError(what, str(path)) from e
    return parse_lines(text, str(path))


def parse_export_line(line: str, number: int = 1) -> ExportEntry:
    """The ``number``-th ``--export`` argument; a bare directory means
    ``DIR *(rw,root_squash,sec=sys)``.  Errors name it ``--export #N``."""
    source = _Source(f"--export #{number}", numbered=False)
    try:
        tokens = [t for toks in tokenize(line, source.name) for t in toks]
    except ExportsError as e:
        raise ExportsError(e.message, source.name) from None
    if not tokens:
        raise ExportsError("empty export", source.name)
    if len(tokens) == 1:
        tokens.append(Token(f"*({CLI_DEFAULT_OPTIONS})", tokens[0].lineno))
    return _parse_line(tokens, source)


def merge_entries(entries: Iterable[ExportEntry]) -> tuple[ExportEntry, ...]:
    """One entry per path, its clients in the order written, first line first.

    A path written again on another line is merged into the first with a warning naming
    both places, as is a client named twice for one path (the first one wins: it is the one
    client matching finds)."""
    merged: dict[str, tuple[list[tuple[ClientSpec, ExportOptions]], list[Origin]]] = {}
    for entry in entries:
        clients, origins = merged.setdefault(entry.path, ([], []))
        _merge(clients, origins, entry)
    return tuple(ExportEntry(path, tuple(c), tuple(o)) for path, (c, o) in merged.items())


def _merge(clients: ClientList, origins: list[Origin], entry: ExportEntry) -> None:
    new_origins = entry.origins or tuple(Origin("<code>") for _ in entry.clients)
    if origins and entry.origin is not None:
        log.warning("%s: %s is already exported at %s; the clients of both are merged",
                    entry.origin, entry.path, origins[0])  # fmt: skip
    first_of: dict[str, Origin] = {}
    for (spec, _), at in zip(clients, origins, strict=True):
        first_of.setdefault(spec.pattern.lower(), at)
    for (spec, options), at in zip(entry.clients, new_origins, strict=True):
        earlier = first_of.setdefault(spec.pattern.lower(), at)
        if earlier is not at:
            log.warning("%s: %s: client %s listed more than once (first at %s); the first wins",
                        at, entry.path, spec.pattern, earlier)  # fmt: skip
        clients.append((spec, options))
        origins.append(at)


@dataclass(frozen=True, slots=True)
class _Source:
    """An exports file (``numbered``: errors name the line) or one ``--export`` argument."""

    name: str
    numbered: bool

    def at(self, lineno: int) -> Origin:
        return Origin(self.name, lineno if self.numbered else None)


def _parse_line(tokens: list[Token], source: _Source) -> ExportEntry:
    path = _parse_path(tokens[0], source)
    rest = tokens[1:]
    defaults: list[str] = []
    if rest and rest[0].text.startswith("-"):
        defaults = _options(rest[0].text[1:], source.at(rest[0].lineno))
        if not defaults:
            raise ExportsError.at(source.at(rest[0].lineno), "empty default options '-'")
        rest = rest[1:]
    if not rest:
        log.warning("%s: %s: no client given, exporting to everyone (*)",
                    source.at(tokens[0].lineno), path)  # fmt: skip
        rest = [Token("*", tokens[0].lineno)]
    clients = [_parse_client(t, defaults, source.at(t.lineno)) for t in rest]
    return ExportEntry(path, tuple(clients), tuple(source.at(t.lineno) for t in rest))


def _parse_path(token: Token, source: _Source) -> str:
    text, at = token.text, source.at(token.lineno)
    if not text.startswith("/"):
        raise ExportsError.at(at, f"export path {text!r} is not absolute")
    if "\0" in text:
        raise ExportsError.at(at, "export path contains a NUL byte")
    if ".." in text.split("/"):
        raise ExportsError.at(at, f"export path {text!r} contains '..'")
    path = posixpath.normpath(text)
    return "/" + path.lstrip("/")


def _options(text: str, at: Origin) -> list[str]:
    try:
        return split_options(text)
    except OptionError as e:
        raise ExportsError.at(at, str(e)) from None


def _parse_client(
    token: Token, defaults: list[str], at: Origin
) -> tuple[ClientSpec, ExportOptions]:
    m = _CLIENT_RE.fullmatch(token.text)
    if m is None:
        raise ExportsError.at(at, f"bad client {token.text!r}")
    name, opts = m.group(1), m.group(2)
    if name == "":
        log.warning("%s: options %r without a client apply to everyone (*)", at, token.text)
        name = "*"
    state = OptionState()
    try:
        spec = parse_client_spec(name)
        apply_options(state, defaults)
        apply_options(state, split_options(opts or ""))
    except (OptionError, ValueError) as e:
        raise ExportsError.at(at, str(e)) from None
    return spec, state.freeze()


def parse_client_spec(text: str) -> ClientSpec:
    """Classify a client spec (exports(5) "Machine Name Formats"); ValueError when malformed."""
    if text == "*":
        return ClientSpec(text, "anonymous")
    if text.startswith("@"):
        if not _NETGROUP_RE.fullmatch(text):
            raise OptionError(f"bad netgroup {text!r}")
        return ClientSpec(text, "netgroup")
    if "/" in text:
        return ClientSpec(text, "network", _parse_network(text))
    address = _parse_address(text)
    if address is not None:
        return ClientSpec(text, "host", ipaddress.ip_network(address))
    if any(c in text for c in "*?["):
        if not _WILDCARD_RE.fullmatch(text):
            raise OptionError(f"bad wildcard {text!r}")
        return ClientSpec(text, "wildcard")
    if not _HOSTNAME_RE.fullmatch(text) or re.fullmatch(r"[0-9.]+", text):
        raise OptionError(f"bad client {text!r}")
    return ClientSpec(text, "host")


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address (IPv6 may be in brackets; IPv4-mapped becomes IPv4), or None."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``addr/prefixlen`` or ``addr/netmask``; host bits are masked off as exportfs does."""
    addr_text, _, mask = text.partition("/")
    address = _parse_address(addr_text)
    if address is None or mask == "":
        raise OptionError(f"bad network {text!r}")
    if address.version == 4 and ":" in addr_text and mask.isdigit():
        mask = str(int(mask) - 96)  # ::ffff:a.b.c.d/104 is the IPv4 network a.b.c.d/8
    try:
        return ipaddress.ip_network(f"{address}/{mask}", strict=False)
    except ValueError:
        raise OptionError(f"bad network {text!r}") from None
