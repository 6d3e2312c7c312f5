"""Record marking (RFC 5531 §11): whole, every split point, byte at a time, caps."""

from __future__ import annotations

import struct

import pytest

from pynfsd.rpc.record import (
    LAST_FRAGMENT,
    RecordError,
    RecordReader,
    encode_record,
    record_buffers,
)


def marker(length: int, last: bool) -> bytes:
    return struct.pack(">I", (LAST_FRAGMENT if last else 0) | length)


RECORDS = [b"hello world!", b"", b"x" * 1000, bytes(range(256))]
STREAM = b"".join(encode_record(r) for r in RECORDS)
MULTI = marker(3, False) + b"abc" + marker(0, False) + marker(4, True) + b"defg"


def feed_all(reader: RecordReader, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += reader.feed(chunk)
    return out


def test_encode_single_fragment() -> None:
    assert encode_record(b"abcd") == b"\x80\x00\x00\x04abcd"
    assert encode_record(b"") == b"\x80\x00\x00\x00"


def test_encode_multi_fragment_boundaries() -> None:
    assert encode_record(b"abcdefg", max_fragment=3) == (
        marker(3, False) + b"abc" + marker(3, False) + b"def" + marker(1, True) + b"g"
    )
    assert encode_record(b"abcdef", max_fragment=3) == (
        marker(3, False) + b"abc" + marker(3, True) + b"def"
    )


def test_record_buffers_is_writev_form() -> None:
    bufs = record_buffers(b"payload")
    assert bufs[0] == marker(7, True) and bufs[1] == b"payload"


def test_whole_stream() -> None:
    assert RecordReader(2000, 4).feed(STREAM) == RECORDS


def test_every_split_point() -> None:
    for split in range(len(STREAM) + 1):
        reader = RecordReader(2000, 4)
        assert feed_all(reader, [STREAM[:split], STREAM[split:]]) == RECORDS, split


def test_every_pair_of_split_points_multi_fragment() -> None:
    for a in range(len(MULTI) + 1):
        for b in range(a, len(MULTI) + 1):
            reader = RecordReader(100, 3)
            assert feed_all(reader, [MULTI[:a], MULTI[a:b], MULTI[b:]]) == [b"abcdefg"]


def test_byte_at_a_time() -> None:
    reader = RecordReader(2000, 4)
    assert feed_all(reader, [bytes([c]) for c in STREAM]) == RECORDS
    assert reader.buffered == 0


def test_encoded_multi_fragment_round_trip() -> None:
    payload = bytes(range(256)) * 10
    for size in (1, 7, 255, 256, 2559, 2560, 5000):
        stream = encode_record(payload, max_fragment=size)
        assert RecordReader(len(payload), 3000).feed(stream) == [payload]


def test_trailing_partial_record_is_kept() -> None:
    reader = RecordReader(100, 4)
    assert reader.feed(encode_record(b"one") + marker(5, True) + b"tw") == [b"one"]
    assert reader.buffered == 2
    assert reader.feed(b"o!!") == [b"two!!"]
    assert reader.feed(b"\x80") == []
    assert reader.buffered == 1


def test_oversized_marker_rejected_before_body() -> None:
    reader = RecordReader(1024, 4)
    with pytest.raises(RecordError):
        reader.feed(marker(0x7FFFFFFF, True))
    assert reader.buffered == 0
    with pytest.raises(RecordError):
        reader.feed(b"more")  # poisoned


def test_oversize_across_fragments() -> None:
    reader = RecordReader(10, 8)
    assert reader.feed(marker(6, False) + b"abcdef") == []
    with pytest.raises(RecordError):
        reader.feed(marker(5, True))


def test_exact_max_record_accepted() -> None:
    reader = RecordReader(10, 8)
    assert reader.feed(marker(6, False) + b"abcdef" + marker(4, True) + b"ghij") == [b"abcdefghij"]


def test_empty_fragments_past_the_cap_are_cut() -> None:
    reader = RecordReader(100, 2)
    assert reader.feed(marker(0, False) * 2) == []
    with pytest.raises(RecordError, match="empty fragments"):
        reader.feed(marker(0, False))


def test_empty_fragment_count_resets_per_record_and_last_is_free() -> None:
    reader = RecordReader(100, 1)
    one = marker(0, False) + marker(1, False) + b"a" + marker(0, True)
    assert reader.feed(one * 5) == [b"a"] * 5
    assert not reader.in_record


@pytest.mark.parametrize("size", [1, 3, 4096])
def test_any_number_of_small_fragments_within_the_record_cap(size: int) -> None:
    payload = bytes(range(256)) * 64  # 16 KiB
    reader = RecordReader(len(payload), 0)
    stream = encode_record(payload, max_fragment=size)
    assert feed_all(reader, [stream[i : i + 1000] for i in range(0, len(stream), 1000)]) == [payload]
    with pytest.raises(RecordError, match="exceeds"):
        RecordReader(len(payload) - 1, 0).feed(stream)


def test_small_fragments_are_coalesced_not_listed() -> None:
    reader = RecordReader(1 << 20)
    stream = encode_record(b"z" * 100_000, max_fragment=1)[:-5]  # all but the last fragment
    for i in range(0, len(stream), 7):
        reader.feed(stream[i : i + 7])
    assert reader.buffered == 99_999 and reader.held < 2 * 99_999 and reader.in_record
    assert len(reader._parts) == 0  # one bytearray, no entry per fragment


def test_views_pin_at_most_twice_their_bytes() -> None:
    reader = RecordReader(1 << 20)
    body = b"v" * (40 << 10)
    head = encode_record(b"r" * (60 << 10)) + marker(len(body) + 1, True) + body
    assert reader.feed(head) == [b"r" * (60 << 10)]
    assert reader.buffered == len(body) and reader.held <= 2 * len(body)
    big = b"w" * (64 << 10)
    reader2 = RecordReader(1 << 20)
    reader2.feed(marker(2 * len(big), True))
    reader2.feed(big)
    assert reader2.held == len(big) and reader2.in_record


def test_in_record() -> None:
    reader = RecordReader(100)
    assert not reader.in_record
    reader.feed(b"\x00")
    assert reader.in_record and reader.held == 1
    reader.feed(b"\x00\x00\x00")
    assert reader.in_record and reader.held == 0  # an empty non-last fragment
    assert reader.feed(marker(0, True)) == [b""] and not reader.in_record


def test_invalid_caps() -> None:
    with pytest.raises(ValueError):
        RecordReader(10, -1)
    with pytest.raises(ValueError):
        record_buffers(b"x", max_fragment=0)


def test_large_pieces_are_joined_once_and_other_buffers_copied() -> None:
    body = bytes(range(256)) * 300  # 76,800 bytes: pieces over the view threshold
    stream = encode_record(body) + encode_record(b"next")
    chunks = [stream[:5], stream[5:40_000], stream[40_000:]]
    reader = RecordReader(1 << 20, 4)
    assert feed_all(reader, chunks) == [body, b"next"]
    # a caller's bytearray may change after feed returns: what was read must not
    reader = RecordReader(1 << 20, 4)
    buf = bytearray(stream[:50_000])
    assert reader.feed(buf) == []
    buf[:] = bytes(len(buf))
    assert reader.feed(stream[50_000:]) == [body, b"next"]
