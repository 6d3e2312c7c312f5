"""ONC RPC record marking over stream transports (RFC 5531 §11), sans-IO and bounded.

Theory of operation: a record is a sequence of fragments, each preceded by a 4-byte
big-endian marker whose high bit flags the last fragment and whose low 31 bits give the
fragment length.  `RecordReader.feed` consumes arbitrary slices of the byte stream and returns
the records completed by them.  The size a record would reach is checked from each marker
*before* any of its body is buffered, so a peer can never make the reader hold more than
`max_record` bytes of record data plus a partial 4-byte marker.

Large pieces of a record body are kept as views of the `bytes` objects fed in (immutable,
so safe to hold) and joined once when the record completes: one copy of a big WRITE however
many reads it arrived in. That holds at most two fed objects beyond the record's own bytes
(only its first and last piece can share an object with other data). Small pieces, and
pieces of other buffer types, are copied as they arrive.
"""

from __future__ import annotations

import struct

LAST_FRAGMENT = 0x80000000
MAX_FRAGMENT = 0x7FFFFFFF  # RFC 5531 §11: 31-bit fragment length

_MARKER = struct.Struct(">I")
_VIEW_MIN = 16 << 10  # pieces at least this large are held as views, not copied


class RecordError(Exception):
    """The stream violates record marking or our caps; the connection must be closed."""


class RecordReader:
    """Reassembles RPC records from a byte stream.

    After `RecordError` is raised the reader is poisoned: every later `feed` raises again.
    """

    __slots__ = (
        "max_record",
        "max_fragments",
        "_marker",
        "_need",
        "_last",
        "_parts",
        "_record_len",
        "_fragments",
        "_failed",
    )

    def __init__(self, max_record: int, max_fragments: int) -> None:
        if max_record < 0 or max_fragments < 1:
            raise ValueError("max_record must be >= 0 and max_fragments >= 1")
        self.max_record = max_record
        self.max_fragments = max_fragments
        self._marker = bytearray()
        self._need = -1  # bytes of fragment body still expected; -1: reading a marker
        self._last = False
        self._parts: list[bytes | memoryview] = []
        self._record_len = 0  # bytes of the record announced by markers so far
        self._fragments = 0
        self._failed: RecordError | None = None

    @property
    def buffered(self) -> int:
        """Bytes currently held (partial marker + record body received so far)."""
        return len(self._marker) + sum(len(p) for p in self._parts)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume `data`; return every record it completes (possibly none)."""
        if self._failed is not None:
            raise self._failed
        view = memoryview(data).cast("B")
        keep = isinstance(data, bytes)  # views of it stay valid
        records: list[bytes] = []
        pos = 0
        while pos < len(view):
            if self._need < 0:
                pos = self._read_marker(view, pos)
            else:
                pos = self._read_body(view, pos, keep)
            if self._need == 0 and self._last:
                records.append(self._finish_record())
            elif self._need == 0:
                self._need = -1
        return records

    def _read_marker(self, view: memoryview, pos: int) -> int:
        take = min(4 - len(self._marker), len(view) - pos)
        self._marker += view[pos : pos + take]
        if len(self._marker) == 4:
            (word,) = _MARKER.unpack(self._marker)
            self._marker.clear()
            self._start_fragment(word & MAX_FRAGMENT, bool(word & LAST_FRAGMENT))
        return pos + take

    def _start_fragment(self, length: int, last: bool) -> None:
        self._fragments += 1
        if self._fragments > self.max_fragments:
            self._fail(f"record has more than {self.max_fragments} fragments")
        if self._record_len + length > self.max_record:
            self._fail(f"record exceeds {self.max_record} bytes")
        self._record_len += length
        self._need = length
        self._last = last

    def _read_body(self, view: memoryview, pos: int, keep: bool) -> int:
        take = min(self._need, len(view) - pos)
        if take:
            piece = view[pos : pos + take]
            self._parts.append(piece if keep and take >= _VIEW_MIN else bytes(piece))
            self._need -= take
        return pos + take

    def _finish_record(self) -> bytes:
        record = b"".join(self._parts)  # the one copy (none for a lone bytes part)
        self._parts = []
        self._record_len = 0
        self._fragments = 0
        self._need = -1
        self._last = False
        return record

    def _fail(self, why: str) -> None:
        self._failed = RecordError(why)
        self._parts = []
        raise self._failed


def marker(length: int, last: bool = True) -> bytes:
    """A fragment marker (RFC 5531 §11)."""
    if not 0 <= length <= MAX_FRAGMENT:
        raise ValueError("fragment length out of range")
    return _MARKER.pack((LAST_FRAGMENT if last else 0) | length)


def record_buffers(
    payload: bytes | bytearray | memoryview, max_fragment: int = MAX_FRAGMENT
) -> list[bytes | bytearray | memoryview]:
    """Marker(s) and payload slices for `payload` as one record, ready for `writelines`."""
    if not 1 <= max_fragment <= MAX_FRAGMENT:
        raise ValueError("max_fragment out of range")
    size = len(payload)
    if size <= max_fragment:
        return [_MARKER.pack(LAST_FRAGMENT | size), payload]
    view = memoryview(payload).cast("B")
    out: list[bytes | bytearray | memoryview] = []
    for start in range(0, size, max_fragment):
        chunk = view[start : start + max_fragment]
        last = LAST_FRAGMENT if start + max_fragment >= size else 0
        out += [_MARKER.pack(last | len(chunk)), chunk]
    return out


def encode_record(payload: bytes | bytearray | memoryview, max_fragment: int = MAX_FRAGMENT) -> bytes:
    """`payload` as one record-marked byte string (split into fragments of ≤ max_fragment)."""
    return b"".join(record_buffers(payload, max_fragment))
