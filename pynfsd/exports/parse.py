"""The exports(5) parser: ``/etc/exports`` text -> :class:`ExportEntry` tuples.

A line is ``PATH [-DEFAULT_OPTS] CLIENT[(OPTS)] ...``. A client without options gets the
defaults; a path without clients is exported to everyone (``*``) with a warning, as is a
``(OPTS)`` token without a client. Lines for the same path are merged. Every error is an
:class:`ExportsError` naming ``file:line``.
"""

from __future__ import annotations

import ipaddress
import logging
import posixpath
import re
from pathlib import Path

from .lexer import Token, tokenize
from .options import OptionError, OptionState, apply_options, split_options
from .types import ClientSpec, ExportEntry, ExportOptions, ExportsError

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
    merged: dict[str, ClientList] = {}
    for tokens in tokenize(text, filename):
        path, clients = _parse_line(tokens, filename)
        _merge(merged.setdefault(path, []), clients, path)
    return tuple(ExportEntry(path, tuple(clients)) for path, clients in merged.items())


def load_exports(path: str | Path) -> tuple[ExportEntry, ...]:
    """Read and parse an exports file (UTF-8, undecodable bytes kept as surrogate escapes)."""
    try:
        text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise ExportsError(f"cannot read: {e.strerror}", str(path)) from e
    return parse_exports(text, str(path))


def parse_export_line(line: str) -> ExportEntry:
    """One ``--export`` argument; a bare directory means ``DIR *(rw,root_squash,sec=sys)``."""
    tokens = [t for toks in tokenize(line, "--export") for t in toks]
    if not tokens:
        raise ExportsError("empty export", "--export")
    if len(tokens) == 1:
        tokens.append(Token(f"*({CLI_DEFAULT_OPTIONS})", tokens[0].lineno))
    path, clients = _parse_line(tokens, "--export")
    return ExportEntry(path, tuple(clients))


def _merge(existing: ClientList, new: ClientList, path: str) -> None:
    patterns = {spec.pattern.lower() for spec, _ in existing}
    for spec, options in new:
        if spec.pattern.lower() in patterns:
            log.warning("%s: client %s listed more than once; the first wins", path, spec.pattern)
        patterns.add(spec.pattern.lower())
        existing.append((spec, options))


def _parse_line(tokens: list[Token], filename: str) -> tuple[str, ClientList]:
    path = _parse_path(tokens[0], filename)
    rest = tokens[1:]
    defaults: list[str] = []
    if rest and rest[0].text.startswith("-"):
        defaults = _options(rest[0].text[1:], rest[0], filename)
        if not defaults:
            raise ExportsError("empty default options '-'", filename, rest[0].lineno)
        rest = rest[1:]
    if not rest:
        log.warning("%s:%d: %s: no client given, exporting to everyone (*)",
                    filename, tokens[0].lineno, path)  # fmt: skip
        rest = [Token("*", tokens[0].lineno)]
    return path, [_parse_client(t, defaults, filename) for t in rest]


def _parse_path(token: Token, filename: str) -> str:
    text = token.text
    if not text.startswith("/"):
        raise ExportsError(f"export path {text!r} is not absolute", filename, token.lineno)
    if "\0" in text:
        raise ExportsError("export path contains a NUL byte", filename, token.lineno)
    if ".." in text.split("/"):
        raise ExportsError(f"export path {text!r} contains '..'", filename, token.lineno)
    path = posixpath.normpath(text)
    return "/" + path.lstrip("/")


def _options(text: str, token: Token, filename: str) -> list[str]:
    try:
        return split_options(text)
    except OptionError as e:
        raise ExportsError(str(e), filename, token.lineno) from None


def _parse_client(
    token: Token, defaults: list[str], filename: str
) -> tuple[ClientSpec, ExportOptions]:
    m = _CLIENT_RE.fullmatch(token.text)
    if m is None:
        raise ExportsError(f"bad client {token.text!r}", filename, token.lineno)
    name, opts = m.group(1), m.group(2)
    if name == "":
        log.warning("%s:%d: options %r without a client apply to everyone (*)",
                    filename, token.lineno, token.text)  # fmt: skip
        name = "*"
    state = OptionState()
    try:
        spec = parse_client_spec(name)
        apply_options(state, defaults)
        apply_options(state, split_options(opts or ""))
    except (OptionError, ValueError) as e:
        raise ExportsError(str(e), filename, token.lineno) from None
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
