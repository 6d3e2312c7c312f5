"""Generate typed Python codecs from XDR (RFC 4506) specifications.

Usage: ``python -m xdr.xdrgen`` regenerates every module listed in ``SPECS`` into
``pynfsd/gen/``; ``python -m xdr.xdrgen --check`` exits non-zero when a committed module differs
from what the generator produces.  The generated code is never edited by hand.

Mapping (see docs/ARCHITECTURE.md): struct -> slotted dataclass + ``pack_X``/``unpack_X``;
union -> dataclass ``(discriminant, value)``; enum members and constants -> module ints;
opaque -> bytes; string -> str (strict UTF-8); arrays -> list; optional -> ``T | None``.
Decoders check every bound, the bytes remaining, zero padding and enum values.
"""

from __future__ import annotations

import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (spec file, module name, names of enums to turn into exception classes)
SPECS: list[tuple[str, str, list[str]]] = [
    ("rpc.x", "rpc", []),
    ("rpcsec_gss.x", "rpcsec_gss", []),
    ("nfs4.x", "nfs4", ["nfsstat4"]),
    ("gssproxy.x", "gssproxy", []),
]


class SpecError(Exception):
    pass


# ---------------------------------------------------------------- lexer / parser

_TOKEN = re.compile(r"\s*(?:(0x[0-9A-Fa-f]+|-?\d+)|([A-Za-z_][A-Za-z0-9_]*)|(.))", re.S)


