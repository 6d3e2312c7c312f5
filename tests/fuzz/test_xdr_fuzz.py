"""Property tests over every generated XDR codec.

Value strategies are derived from the `.x` specifications themselves (parsed with the generator's
own parser), so every struct, union, typedef and enum of RPC, RPCSEC_GSS and NFSv4.0 gets random
valid values that respect each `<max>` bound.  Properties:

* random bytes and mutated valid encodings only ever raise `XdrError` from any `unpack_*`;
* whatever a decoder accepts is canonical: re-encoding it gives back exactly the bytes it consumed;
* pack -> unpack returns an equal value and consumes every byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xdr.xdrgen as xdrgen
from pynfsd.gen import nfs4, rpc, rpcsec_gss
from pynfsd.xdr.runtime import Packer, Unpacker, XdrError

FAST = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THOROUGH = settings(FAST, max_examples=200)

MAX_OPAQUE = 40  # caps keep generated values small; bounds below the cap are respected
MAX_ITEMS = 3

PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(-(2**31), 2**31 - 1),
    "uint": st.integers(0, 2**32 - 1),
    "hyper": st.integers(-(2**63), 2**63 - 1),
    "uhyper": st.integers(0, 2**64 - 1),
    "bool": st.booleans(),
}


@dataclass
class SpecStrategies:
    """Hypothesis strategies for every type of one `.x` file, in the generated representation."""

    module: ModuleType
    gen: xdrgen.Gen
    cache: dict[str, st.SearchStrategy[Any]] = field(default_factory=dict)

    def of(self, name: str) -> st.SearchStrategy[Any]:
        if name in PRIMITIVES:
            return PRIMITIVES[name]
        if name not in self.cache:
            self.cache[name] = st.deferred(lambda: self._build(name))
        return self.cache[name]

    def _build(self, name: str) -> st.SearchStrategy[Any]:
        t = self.gen.spec.types[name]
        if isinstance(t, xdrgen.Enum):
            return st.sampled_from(sorted({self.gen.const_value(v) for _, v in t.members}))
        if isinstance(t, xdrgen.Typedef):
            return self.decl(t.decl)
        cls = getattr(self.module, name)
        if isinstance(t, xdrgen.Struct):
            return st.builds(cls, *[self.decl(f) for f in t.fields])
        assert isinstance(t, xdrgen.Union)
        return self._union(cls, t)

    def _union(self, cls: type, un: xdrgen.Union) -> st.SearchStrategy[Any]:
        arms: list[st.SearchStrategy[Any]] = []
        labels: set[int] = set()
        for case_labels, d in un.cases:
            for label in case_labels:
                labels.add(self.gen.const_value(label))
                disc = st.just(self.gen.const_value(label))
                arms.append(st.builds(cls, disc, self.decl(d)))
        if un.default is not None:
            others = self.of(un.disc.type.name).filter(lambda v: v not in labels)
            arms.append(st.builds(cls, others, self.decl(un.default)))
        return st.one_of(arms)

    def arm(self, name: str, disc: int) -> st.SearchStrategy[Any]:
        """Values of union `name` with discriminant `disc`."""
        un = self.gen.spec.types[name]
        assert isinstance(un, xdrgen.Union)
        for labels, d in un.cases:
            if disc in {self.gen.const_value(label) for label in labels}:
                return st.builds(getattr(self.module, name), st.just(disc), self.decl(d))
        raise KeyError(disc)

    def decl(self, d: xdrgen.Decl) -> st.SearchStrategy[Any]:
        tn = d.type.name
        bound = None if d.size is None else self.gen.const_value(d.size)
        if d.kind == "void":
            return st.none()
        if tn == "opaque":
            if d.kind == "farray":
                return st.binary(min_size=bound or 0, max_size=bound or 0)
            return st.binary(max_size=min(MAX_OPAQUE, bound if bound is not None else MAX_OPAQUE))
        if tn == "string":
            limit = bound if bound is not None else MAX_OPAQUE
            text = st.text(st.characters(codec="utf-8"), max_size=min(limit, MAX_OPAQUE) // 4)
            return text
        if d.kind == "optional":
            return st.none() | self.of(tn)
        if d.kind == "farray":
            return st.lists(self.of(tn), min_size=bound or 0, max_size=bound or 0)
        if d.kind == "varray":
            cap = min(MAX_ITEMS, bound if bound is not None else MAX_ITEMS)
            return st.lists(self.of(tn), max_size=cap)
        return self.of(tn)


def load(spec_file: str, module: ModuleType, errors: list[str]) -> SpecStrategies:
    text = (xdrgen.ROOT / "xdr" / spec_file).read_text()
    spec = xdrgen.Parser(xdrgen.tokenize(text)).parse()
    return SpecStrategies(module, xdrgen.Gen(spec, module.__name__, errors))


SPECS = {
    rpc: load("rpc.x", rpc, []),
    rpcsec_gss: load("rpcsec_gss.x", rpcsec_gss, []),
    nfs4: load("nfs4.x", nfs4, ["nfsstat4"]),
}


def codec(module: ModuleType, name: str) -> tuple[Callable[..., None], Callable[[Unpacker], Any]]:
    return getattr(module, f"pack_{name}"), getattr(module, f"unpack_{name}")


def all_types() -> list[tuple[ModuleType, str]]:
    out = []
    for module, strategies in SPECS.items():
        out += [(module, name) for name in strategies.gen.spec.order]
    return out


def all_unpackers() -> list[tuple[ModuleType, str]]:
    """Every public `unpack_*` of every generated module, found by introspection."""
    return [
        (module, name[len("unpack_") :])
        for module in SPECS
        for name in sorted(vars(module))
        if name.startswith("unpack_") and callable(getattr(module, name))
    ]


def params(items: list[tuple[ModuleType, str]]) -> list[Any]:
    """pytest parameters named `module.type`."""
    return [pytest.param(m, n, id=f"{m.__name__.rsplit('.', 1)[-1]}.{n}") for m, n in items]


def encode(module: ModuleType, name: str, value: Any) -> bytes:
    p = Packer()
    codec(module, name)[0](p, value)
    return p.get_buffer()


def decode_only_xdr_errors(module: ModuleType, name: str, data: bytes) -> None:
    """Decoding `data` raises nothing but XdrError; what is accepted re-encodes to the same bytes."""
    pack, unpack = codec(module, name)
    u = Unpacker(data)
    try:
        value = unpack(u)
    except XdrError:
        return
    p = Packer()
    pack(p, value)
    assert p.get_buffer() == data[: u.pos], "accepted a non-canonical encoding"


# ---------------------------------------------------------------- garbage in

INTERESTING_WORDS = [0, 1, 2, 3, 4, 9, 10, 24, 255, 256, 10044, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]

words = st.lists(
    st.sampled_from(INTERESTING_WORDS) | st.integers(0, 2**32 - 1), max_size=24
).map(lambda ws: b"".join(struct.pack(">I", w) for w in ws))
garbage = st.binary(max_size=96) | words


def test_introspection_finds_every_codec() -> None:
    unpackers = all_unpackers()
    assert len(unpackers) > 250
    assert {(m, n) for m, n in all_types()} <= set(unpackers)


@pytest.mark.parametrize(("module", "name"), params(all_unpackers()))
@FAST
@given(data=garbage)
def test_random_bytes_raise_only_xdr_error(module: ModuleType, name: str, data: bytes) -> None:
    decode_only_xdr_errors(module, name, data)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "word", "truncate", "insert", "delete"]))
        i = draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "truncate":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif not buf:
            continue
        elif kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del buf[i : i + draw(st.integers(1, 8))]
        else:
            at = i & ~3
            buf[at : at + 4] = struct.pack(">I", draw(st.sampled_from(INTERESTING_WORDS)))
    return bytes(buf)


@pytest.mark.parametrize(("module", "name"), params(all_types()))
@FAST
@given(data=st.data())
def test_mutated_encodings_raise_only_xdr_error(
    module: ModuleType, name: str, data: st.DataObject
) -> None:
    wire = encode(module, name, data.draw(SPECS[module].of(name), label="value"))
    decode_only_xdr_errors(module, name, data.draw(mutated(wire), label="mutated"))


# ---------------------------------------------------------------- round trips


def round_trip(module: ModuleType, name: str, value: Any) -> None:
    wire = encode(module, name, value)
    u = Unpacker(wire)
    assert codec(module, name)[1](u) == value
    assert u.remaining() == 0
    assert len(wire) % 4 == 0  # RFC 4506 §3: every item is a multiple of four bytes


@pytest.mark.parametrize(("module", "name"), params(all_types()))
@FAST
@given(data=st.data())
def test_every_type_round_trips(module: ModuleType, name: str, data: st.DataObject) -> None:
    round_trip(module, name, data.draw(SPECS[module].of(name), label="value"))


IMPORTANT = [
    (nfs4, "COMPOUND4args"),
    (nfs4, "COMPOUND4res"),
    (nfs4, "nfs_argop4"),
    (nfs4, "nfs_resop4"),
    (nfs4, "OPEN4args"),
    (nfs4, "WRITE4args"),
    (nfs4, "LOCK4args"),
    (nfs4, "READDIR4res"),
    (nfs4, "fattr4"),
    (rpc, "rpc_msg"),
    (rpc, "authsys_parms"),
    (rpcsec_gss, "rpc_gss_cred_t"),
    (rpcsec_gss, "rpc_gss_init_res"),
]


@pytest.mark.parametrize(("module", "name"), params(IMPORTANT))
@THOROUGH
@given(data=st.data())
def test_important_types_round_trip(module: ModuleType, name: str, data: st.DataObject) -> None:
    value = data.draw(SPECS[module].of(name), label="value")
    round_trip(module, name, value)
    wire = encode(module, name, value)
    decode_only_xdr_errors(module, name, data.draw(mutated(wire), label="mutated"))


OPS_WITH_ARGS = sorted(nfs4.nfs_argop4_arm_unpackers)


@THOROUGH
@given(data=st.data())
def test_compound_of_every_op_round_trips(data: st.DataObject) -> None:
    """COMPOUNDs of six distinct operations drawn from every nfs_opnum4, in random order."""
    ops = data.draw(st.permutations(OPS_WITH_ARGS), label="ops")[:6]
    argarray = [data.draw(SPECS[nfs4].arm("nfs_argop4", op), label=f"op {op}") for op in ops]
    compound = nfs4.COMPOUND4args(data.draw(st.binary(max_size=16)), 0, argarray)
    round_trip(nfs4, "COMPOUND4args", compound)
