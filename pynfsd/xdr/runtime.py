"""XDR (RFC 4506) primitives used by the generated codecs.

`Unpacker` is bounded: every read checks the bytes remaining before it slices, variable-length
items check their declared maximum, and padding must be zero (RFC 4506 §4.10 says the residual
bytes are zero; we reject anything else so that one encoding maps to one value).  The only
exception that escapes a decoder is `XdrError`.
"""

from __future__ import annotations

import struct

__all__ = ["Packer", "Unpacker", "XdrError"]

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_ZEROS = b"\0\0\0\0"


class XdrError(ValueError):
    """Malformed XDR: the one error type every decoder raises."""


class Packer:
    """Appends XDR items to a growing buffer.

    `pack_opaque_ref` places a large payload (a READ's data) out of line: the packer then
    holds a list of segments, which `get_buffers` returns for a gathering write without
    copying the payload; `get_buffer` joins them.
    """

    __slots__ = ("_buf", "_segments", "_seglen")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._segments: list[bytes | bytearray | memoryview] = []
        self._seglen = 0

    def get_buffer(self) -> bytes:
        if not self._segments:
            return bytes(self._buf)
        return b"".join([*self._segments, self._buf])

    def get_buffers(self) -> list[bytes | bytearray | memoryview]:
        """The encoded data as segments (no copy of out-of-line payloads)."""
        return [*self._segments, self._buf] if self._segments else [self._buf]

    def get_bytearray(self) -> bytearray:
        if self._segments:
            raise XdrError("packer holds out-of-line segments: use get_buffers()")
        return self._buf

    def __len__(self) -> int:
        return self._seglen + len(self._buf)

    def pack_opaque_ref(self, data: bytes | bytearray | memoryview, maxlen: int | None = None) -> None:
        """Like pack_opaque, but the payload is referenced, not copied."""
        n = len(data)
        if maxlen is not None and n > maxlen:
            raise XdrError(f"opaque of {n} bytes exceeds its maximum {maxlen}")
        if n < 4096:
            self.pack_opaque(data)
            return
        self._buf += _U32.pack(n)
        self._segments.append(self._buf)
        self._segments.append(data)
        self._seglen += len(self._buf) + n
        self._buf = bytearray(_ZEROS[: (4 - (n & 3)) & 3])

    def pack_uint(self, v: int) -> None:
        self._buf += _U32.pack(v)

    def pack_int(self, v: int) -> None:
        self._buf += _I32.pack(v)

    def pack_enum(self, v: int) -> None:
        self._buf += _I32.pack(v)

    def pack_uhyper(self, v: int) -> None:
        self._buf += _U64.pack(v)

    def pack_hyper(self, v: int) -> None:
        self._buf += _I64.pack(v)

    def pack_bool(self, v: bool) -> None:
        self._buf += _U32.pack(1 if v else 0)

    def pack_uint_array(self, items: list[int], maxlen: int | None = None) -> None:
        """A variable-length array of unsigned ints (a bitmap4), count and items at once."""
        n = len(items)
        if maxlen is not None and n > maxlen:
            raise XdrError(f"array exceeds its maximum {maxlen}")
        self._buf += struct.pack(f">I{n}I", n, *items)

    def pack_fopaque(self, n: int, data: bytes) -> None:
        if len(data) != n:
            raise XdrError(f"fixed opaque needs {n} bytes, got {len(data)}")
        self._buf += data
        if n & 3:
            self._buf += _ZEROS[: 4 - (n & 3)]

    def pack_opaque(self, data: bytes | bytearray | memoryview, maxlen: int | None = None) -> None:
        n = len(data)
        if maxlen is not None and n > maxlen:
            raise XdrError(f"opaque of {n} bytes exceeds its maximum {maxlen}")
        self._buf += _U32.pack(n)
        self._buf += data
        if n & 3:
            self._buf += _ZEROS[: 4 - (n & 3)]

    def pack_string(self, s: str, maxlen: int | None = None) -> None:
        self.pack_opaque(s.encode("utf-8"), maxlen)

    def pack_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes that are already XDR-encoded."""
        self._buf += data


class Unpacker:
    """Reads XDR items from a buffer, refusing to read past its end."""

    __slots__ = ("_data", "pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self._data = data
        self.pos = pos
        self._end = len(data)

    @property
    def data(self) -> bytes | bytearray | memoryview:
        return self._data

    def remaining(self) -> int:
        return self._end - self.pos

    def done(self) -> None:
        if self.pos != self._end:
            raise XdrError(f"{self._end - self.pos} unexpected bytes after the data")

    def _need(self, n: int) -> int:
        pos = self.pos
        if n > self._end - pos:
            raise XdrError(f"needs {n} bytes at offset {pos}, only {self._end - pos} left")
        self.pos = pos + n
        return pos

    def unpack_uint(self) -> int:
        pos = self.pos
        if self._end - pos < 4:
            raise XdrError(f"truncated unsigned int at offset {pos}")
        self.pos = pos + 4
        return int(_U32.unpack_from(self._data, pos)[0])

    def unpack_int(self) -> int:
        return int(_I32.unpack_from(self._data, self._need(4))[0])

    def unpack_uhyper(self) -> int:
        return int(_U64.unpack_from(self._data, self._need(8))[0])

    def unpack_hyper(self) -> int:
        return int(_I64.unpack_from(self._data, self._need(8))[0])

    def unpack_uint_array(self, maxlen: int | None = None) -> list[int]:
        """A variable-length array of unsigned ints (a bitmap4): one bounded read."""
        n = self.unpack_uint()
        if maxlen is not None and n > maxlen:
            raise XdrError(f"array of {n} items exceeds its maximum {maxlen}")
        pos = self._need(4 * n)
        return list(struct.unpack_from(f">{n}I", self._data, pos))

    def unpack_bool(self) -> bool:
        v = self.unpack_uint()
        if v > 1:
            raise XdrError(f"bool must be 0 or 1, got {v}")
        return v == 1

    def unpack_fopaque(self, n: int) -> bytes:
        padded = (n + 3) & ~3
        pos = self._need(padded)
        data = self._data
        if padded != n and any(data[pos + n : pos + padded]):
            raise XdrError("non-zero XDR padding")
        return bytes(data[pos : pos + n])

    def unpack_opaque(self, maxlen: int | None = None) -> bytes:
        # unpack_uint then unpack_fopaque, in one call (filehandles, names, tags)
        pos, end, data = self.pos, self._end, self._data
        if end - pos < 4:
            raise XdrError(f"truncated unsigned int at offset {pos}")
        n = _U32.unpack_from(data, pos)[0]
        start = self.pos = pos + 4
        if maxlen is not None and n > maxlen:
            raise XdrError(f"opaque length {n} exceeds its maximum {maxlen}")
        padded = (n + 3) & ~3
        if padded > end - start:
            raise XdrError(f"needs {padded} bytes at offset {start}, only {end - start} left")
        self.pos = start + padded
        if padded != n and any(data[start + n : start + padded]):
            raise XdrError("non-zero XDR padding")
        return bytes(data[start : start + n])

    def unpack_opaque_view(self, maxlen: int | None = None) -> memoryview:
        """Like unpack_opaque, without copying (for large WRITE payloads)."""
        n = self.unpack_uint()
        if maxlen is not None and n > maxlen:
            raise XdrError(f"opaque length {n} exceeds its maximum {maxlen}")
        padded = (n + 3) & ~3
        pos = self._need(padded)
        view = memoryview(self._data)
        if padded != n and any(view[pos + n : pos + padded]):
            raise XdrError("non-zero XDR padding")
        return view[pos : pos + n]

    def unpack_string(self, maxlen: int | None = None) -> str:
        raw = self.unpack_opaque(maxlen)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise XdrError(f"string is not valid UTF-8: {e}") from None

    def check_count(self, count: int, maxlen: int | None, min_item_size: int) -> None:
        """Bound an array count before anything is allocated for it."""
        if maxlen is not None and count > maxlen:
            raise XdrError(f"array of {count} items exceeds its maximum {maxlen}")
        if count * min_item_size > self._end - self.pos:
            raise XdrError(f"array of {count} items cannot fit in {self._end - self.pos} bytes")
