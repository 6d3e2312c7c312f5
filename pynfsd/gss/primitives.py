"""Keyed HMAC states and confounders for the per-message Kerberos crypto.

Theory of operation: the per-token cost of small GSS tokens is mostly fixed set-up, not
hashing or AES. Two pieces of that set-up are made once here instead of once per token:

* `HmacKey`: one OpenSSL HMAC context keyed when the key is derived (`cryptography`'s HMAC
  object); a message then costs a copy of it, hashing its own octets, and one finalize.
  That is three calls into OpenSSL; the alternatives measured more per token: two keyed
  `hashlib` states (copy, update and digest each, and `digest` copies once more inside),
  `hashlib`'s HMAC object (its `digest` copies the whole HMAC context), and OpenSSL's
  one-shot HMAC (`hmac.digest`, which fetches the digest and re-keys on every call).
* `Confounders`: 16-octet confounders from `os.urandom`, read a batch at a time (one system
  call per batch), each handed out together with itself XOR a fixed mask (see
  `krb5crypto`: the mask is what the CBC chaining state is reset to, so the masked copy is
  the block to feed AES). Pairs are popped from a list (atomic under the GIL), so no two
  callers get the same confounder, and a forked child drops its parent's unread ones.
"""

from __future__ import annotations

import io
import os
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac

BLOCK = 16
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
}


class HmacKey:
    """An HMAC key schedule: `start()` is a fresh keyed state.

    HMAC(K, prefix | m): `s = start(); s.update(m); s.finalize()`, or `digest(m)`.
    """

    __slots__ = ("start",)

    def __init__(self, key: bytes, hash_name: str, prefix: bytes = b"") -> None:
        """The schedule of `key`; a `prefix` is hashed into the keyed state up front."""
        keyed = hmac.HMAC(key, _HASHES[hash_name]())
        keyed.update(prefix)
        self.start: Callable[[], Any] = keyed.copy

    def digest(self, data: bytes | bytearray | memoryview) -> bytes:
        """HMAC(K, prefix | data) in one call."""
        state = self.start()
        state.update(data)
        return state.finalize()  # type: ignore[no-any-return]


_live: weakref.WeakSet[Confounders] = weakref.WeakSet()


def _exhausted() -> tuple[bytes, bytes]:
    raise StopIteration


class Confounders:
    """Random 16-octet blocks `c`, each drawn as the pair `(c, c XOR mask)`.

    `next()` raises StopIteration when the batch is used up; `refill()` reads the next
    batch and returns one pair. A batch is two buffers read 16 octets at a time by a C-level
    `zip` (a pair is one call that runs no Python code, so it is atomic under the GIL):
    cheaper per pair than slicing a batch into a list up front. Every sending key has its
    own, so batches are small (`batch` pairs).
    """

    __slots__ = ("next", "_mask", "_size", "__weakref__")

    def __init__(self, mask: bytes, batch: int = 64) -> None:
        self.next: Callable[[], tuple[bytes, bytes]] = _exhausted
        self._size = BLOCK * batch
        self._mask = int.from_bytes(mask * batch)
        _live.add(self)

    def refill(self) -> tuple[bytes, bytes]:
        """Read a batch from the kernel's CSPRNG; returns one of its pairs."""
        while True:
            data = os.urandom(self._size)
            masked = (int.from_bytes(data) ^ self._mask).to_bytes(self._size)
            self.next = zip(_blocks(data), _blocks(masked), strict=True).__next__
            try:
                return self.next()
            except StopIteration:  # other threads took the whole batch
                continue

    def forget(self) -> None:
        self.next = _exhausted


def _blocks(data: bytes) -> Iterator[bytes]:
    return iter(partial(io.BytesIO(data).read, BLOCK), b"")


def _forget_batches() -> None:
    for source in list(_live):
        source.forget()


os.register_at_fork(after_in_child=_forget_batches)
