"""Unforgeable wrapping of kernel file handles.

Wire form: ``version(1) | handle_type(int32 LE) | length(1) | kernel handle | MAC(16)`` where
the MAC is HMAC-SHA256 truncated to 16 bytes, keyed by the state directory's secret and bound
to the export root's own kernel handle, so a handle is valid only for the export it was made
for. Anything that fails to parse or verify is ``ESTALE``.
"""

from __future__ import annotations

import errno
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
        self._key = key
        self._prefix = b"pynfsd-fh-v1\0" + export_id

    def mac(self, body: bytes) -> bytes:
        return hmac.digest(self._key, self._prefix + body, "sha256")[:MAC_LEN]

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
