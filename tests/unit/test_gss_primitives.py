"""The keyed HMAC states and the confounder batches of `pynfsd.gss.primitives`."""

from __future__ import annotations

import hmac
import os

import pytest

from pynfsd.gss import primitives
from tests.threads import run_in_threads


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384"])
@pytest.mark.parametrize("key_size", [0, 16, 24, 32, 64, 200])
def test_hmac_key_matches_hmac_module(hash_name: str, key_size: int) -> None:
    key = os.urandom(key_size)
    hk = primitives.HmacKey(key, hash_name)
    for size in (0, 1, 55, 64, 128, 1000):
        msg = os.urandom(size)
        expected = hmac.digest(key, msg, hash_name)
        assert hk.digest(msg) == expected
        state = hk.start()
        state.update(msg[:7])
        state.update(memoryview(msg)[7:])
        assert state.finalize() == expected
    assert hk.digest(b"a") == hk.digest(b"a")  # the key states are not consumed


def test_rfc2202_hmac_sha1_vector() -> None:
    hk = primitives.HmacKey(b"\x0b" * 20, "sha1")
    assert hk.digest(b"Hi There").hex() == "b617318655057264e28bc0b6fb378c8ef146be00"


def draw(source: primitives.Confounders) -> tuple[bytes, bytes]:
    try:
        return source.next()
    except StopIteration:
        return source.refill()


def test_confounders_are_distinct_across_batches_and_come_with_their_masked_copy() -> None:
    mask = os.urandom(16)
    source = primitives.Confounders(mask, batch=8)
    pairs = [draw(source) for _ in range(3 * 8 + 5)]
    assert all(len(c) == len(m) == 16 for c, m in pairs)
    assert all(int.from_bytes(c) ^ int.from_bytes(mask) == int.from_bytes(m) for c, m in pairs)
    assert len({c for c, _ in pairs}) == len(pairs)


def test_threads_never_get_the_same_confounder() -> None:
    source = primitives.Confounders(bytes(16), batch=4)
    got: list[bytes] = []

    def work() -> None:
        mine = [draw(source)[0] for _ in range(2000)]
        got.extend(mine)

    run_in_threads(work)
    assert len(got) == len(set(got)) == 8000


def test_a_forked_child_does_not_reuse_the_parents_confounders() -> None:
    source = primitives.Confounders(bytes(16))
    draw(source)  # a batch is read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, draw(source)[0])
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child not in {draw(source)[0] for _ in range(300)}


def test_a_prefix_is_hashed_first() -> None:
    key, prefix, msg = os.urandom(24), bytes(16), os.urandom(100)
    hk = primitives.HmacKey(key, "sha384", prefix)
    assert hk.digest(msg) == hmac.digest(key, prefix + msg, "sha384")
