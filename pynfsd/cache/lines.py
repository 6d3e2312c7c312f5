"""The channel lines of the four kernel caches: requests, replies and `content` rows.

Theory of operation.  These are the formats of `net/sunrpc/svcauth_unix.c` and
`fs/nfsd/export.c`, which rpc.mountd and exportfs speak (words as in `qword.py`; expiry in
wall-clock epoch seconds; one line per request or reply):

| cache | request | reply |
|---|---|---|
| `auth.unix.ip` | `class ip` | `class ip expiry [domain]` |
| `nfsd.export` | `domain path` | `domain path expiry [flags anonuid anongid fsid options...]` |
| `nfsd.fh` | `domain fsidtype \\xfsid` | `domain fsidtype \\xfsid expiry [path]` |
| `auth.unix.gid` | `uid` | `uid expiry n gid...` |

A reply without its optional part is a negative entry.  An export's options are `uuid
\\x<16 bytes>`, `secinfo n (flavour flags)...`, `fsloc n (host path)... migrated` and `xprtsec n
mode...` (each mode an `NFSEXP_XPRTSEC_*` bit); at the first word it does not know the kernel
stops reading ("newer mountd might be passing us security options we don't understand"), and
so does this.  pynfsd adds two words the kernel does not know, `manage_gids` (the export's
`manage-gids` option) and `no_delegations` (the option of that name), always written last so
that the line stays valid for the kernel.  The checks are the
kernel's: known export flags only (`NFSEXP_ALLFLAGS`), an fsid of the length its type has,
a 16-byte uuid, at most 8 secinfo flavours whose flags differ from the export's only in
`NFSEXP_SECINFO_FLAGS`, valid anonymous ids, at most `NGROUPS_MAX` groups.  Every decoder
raises `LineError` and nothing else.

Each reply decodes into a `Reply` (frozen) whose `key` is the cache key and whose `value` is
None for a negative entry; `encode_*` writes the same line back.  The `content_*` functions
format one row of a cache's `content` file as the kernel's `*_show` functions do (a row not
currently usable starts with `# `).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from pynfsd.cache.qword import (
    INT32,
    NGROUPS_MAX,
    UINT32,
    LineError,
    Words,
    hexword,
    line,
    number,
    text,
    word,
)

# ------------------------------------------------------------ export flags (linux/nfsd/export.h)
NFSEXP_READONLY = 0x0001
NFSEXP_INSECURE_PORT = 0x0002
NFSEXP_ROOTSQUASH = 0x0004
NFSEXP_ALLSQUASH = 0x0008
NFSEXP_ASYNC = 0x0010
NFSEXP_GATHERED_WRITES = 0x0020
NFSEXP_NOREADDIRPLUS = 0x0040
NFSEXP_SECURITY_LABEL = 0x0080
NFSEXP_NOHIDE = 0x0200
NFSEXP_NOSUBTREECHECK = 0x0400
NFSEXP_NOAUTHNLM = 0x0800
NFSEXP_MSNFS = 0x1000
NFSEXP_FSID = 0x2000
NFSEXP_CROSSMOUNT = 0x4000
NFSEXP_NOACL = 0x8000
NFSEXP_V4ROOT = 0x10000
NFSEXP_PNFS = 0x20000
NFSEXP_ALLFLAGS = 0x3FEFF
NFSEXP_SECINFO_FLAGS = NFSEXP_READONLY | NFSEXP_ROOTSQUASH | NFSEXP_ALLSQUASH | NFSEXP_INSECURE_PORT

MAX_SECINFO_LIST = 8
MAX_FS_LOCATIONS = 128
NFSEXP_XPRTSEC_NONE, NFSEXP_XPRTSEC_TLS, NFSEXP_XPRTSEC_MTLS = 0x1, 0x2, 0x4
XPRTSEC_MODES = 3  # at most this many modes in a list (NFSEXP_XPRTSEC_NUM)
FSID_LENGTHS = {0: 8, 1: 4, 2: 12, 3: 8, 4: 8, 5: 8, 6: 16, 7: 24}  # fsidtype -> bytes (key_len)
UUID_LEN = 16
MAX_CLASS = 7  # bytes of an auth.unix.ip class (the kernel's m_class[8])
NO_DOMAIN = "-no-domain-"


KeyT = TypeVar("KeyT")
ValueT = TypeVar("ValueT")


@dataclass(frozen=True)  # no slots: calling an alias such as IpReply sets __orig_class__
class Reply(Generic[KeyT, ValueT]):
    """A daemon's answer for `key`, usable until `expiry`; `value` None: negative."""

    key: KeyT
    expiry: int
    value: ValueT | None


