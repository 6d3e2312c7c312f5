"""The keyed HMAC states and the confounder batches of `pynfsd.gss.primitives`."""

from __future__ import annotations

import hmac
import os

import pytest

from pynfsd.gss import primitives


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384"])
@pytest.mark.parametrize("key_size", [0, 16, 24, 32, 64, 200])
def test_hmac_key_matches_hmac_module(hash_name: str, key_size: int) -> None:
    key = os.urandom(key_size)
    hk = primitives.HmacKey(key, hash_name)
    for size in (0, 1, 55, 64, 128, 1000):
        msg = os.urandom(size)
        expected = hmac.digest(key, msg, hash_name)
        assert hk.digest(msg) == expected
        inner = hk.start()
        inner.update(msg[:7])
        inner.update(memoryview(msg)[7:])
        assert hk.finish(inner) == expected
    assert hk.digest(b"a") == hk.digest(b"a")  # the key states are not consumed


def test_rfc2202_hmac_sha1_vector() -> None:
    hk = primitives.HmacKey(b"\x0b" * 20, "sha1")
    assert hk.digest(b"Hi There").hex() == "b617318655057264e28bc0b6fb378c8ef146be00"


def test_random_blocks_are_distinct_across_batches() -> None:
    blocks = [primitives.random_block() for _ in range(3 * 256 + 5)]
    assert all(len(b) == 16 for b in blocks)
    assert len(set(blocks)) == len(blocks)


def test_a_forked_child_does_not_reuse_the_parents_blocks() -> None:
    primitives.random_block()  # a batch is read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, primitives.random_block())
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child not in {primitives.random_block() for _ in range(300)}


def test_a_prefix_is_hashed_first() -> None:
    key, prefix, msg = os.urandom(24), bytes(16), os.urandom(100)
    hk = primitives.HmacKey(key, "sha384", prefix)
    assert hk.digest(msg) == hmac.digest(key, prefix + msg, "sha384")
