"""The one conversion between pynfsd's export options and the kernel's form of them.

Theory of operation.  The `nfsd.export` cache carries an export as the kernel does
(`pynfsd.cache.lines.ExportInfo`: `NFSEXP_*` flags, anonymous ids, an fsid, a uuid, the
secinfo flavours, locations, transport security), and the `nfsd.fh` cache names an export by
an fsid type and bytes.  pynfsd's server works on `ExportOptions`.  This module converts
between the two, and is the only place that does:

* `info_from_options` writes what rpc.mountd would write for the same exports(5) options: its
  defaults (`wdelay` and `no_subtree_check` on, so `rw` alone is 0x2424 with `fsid=`), `fsid=N`
  as `NFSEXP_FSID` with the number (`fsid=0`/`root`: the NFSv4 root), `fsid=<uuid>` as the
  16-byte uuid, `sec=` as secinfo flavours (pseudoflavours of `pynfsd.rpc.flavors`) each with
  the export's flags, `refer=`/`replicas=` as fs locations (hosts joined by `:` as mountd does),
  `xprtsec=` as the kernel's mode bits, and `manage-gids` as pynfsd's own trailing word.
* `options_from_info` reads any reply a daemon may send back into `ExportOptions`.  The
  kernel form cannot say which flags were written and which were defaults, so the flags come
  back only where they differ from the defaults (`async`, `no_wdelay`, `subtree_check`,
  `nohide`, `crossmnt`, `insecure_locks`, `no_acl`, `pnfs`, `nordirplus`, `security_label`);
  `fsid=root` comes back as `fsid=0`, a uuid as 32 hex digits.  `mountpoint` is rpc.mountd's
  own check and does not travel.  Per-flavour flags (which `ExportOptions` cannot express) are
  combined into the most restrictive: read-only or squashing if any flavour is, `insecure`
  only if every flavour is.  Flavours pynfsd does not speak are left out (an export with none
  left has an empty `sec`: no client may use it); no secinfo at all means `sys`.  `canonical` is what a round trip gives for parsed options.
* `fsid_key` / `fsid_of_key`: a numeric fsid (below 2**32, 0 the root) is fsid type 1,
  `FSID_NUM`, 4 bytes in host order (as rpc.mountd reads it); the other 64-bit fsids
  (`pynfsd.exports.resolver.export_fsid`: a path hash) are type 5, `FSID_UUID8`, 8 bytes
  big-endian.  The kernel's fsid word is a signed 32-bit number, so
  `fsid=` values from 2**31 travel as negative numbers, as rpc.mountd's `%d` writes them.
* `fh_key`: the key knfsd's short filehandles use for an export with a uuid: `FSID_UUID8`
  (the uuid folded to 8 bytes, rpc.mountd's `get_uuid`) when the export is the root of its
  filesystem, else `FSID_UUID4_INUM` (the export directory's inode number, 4 bytes in host
  order, then the uuid folded to 4 bytes).  rpc.mountd matches `FSID_UUID8` only on a mount point and `FSID_UUID4_INUM` only
  on that inode (`match_fsid`), so which one to ask depends on the directory (`path_facts`,
  two lstat calls: blocking, run it on a worker).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from pynfsd.cache import lines as L
from pynfsd.rpc.flavors import BY_NAME, sec_name

from .resolver import export_fsid, uuid_fold
from .types import ClientExport, ExportOptions, Squash

FSID_NUM, FSID_UUID4_INUM, FSID_UUID8 = 1, 4, 5
_U32 = 1 << 32
_U64 = 1 << 64
#: rpc.mountd's defaults (EXPORT_DEFAULT_FLAGS without ro and root_squash, which pynfsd's
#: options always state): flags a written opposite option clears.
_DEFAULT_ON = {L.NFSEXP_GATHERED_WRITES: "no_wdelay", L.NFSEXP_NOSUBTREECHECK: "subtree_check"}
#: Flags an option sets (the name options_from_info gives back first).
_OPTION_FLAGS = {
    "async": L.NFSEXP_ASYNC, "nohide": L.NFSEXP_NOHIDE, "crossmnt": L.NFSEXP_CROSSMOUNT,
    "insecure_locks": L.NFSEXP_NOAUTHNLM, "no_auth_nlm": L.NFSEXP_NOAUTHNLM,
    "no_acl": L.NFSEXP_NOACL, "pnfs": L.NFSEXP_PNFS, "nordirplus": L.NFSEXP_NOREADDIRPLUS,
    "security_label": L.NFSEXP_SECURITY_LABEL,
}  # fmt: skip
_XPRTSEC = {"none": L.NFSEXP_XPRTSEC_NONE, "tls": L.NFSEXP_XPRTSEC_TLS,
            "mtls": L.NFSEXP_XPRTSEC_MTLS}  # fmt: skip
_SQUASH_FLAGS = L.NFSEXP_ROOTSQUASH | L.NFSEXP_ALLSQUASH
MANAGE_GIDS = "manage-gids"
NO_DELEGATIONS = "no_delegations"


# ------------------------------------------------------------ options -> kernel form
def info_from_options(path: str, options: ExportOptions) -> L.ExportInfo:
    """What rpc.mountd writes to nfsd.export for an export of `path` with `options` (the
    form does not depend on the path: an export without `fsid=` is named by the fsid pynfsd
    derives from its path, see `fsid_key`)."""
    flags = _flags(options)
    fsid, uuid = 0, None
    if options.pseudo_root:
        flags |= L.NFSEXP_FSID
    elif isinstance(options.fsid, int):
        flags |= L.NFSEXP_FSID
        fsid = options.fsid - _U32 if options.fsid >= _U32 // 2 else options.fsid
    elif isinstance(options.fsid, str):
        uuid = bytes.fromhex(options.fsid.replace("-", "").replace(":", ""))
    secinfo = tuple(L.SecFlavor(BY_NAME[name].sec_flavor, flags) for name in options.sec)
    locations, migrated = _locations(options)
    return L.ExportInfo(
        flags, options.anonuid, options.anongid, fsid, uuid, secinfo, locations, migrated,
        _xprtsec(options), options.has(MANAGE_GIDS), options.has(NO_DELEGATIONS),
    )


def _flags(options: ExportOptions) -> int:
    flags = 0 if options.rw else L.NFSEXP_READONLY
    if not options.secure:
        flags |= L.NFSEXP_INSECURE_PORT
    flags |= {"root": L.NFSEXP_ROOTSQUASH, "none": 0, "all": _SQUASH_FLAGS}[options.squash]
    for flag, off in _DEFAULT_ON.items():
        if not options.has(off):
            flags |= flag
    for name, flag in _OPTION_FLAGS.items():
        if options.has(name):
            flags |= flag
    return flags


def _valued(options: ExportOptions, key: str) -> str | None:
    """The value of a `key=value` flag option, None when not given."""
    for flag in options.flags:
        if flag.startswith(key + "="):
            return flag[len(key) + 1:]
    return None


def _locations(options: ExportOptions) -> tuple[tuple[tuple[str, str], ...], bool]:
    """`refer=`/`replicas=` (the last written wins, as in rpc.mountd) as (hosts, path) pairs,
    hosts joined by `:`; True for a referral (the filesystem has migrated)."""
    last = [o.partition("=")[0] for o in options.raw if o.startswith(("refer=", "replicas="))]
    kinds = [k for k in ("refer", "replicas") if _valued(options, k) is not None]
    if not kinds:
        return (), False
    kind = last[-1] if last and last[-1] in kinds else kinds[0]
    pairs = []
    for item in (_valued(options, kind) or "").split(":"):
        path, _, hosts = item.partition("@")
        pairs.append((hosts.replace("+", ":"), path))
    return tuple(pairs), kind == "refer"


def _xprtsec(options: ExportOptions) -> tuple[int, ...]:
    value = _valued(options, "xprtsec")
    return () if value is None else tuple(_XPRTSEC[m] for m in value.split(":"))


# ------------------------------------------------------------ kernel form -> options
def options_from_info(info: L.ExportInfo) -> ExportOptions:
    """The `ExportOptions` a kernel-form export means (see the module docstring)."""
    flags = _restrictive(info)
    fsid: int | str | None = None
    if info.flags & L.NFSEXP_FSID:
        fsid = info.fsid % _U32
    elif info.uuid is not None:
        fsid = info.uuid.hex()
    names = {name for name, flag in _OPTION_FLAGS.items()
             if flags & flag and name != "no_auth_nlm"}  # fmt: skip
    names |= {off for flag, off in _DEFAULT_ON.items() if not flags & flag}
    names |= _valued_names(info)
    sec = tuple(n for f in info.secinfo if (n := sec_name(f.flavor)) is not None)
    return ExportOptions(
        rw=not flags & L.NFSEXP_READONLY, sec=sec if info.secinfo else ("sys",),
        squash=_squash(flags), anonuid=info.anonuid, anongid=info.anongid, fsid=fsid,
        pseudo_root=fsid == 0, secure=not flags & L.NFSEXP_INSECURE_PORT,
        flags=frozenset(names),
    )  # fmt: skip


def _restrictive(info: L.ExportInfo) -> int:
    """The export's flags with every flavour's ro and squash added, and `insecure` only when
    every flavour allows it."""
    flags = info.flags
    for f in info.secinfo:
        flags |= f.flags & (L.NFSEXP_READONLY | _SQUASH_FLAGS)
        flags &= ~(L.NFSEXP_INSECURE_PORT & ~f.flags)
    return flags


def _squash(flags: int) -> Squash:
    if flags & L.NFSEXP_ALLSQUASH:
        return "all"
    return "root" if flags & L.NFSEXP_ROOTSQUASH else "none"


def _valued_names(info: L.ExportInfo) -> set[str]:
    names = set()
    if info.fslocations:
        items = ":".join(f"{path}@{hosts.replace(':', '+')}" for hosts, path in info.fslocations)
        names.add(("refer=" if info.migrated else "replicas=") + items)
    if info.xprtsec:
        modes: list[str] = []  # in the order sent; the kernel ORs them, a word may hold several
        for m in info.xprtsec:
            modes += [n for n, bit in _XPRTSEC.items() if m & bit and n not in modes]
        if modes:
            names.add("xprtsec=" + ":".join(modes))
    if info.manage_gids:
        names.add(MANAGE_GIDS)
    if info.no_delegations:
        names.add(NO_DELEGATIONS)
    return names


def client_export(path: str, info: L.ExportInfo) -> ClientExport:
    """The export of `path` as a client whose nfsd.export entry is `info` may use it."""
    options = options_from_info(info)
    return ClientExport(path, options, export_fsid(path, options))


def canonical(options: ExportOptions) -> ExportOptions:
    """`options` as a round trip through the kernel form gives them back."""
    return options_from_info(info_from_options("/", options))


# ------------------------------------------------------------ nfsd.fh keys
def fsid_key(fsid: int) -> tuple[int, bytes]:
    """The nfsd.fh (fsidtype, fsid bytes) of an export's fsid; ValueError for other numbers."""
    if 0 <= fsid < _U32:
        return FSID_NUM, fsid.to_bytes(4, sys.byteorder)
    if _U32 <= fsid < _U64:
        return FSID_UUID8, fsid.to_bytes(8, "big")
    raise ValueError(f"fsid {fsid:#x} is neither a 32-bit number nor a 64-bit fsid")


