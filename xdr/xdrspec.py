"""The XDR (RFC 4506) specification language: tokens, the parsed model, the parser.

`tokenize` strips comments and ``%`` pass-through lines and splits the text; `Parser` reads
the tokens into a `Spec`: the constants and the named types (`Enum`, `Struct`, `Union`,
`Typedef`) in order of definition, each field a `Decl` (a type reference and its kind:
scalar, fixed or variable array, optional, void).  `program` blocks are skipped: the
generator emits codecs only.  Any error in the text raises `SpecError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


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

