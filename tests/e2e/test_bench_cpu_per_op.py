"""`bench.cpu_per_op` at a tiny size, so that the benchmark and its guest helper keep working:
one boot of the kernel client against pynfsd (Ganesha is left to the full benchmark), sec=sys,
every row measured once. Checks what the guest's ``fsops`` did through the RPCs the client
sent (one OPEN per create, one RENAME per rename, READ/WRITE per O_DIRECT I/O, READDIR for
the listing) and that every phase got a CPU reading; nothing about timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cpu_per_op import main
from bench.cpu_per_op_report import ROWS
from tests.e2e.test_kernel_krb5 import krb5_skip_reason

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(krb5_skip_reason() is not None, reason=str(krb5_skip_reason()))]

FILES, ENTRIES, IOS = 30, 120, 40


def test_tiny_run_against_pynfsd(tmp_path: Path) -> None:
    out, png = tmp_path / "cpu.json", tmp_path / "cpu.png"
    argv = ["--servers", "pynfsd", "--secs", "sys", "--rounds", "1", "--files", str(FILES),
            "--entries", str(ENTRIES), "--listings", "2", "--size-mb", "4",
            "--random-ops", str(IOS), "--timeout", "600", "--workdir", str(tmp_path / "runs"),
            "--json", str(out), "--plot", str(png)]
    assert main(argv) == 0
    (boot,) = json.loads(out.read_text())["boots"]
    assert boot["errors"] == []
    phases = {s["phase"]: s for s in boot["samples"]}
    assert sorted(phases) == sorted(r.phase for r in ROWS)
    assert all(s["cpu"] is not None and s["cpu"] >= 0 for s in phases.values())
    assert phases["create"]["rpcs"]["OPEN"] == FILES
    assert phases["rename"]["rpcs"]["RENAME"] == FILES
    assert phases["unlink"]["rpcs"]["REMOVE"] == FILES
    assert phases["stat"]["rpcs"]["LOOKUP"] >= FILES
    assert phases["randread"]["rpcs"]["READ"] == IOS, "O_DIRECT: every read goes out"
    assert phases["randwrite"]["rpcs"]["WRITE"] == IOS
    assert phases["readdir"]["rpcs"]["READDIR"] >= 2, "each listing from cold caches"
    assert phases["seqwrite"]["amount"] == 4 and phases["seqwrite"]["rpcs"]["WRITE"] >= 4
    assert png.read_bytes()[:4] == b"\x89PNG"
