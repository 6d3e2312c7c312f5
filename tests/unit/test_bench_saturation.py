"""`bench.saturation`'s Python side without a server: the generator's output, its spec file,
the offsets of the fields it fills in, the counting rule, the summary and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sat_gen import GenError, GenOutput, Sample, SlotCalls, Spec, Window, parse_output
from bench.sat_report import RunResult, plot, summarize, table, to_json
from bench.sat_setup import call, offset_of
from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N

OUTPUT = ["ready\n", "begin 100 90 0\n", "end 1100 1090 0 2000000000\n",
          "error nfs-10026 3\n", "error lost 1\n", "done 1200 1180 4 1\n"]


def test_parse_output() -> None:
    out = parse_output(OUTPUT)
    assert (out.begin, out.end, out.window_ns) == ((100, 90, 0), (1100, 1090, 0), 2_000_000_000)
    assert (out.done, out.lost, out.complete) == ((1200, 1180, 4), 1, True)
    assert out.kinds == {"nfs-10026": 3, "lost": 1}


def test_parse_output_refuses_what_it_does_not_know() -> None:
    assert not parse_output(OUTPUT[:3]).complete
    with pytest.raises(GenError):
        parse_output(["begin 1 2\n"])
    with pytest.raises(GenError):
        parse_output(["warning: something\n"])


def test_spec_text() -> None:
    simple = Spec(2, 8, 0.5, 3.0, requests=(b"\x00\x01\xab", b"\xff"), expect=120).text()
    assert simple.splitlines() == ["mode simple", "conns 2", "depth 8", "warmup 0.5",
                                   "seconds 3.0", "drain 10.0", "expect 120", "req 0001ab",
                                   "req ff"]
    slot = SlotCalls(3, b"\x01\x02", 0, b"\x03\x04", 1, 2)
    text = Spec(1, 1, 0.0, 1.0, slots=(slot,)).text().splitlines()
    assert text[0] == "mode openclose" and text[-1] == "slot 3 0 1 2 0102 0304"


def test_offsets_are_where_the_generator_must_write() -> None:
    fh = b"\x07" * 28
    for seqid in (0, 5, 0xFFFFFFFF):
        def close(fill: int, seqid: int = seqid) -> bytes:
            sid = N.stateid4(0x11111111 * fill, bytes([0x11 * fill]) * 12)
            return call([op.putfh(fh), op.close(seqid, sid)])

        def close_seq(fill: int) -> bytes:
            return call([op.putfh(fh), op.close(0x11111111 * fill, N.stateid4(1, b"s" * 12))])

        at, seq_at = offset_of(close, 16), offset_of(close_seq, 4)
        template = bytearray(close(0))
        template[at:at + 16] = (7).to_bytes(4, "big") + b"x" * 12
        assert bytes(template) == call([op.putfh(fh), op.close(seqid, N.stateid4(7, b"x" * 12))])
        assert close_seq(0)[seq_at:seq_at + 4] == b"\0\0\0\0"
    assert call([op.putfh(fh)])[:4] == b"\0\0\0\0"      # the xid the generator overwrites


def test_offset_of_refuses_a_field_that_is_not_one_span() -> None:
    with pytest.raises(ValueError):
        offset_of(lambda fill: bytes([fill, 0, 0, fill]), 2)
    with pytest.raises(ValueError):
        offset_of(lambda fill: bytes([fill, fill]), 4)
    with pytest.raises(ValueError):
        offset_of(lambda fill: bytes([fill] * fill), 1)
    assert offset_of(lambda fill: bytes([9, fill, 0, fill, 9]), 3) == 1


def window(ops_per_s: float, server: float, gen: float, errors: int = 0) -> Window:
    ops = int(ops_per_s * 2)
    out = GenOutput((0, 0, 0), (ops, ops, 0), 2_000_000_000, (ops, ops, errors), 0,
                    {"nfs-10001": errors} if errors else {}, True)
    start = Sample(10.0, 1.0, 5.0, {0: 100.0, 1: 200.0})
    stop = Sample(12.0, 1.0 + 2 * server, 5.0 + 2 * gen, {0: 102.0, 1: 201.0})
    return Window(out, start, stop, 0, 1)


def test_window_figures() -> None:
    w = window(1000, 0.5, 0.25)
    assert w.ops == 2000 and w.ops_per_s == pytest.approx(1000)
    assert w.server_use == pytest.approx(0.5) and w.gen_use == pytest.approx(0.25)
    assert w.ops_per_cpu_s == pytest.approx(2000)
    assert w.gen_us_per_call == pytest.approx(250)
    assert (w.core_use(0), w.core_use(1)) == (pytest.approx(1.0), pytest.approx(0.5))


@pytest.mark.parametrize(("server", "gen", "errors", "why"), [
    (0.99, 0.30, 0, ""),
    (0.91, 0.78, 0, ""),
    (0.88, 0.30, 0, "server at 88 % of its core"),
    (0.99, 0.82, 0, "generator at 82 % of its core"),
    (0.99, 0.30, 2, "2 errors"),
])
def test_a_run_counts_only_when_the_server_is_the_limit(server: float, gen: float, errors: int,
                                                        why: str) -> None:
    assert window(1000, server, gen, errors).why_not_counted() == why


def results() -> list[RunResult]:
    return [RunResult("pynfsd", "GETATTR", 1, window(1000, 0.99, 0.1)),
            RunResult("ganesha", "GETATTR", 1, window(4000, 0.99, 0.4)),
            RunResult("ganesha", "GETATTR", 2, window(5000, 0.99, 0.5)),
            RunResult("pynfsd", "GETATTR", 2, window(3000, 0.50, 0.1)),   # not counted
            RunResult("pynfsd", "GETATTR", 3, window(1500, 0.95, 0.1)),
            RunResult("ganesha", "GETATTR", 3, window(3000, 0.99, 0.4)),
            RunResult("pynfsd", "READ", 1, window(700, 0.5, 0.1)),
            RunResult("ganesha", "READ", 1, None, "GenError: boom")]


def test_summary_uses_counted_runs_and_same_round_ratios() -> None:
    [getattr_row, read_row] = summarize(results(), ["GETATTR", "READ"], "pynfsd", "ganesha")
    ours, peer = getattr_row.sides["pynfsd"], getattr_row.sides["ganesha"]
    assert (ours.median, ours.low, ours.high, ours.counted, ours.runs) == (1250, 1000, 1500, 2, 3)
    assert (peer.median, peer.counted, peer.mark) == (4000, 3, "")
    assert getattr_row.ratio == pytest.approx((0.25 + 0.5) / 2)
    assert (getattr_row.ratio_low, getattr_row.ratio_high) == (0.25, 0.5)
    assert read_row.sides["pynfsd"].mark == "*" and read_row.sides["pynfsd"].median == 700
    assert read_row.sides["ganesha"].runs == 1 and read_row.ratio is None


def test_table_json_and_plot(tmp_path: Path) -> None:
    rows = summarize(results(), ["GETATTR", "READ"], "pynfsd", "ganesha")
    text = table(rows, "pynfsd", "ganesha")
    assert "| GETATTR | 1,250 | 1,000–1,500 | 97 % / 10 % | 2/3 | 4,000 | 3,000–5,000 | 99 % / 40 % | 3/3 | 0.38× | 0.25–0.50 | ≥ 1.0×: not met |" in text
    assert "| READ | 700* | 700–700 | 50 % / 10 % | 0/1 | - | - | - | 0/1 | - | - | no round where both count |" in text
    doc = to_json(results(), rows, {"machine": "test"})
    assert [r["counts"] for r in doc["runs"]] == [True, True, True, False, True, True, False, False]
    assert doc["runs"][3]["window"]["why_not_counted"] == "server at 50 % of its core"
    assert doc["runs"][-1]["failure"] == "GenError: boom"
    assert "round 2 pynfsd   GETATTR" in results()[3].line()
    assert "DOES NOT COUNT: server at 50 %" in results()[3].line()
    png = tmp_path / "sat.png"
    plot(rows, str(png), "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