def _whole(data: bytes, read_key: Callable[[Words], KeyT]) -> KeyT:
    """A request line: the key and nothing after it."""
    w = Words(data)
    key = read_key(w)
    w.end()
    return key


def _key_expiry_text(data: bytes, read_key: Callable[[Words], KeyT]) -> tuple[KeyT, int, str | None]:
    """A reply of a key, an expiry and one optional text word (none or empty: negative)."""
    w = Words(data)
    key, expiry = read_key(w), w.expiry()
    raw = w.optional()
    w.end()
    return key, expiry, text(raw) if raw else None


# ------------------------------------------------------------ auth.unix.ip
@dataclass(frozen=True, slots=True)
class IpKey:
    """The key of auth.unix.ip: a class (`nfsd`) and a client address."""

    cls: str
    ip: str  # normalized (ipaddress's compressed form)


IpReply = Reply[IpKey, str]  # the client's domain


def ip_key(address: str, cls: str = "nfsd") -> IpKey:
    """The key of a client address: IPv4 as such also when it came IPv4-mapped over IPv6
    (the kernel writes `%pI4` for those), IPv6 compressed; ValueError if not an address."""
    ip = ipaddress.ip_address(address.partition("%")[0] if ":" in address else address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return IpKey(cls, str(ip))


def _ip_key(w: Words) -> IpKey:
    cls = w.text("class", MAX_CLASS)
    raw = w.text("ip address", 64)
    try:
        return ip_key(raw, cls)
    except ValueError:
        raise LineError(f"ip address: not an address: {raw[:64]!r}") from None


def encode_ip_request(key: IpKey) -> bytes:
    return line(word(key.cls), word(key.ip))


def decode_ip_request(data: bytes) -> IpKey:
    return _whole(data, _ip_key)


def encode_ip_reply(r: IpReply) -> bytes:
    tail = () if r.value is None else (word(r.value),)
    return line(word(r.key.cls), word(r.key.ip), word(r.expiry), *tail)


def decode_ip_reply(data: bytes) -> IpReply:
    return IpReply(*_key_expiry_text(data, _ip_key))


def content_ip(r: IpReply, usable: bool) -> bytes:
    """`ip_map_show`; the file starts with `#class IP domain`."""
    dom = NO_DOMAIN if r.value is None or not usable else r.value
    return _row(usable, word(r.key.cls), r.key.ip.encode(), word(dom))


# ------------------------------------------------------------ nfsd.export
@dataclass(frozen=True, slots=True)
class ExportKey:
    """The key of nfsd.export: a client domain and an exported path."""

    domain: str
    path: str


def _export_key(w: Words) -> ExportKey:
    domain = w.text("domain")
    path = w.text("path")
    if not path.startswith("/"):
        raise LineError(f"path: not absolute: {path[:64]!r}")
    return ExportKey(domain, path)


@dataclass(frozen=True, slots=True)
class SecFlavor:
    """One `secinfo` flavour and the export flags that go with it."""

    flavor: int  # pseudoflavour (1 AUTH_UNIX, 390003 krb5, ...)
    flags: int


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What nfsd.export answers for a domain and path (exports(5) options)."""

    flags: int
    anonuid: int
    anongid: int
    fsid: int
    uuid: bytes | None = None
    secinfo: tuple[SecFlavor, ...] = ()
    fslocations: tuple[tuple[str, str], ...] = ()
    migrated: bool = False
    xprtsec: tuple[int, ...] = ()
    manage_gids: bool = False  # pynfsd's own trailing word: auth.unix.gid decides the groups
    no_delegations: bool = False  # pynfsd's own trailing word: no delegation is granted


ExportReply = Reply[ExportKey, ExportInfo]  # negative: not exported to this domain


def encode_export_request(key: ExportKey) -> bytes:
    return line(word(key.domain), word(key.path))


def decode_export_request(data: bytes) -> ExportKey:
    return _whole(data, _export_key)


def decode_export_reply(data: bytes) -> ExportReply:
    w = Words(data)
    key, expiry = _export_key(w), w.expiry()
    if not w.more():
        return ExportReply(key, expiry, None)
    flags = w.integer("flags")
    if flags & ~NFSEXP_ALLFLAGS or flags < 0:
        raise LineError(f"flags: unknown export flags {flags:#x}")
    anonuid, anongid = _anon(w, "anonuid"), _anon(w, "anongid")
    info = ExportInfo(flags, anonuid, anongid, w.integer("fsid"))
    return ExportReply(key, expiry, _export_options(w, info))


def _anon(w: Words, what: str) -> int:
    value = w.integer(what, (INT32[0], UINT32[1])) & UINT32[1]
    if value == UINT32[1]:  # (uid_t)-1
        raise LineError(f"{what}: not a valid id")
    return value


def _export_options(w: Words, info: ExportInfo) -> ExportInfo:
    fields: dict[str, object] = {}
    seen: set[bytes] = set()
    while (name := w.optional()) in _OPTIONS and name is not None:
        if name in seen:
            raise LineError(f"{name.decode()} given twice")
        seen.add(name)
        fields.update(_OPTIONS[name](w, info.flags))
    # the kernel ignores an unknown word and what follows it
    return replace(info, **fields)  # type: ignore[arg-type]


def _uuid(w: Words, _flags: int) -> dict[str, object]:
    uuid = w.next("uuid")
    if len(uuid) != UUID_LEN:
        raise LineError(f"uuid: {len(uuid)} bytes, not {UUID_LEN}")
    return {"uuid": uuid}


def _secinfo(w: Words, flags: int) -> dict[str, object]:
    n = w.integer("secinfo count", (0, MAX_SECINFO_LIST))
    out = []
    for i in range(n):
        flavor = w.integer(f"secinfo flavour {i + 1}", (0, UINT32[1]))
        fl = w.integer(f"secinfo flags {i + 1}", UINT32)
        if ~NFSEXP_SECINFO_FLAGS & (fl ^ flags):
            raise LineError(f"secinfo flags {i + 1}: {fl:#x} differ from {flags:#x} "
                            "beyond ro/insecure/squash")
        out.append(SecFlavor(flavor, fl))
    return {"secinfo": tuple(out)}


def _fsloc(w: Words, _flags: int) -> dict[str, object]:
    n = w.integer("fsloc count", (0, MAX_FS_LOCATIONS))
    locs = tuple((w.text(f"fsloc host {i + 1}"), w.text(f"fsloc path {i + 1}")) for i in range(n))
    migrated = w.integer("fsloc migrated", (0, 1))
    return {"fslocations": locs, "migrated": bool(migrated)}


def _xprtsec(w: Words, _flags: int) -> dict[str, object]:
    n = w.integer("xprtsec count", (0, XPRTSEC_MODES))
    return {"xprtsec": tuple(w.integer(f"xprtsec mode {i + 1}", (0, NFSEXP_XPRTSEC_MTLS))
                             for i in range(n))}


def _manage_gids(_w: Words, _flags: int) -> dict[str, object]:
    return {"manage_gids": True}


def _no_delegations(_w: Words, _flags: int) -> dict[str, object]:
    return {"no_delegations": True}


_OPTIONS = {b"uuid": _uuid, b"secinfo": _secinfo, b"fsloc": _fsloc, b"xprtsec": _xprtsec,
            b"manage_gids": _manage_gids, b"no_delegations": _no_delegations}


def encode_export_reply(r: ExportReply) -> bytes:
    head = [word(r.key.domain), word(r.key.path), word(r.expiry)]
    i = r.value
    if i is None:
        return line(*head)
    head += [word(i.flags), word(i.anonuid), word(i.anongid), word(i.fsid)]
    if i.fslocations or i.migrated:
        head += [b"fsloc", word(len(i.fslocations))]
        head += [word(part) for loc in i.fslocations for part in loc]
        head.append(word(int(i.migrated)))
    if i.uuid is not None:
        head += [b"uuid", hexword(i.uuid)]
    if i.secinfo:
        head += [b"secinfo", word(len(i.secinfo))]
        head += [word(n) for f in i.secinfo for n in (f.flavor, f.flags)]
    if i.xprtsec:
        head += [b"xprtsec", word(len(i.xprtsec)), *(word(m) for m in i.xprtsec)]
    if i.manage_gids:
        head.append(b"manage_gids")  # last: the kernel stops at it
    if i.no_delegations:
        head.append(b"no_delegations")  # as last, and as unknown to the kernel
    return line(*head)


# ------------------------------------------------------------ nfsd.fh
@dataclass(frozen=True, slots=True)
class FhKey:
    """The key of nfsd.fh: a client domain and a filehandle's fsid (type, bytes)."""

    domain: str
    fsidtype: int
    fsid: bytes


FhReply = Reply[FhKey, str]  # the export's path


def _fh_key(w: Words) -> FhKey:
    domain = w.text("domain")
    fsidtype = number(w.next("fsidtype"), "fsidtype", (0, max(FSID_LENGTHS)))
    fsid = w.next("fsid")
    if len(fsid) != FSID_LENGTHS[fsidtype]:
        raise LineError(f"fsid: {len(fsid)} bytes, type {fsidtype} has {FSID_LENGTHS[fsidtype]}")
    return FhKey(domain, fsidtype, fsid)


def _fh_words(key: FhKey) -> list[bytes]:
    return [word(key.domain), word(key.fsidtype), hexword(key.fsid)]


def encode_fh_request(key: FhKey) -> bytes:
    return line(*_fh_words(key))


def decode_fh_request(data: bytes) -> FhKey:
    return _whole(data, _fh_key)


def encode_fh_reply(r: FhReply) -> bytes:
    tail = () if r.value is None else (word(r.value),)
    return line(*_fh_words(r.key), word(r.expiry), *tail)


def decode_fh_reply(data: bytes) -> FhReply:
    key, expiry, path = _key_expiry_text(data, _fh_key)
    if path is not None and not path.startswith("/"):
        raise LineError(f"path: not absolute: {path[:64]!r}")
    return FhReply(key, expiry, path)


def content_fh(r: FhReply, usable: bool) -> bytes:
    """`expkey_show`; the file starts with `#domain fsidtype fsid [path]`."""
    words = [word(r.key.domain), word(r.key.fsidtype), b"0x" + r.key.fsid.hex().encode()]
    if usable and r.value is not None:
        words.append(word(r.value))
    return _row(usable, *words)


# ------------------------------------------------------------ auth.unix.gid
GidReply = Reply[int, tuple[int, ...]]  # uid -> its groups; negative: an unknown uid


def encode_gid_request(uid: int) -> bytes:
    return line(word(uid))


def decode_gid_request(data: bytes) -> int:
    w = Words(data)
    uid = w.integer("uid", UINT32)
    w.end()
    return uid


def encode_gid_reply(r: GidReply) -> bytes:
    """`uid expiry n gid...`; a negative entry is `uid expiry` (what rpc.mountd writes for a
    uid getpwuid does not know)."""
    head = (word(r.key), word(r.expiry))
    if r.value is None:
        return line(*head)
    return line(*head, word(len(r.value)), *(word(g) for g in r.value))


def decode_gid_reply(data: bytes) -> GidReply:
    w = Words(data)
    uid, expiry = w.integer("uid", UINT32), w.expiry()
    if not w.more():
        return GidReply(uid, expiry, None)
    n = w.integer("group count", (0, NGROUPS_MAX))
    gids = tuple(w.integer(f"gid {i + 1}", UINT32) for i in range(n))
    w.end()
    return GidReply(uid, expiry, gids)


def content_gid(r: GidReply, usable: bool) -> bytes:
    """`unix_gid_show`; the file starts with `#uid cnt: gids...`."""
    groups = (r.value or ()) if usable else ()
    return _row(usable, b"%d %d:%s" % (r.key, len(groups), b"".join(b" %d" % g for g in groups)))


# ------------------------------------------------------------ nfsd.export content
_EXPFLAGS = (  # show_expflags: (flag, name when set, name when clear)
    (NFSEXP_READONLY, "ro", "rw"), (NFSEXP_INSECURE_PORT, "insecure", ""),
    (NFSEXP_ROOTSQUASH, "root_squash", "no_root_squash"), (NFSEXP_ALLSQUASH, "all_squash", ""),
    (NFSEXP_ASYNC, "async", "sync"), (NFSEXP_GATHERED_WRITES, "wdelay", "no_wdelay"),
    (NFSEXP_NOREADDIRPLUS, "nordirplus", ""), (NFSEXP_NOHIDE, "nohide", ""),
    (NFSEXP_CROSSMOUNT, "crossmnt", ""), (NFSEXP_NOSUBTREECHECK, "no_subtree_check", ""),
    (NFSEXP_NOAUTHNLM, "insecure_locks", ""), (NFSEXP_V4ROOT, "v4root", ""),
    (NFSEXP_PNFS, "pnfs", ""), (NFSEXP_SECURITY_LABEL, "security_label", ""),
)
_DEFAULT_ANON = (0xFFFFFFFE, 0xFFFE)  # (uid_t)-2 and 65534 are not shown


def export_flags(flags: int, mask: int = NFSEXP_ALLFLAGS) -> list[str]:
    """The option names of `flags` as `exportfs -v` and the `content` file show them."""
    return [name for flag, on, off in _EXPFLAGS if flag & mask
            if (name := on if flags & flag else off)]


def content_export(r: ExportReply, usable: bool) -> bytes:
    """`svc_export_show`: `path<TAB>domain(options)`."""
    opts = _export_options_text(r.value) if usable and r.value is not None else b""
    return _row(usable, word(r.key.path) + b"\t" + word(r.key.domain) + b"(" + opts + b")")


def _export_options_text(i: ExportInfo) -> bytes:
    parts = [name.encode() for name in export_flags(i.flags)]
    if i.flags & NFSEXP_FSID:
        parts.append(b"fsid=%d" % i.fsid)
    parts += [b"%s=%d" % (n, v) for n, v in ((b"anonuid", i.anonuid), (b"anongid", i.anongid))
              if v not in _DEFAULT_ANON]
    if i.fslocations:
        locs = b";".join(word(h) + b":" + word(p) for h, p in i.fslocations)
        parts.append((b"refer=" if i.migrated else b"replicas=") + locs)
    if i.uuid is not None:
        parts.append(b"uuid=" + b":".join(i.uuid[n:n + 4].hex().encode()
                                          for n in range(0, UUID_LEN, 4)))
    if i.manage_gids:
        parts.append(b"manage-gids")
    return b",".join(parts) + _secinfo_text(i).encode()


def _secinfo_text(i: ExportInfo) -> str:
    """`show_secinfo`: runs of flavours with the same flags, each run's flags after it unless
    the first run's equal the export's."""
    out, pos = "", 0
    while pos < len(i.secinfo):
        flags = i.secinfo[pos].flags
        run = [str(i.secinfo[pos].flavor)]
        pos += 1
        while pos < len(i.secinfo) and i.secinfo[pos].flags == flags:
            run.append(str(i.secinfo[pos].flavor))
            pos += 1
        out += ",sec=" + ":".join(run)
        if len(run) != pos or (flags ^ i.flags) & NFSEXP_SECINFO_FLAGS:
            out += "," + ",".join(export_flags(flags, NFSEXP_SECINFO_FLAGS))
    return out


CONTENT_HEADERS = {
    "auth.unix.ip": b"#class IP domain\n",
    "nfsd.export": b"#path domain(flags)\n",
    "nfsd.fh": b"#domain fsidtype fsid [path]\n",
    "auth.unix.gid": b"#uid cnt: gids...\n",
}


def _row(usable: bool, *words: bytes) -> bytes:
    return (b"" if usable else b"# ") + b" ".join(words) + b"\n"
