"""Per-declaration code of the XDR generator: Python types and pack/unpack statements.

`DeclCoder` knows the facts of a parsed `Spec` that code for one declaration needs: the
value of a constant or bound, the Python type of a declaration, the least number of bytes a
type encodes to (the decoders' count checks), and the lines that decode a value into a
target or encode one.  `xdremit.Gen` builds whole modules from these.
"""

from __future__ import annotations

import keyword

from xdr.xdrspec import Decl, Enum, Spec, SpecError, Struct, Typedef, Union

_PRIM = {
    "int": ("int", "u.unpack_int()", "p.pack_int({v})", 4),
    "uint": ("int", "u.unpack_uint()", "p.pack_uint({v})", 4),
    "hyper": ("int", "u.unpack_hyper()", "p.pack_hyper({v})", 8),
    "uhyper": ("int", "u.unpack_uhyper()", "p.pack_uhyper({v})", 8),
    "bool": ("bool", "u.unpack_bool()", "p.pack_bool({v})", 4),
}


def pyname(name: str) -> str:
    return name + "_" if keyword.iskeyword(name) else name


class DeclCoder:
    """Types and statements for the declarations of one `Spec`."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.loop_vars: dict[str, str] = {}  # element type -> loop variable, per packer
        self.consts = {name: value for name, value in spec.consts}
        for t in spec.types.values():
            if isinstance(t, Enum):
                self.consts.update(dict(t.members))

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
        if d.kind == "varray" and self.is_uint(tn):
            lines.append(f"{indent}{target} = u.unpack_uint_array({self.bound(d)})")
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
        plain = self.plain_typedef(tn)
        if plain is not None:
            return self.plain_unpack(plain)
        return f"unpack_{tn}(u)"

    def plain_typedef(self, tn: str) -> Decl | None:
        """What a typedef of `tn` comes down to when that is one call of the runtime (a
        primitive, or opaque or a string with its bound), so that it is decoded and encoded
        inline instead of through the typedef's own codec functions (the same bytes, fewer
        calls); None for anything else (enums keep their checking decoder)."""
        t = self.resolve(tn)
        for _ in range(20):
            if not isinstance(t, Typedef):
                return None
            d = t.decl
            if d.type.name in ("opaque", "string") and d.kind in ("farray", "varray"):
                return d if d.kind == "varray" or d.type.name == "opaque" else None
            if d.kind != "scalar":
                return None
            if d.type.name in _PRIM:
                return d
            t = self.resolve(d.type.name)
        return None

    def is_uint(self, tn: str) -> bool:
        """`tn` is an unsigned int (or a typedef of one): its arrays go in one runtime call."""
        plain = self.plain_typedef(tn)
        return tn == "uint" or (plain is not None and plain.type.name == "uint")

    def plain_unpack(self, d: Decl) -> str:
        tn = d.type.name
        if tn in _PRIM:
            return _PRIM[tn][1]
        if d.kind == "farray":
            return f"u.unpack_fopaque({self.bound(d)})"
        fn = "unpack_opaque" if tn == "opaque" else "unpack_string"
        return f"u.{fn}({self.bound(d)})"

    def plain_pack(self, d: Decl, value: str) -> str:
        tn = d.type.name
        if tn in _PRIM:
            return _PRIM[tn][2].format(v=value)
        if d.kind == "farray":
            return f"p.pack_fopaque({self.bound(d)}, {value})"
        fn = "pack_opaque" if tn == "opaque" else "pack_string"
        return f"p.{fn}({value}, {self.bound(d)})"

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
        if d.kind == "varray" and self.is_uint(tn):
            lines.append(f"{indent}p.pack_uint_array({value}, {self.bound(d)})")
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
        plain = self.plain_typedef(tn)
        if plain is not None:
            return self.plain_pack(plain, value)
        if self.enum_of(tn) is not None:
            return f"p.pack_int({value})"  # an enum's encoder checks nothing: inline it
        return f"pack_{tn}(p, {value})"
