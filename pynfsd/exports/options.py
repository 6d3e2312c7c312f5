"""Export options (exports(5)): from ``rw,sec=krb5p,anonuid=1000`` to :class:`ExportOptions`.

Options are applied in order, default options (``-opts`` after the path) first, then the
client's own; a later option overrides an earlier opposite one. Options that pynfsd accepts
without acting on them are kept in ``ExportOptions.flags`` (the last of each opposite pair).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pynfsd.rpc.flavors import BY_NAME

from .types import NOBODY_ID, ExportOptions, Squash

SEC_FLAVOURS = tuple(BY_NAME)  # the sec= names of the one flavour table
_MAX_ID = 2**32 - 1
_UUID_RE = re.compile(r"[0-9a-fA-F]{2}(?:[-:]?[0-9a-fA-F]{2}){15}")

#: Flag options (all without effect here but ``crossmnt``, ``manage-gids``: the server
#: takes an AUTH_SYS caller's groups from its own group database, and ``no_delegations``:
#: pynfsd's own, no delegation is granted on the export), mapped to the group in which the
#: last one written wins.
_FLAG_GROUPS = {
    "sync": "sync", "async": "sync",
    "wdelay": "wdelay", "no_wdelay": "wdelay",
    "hide": "hide", "nohide": "hide",
    "subtree_check": "subtree", "no_subtree_check": "subtree",
    "secure_locks": "locks", "insecure_locks": "locks",
    "auth_nlm": "locks", "no_auth_nlm": "locks",
    "crossmnt": "crossmnt", "nocrossmnt": "crossmnt",
    "acl": "acl", "no_acl": "acl", "noacl": "acl",
    "pnfs": "pnfs", "no_pnfs": "pnfs",
    "nordirplus": "nordirplus", "security_label": "security_label",
    "mountpoint": "mountpoint", "mp": "mountpoint",
    "manage-gids": "manage-gids",
    "delegations": "delegations", "no_delegations": "delegations",
}  # fmt: skip
#: Other spellings of flag options, kept as the first.
_SPELLING = {"mp": "mountpoint", "noacl": "no_acl"}
_VALUED_FLAGS = {"mountpoint": "mountpoint", "mp": "mountpoint", "refer": "refer",
                 "replicas": "replicas", "xprtsec": "xprtsec"}  # fmt: skip


class OptionError(ValueError):
    """A bad option; the parser adds the file and line."""


@dataclass(slots=True)
class OptionState:
    """Mutable options while a client's option list is applied."""

    rw: bool = False
    sec: tuple[str, ...] = ("sys",)
    root_squash: bool = True
    all_squash: bool = False
    anonuid: int = NOBODY_ID
    anongid: int = NOBODY_ID
    fsid: int | str | None = None
    secure: bool = True
    flags: dict[str, str] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)

    def freeze(self) -> ExportOptions:
        squash: Squash = "all" if self.all_squash else "root" if self.root_squash else "none"
        return ExportOptions(
            rw=self.rw, sec=self.sec, squash=squash, anonuid=self.anonuid,
            anongid=self.anongid, fsid=self.fsid, pseudo_root=self.fsid in (0, "root"),
            secure=self.secure, flags=frozenset(self.flags.values()), raw=tuple(self.raw),
        )  # fmt: skip


_SIMPLE: dict[str, tuple[str, bool]] = {
    "rw": ("rw", True), "ro": ("rw", False),
    "root_squash": ("root_squash", True), "no_root_squash": ("root_squash", False),
    "all_squash": ("all_squash", True), "no_all_squash": ("all_squash", False),
    "secure": ("secure", True), "insecure": ("secure", False),
}  # fmt: skip


def split_options(text: str) -> list[str]:
    """``"rw,sync"`` -> ``["rw", "sync"]``; ``""`` -> ``[]``; empty items are errors."""
    if text == "":
        return []
    items = text.split(",")
    if any(item == "" for item in items):
        raise OptionError(f"empty option in {text!r}")
    return items


