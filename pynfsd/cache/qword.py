"""The kernel's cache channel words: quoting (`qword_add`, `qword_addhex`) and parsing
(`qword_get`, `get_int`, `get_expiry`), bounded, with one error type.

Theory of operation.  A channel line is words separated by spaces and ends in a newline.  A
word is either binary, `\\x` followed by pairs of hex digits (`qword_addhex`), or text in
which space, tab, newline and backslash are written as a backslash and three octal digits
(`qword_add`); on reading, any `\\ooo` with a first digit of 0-3 is one byte and any other
backslash is itself (`qword_get`).  An empty word is written `\\x` (zero hex bytes).  Words
are bytes; text fields (paths, domain names) are decoded from UTF-8 with `surrogateescape`,
so every byte string a daemon sends comes back out unchanged.

`split_line` checks the bounds before anything else is read: the line's length
(`MAX_LINE`), its newline, the number of words (`MAX_WORDS`) and each decoded word's length
(`MAX_WORD`).  `Words` then reads the typed fields in order.  Every problem raises
`LineError` with a message naming the field, and nothing else escapes.
"""

from __future__ import annotations

import binascii
import re

NGROUPS_MAX = 65536  # the most supplementary groups one auth.unix.gid line may carry
MAX_LINE = 1 << 20  # bytes: room for NGROUPS_MAX gids of ten digits and the rest
MAX_WORDS = NGROUPS_MAX + 16
MAX_WORD = 4096  # bytes of one decoded word: PATH_MAX
_QUOTED = b" \t\n\\"
_OCTAL = re.compile(rb"\\([0-3][0-7][0-7])")
_INT = re.compile(rb"-?[0-9]+")
INT32 = (-(1 << 31), (1 << 31) - 1)
UINT32 = (0, (1 << 32) - 1)


class LineError(ValueError):
    """A malformed channel line; the message says what and where."""


# ------------------------------------------------------------ writing
def word(value: str | bytes | int) -> bytes:
    """One text word (`qword_add`): a number, or text with its special bytes escaped."""
    raw = str(value).encode() if isinstance(value, int) else _bytes(value)
    if not raw:
        return b"\\x"
    return b"".join(b"\\%03o" % c if c in _QUOTED else bytes((c,)) for c in raw)


def hexword(value: bytes) -> bytes:
    """One binary word (`qword_addhex`)."""
    return b"\\x" + binascii.hexlify(value)


def line(*words: bytes) -> bytes:
    return b" ".join(words) + b"\n"


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# ------------------------------------------------------------ reading
def split_line(data: bytes, max_line: int = MAX_LINE) -> list[bytes]:
    """The decoded words of one line (see the module docstring)."""
    if len(data) > max_line:
        raise LineError(f"line of {len(data)} bytes, more than {max_line}")
    if not data.endswith(b"\n"):
        raise LineError("line does not end in a newline")
    body = data[:-1]
    if b"\n" in body or b"\0" in body:
        raise LineError("newline or NUL inside the line")
    raw = [w for w in body.split(b" ") if w]
    if len(raw) > MAX_WORDS:
        raise LineError(f"{len(raw)} words, more than {MAX_WORDS}")
    return [_decode(w, i) for i, w in enumerate(raw)]


def _decode(raw: bytes, index: int) -> bytes:
    if raw.startswith(b"\\x"):
        digits = raw[2:]
        if len(digits) % 2 or not re.fullmatch(rb"[0-9a-fA-F]*", digits):
            raise LineError(f"word {index + 1}: bad hex {raw[:40]!r}")
        out = binascii.unhexlify(digits)
    else:
        out = _OCTAL.sub(lambda m: bytes((int(m.group(1), 8),)), raw)
    if len(out) > MAX_WORD:
        raise LineError(f"word {index + 1}: {len(out)} bytes, more than {MAX_WORD}")
    return out


class Words:
    """The words of one line, read in order as typed fields."""

    def __init__(self, data: bytes, max_line: int = MAX_LINE) -> None:
        self._words = split_line(data, max_line)
        self._pos = 0

    def more(self) -> bool:
        return self._pos < len(self._words)

    def next(self, what: str) -> bytes:
        if not self.more():
            raise LineError(f"{what} missing")
        self._pos += 1
        return self._words[self._pos - 1]

    def optional(self) -> bytes | None:
        return self.next("") if self.more() else None

    def text(self, what: str, max_len: int = MAX_WORD) -> str:
        raw = self.next(what)
        if not raw or len(raw) > max_len:
            raise LineError(f"{what}: {len(raw)} bytes (1 to {max_len})")
        return text(raw)

    def integer(self, what: str, bounds: tuple[int, int] = INT32) -> int:
        return number(self.next(what), what, bounds)

    def expiry(self) -> int:
        """`get_expiry`: wall-clock seconds, not negative."""
        return self.integer("expiry", (0, (1 << 63) - 1))

    def end(self) -> None:
        if self.more():
            raise LineError(f"{len(self._words) - self._pos} unexpected words at the end")


def number(raw: bytes, what: str, bounds: tuple[int, int] = INT32) -> int:
    if not _INT.fullmatch(raw) or len(raw) > 20:
        raise LineError(f"{what}: not a number: {raw[:40]!r}")
    value = int(raw)
    if not bounds[0] <= value <= bounds[1]:
        raise LineError(f"{what}: {value} out of range {bounds[0]}..{bounds[1]}")
    return value
