"""ONC RPC record marking over stream transports (RFC 5531 §11), sans-IO and bounded.

Theory of operation: a record is a sequence of fragments, each preceded by a 4-byte
big-endian marker whose high bit flags the last fragment and whose low 31 bits give the
fragment length.  `RecordReader.feed` consumes arbitrary slices of the byte stream and returns
the records completed by them.  The size a record would reach is checked from each marker
*before* any of its body is buffered, so a peer can never make the reader hold more than
`max_record` bytes of record data plus a partial 4-byte marker.

Any fragment layout within `max_record` is accepted: RFC 5531 §11 puts no limit on the number
of fragments, and RPC libraries do split a 1 MiB WRITE into 4 KiB (or smaller) fragments.
A non-empty fragment costs at least 5 bytes of stream, so its cost is proportional to bytes
received; only empty non-last fragments cost work without bringing data, so those are
counted and capped (`max_empty_fragments` per record).

Memory is proportional to the record's bytes whatever the layout.  Large pieces of a record
body (at least `_VIEW_MIN` bytes and at least half of the object fed in) are kept as views of
the `bytes` objects fed in (immutable, so safe to hold) and joined once when the record
completes: one copy of a big WRITE however many reads it arrived in.  Every other piece is
copied onto one growing buffer, so a record of 1-byte fragments holds one bytearray, not a
list entry per fragment.  `held` counts the memory actually kept alive (a view pins its whole
object, which the half rule bounds by twice the piece), for the transport's server-wide budget.
"""

from __future__ import annotations

import struct

LAST_FRAGMENT = 0x80000000
MAX_FRAGMENT = 0x7FFFFFFF  # RFC 5531 §11: 31-bit fragment length
DEFAULT_MAX_EMPTY_FRAGMENTS = 64  # empty non-last fragments allowed in one record

_MARKER = struct.Struct(">I")
_VIEW_MIN = 16 << 10  # pieces at least this large (and half their object) are views, not copies


class RecordError(Exception):
    """The stream violates record marking or our caps; the connection must be closed."""


class RecordReader:
    """Reassembles RPC records from a byte stream.

    After `RecordError` is raised the reader is poisoned: every later `feed` raises again.
    """

    __slots__ = (
        "max_record",
        "max_empty_fragments",
        "_marker",
        "_need",
        "_last",
        "_parts",
        "_small",
        "_record_len",
        "_empty",
        "_held",
        "_failed",
    )

    def __init__(self, max_record: int, max_empty_fragments: int = DEFAULT_MAX_EMPTY_FRAGMENTS) -> None:
        if max_record < 0 or max_empty_fragments < 0:
            raise ValueError("max_record and max_empty_fragments must be >= 0")
        self.max_record = max_record
        self.max_empty_fragments = max_empty_fragments
        self._marker = bytearray()
        self._need = -1  # bytes of fragment body still expected; -1: reading a marker
        self._last = False
        self._parts: list[bytes | memoryview] = []  # the record body before `_small`
        self._small = bytearray()  # small pieces, coalesced
        self._record_len = 0  # bytes of the record announced by markers so far
        self._empty = 0  # empty non-last fragments in this record
        self._held = 0  # memory held by `_parts` (views count their whole object)
        self._failed: RecordError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of the stream currently held (partial marker + record body received so far)."""
        return len(self._marker) + sum(len(p) for p in self._parts) + len(self._small)

    @property
    def held(self) -> int:
        """Memory held for the partial record, in bytes (what a budget should count)."""
        return len(self._marker) + self._held + len(self._small)

    @property
    def in_record(self) -> bool:
        """Whether a record has begun (a marker byte or more) and not yet completed."""
        return bool(self._marker) or self._need >= 0 or self._record_len > 0 or self._empty > 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume `data`; return every record it completes (possibly none)."""
        if self._failed is not None:
            raise self._failed
        view = memoryview(data).cast("B")
        keep = isinstance(data, bytes)  # views of it stay valid
        records: list[bytes] = []
        pos, end = 0, len(view)
        while pos < end:
            if self._need < 0:
                pos = self._read_small_fragments(view, pos)
                if self._need < 0 and pos < end:
                    pos = self._read_marker(view, pos)
            elif self._need:
                pos = self._read_body(view, pos, keep)
            if self._need == 0:
                if self._last:
                    records.append(self._finish_record())
                else:
                    self._need = -1
        return records

    def _read_small_fragments(self, view: memoryview, pos: int) -> int:
        """Copy whole small fragments inside `view` in one tight loop (1-byte fragments).

        Stops before anything else (a fragment that is empty, large, split or over the cap, a
        partial marker) and leaves it to the general path; stops after a last fragment."""
        if self._marker:
            return pos
        small, unpack = self._small, _MARKER.unpack_from
        room = self.max_record - self._record_len
        limit = len(view) - 4  # a fragment's body must end by here + 4
        while pos < limit:
            (word,) = unpack(view, pos)
            length = word & MAX_FRAGMENT
            body = pos + 4
            if not 0 < length < _VIEW_MIN or length > room or body + length > limit + 4:
                break
            pos = body + length
            small += view[body:pos]
            room -= length
            if word & LAST_FRAGMENT:
                self._need, self._last = 0, True
                break
        self._record_len = self.max_record - room
        return pos

    def _read_marker(self, view: memoryview, pos: int) -> int:
        if not self._marker and len(view) - pos >= 4:  # the common case: no copy
            (word,) = _MARKER.unpack_from(view, pos)
            self._start_fragment(word & MAX_FRAGMENT, bool(word & LAST_FRAGMENT))
            return pos + 4
        take = min(4 - len(self._marker), len(view) - pos)
        self._marker += view[pos : pos + take]
        if len(self._marker) == 4:
            (word,) = _MARKER.unpack(self._marker)
            self._marker.clear()
            self._start_fragment(word & MAX_FRAGMENT, bool(word & LAST_FRAGMENT))
        return pos + take

    def _start_fragment(self, length: int, last: bool) -> None:
        if length == 0 and not last:
            self._empty += 1
            if self._empty > self.max_empty_fragments:
                self._fail(f"record has more than {self.max_empty_fragments} empty fragments")
        if self._record_len + length > self.max_record:
            self._fail(f"record exceeds {self.max_record} bytes")
        self._record_len += length
        self._need = length
        self._last = last

    def _read_body(self, view: memoryview, pos: int, keep: bool) -> int:
        take = min(self._need, len(view) - pos)
        if keep and take >= _VIEW_MIN and 2 * take >= len(view):
            self._flush_small()
            self._parts.append(view[pos : pos + take])
            self._held += len(view)  # the view pins the whole object fed in
        else:
            self._small += view[pos : pos + take]
        self._need -= take
        return pos + take

    def _flush_small(self) -> None:
        if self._small:
            self._parts.append(bytes(self._small))
            self._held += len(self._small)
            self._small = bytearray()

    def _finish_record(self) -> bytes:
        self._flush_small()
        record = b"".join(self._parts)  # the one copy (none for a lone bytes part)
        self._parts = []
        self._record_len = self._empty = self._held = 0
        self._need = -1
        self._last = False
        return record

    def _fail(self, why: str) -> None:
        self._failed = RecordError(why)
        self._parts = []
        self._small = bytearray()
        self._held = 0
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
