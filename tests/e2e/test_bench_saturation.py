"""`bench.saturation`'s generator against a real `pynfsd serve`, briefly: it compiles, every
operation's replies are counted and all NFS4_OK, and replies that are not are counted as
errors (an NFS error, a wrong length, a bad seqid), never passed over.  The whole benchmark
runs once at a tiny size with its table, JSON and plot.  No timing is asserted."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import sat_gen
from bench.sat_setup import DIR, OPERATIONS, call, make_files, prepare
from bench.saturation import main
from pynfsd.client.nfs4 import op
from tests.serverproc import ServerProcess

LOAD = sat_gen.Spec(conns=2, depth=4, warmup=0.1, seconds=0.3, drain=5.0)
CPUS = sorted(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def exe() -> Path:
    return sat_gen.build()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    base = tmp_path_factory.mktemp("sat")
    export = base / "export"
    make_files(export, LOAD.in_flight)
    with ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], base / "state",
                       log_level="INFO") as srv:
        yield srv, export


def drive(exe: Path, srv: ServerProcess, spec: sat_gen.Spec, tmp: Path) -> sat_gen.Window:
    return sat_gen.run(exe, spec, srv.port, srv.pid, CPUS[-1], CPUS[0], tmp)


@pytest.mark.parametrize("op_name", OPERATIONS)
def test_every_reply_is_counted_and_ok(exe: Path, server: tuple[ServerProcess, Path],
                                       op_name: str, tmp_path: Path) -> None:
    srv, export = server
    w = drive(exe, srv, prepare(op_name, srv.port, export, LOAD, f"ok-{op_name}"), tmp_path)
    assert w.out.complete and w.out.kinds == {} and w.errors == 0 and w.out.lost == 0
    replies, ops = w.out.done[0], w.out.done[1]
    assert w.ops > 0 and ops >= w.ops
    assert replies == (2 * ops if op_name == "OPEN+CLOSE" else ops)
    assert w.server_use is not None and w.gen_use is not None


def test_nfs_errors_are_counted(exe: Path, server: tuple[ServerProcess, Path],
                                tmp_path: Path) -> None:
    srv, _ = server
    bad = call([op.putfh(b"\xee" * 32), op.getattr(1)])
    w = drive(exe, srv, dataclasses.replace(LOAD, requests=(bad,), expect=-1), tmp_path)
    [kind] = w.out.kinds
    assert kind in ("nfs-10001", "nfs-70")          # NFS4ERR_BADHANDLE or NFS4ERR_STALE
    assert w.out.done[1] == 0 and w.errors == w.out.done[0] > 0


def test_a_reply_of_the_wrong_length_is_an_error(exe: Path, server: tuple[ServerProcess, Path],
                                                 tmp_path: Path) -> None:
    srv, export = server
    spec = prepare("GETATTR", srv.port, export, LOAD, "length")
    w = drive(exe, srv, dataclasses.replace(spec, expect=spec.expect + 4), tmp_path)
    assert w.out.kinds == {f"reply-length-{spec.expect}": w.out.done[0]}
    assert w.out.done[1] == 0 and w.errors > 0


def test_a_wrong_seqid_is_an_error(exe: Path, server: tuple[ServerProcess, Path],
                                   tmp_path: Path) -> None:
    srv, export = server
    spec = prepare("OPEN+CLOSE", srv.port, export, LOAD, "seqid")
    slots = tuple(dataclasses.replace(s, seqid=s.seqid + 5) for s in spec.slots)
    w = drive(exe, srv, dataclasses.replace(spec, slots=slots), tmp_path)
    assert w.out.kinds == {"nfs-10026": w.out.done[0]}      # NFS4ERR_BAD_SEQID, every reply
    assert w.out.done[1] == 0


def test_the_benchmark_end_to_end(tmp_path: Path) -> None:
    out, png = tmp_path / "sat.json", tmp_path / "sat.png"
    args = ["--rounds", "1", "--warmup", "0.1", "--seconds", "0.3", "--conns", "2", "--depth",
            "4", "--peer", "none", "--server-cpu", str(CPUS[0]), "--gen-cpu", str(CPUS[-1]),
            "--json", str(out), "--plot", str(png), "--workdir", str(tmp_path / "work")]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert [(r["server"], r["op"]) for r in doc["runs"]] == [("pynfsd", o) for o in OPERATIONS]
    for run in doc["runs"]:
        assert run["failure"] == "" and run["window"]["errors"] == 0, run
        assert run["window"]["replies"] > 0 and run["window"]["ops"] > 0, run
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "work" / "round-1" / "pynfsd" / "export" / DIR / "data").exists()
