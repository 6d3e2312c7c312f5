"""Generate typed Python codecs from XDR (RFC 4506) specifications.

Usage: ``python -m xdr.xdrgen`` regenerates every module listed in ``SPECS`` into
``pynfsd/gen/``; ``python -m xdr.xdrgen --check`` exits non-zero when a committed module differs
from what the generator produces.  The generated code is never edited by hand.

Mapping (see docs/ARCHITECTURE.md): struct -> slotted dataclass + ``pack_X``/``unpack_X``;
union -> dataclass ``(discriminant, value)``; enum members and constants -> module ints;
opaque -> bytes; string -> str (strict UTF-8); arrays -> list; optional -> ``T | None``.
Decoders check every bound, the bytes remaining, zero padding and enum values.

The work is split by concept: `xdrspec` parses a specification, `xdrdecl` writes the code of
one declaration, `xdremit` writes whole modules; this module knows the specifications and
where their modules go.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xdr.xdremit import Gen
from xdr.xdrspec import Decl, Enum, Parser, Spec, SpecError, Struct, Typedef, Union, tokenize

__all__ = [
    "ROOT",
    "SPECS",
    "Decl",
    "Enum",
    "Gen",
    "Parser",
    "Spec",
    "SpecError",
    "Struct",
    "Typedef",
    "Union",
    "generate",
    "main",
    "tokenize",
]

ROOT = Path(__file__).resolve().parent.parent

# (spec file, module name, names of enums to turn into exception classes)
SPECS: list[tuple[str, str, list[str]]] = [
    ("rpc.x", "rpc", []),
    ("rpcsec_gss.x", "rpcsec_gss", []),
    ("nfs4.x", "nfs4", ["nfsstat4"]),
    ("gssproxy.x", "gssproxy", []),
]


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
