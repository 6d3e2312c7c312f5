"""Tokenising an exports(5) file: comments, ``\\`` continuation, quotes and octal escapes.

A logical line is one or more physical lines joined where a line ends in an odd number of
backslashes. Tokens are separated by blanks outside double quotes; a ``#`` that starts a
token (outside quotes) comments out the rest of the line; ``\\NNN`` (three octal digits) is
the byte NNN (``\\040`` is a space) and ``\\c`` is ``c``. Bytes are decoded as UTF-8 with
surrogate escapes, as the file system does for path names.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from .types import ExportsError

_OCTAL = frozenset("01234567")
_BLANKS = frozenset(" \t\r\f\v")


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    lineno: int


def logical_lines(text: str) -> Iterator[tuple[str, list[int], int]]:
    """Yield (logical line, start offsets of its physical lines, first line number)."""
    pending: list[str] = []
    starts: list[int] = []
    first = 1
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not pending:
            first = lineno
        starts.append(sum(len(p) + 1 for p in pending))
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield " ".join(pending), starts, first
        pending, starts = [], []
    if pending:
        yield " ".join(pending), starts, first


class _LineLexer:
    """Splits one logical line into tokens."""

    def __init__(self, line: str, starts: list[int], first: int, filename: str) -> None:
        self.line, self.starts, self.first, self.filename = line, starts, first, filename
        self.pos = 0
        self.tokens: list[Token] = []

    def lineno_at(self, pos: int) -> int:
        return self.first + bisect.bisect_right(self.starts, pos) - 1

    def error(self, message: str, pos: int) -> ExportsError:
        return ExportsError(message, self.filename, self.lineno_at(pos))

    def run(self) -> list[Token]:
        while self.pos < len(self.line):
            ch = self.line[self.pos]
            if ch in _BLANKS:
                self.pos += 1
            elif ch == "#":
                break
            else:
                self.tokens.append(self.token())
        return self.tokens

    def token(self) -> Token:
        start = self.pos
        buf = bytearray()
        quoted = False
        while self.pos < len(self.line):
            ch = self.line[self.pos]
            if ch in _BLANKS and not quoted:
                break
            if ch == '"':
                quoted = not quoted
                self.pos += 1
            elif ch == "\\":
                buf += self.escape()
            else:
                buf += self.encode(ch)
                self.pos += 1
        if quoted:
            raise self.error("unterminated quote", start)
        return Token(buf.decode("utf-8", "surrogateescape"), self.lineno_at(start))

    def escape(self) -> bytes:
        digits = self.line[self.pos + 1 : self.pos + 4]
        if len(digits) == 3 and set(digits) <= _OCTAL:
            value = int(digits, 8)
            if value > 0o377:
                raise self.error(f"bad octal escape \\{digits}", self.pos)
            self.pos += 4
            return bytes([value])
        if self.pos + 1 >= len(self.line):
            raise self.error("backslash at end of input", self.pos)
        self.pos += 2
        return self.encode(self.line[self.pos - 1])

    def encode(self, ch: str) -> bytes:
        """A character as file-system bytes (surrogate escapes become their raw byte)."""
        try:
            return ch.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise self.error(f"invalid character {ch!r}", self.pos) from None


def tokenize(text: str, filename: str) -> Iterator[list[Token]]:
    """Yield the tokens of each non-empty logical line of ``text``."""
    for line, starts, first in logical_lines(text):
        tokens = _LineLexer(line, starts, first, filename).run()
        if tokens:
            yield tokens