def apply_options(state: OptionState, options: list[str]) -> None:
    """Apply one option group (the ``-opts`` defaults, or a client's own list) in order."""
    seen_sec = False
    for option in options:
        key, sep, value = option.partition("=")
        if key == "sec":
            if seen_sec:
                raise OptionError("more than one sec= in one option list (per-flavour "
                                  "options are not supported)")  # fmt: skip
            seen_sec = True
        _apply_one(state, key, value if sep else None)
        state.raw.append(option)


def _apply_one(state: OptionState, key: str, value: str | None) -> None:
    if key in _SIMPLE and value is None:
        attr, flag = _SIMPLE[key]
        setattr(state, attr, flag)
    elif key == "sec":
        state.sec = parse_sec(_need(key, value))
    elif key in ("anonuid", "anongid"):
        setattr(state, key, parse_id(key, _need(key, value)))
    elif key == "fsid":
        state.fsid = parse_fsid(_need(key, value))
    elif key in _VALUED_FLAGS and value is not None:
        state.flags[_VALUED_FLAGS[key]] = f"{_VALUED_FLAGS[key]}={_check_valued(key, value)}"
    elif key in _FLAG_GROUPS and value is None:
        state.flags[_FLAG_GROUPS[key]] = _SPELLING.get(key, key)
    else:
        shown = key if value is None else f"{key}={value}"
        raise OptionError(f"unknown option {shown!r}")


def _need(key: str, value: str | None) -> str:
    if value is None or value == "":
        raise OptionError(f"option {key} needs a value")
    return value


def parse_sec(value: str) -> tuple[str, ...]:
    """``"krb5p:krb5i"`` -> ``("krb5p", "krb5i")``, checking names and duplicates."""
    flavours = tuple(value.split(":"))
    for name in flavours:
        if name not in SEC_FLAVOURS:
            raise OptionError(f"unknown security flavour {name!r} in sec={value}")
    if len(set(flavours)) != len(flavours):
        raise OptionError(f"duplicate security flavour in sec={value}")
    return flavours


def parse_number(key: str, value: str) -> int:
    """A decimal number in the 32-bit unsigned range."""
    if not value.isascii() or not value.isdigit() or int(value) > _MAX_ID:
        raise OptionError(f"bad number {value!r} for {key}")
    return int(value)


def parse_id(key: str, value: str) -> int:
    """An anonuid/anongid: a 32-bit number other than (uid_t)-1, which the kernel refuses."""
    number = parse_number(key, value)
    if number == _MAX_ID:
        raise OptionError(f"bad number {value!r} for {key}: (uid_t)-1 is not an id")
    return number


def parse_fsid(value: str) -> int | str:
    """``fsid=N``, ``fsid=root`` or ``fsid=<uuid>`` (32 hex digits, ``-``/``:`` allowed)."""
    if value == "root":
        return "root"
    if value.isascii() and value.isdigit():
        return parse_number("fsid", value)
    if _UUID_RE.fullmatch(value):
        return value.lower()
    raise OptionError(f"bad fsid {value!r} (a number, 'root' or a UUID)")


def _check_valued(key: str, value: str) -> str:
    if key in ("mountpoint", "mp") and not value.startswith("/"):
        raise OptionError(f"{key}={value}: path must be absolute")
    if key in ("refer", "replicas"):
        _check_locations(key, value)
    if key == "xprtsec":
        for name in value.split(":"):
            if name not in ("none", "tls", "mtls"):
                raise OptionError(f"unknown xprtsec mode {name!r}")
    if value == "":
        raise OptionError(f"option {key} needs a value")
    return value


def _check_locations(key: str, value: str) -> None:
    """``refer=``/``replicas=``: ``path@host[+host]`` items separated by ``:`` (exports(5))."""
    for item in value.split(":"):
        path, at, hosts = item.partition("@")
        if not at or not path.startswith("/") or any(h == "" for h in hosts.split("+")):
            raise OptionError(f"{key}={value}: not path@host[+host][:path@host...]")
