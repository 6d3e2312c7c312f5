"""The op table: what the COMPOUND loop knows of each operation (RFC 7530 §15.2, §16).

Theory of operation: a handler is declared with `@op(...)`, which builds its `OpSpec` (the
codecs of its arguments and result, its reply-size estimate, and the checks the loop makes
before the handler: a current filehandle, the export's security flavour, not a pseudo-fs
directory, a writable export) and marks the handler with it.  Nothing is registered as a side
effect of importing: `collect` gathers the marked handlers of the op modules it is given into
a table, which the server builds once (`pynfsd.nfs4.ops.build_op_table`) and hands to the loop.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pynfsd.gen import nfs4 as N
from pynfsd.xdr.runtime import Packer, Unpacker

if TYPE_CHECKING:
    from pynfsd.nfs4.config import ServerConfig
    from pynfsd.nfs4.context import CompoundContext

Handler = Callable[["CompoundContext", Any], Awaitable[Any]]
#: An upper bound of the bytes an op's result encodes to, from its arguments and the config.
Estimate = Callable[[Any, "ServerConfig"], int]

#: The result of most ops: a status and a few fixed-size fields (stateid, change_info4,
#: a bitmap); larger results (READ, READDIR, GETATTR, READLINK, LOCK) declare their own.
SMALL_REPLY = 256
#: The attribute a handler's `OpSpec` is kept in by `@op`.
SPEC_ATTR = "__opspec__"
_OK_HEAD = struct.Struct(">Ii")  # resop4's op number and the result's nfsstat4


def fixed(n: int) -> Estimate:
    """A reply-size estimate that does not depend on the arguments."""
    return lambda _args, _cfg: n


def xdr_pad(n: int) -> int:
    """`n` rounded up to the XDR unit of 4 bytes."""
    return (n + 3) & ~3


@dataclass(slots=True)
class OpSpec:
    opnum: int
    name: str
    handler: Handler
    needs_fh: bool
    check_sec: bool
    unpack_args: Callable[[Unpacker], Any]
    pack_res: Callable[[Packer, Any], None]
    res_cls: type
    res_is_union: bool
    res_nfields: int
    reply_size: Estimate
    on_file: bool  # a pseudo-fs directory is NFS4ERR_ISDIR (data ops)
    writes: bool  # the export must be writable (NFS4ERR_ROFS)
    #: the op number and NFS4_OK as XDR: how every successful result starts
    ok_head: bytes = b""
    #: the NFS4_OK arm's encoder (None: the arm is void), for `pack_ok`
    ok_arm: Callable[[Packer, Any], None] | None = None
    #: False when the result needs `res_cls` and `pack_res` even for NFS4_OK (a hand-tuned
    #: `pack_res`): then `pack_ok` is not used
    fast_ok: bool = False

    def pack_ok(self, p: Packer, value: Any) -> None:
        """Encode the op number and its NFS4_OK result straight from the handler's value, the
        same bytes as `pack_res` of the result object (no result object is made)."""
        p.pack_raw(self.ok_head)
        if self.ok_arm is not None:
            self.ok_arm(p, value)


#: The ops by number.
OpTable = dict[int, OpSpec]

# Ops after which the flavour check of the current filehandle is not made (RFC 7530 §3.3.1,
# §16.31.4): they only move the current filehandle around or ask which flavours to use.
_SEC_EXEMPT = {
    "PUTFH",
    "PUTPUBFH",
    "PUTROOTFH",
    "RESTOREFH",
    "SAVEFH",
    "LOOKUP",
    "LOOKUPP",
    "SECINFO",
    "GETFH",
}


def op(
    opnum: int,
    *,
    needs_fh: bool = True,
    pack_res: Callable[[Packer, Any], None] | None = None,
    pack_ok: Callable[[Packer, Any], None] | None = None,
    unpack_args: Callable[[Unpacker], Any] | None = None,
    reply_size: Estimate | int = SMALL_REPLY,
    on_file: bool = False,
    writes: bool = False,
) -> Callable[[Handler], Handler]:
    """Mark a handler as the one for `opnum` (`pack_res`: a hand-tuned encoder, and
    `pack_ok` its NFS4_OK arm's, else successful results go through `pack_res` too;
    `reply_size`: an upper bound of the encoded result, a function of the arguments;
    `on_file`: the current object must not be a pseudo-fs directory; `writes`: the current
    object's export must be writable; both checked before the handler)."""
    estimate = fixed(reply_size) if isinstance(reply_size, int) else reply_size

    def mark(fn: Handler) -> Handler:
        name = N.nfs_opnum4_names[opnum][3:]
        res_cls = getattr(N, f"{name}4res")
        is_union = [f.name for f in fields(res_cls)][-1] == "value"
        spec = OpSpec(
            opnum,
            name,
            fn,
            needs_fh,
            needs_fh and name not in _SEC_EXEMPT,
            unpack_args or N.nfs_argop4_arm_unpackers[opnum],
            pack_res or N.nfs_resop4_arm_packers[opnum],
            res_cls,
            is_union,
            len(fields(res_cls)),
            estimate,
            on_file,
            writes,
            _OK_HEAD.pack(opnum, N.NFS4_OK),
            *((pack_ok, True) if pack_ok is not None
              else _ok_arm(name, is_union, len(fields(res_cls)), pack_res is None)),
        )
        setattr(fn, SPEC_ATTR, spec)
        return fn

    return mark


def _ok_arm(name: str, is_union: bool, nfields: int, generated: bool
            ) -> tuple[Callable[[Packer, Any], None] | None, bool]:
    """The generated encoder of `name`'s NFS4_OK arm and whether `pack_ok` may be used: a
    result with a hand-tuned encoder, or one whose NFS4_OK arm is not spelled out, may not."""
    if not generated:
        return None, False
    if not is_union:
        return None, nfields == 1  # a status alone; SETATTR4res has its bitmap besides
    arms: dict[int, Callable[[Packer, Any], None]] = getattr(N, f"{name}4res_arm_packers")
    arm = arms.get(N.NFS4_OK)
    return arm, arm is not None


def collect(modules: Iterable[ModuleType]) -> OpTable:
    """The op table of the handlers marked by `@op` in `modules`; an op declared twice is an
    error (a table has one handler per op)."""
    table: OpTable = {}
    for module in modules:
        for value in vars(module).values():
            spec = getattr(value, SPEC_ATTR, None)
            if not isinstance(spec, OpSpec) or spec.handler is not value:
                continue
            if spec.opnum in table and table[spec.opnum] is not spec:
                raise ValueError(f"{spec.name} is declared twice")
            table[spec.opnum] = spec
    return table