def tokenize(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^%[^\n]*", " ", text, flags=re.M)
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        tok = m.group(1) or m.group(2) or m.group(3)
        if tok and not tok.isspace():
            out.append(tok)
    return out


@dataclass
class TypeRef:
    name: str  # primitive ("int", "uint", "hyper", "uhyper", "bool", "opaque", "string",
    # "float", "double", "void") or a defined name


@dataclass
class Decl:
    name: str
    type: TypeRef
    kind: str = "scalar"  # scalar | farray | varray | optional | void
    size: str | None = None  # bound expression (None: unbounded)


@dataclass
class Enum:
    name: str
    members: list[tuple[str, str]]


@dataclass
class Struct:
    name: str
    fields: list[Decl]


@dataclass
class Union:
    name: str
    disc: Decl
    cases: list[tuple[list[str], Decl]]
    default: Decl | None


@dataclass
class Typedef:
    name: str
    decl: Decl


@dataclass
class Spec:
    consts: list[tuple[str, str]] = field(default_factory=list)
    types: dict[str, Enum | Struct | Union | Typedef] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


class Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.t = tokens
        self.i = 0
        self.spec = Spec()

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def next(self) -> str:
        if self.i >= len(self.t):
            raise SpecError("unexpected end of specification")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            raise SpecError(f"expected {tok!r}, got {got!r} near token {self.i}")

    def parse(self) -> Spec:
        while self.peek() is not None:
            kw = self.next()
            if kw == "const":
                name = self.next()
                self.expect("=")
                self.spec.consts.append((name, self.next()))
                self.expect(";")
            elif kw == "typedef":
                d = self.decl()
                self.add(Typedef(d.name, d))
                self.expect(";")
            elif kw == "enum":
                name = self.next()
                self.add(Enum(name, self.enum_body()))
                self.expect(";")
            elif kw == "struct":
                name = self.next()
                self.add(Struct(name, self.struct_body()))
                self.expect(";")
            elif kw == "union":
                name = self.next()
                self.add(self.union_body(name))
                self.expect(";")
            elif kw == "program":
                self.skip_block()
            else:
                raise SpecError(f"unexpected {kw!r}")
        return self.spec

    def add(self, t: Enum | Struct | Union | Typedef) -> None:
        if t.name in self.spec.types:
            raise SpecError(f"{t.name} defined twice")
        self.spec.types[t.name] = t
        self.spec.order.append(t.name)

    def skip_block(self) -> None:
        depth = 0
        while True:
            tok = self.next()
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                if depth == 0:
                    break
        while self.peek() != ";":
            self.next()
        self.next()

    def enum_body(self) -> list[tuple[str, str]]:
        self.expect("{")
        members = []
        while True:
            name = self.next()
            self.expect("=")
            members.append((name, self.next()))
            tok = self.next()
            if tok == "}":
                return members
            if tok != ",":
                raise SpecError(f"bad enum near {name}")

    def struct_body(self) -> list[Decl]:
        self.expect("{")
        fields = []
        while self.peek() != "}":
            fields.append(self.decl())
            self.expect(";")
        self.next()
        return fields

    def union_body(self, name: str) -> Union:
        self.expect("switch")
        self.expect("(")
        disc = self.decl()
        self.expect(")")
        self.expect("{")
        cases: list[tuple[list[str], Decl]] = []
        default = None
        while self.peek() != "}":
            tok = self.next()
            if tok == "case":
                labels = [self.next()]
                self.expect(":")
                while self.peek() == "case":
                    self.next()
                    labels.append(self.next())
                    self.expect(":")
                cases.append((labels, self.decl()))
            elif tok == "default":
                self.expect(":")
                default = self.decl()
            else:
                raise SpecError(f"bad union {name} near {tok!r}")
            self.expect(";")
        self.next()
        return Union(name, disc, cases, default)

    def type_spec(self) -> str:
        tok = self.next()
        if tok == "unsigned":
            nxt = self.peek()
            if nxt in ("int", "hyper", "long"):
                self.next()
                return "uhyper" if nxt == "hyper" else "uint"
            return "uint"
        if tok in ("struct", "enum", "union"):
            return self.next()  # reference to a named type
        if tok == "long":
            return "int"
        return tok

    def decl(self) -> Decl:
        tname = self.type_spec()
        if tname == "void":
            return Decl("", TypeRef("void"), "void")
        if self.peek() == "*":
            self.next()
            return Decl(self.next(), TypeRef(tname), "optional")
        name = self.next()
        tok = self.peek()
        if tok == "[":
            self.next()
            fsize: str = self.next()
            self.expect("]")
            return Decl(name, TypeRef(tname), "farray", fsize)
        if tok == "<":
            self.next()
            size = None if self.peek() == ">" else self.next()
            self.expect(">")
            return Decl(name, TypeRef(tname), "varray", size)
        if tname in ("opaque", "string"):
            raise SpecError(f"{tname} {name} needs [n] or <n>")
        return Decl(name, TypeRef(tname), "scalar")


# ---------------------------------------------------------------- code generation

_PRIM = {
    "int": ("int", "u.unpack_int()", "p.pack_int({v})", 4),
    "uint": ("int", "u.unpack_uint()", "p.pack_uint({v})", 4),
    "hyper": ("int", "u.unpack_hyper()", "p.pack_hyper({v})", 8),
    "uhyper": ("int", "u.unpack_uhyper()", "p.pack_uhyper({v})", 8),
    "bool": ("bool", "u.unpack_bool()", "p.pack_bool({v})", 4),
}


def pyname(name: str) -> str:
    return name + "_" if keyword.iskeyword(name) else name


class Gen:
    def __init__(self, spec: Spec, module: str, error_enums: list[str]) -> None:
        self.spec = spec
        self.module = module
        self.error_enums = error_enums
        self.out: list[str] = []
        self.loop_vars: dict[str, str] = {}  # element type -> loop variable, per packer
        self.consts = {name: value for name, value in spec.consts}
        for t in spec.types.values():
            if isinstance(t, Enum):
                self.consts.update(dict(t.members))

    def w(self, line: str = "") -> None:
        self.out.append(line)

    def const_value(self, expr: str | None) -> int:
        if expr is None:
            raise SpecError("missing bound")
        seen = 0
        while expr in self.consts:
            expr = self.consts[expr]
            seen += 1
            if seen > 50:
                raise SpecError(f"constant loop at {expr}")
        try:
            return int(expr, 0)
        except ValueError:
            raise SpecError(f"unknown constant {expr}") from None

    def resolve(self, name: str) -> Enum | Struct | Union | Typedef | None:
        return self.spec.types.get(name)

    # --- type facts
    def min_size(self, d: Decl, depth: int = 0) -> int:
        if d.kind in ("void",):
            return 0
        if d.kind in ("optional",):
            return 4
        if d.kind == "varray":
            return 4
        if d.kind == "farray":
            n = self.const_value(d.size or "0")
            if d.type.name in ("opaque", "string"):
                return (n + 3) & ~3
            return n * self.type_min_size(d.type.name, depth)
        return self.type_min_size(d.type.name, depth)

    def type_min_size(self, name: str, depth: int = 0) -> int:
        if name in _PRIM:
            return _PRIM[name][3]
        if depth > 20:
            return 4
        t = self.resolve(name)
        if isinstance(t, Enum):
            return 4
        if isinstance(t, Typedef):
            return self.min_size(t.decl, depth + 1)
        if isinstance(t, Struct):
            return sum(self.min_size(f, depth + 1) for f in t.fields)
        if isinstance(t, Union):
            return 4
        raise SpecError(f"unknown type {name}")

    def py_type(self, d: Decl) -> str:
        if d.kind == "void":
            return "None"
        base = self.py_base(d.type.name)
        if d.type.name in ("opaque", "string"):
            return base
        if d.kind in ("farray", "varray"):
            return f"list[{base}]"
        if d.kind == "optional":
            return f"{base} | None"
        return base

    def py_base(self, name: str) -> str:
        if name == "opaque":
            return "bytes"
        if name == "string":
            return "str"
        if name in _PRIM:
            return _PRIM[name][0]
        t = self.resolve(name)
        if isinstance(t, Enum):
            return "int"
        if isinstance(t, Typedef):
            return self.py_type(t.decl)
        if t is None:
            raise SpecError(f"unknown type {name}")
        return name

    def enum_of(self, name: str) -> Enum | None:
        t = self.resolve(name)
        while isinstance(t, Typedef) and t.decl.kind == "scalar":
            t = self.resolve(t.decl.type.name)
        return t if isinstance(t, Enum) else None

    # --- expressions for one declaration
    def unpack_expr(self, d: Decl, lines: list[str], target: str, indent: str) -> None:
        """Emit lines that assign the decoded value of `d` to `target`."""
        tn = d.type.name
        if d.kind == "void":
            lines.append(f"{indent}{target} = None")
            return
        if tn in ("opaque", "string"):
            if d.kind == "farray":
                if tn == "string":
                    raise SpecError("fixed-length string is not XDR")
                lines.append(f"{indent}{target} = u.unpack_fopaque({self.bound(d)})")
            else:
                fn = "unpack_opaque" if tn == "opaque" else "unpack_string"
                lines.append(f"{indent}{target} = u.{fn}({self.bound(d)})")
            return
        if d.kind == "optional":
            lines.append(f"{indent}if u.unpack_bool():")
            lines.append(f"{indent}    {target} = {self.scalar_unpack(tn)}")
            lines.append(f"{indent}else:")
            lines.append(f"{indent}    {target} = None")
            return
        if d.kind in ("farray", "varray"):
            item = self.scalar_unpack(tn)
            if d.kind == "farray":
                lines.append(f"{indent}_n = {self.bound(d)}")
                lines.append(f"{indent}u.check_count(_n, None, {self.type_min_size(tn)})")
            else:
                lines.append(f"{indent}_n = u.unpack_uint()")
                lines.append(f"{indent}u.check_count(_n, {self.bound(d)}, {self.type_min_size(tn)})")
            lines.append(f"{indent}{target} = [{item} for _ in range(_n)]")
            return
        lines.append(f"{indent}{target} = {self.scalar_unpack(tn)}")

    def bound(self, d: Decl) -> str:
        if d.size is None:
            return "None"
        return str(self.const_value(d.size))

    def scalar_unpack(self, tn: str) -> str:
        if tn in _PRIM:
            return _PRIM[tn][1]
        if self.resolve(tn) is None:
            raise SpecError(f"unknown type {tn}")
        return f"unpack_{tn}(u)"

    def pack_stmt(self, d: Decl, lines: list[str], value: str, indent: str) -> None:
        tn = d.type.name
        if d.kind == "void":
            return
        if tn in ("opaque", "string"):
            if d.kind == "farray":
                lines.append(f"{indent}p.pack_fopaque({self.bound(d)}, {value})")
            else:
                fn = "pack_opaque" if tn == "opaque" else "pack_string"
                lines.append(f"{indent}p.{fn}({value}, {self.bound(d)})")
            return
        if d.kind == "optional":
            lines.append(f"{indent}if {value} is None:")
            lines.append(f"{indent}    p.pack_uint(0)")
            lines.append(f"{indent}else:")
            lines.append(f"{indent}    p.pack_uint(1)")
            lines.append(f"{indent}    {self.scalar_pack(tn, value)}")
            return
        if d.kind in ("farray", "varray"):
            b = self.bound(d)
            if d.kind == "farray":
                lines.append(f"{indent}if len({value}) != {b}:")
                lines.append(f"{indent}    raise XdrError('fixed array needs {b} items')")
            else:
                if b != "None":
                    lines.append(f"{indent}if len({value}) > {b}:")
                    lines.append(f"{indent}    raise XdrError('array exceeds its maximum {b}')")
                lines.append(f"{indent}p.pack_uint(len({value}))")
            item = self.loop_var(tn)
            lines.append(f"{indent}for {item} in {value}:")
            lines.append(f"{indent}    {self.scalar_pack(tn, item)}")
            return
        lines.append(f"{indent}{self.scalar_pack(tn, value)}")

    def loop_var(self, tn: str) -> str:
        """The loop variable for an array of `tn` in the current packer: one name per element
        type, so that mypy sees one type per variable when a struct has arrays of several."""
        if tn not in self.loop_vars:
            self.loop_vars[tn] = f"_item{len(self.loop_vars) or ''}"
        return self.loop_vars[tn]

    def scalar_pack(self, tn: str, value: str) -> str:
        if tn in _PRIM:
            return _PRIM[tn][2].format(v=value)
        return f"pack_{tn}(p, {value})"

    # --- definitions
    def generate(self) -> str:
        w = self.w
        w(f'"""Generated by xdr/xdrgen.py from xdr/{self.module}.x.  DO NOT EDIT."""')
        w()
        w("# ruff: noqa")
        w("# mypy: disable-error-code=\"no-redef\"")
        w("from __future__ import annotations")
        w()
        w("from dataclasses import dataclass")
        w("from typing import Any, Callable")
        w()
        w("from pynfsd.xdr.runtime import Packer, Unpacker, XdrError")
        w()
        for name, value in self.spec.consts:
            w(f"{name}: int = {self.const_value(value)}")
        w()
        for tname in self.spec.order:
            t = self.spec.types[tname]
            if isinstance(t, Enum):
                self.gen_enum(t)
            elif isinstance(t, Typedef):
                self.gen_typedef(t)
            elif isinstance(t, Struct):
                self.gen_struct(t)
            elif isinstance(t, Union):
                self.gen_union(t)
        return "\n".join(self.out) + "\n"

    def gen_enum(self, e: Enum) -> None:
        w = self.w
        w()
        for name, value in e.members:
            w(f"{name}: int = {self.const_value(value)}")
        values = sorted({self.const_value(v) for _, v in e.members})
        w(f"{e.name}_values: frozenset[int] = frozenset({values!r})")
        names: dict[int, str] = {}
        for name, value in e.members:
            names.setdefault(self.const_value(value), name)
        w(f"{e.name}_names: dict[int, str] = {names!r}")
        w()
        w()
        w(f"def unpack_{e.name}(u: Unpacker) -> int:")
        w("    v = u.unpack_int()")
        w(f"    if v not in {e.name}_values:")
        w(f"        raise XdrError(f'invalid {e.name} value {{v}}')")
        w("    return v")
        w()
        w()
        w(f"def pack_{e.name}(p: Packer, v: int) -> None:")
        w("    p.pack_int(v)")
        w()

    def gen_typedef(self, t: Typedef) -> None:
        w = self.w
        d = t.decl
        w()
        w(f"{t.name} = {self.py_type(d)}" if d.kind != "void" else f"{t.name} = None")
        if self.enum_of(t.name) is not None:
            e = self.enum_of(t.name)
            assert e is not None
            w(f"{t.name}_values = {e.name}_values")
        w()
        w()
        lines: list[str] = []
        self.unpack_expr(d, lines, "v", "    ")
        w(f"def unpack_{t.name}(u: Unpacker) -> {self.py_type(d)}:")
        for line in lines:
            w(line)
        w("    return v")
        w()
        w()
        lines = []
        self.loop_vars = {}
        self.pack_stmt(d, lines, "v", "    ")
        w(f"def pack_{t.name}(p: Packer, v: {self.py_type(d)}) -> None:")
        for line in lines or ["    pass"]:
            w(line)
        w()

    def linked_field(self, s: Struct) -> Decl | None:
        last = s.fields[-1] if s.fields else None
        if last is not None and last.kind == "optional" and last.type.name == s.name:
            return last
        return None

    def gen_struct(self, s: Struct) -> None:
        w = self.w
        link = self.linked_field(s)
        w()
        w()
        w("@dataclass(slots=True, eq=False, repr=False)" if link else "@dataclass(slots=True)")
        w(f"class {s.name}:")
        for f in s.fields:
            w(f"    {pyname(f.name)}: {self.py_type(f)}")
        if not s.fields:
            w("    pass")
        if link:
            self.linked_methods(s, link)
        w()
        w()
        body = s.fields[:-1] if link else s.fields
        w(f"def unpack_{s.name}(u: Unpacker) -> {s.name}:")
        lines: list[str] = []
        for f in body:
            self.unpack_expr(f, lines, f"_{pyname(f.name)}", "        " if link else "    ")
        args = ", ".join(f"_{pyname(f.name)}" for f in body)
        if link:
            # A linked list (struct ending in a pointer to itself) is decoded iteratively so
            # that long lists (directory entries) need no recursion.
            w(f"    head: {s.name} | None = None")
            w(f"    tail: {s.name} | None = None")
            w("    while True:")
            for line in lines:
                w(line)
            w(f"        node = {s.name}({args}{', ' if args else ''}None)")
            w("        if tail is None:")
            w("            head = node")
            w("        else:")
            w(f"            tail.{pyname(link.name)} = node")
            w("        tail = node")
            w("        if not u.unpack_bool():")
            w("            break")
            w("    assert head is not None")
            w("    return head")
        else:
            for line in lines:
                w(line)
            w(f"    return {s.name}({args})")
        w()
        w()
        w(f"def pack_{s.name}(p: Packer, v: {s.name}) -> None:")
        self.loop_vars = {}
        lines = []
        if link:
            w(f"    node: {s.name} | None = v")
            w("    while node is not None:")
            for f in body:
                self.pack_stmt(f, lines, f"node.{pyname(f.name)}", "        ")
            lines.append(f"        node = node.{pyname(link.name)}")
            lines.append("        p.pack_bool(node is not None)")
        else:
            for f in body:
                self.pack_stmt(f, lines, f"v.{pyname(f.name)}", "    ")
        for line in lines or ["    pass"]:
            w(line)
        w()

    def linked_methods(self, s: Struct, link: Decl) -> None:
        """Loop-based __eq__/__repr__ for linked lists (the dataclass ones would recurse)."""
        w = self.w
        nxt = pyname(link.name)
        body = [pyname(f.name) for f in s.fields[:-1]]
        w()
        w("    def __eq__(self, other: object) -> bool:")
        w(f"        if not isinstance(other, {s.name}):")
        w("            return NotImplemented")
        w(f"        a: {s.name} | None = self")
        w(f"        b: {s.name} | None = other")
        w("        while a is not None and b is not None:")
        cmp = " or ".join(f"a.{f} != b.{f}" for f in body) or "False"
        w(f"            if {cmp}:")
        w("                return False")
        w(f"            a, b = a.{nxt}, b.{nxt}")
        w("        return a is None and b is None")
        w()
        w("    def __repr__(self) -> str:")
        w("        parts: list[str] = []")
        w(f"        node: {s.name} | None = self")
        w("        while node is not None:")
        fields = ", ".join(f"{f}={{node.{f}!r}}" for f in body)
        w(f"            parts.append(f\"{s.name}({fields}{', ' if body else ''}{nxt}=\")")
        w(f"            node = node.{nxt}")
        w('        return "".join(parts) + "None" + ")" * len(parts)')

    def gen_union(self, un: Union) -> None:
        w = self.w
        dname = pyname(un.disc.name)
        arm_types = []
        for _, d in un.cases:
            arm_types.append(self.py_type(d))
        if un.default is not None:
            arm_types.append(self.py_type(un.default))
        distinct = sorted(set(arm_types) | {"None"}, key=lambda t: (t == "None", t))
        # One value type (or none): typed precisely; several arms of different types: Any,
        # and the discriminant tells the caller which it is.
        vtype = " | ".join(distinct) if len(distinct) <= 2 else "Any"
        w()
        w()
        w("@dataclass(slots=True)")
        w(f"class {un.name}:")
        w(f"    {dname}: {self.py_type(un.disc)}")
        w(f"    value: {vtype} = None")
        w()
        disc_unpack = self.scalar_unpack(un.disc.type.name)
        w()
        # arm tables: discriminant value -> unpack/pack function for the arm
        w(f"def _unpack_{un.name}_void(u: Unpacker) -> None:")
        w("    return None")
        w()
        w()
        arms = []
        for i, (labels, d) in enumerate(un.cases):
            fn = self.arm_fn(un, i, d)
            for lab in labels:
                arms.append((self.const_value(lab), fn))
        w(f"{un.name}_arm_unpackers: dict[int, Callable[[Unpacker], Any]] = {{")
        for value, fn in arms:
            w(f"    {value}: _unpack_{fn},")
        w("}")
        w(f"{un.name}_arm_packers: dict[int, Callable[[Packer, Any], None]] = {{")
        for value, fn in arms:
            w(f"    {value}: _pack_{fn},")
        w("}")
        w()
        w()
        if un.default is not None:
            self.arm_fn(un, "default", un.default)
        w(f"def unpack_{un.name}(u: Unpacker) -> {un.name}:")
        w(f"    d = {disc_unpack}")
        w(f"    fn = {un.name}_arm_unpackers.get(d)")
        w("    if fn is None:")
        if un.default is not None:
            w(f"        fn = _unpack_{un.name}_arm_default")
        else:
            w(f"        raise XdrError(f'invalid {un.name} discriminant {{d}}')")
        w(f"    return {un.name}(d, fn(u))")
        w()
        w()
        w(f"def pack_{un.name}(p: Packer, v: {un.name}) -> None:")
        w(f"    d = v.{dname}")
        lines: list[str] = []
        self.pack_stmt(un.disc, lines, "d", "    ")
        for line in lines:
            w(line)
        w(f"    fn = {un.name}_arm_packers.get(d)")
        w("    if fn is None:")
        if un.default is not None:
            w(f"        fn = _pack_{un.name}_arm_default")
        else:
            w(f"        raise XdrError(f'invalid {un.name} discriminant {{d}}')")
        w("    fn(p, v.value)")
        w()

    def arm_fn(self, un: Union, idx: int | str, d: Decl) -> str:
        w = self.w
        name = f"{un.name}_arm_{idx}"
        lines: list[str] = []
        self.unpack_expr(d, lines, "v", "    ")
        w(f"def _unpack_{name}(u: Unpacker) -> {self.py_type(d)}:")
        for line in lines:
            w(line)
        w("    return v")
        w()
        w()
        lines = []
        self.loop_vars = {}
        self.pack_stmt(d, lines, "v", "    ")
        w(f"def _pack_{name}(p: Packer, v: Any) -> None:")
        for line in lines or ["    pass"]:
            w(line)
        w()
        w()
        return name

    def generate_errors(self) -> str:
        lines = [
            f'"""Generated by xdr/xdrgen.py from xdr/{self.module}.x.  DO NOT EDIT.',
            "",
            "One exception class per status of the enums "
            + ", ".join(self.error_enums) + '."""',
            "",
            "# ruff: noqa",
            "from __future__ import annotations",
            "",
            "from typing import Any",
            "",
            "",
            "class NFS4Error(Exception):",
            '    """An operation failed with a protocol status; `value` is the error arm payload."""',
            "",
            "    status: int = -1",
            "",
            "    def __init__(self, message: str = '', value: Any = None) -> None:",
            "        super().__init__(message or type(self).__name__)",
            "        self.value = value",
            "",
        ]
        by_status: dict[int, str] = {}
        for ename in self.error_enums:
            e = self.spec.types[ename]
            assert isinstance(e, Enum)
            for name, value in e.members:
                v = self.const_value(value)
                if v == 0:
                    continue
                lines += ["", f"class {name}(NFS4Error):", f"    status = {v}", ""]
                by_status.setdefault(v, name)
        lines.append("")
        lines.append("BY_STATUS: dict[int, type[NFS4Error]] = {")
        for v, name in sorted(by_status.items()):
            lines.append(f"    {v}: {name},")
        lines.append("}")
        return "\n".join(lines) + "\n"


def generate(spec_file: str, module: str, error_enums: list[str]) -> dict[Path, str]:
    text = (ROOT / "xdr" / spec_file).read_text()
    spec = Parser(tokenize(text)).parse()
    gen = Gen(spec, module, error_enums)
    out = {ROOT / "pynfsd" / "gen" / f"{module}.py": gen.generate()}
    if error_enums:
        out[ROOT / "pynfsd" / "gen" / f"{module}_errors.py"] = gen.generate_errors()
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for spec_file, module, errs in SPECS:
        for path, text in generate(spec_file, module, errs).items():
            if check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT)))
            else:
                path.write_text(text)
    if stale:
        print("generated code is out of date: " + ", ".join(stale), file=sys.stderr)
        print("run: python -m xdr.xdrgen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
