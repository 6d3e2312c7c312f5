"""Keyed hash states and confounders for the per-message Kerberos crypto.

Theory of operation: the per-token cost of small GSS tokens is mostly fixed set-up, not
hashing or AES. Two pieces of that set-up are made once here instead of once per token:

* `HmacKey`: HMAC (RFC 2104) is H(K ^ opad | H(K ^ ipad | m)). The two hash states after
  the one padded key block are computed when the key is derived; a message then costs a copy
  of each state (a memory copy) and hashing its own octets. Copying a keyed OpenSSL HMAC
  context, or OpenSSL's one-shot HMAC, costs more per token than that.
* `random_block`: a 16-octet confounder from `os.urandom`, read 4 KiB at a time (one system
  call per 256 tokens). Blocks are popped from a list (atomic under the GIL), so no two
  callers get the same block, and a forked child drops its parent's unread blocks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

_BLOCK = 16
_BATCH = 256


class HmacKey:
    """An HMAC key schedule: `start()` is a fresh inner state, `outer()` a fresh outer one.

    HMAC(K, prefix | m): `i = start(); i.update(m); o = outer(); o.update(i.digest());
    o.digest()`, or `digest(m)`, or `finish(i)` for the last two steps.
    """

    __slots__ = ("start", "outer")

    def __init__(self, key: bytes, hash_name: str, prefix: bytes = b"") -> None:
        """The schedule of `key`; a `prefix` is hashed into the inner state up front."""
        inner, outer = hashlib.new(hash_name), hashlib.new(hash_name)
        if len(key) > inner.block_size:  # RFC 2104 §2: long keys are hashed first
            key = hashlib.new(hash_name, key).digest()
        padded = key.ljust(inner.block_size, b"\x00")
        inner.update(bytes(b ^ 0x36 for b in padded))
        inner.update(prefix)
        outer.update(bytes(b ^ 0x5C for b in padded))
        self.start: Callable[[], Any] = inner.copy
        self.outer: Callable[[], Any] = outer.copy

    def finish(self, inner: Any) -> bytes:
        """The HMAC of what `inner` (from `start()`) was fed."""
        outer = self.outer()
        outer.update(inner.digest())
        return outer.digest()  # type: ignore[no-any-return]

    def digest(self, data: bytes | bytearray | memoryview) -> bytes:
        """HMAC(K, data) in one call."""
        inner = self.start()
        inner.update(data)
        return self.finish(inner)


_blocks: list[bytes] = []


def random_block() -> bytes:
    """16 octets from the kernel's CSPRNG, served from a batch read ahead."""
    while True:
        try:
            return _blocks.pop()
        except IndexError:
            data = os.urandom(_BLOCK * _BATCH)
            _blocks.extend([data[i : i + _BLOCK] for i in range(0, len(data), _BLOCK)])


def _forget_blocks() -> None:
    _blocks.clear()


os.register_at_fork(after_in_child=_forget_blocks)
