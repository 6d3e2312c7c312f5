"""`bench.delegations` at a tiny size, so that the benchmark keeps working.

* its transcript parsing, RPC table and goal verdicts, on a made-up transcript (no VM);
* a real run (kernel client in qemu, pynfsd with ``--delegations on`` and ``off``; Ganesha
  is left to the full benchmark): 10 files read 3 times; without delegations every open is an
  OPEN and every close a CLOSE, with them only the first round's are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.delegations import DelegRun, goals, main, ops_table, parse
from tests.e2e.test_kernel_delegations import delegations_skip_reason
from tests.vm.qemu import Transcript

FILES, ROUNDS = 10, 3


def made_up(server: str, opens: int, extra: int) -> DelegRun:
    run = DelegRun(server, FILES, ROUNDS)
    lines = ["@@OPS before OPEN 1", "@@OPS before CLOSE 1", "@@OPS before READ 1",
             f"@@OPS after OPEN {1 + opens}", f"@@OPS after CLOSE {1 + opens}",
             f"@@OPS after READ {1 + FILES}", f"@@OPS after GETATTR {extra}",
             "@@TIME 123", "@@MOUNT 192.168.77.1:/e /mnt/nfs nfs4 rw,vers=4.0 0 0", "@@BENCHDONE"]
    parse(Transcript(lines=lines), run)
    return run


def test_parse_table_and_goals() -> None:
    on, off = made_up("pynfsd-on", FILES, 0), made_up("pynfsd-off", FILES * ROUNDS, 0)
    peer = made_up("ganesha", FILES * ROUNDS, 5)
    assert on.rpcs() == {"OPEN": FILES, "CLOSE": FILES, "READ": FILES}
    assert (on.counted(), on.total(), on.seconds, on.errors) == (2 * FILES, 3 * FILES, 1.23, [])
    assert peer.rpcs()["GETATTR"] == 5 and peer.counted() == 2 * FILES * ROUNDS + 5
    table = ops_table([on, off, peer])
    assert "OPEN+CLOSE+GETATTR" in table and "wall s" in table
    verdicts = goals([on, off, peer])
    assert verdicts[0].endswith(": ok") and "3.0x fewer" in verdicts[0]
    assert verdicts[1].endswith(": ok")
    assert goals([off, on])[0].endswith(": ok")
    worse = made_up("pynfsd-on", FILES * 2, 50)
    assert [v.rsplit(": ", 1)[1] for v in goals([worse, off, peer])] == ["BELOW", "ABOVE"]


def test_parse_reports_an_unfinished_guest() -> None:
    run = DelegRun("pynfsd-on", FILES, ROUNDS)
    parse(Transcript(lines=["@@OPS before OPEN 1"], timed_out=True), run)
    assert run.errors == ["the VM hit its timeout"]
    run = DelegRun("pynfsd-on", FILES, ROUNDS)
    parse(Transcript(lines=["@@BENCHFAIL mount"]), run)
    assert run.errors == ["@@BENCHFAIL mount"]


@pytest.mark.vm
@pytest.mark.skipif(delegations_skip_reason() is not None, reason=str(delegations_skip_reason()))
def test_tiny_run_against_pynfsd_on_and_off(tmp_path: Path) -> None:
    out = tmp_path / "delegations.json"
    argv = ["--files", str(FILES), "--rounds", str(ROUNDS), "--servers", "pynfsd-on,pynfsd-off",
            "--workdir", str(tmp_path / "runs"), "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    rpcs = {r["server"]: r["rpcs"] for r in doc["runs"]}
    assert rpcs["pynfsd-off"]["OPEN"] == FILES * ROUNDS
    assert rpcs["pynfsd-off"]["CLOSE"] == FILES * ROUNDS
    assert rpcs["pynfsd-on"]["OPEN"] == FILES, "with delegations only the first round opens"
    assert rpcs["pynfsd-on"].get("CLOSE", 0) <= FILES
    assert doc["goals"][0].endswith(": ok")
