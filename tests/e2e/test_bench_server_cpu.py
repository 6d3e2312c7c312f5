"""`bench.server_cpu` and `bench.profile_stages` at a tiny size, so that the benchmark keeps
working: every row against a real server (this tree alternating with itself), its table, and
the stage split of made-up py-spy stacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import server_cpu
from bench.profile_stages import LOOP, REST, shares


def test_every_row_runs_against_a_real_server(capsys: pytest.CaptureFixture[str]) -> None:
    here = Path(server_cpu.__file__).resolve().parent.parent
    assert server_cpu.main(["--ops", "16", "--samples", "2", "--compare", str(here)]) == 0
    out = capsys.readouterr().out
    for row in server_cpu.ROWS:
        line = next(ln for ln in out.splitlines() if ln.startswith(row + " "))
        medians = [float(m) for m in re.findall(r"(\d+\.\d) \(", line)]
        assert len(medians) == 2 and all(m >= 0 for m in medians), line  # CPU in 10 ms ticks
        ratio = line.split()[-1]
        if medians[1]:
            assert float(ratio) == pytest.approx(medians[0] / medians[1], abs=0.01)
        else:
            assert ratio == "-"


def test_hops_counts_the_calls_each_row_hands_to_worker_threads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One create is one worker call (the file made and the kernel's access to it together),
    one REMOVE one, and rm's ACCESS, LOOKUP and REMOVE at most three."""
    argv = ["--hops", "--rows", "create,remove,unlink", "--ops", "32", "--samples", "1"]
    assert server_cpu.main(argv) == 0
    out = capsys.readouterr().out
    hops = {ln.split()[0]: float(ln.split()[1]) for ln in out.splitlines()
            if ln.split() and ln.split()[0] in ("create", "remove", "unlink")}
    assert hops["create"] == pytest.approx(1.0) and hops["remove"] == pytest.approx(1.0), out
    assert 1.0 <= hops["unlink"] <= 3.0, out
    assert "_create_and_access 1.00/op" in out


def test_stat_and_remove_need_the_files_create_makes() -> None:
    with pytest.raises(SystemExit):
        server_cpu.main(["--rows", "stat"])
    with pytest.raises(SystemExit):
        server_cpu.main(["--rows", "getattr,nosuchrow"])


def test_stages_of_made_up_stacks(tmp_path: Path) -> None:
    top = "Runner.run (asyncio/runners.py:118);_Connection._serve (pynfsd/rpc/transport.py:193)"
    worker = "Thread.run (threading.py:975);BlockingPool._work (pynfsd/blocking.py:89)"
    stacks = {
        f"{top};run_op (pynfsd/nfs4/compound.py:100);getattr_ (pynfsd/nfs4/ops/attr.py:39);"
        "encode_fattr4 (pynfsd/nfs4/attrs/encode.py:300)": 3,  # attribute encoding
        f"{top};run_op (pynfsd/nfs4/compound.py:100)": 2,  # the handler itself
        f"{top};_Connection._flush (pynfsd/rpc/transport.py:230)": 4,  # send
        f"{worker};LocalNamespace.create_file (pynfsd/fs/local/namespace.py:80)": 1,
        worker: 50,  # waiting at the queue: not CPU
        "Runner.run (asyncio/runners.py:118)": 2,  # uvloop's own code
        "<module> (x.py:1)": 1,
    }
    path = tmp_path / "stacks.txt"
    path.write_text("".join(f"{s} {n}\n" for s, n in stacks.items()))
    got, total = shares(str(path))
    assert total == 13
    assert got["attribute encoding"] == pytest.approx(3 / 13)
    assert got["op handlers (Vfs, backend on the loop)"] == pytest.approx(2 / 13)
    assert got["send (reply to the socket)"] == pytest.approx(4 / 13)
    assert got["worker threads (filesystem calls)"] == pytest.approx(1 / 13)
    assert got[LOOP] == pytest.approx(2 / 13) and got[REST] == pytest.approx(1 / 13)
    assert sum(got.values()) == pytest.approx(1.0)
