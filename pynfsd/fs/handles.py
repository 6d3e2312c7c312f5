"""Unforgeable wrapping of kernel file handles.

Wire form: ``version(1) | handle_type(int32 LE) | length(1) | kernel handle | MAC(16)`` where
the MAC is HMAC-SHA256 truncated to 16 bytes, keyed by the state directory's secret and bound
to the export root's own kernel handle, so a handle is valid only for the export it was made
for. Anything that fails to parse or verify is ``ESTALE``.

A MAC is computed for every entry READDIR lists, so the HMAC (RFC 2104) is spelled out over
two SHA-256 states made once per codec: the inner one has absorbed the padded key and the
export prefix, the outer one the padded key. A MAC is then two copies, two updates and two
digests, none of which releases the GIL (``hmac.digest`` sets the key up again on every call
and drops the GIL around it); a test checks it against ``hmac``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import struct

from pynfsd.fs.backend import MAX_HANDLE_SIZE
from pynfsd.fs.names import oserror

VERSION = 1
MAC_LEN = 16
_HEADER = struct.Struct("<BiB")
MAX_KERNEL_HANDLE = MAX_HANDLE_SIZE - _HEADER.size - MAC_LEN


class HandleCodec:
    """Encodes and verifies handles for one export."""

    def __init__(self, key: bytes, export_id: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._inner.update(b"pynfsd-fh-v1\0" + export_id)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def mac(self, body: bytes) -> bytes:
        """HMAC-SHA256(key, prefix + body), truncated (see the module docstring)."""
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]

    def encode(self, handle_type: int, kernel_handle: bytes) -> bytes:
        """Our handle for a kernel handle (EOVERFLOW if it would exceed 100 bytes)."""
        if len(kernel_handle) > MAX_KERNEL_HANDLE:
            raise oserror(errno.EOVERFLOW, "kernel file handle too large")
        body = _HEADER.pack(VERSION, handle_type, len(kernel_handle)) + kernel_handle
        return body + self.mac(body)

    def decode(self, handle: bytes) -> tuple[int, bytes]:
        """``(handle_type, kernel_handle)`` of a handle we made; else ESTALE."""
        if not _HEADER.size + MAC_LEN <= len(handle) <= MAX_HANDLE_SIZE:
            raise oserror(errno.ESTALE, "malformed handle")
        body, mac = handle[:-MAC_LEN], handle[-MAC_LEN:]
        if not hmac.compare_digest(mac, self.mac(body)):
            raise oserror(errno.ESTALE, "handle MAC mismatch")
        version, handle_type, length = _HEADER.unpack_from(body)
        if version != VERSION or length != len(body) - _HEADER.size:
            raise oserror(errno.ESTALE, "malformed handle")
        return handle_type, body[_HEADER.size :]