def fsid_of_key(fsidtype: int, data: bytes) -> int | None:
    """The inverse of `fsid_key`; None for a key no pynfsd export can have."""
    if fsidtype == FSID_NUM and len(data) == 4:
        return int.from_bytes(data, sys.byteorder)
    if fsidtype == FSID_UUID8 and len(data) == 8 and int.from_bytes(data, "big") >= _U32:
        return int.from_bytes(data, "big")
    return None


@dataclass(frozen=True, slots=True)
class PathFacts:
    """What picks the fsid type of a uuid export: is its directory the root of a filesystem
    (rpc.mountd's `is_mountpoint`), and its inode number."""

    mountpoint: bool
    ino: int


def path_facts(path: str) -> PathFacts | None:
    """`PathFacts` of `path` (blocking); None when it cannot be examined."""
    try:
        st, up = os.lstat(path), os.lstat(os.path.join(path, ".."))
    except OSError:
        return None
    return PathFacts(st.st_dev != up.st_dev or st.st_ino == up.st_ino, st.st_ino)


def has_uuid(options: ExportOptions) -> bool:
    """Is the export named by a uuid (so that its fsid type depends on `PathFacts`)?"""
    return isinstance(options.fsid, str) and not options.pseudo_root


def fh_key(options: ExportOptions, fsid: int, facts: PathFacts | None) -> tuple[int, bytes]:
    """The nfsd.fh key knfsd would ask for an export with `options` and `fsid` whose directory
    is as `facts` say (None: unknown, taken as a mount point); see the module docstring."""
    if not has_uuid(options):
        return fsid_key(fsid)
    assert isinstance(options.fsid, str)
    if facts is not None and not facts.mountpoint:
        ino = (facts.ino % _U32).to_bytes(4, sys.byteorder)
        return FSID_UUID4_INUM, ino + uuid_fold(options.fsid, 4)
    return FSID_UUID8, uuid_fold(options.fsid, 8)

