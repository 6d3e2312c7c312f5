"""Property tests: the metrics endpoint's request decision and address parser, on any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pynfsd.metrics.http import REASONS, decide, error_response, parse_address

PIECES = st.sampled_from([b"GET", b"HEAD", b"POST", b" ", b"/metrics", b"/", b"?", b"HTTP/1.1",
                          b"HTTP/1.0", b"\r\n", b"Host: x", b"\x00", b"\xff", b"HTTP/2"])
HEADS = st.one_of(st.binary(max_size=200), st.lists(PIECES, max_size=12).map(b"".join))


@given(HEADS)
def test_every_request_head_gets_a_known_status(head: bytes) -> None:
    status, body = decide(head)
    assert status in REASONS and isinstance(body, bool)
    assert error_response(status, body).startswith(f"HTTP/1.1 {status} ".encode())
    if status == 200:
        assert head.split(b"\r\n", 1)[0].split(b" ")[1].split(b"?")[0] == b"/metrics"


@given(st.text(max_size=40))
def test_addresses_parse_or_raise_value_error(text: str) -> None:
    try:
        host, port = parse_address(text)
    except ValueError:
        return
    assert host and 0 <= port < 65536
