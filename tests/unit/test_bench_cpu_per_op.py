"""``bench.cpu_per_op``: the guest helper (compiled for the host), the transcript parsing, the
aggregation over rounds, the tables and the plot, on made-up transcripts (no VM)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.cpu_per_op import (
    FSOPS,
    Boot,
    Params,
    dump,
    fill_listing,
    guest_settings,
    load,
    parse_boot,
    parse_sizes,
    size_for,
)
from bench.cpu_per_op_report import (
    ROWS,
    Sample,
    cpu_table,
    figure,
    lines_for,
    parse_samples,
    plot,
    rpc_deltas,
    rpc_table,
)
from bench.kernel_krb5_bench import CpuMarks
from tests.vm.qemu import Transcript


def made_up(phase: str, sec: str, rnd: int, amount: int, rpcs: dict[str, int]) -> list[str]:
    """The lines the guest prints for one phase (counts before: 1 of each kind)."""
    before = [f"@@OPS before {phase} {sec} {op} 1" for op in rpcs]
    after = [f"@@OPS after {phase} {sec} {op} {n + 1}" for op, n in rpcs.items()]
    return [*before, *after, f"@@CPUOP {phase} {sec} {rnd} {amount} 1234"]


def test_rpc_deltas_subtract_before_from_after_and_drop_zeros() -> None:
    lines = ["@@OPS before create sys OPEN 5", "@@OPS before create sys GETATTR 7",
             "@@OPS after create sys OPEN 105", "@@OPS after create sys GETATTR 7",
             "@@OPS after create sys CLOSE 100", "noise @@OPS after x y Z 1"]
    assert rpc_deltas(lines) == {("create", "sys"): {"OPEN": 100, "CLOSE": 100}}


def test_samples_divide_cpu_by_the_rpcs_sent() -> None:
    lines = (made_up("create", "sys", 1, 100, {"OPEN": 90, "CLOSE": 90})
             + made_up("seqwrite", "sys", 1, 512, {"WRITE": 512, "COMMIT": 1})
             + made_up("readdir", "sys", 1, 4, {"READDIR": 40})
             + ["@@CPUOP unknown sys 1 5 5"])
    cpu = {("create", "sys", 1): 0.9, ("seqwrite", "sys", 1): 0.25,
           ("readdir", "sys", 1): None}
    create, seqwrite, readdir = parse_samples("pynfsd", lines, cpu)
    assert (create.units(), create.cpu_per_unit()) == (90.0, pytest.approx(0.01))
    assert create.rpcs == {"OPEN": 90, "CLOSE": 90} and create.centis == 1234
    assert (seqwrite.units(), seqwrite.cpu_per_unit()) == (0.5, pytest.approx(0.5))
    assert readdir.units() == 4.0 and readdir.cpu_per_unit() is None


def samples_of(server: str, per_round: dict[int, float], phase: str = "create",
               sec: str = "sys", ops: int = 1000) -> list[Sample]:
    return [Sample(server, sec, phase, rnd, ops, 100, cpu, {"OPEN": ops, "CLOSE": ops})
            for rnd, cpu in per_round.items()]


def test_figures_take_the_median_and_spread_and_flag_coarse_phases() -> None:
    f = figure(samples_of("pynfsd", {1: 2.0, 2: 1.0, 3: 3.0}))
    assert f is not None
    assert (f.median, f.low, f.high, f.rounds) == (2000.0, 1000.0, 3000.0, 3)
    assert f.rpcs == {"CLOSE": 1000, "OPEN": 1000} and f.per_unit_rpcs == 2.0
    assert not f.coarse
    assert figure(samples_of("pynfsd", {1: 0.3})).coarse   # type: ignore[union-attr]
    assert figure(samples_of("pynfsd", {1: None})) is None  # type: ignore[dict-item]


def test_lines_pair_rounds_and_apply_the_bars() -> None:
    samples = (samples_of("pynfsd", {1: 2.0, 2: 3.0}) + samples_of("ganesha", {1: 1.0, 2: 1.5})
               + samples_of("pynfsd", {1: 1.0, 2: 1.0}, "randread", ops=2000)
               + samples_of("ganesha", {1: 1.0, 2: 0.5}, "randread", ops=2000))
    for s in samples:
        if s.phase == "randread":
            s.rpcs = {"READ": 2000}
    lines = {(ln.sec, ln.row.phase): ln for ln in lines_for(samples, "pynfsd", "ganesha",
                                                           ["sys"])}
    assert len(lines) == len(ROWS)
    create, randread = lines[("sys", "create")], lines[("sys", "randread")]
    assert create.ratio == pytest.approx(2.0) and create.verdict == "ABOVE"   # bar 1.5
    assert (create.ratio_low, create.ratio_high) == (pytest.approx(2.0), pytest.approx(2.0))
    assert randread.ratio == pytest.approx(500 / 375) and randread.verdict == "ABOVE"
    assert (randread.ratio_low, randread.ratio_high) == (pytest.approx(1.0), pytest.approx(2.0))
    assert lines[("sys", "stat")].verdict == "-" and lines[("sys", "stat")].ratio is None
    better = lines_for(samples_of("pynfsd", {1: 1.4}) + samples_of("ganesha", {1: 1.0}),
                       "pynfsd", "ganesha", ["sys"])[0]
    assert better.verdict == "ok"


def test_tables_name_every_row_unit_ratio_and_rpc_mix() -> None:
    samples = samples_of("pynfsd", {1: 2.0, 2: 2.2}) + samples_of("ganesha", {1: 0.4, 2: 0.5})
    lines = lines_for(samples, "pynfsd", "ganesha", ["sys", "krb5p"])
    table = cpu_table(lines)
    assert "| sys | file create | µs/op | 2,100 | 2,000–2,200 | 450 | 400–500 | " \
           "4.67 (4.40–5.00) | ≤ 1.5 | ABOVE † |" in table   # Ganesha: 0.4 s
    assert "| krb5p | sequential read | ms/GiB | - | - | - | - | - | ≤ 1.0 | - |" in table
    assert table.count("\n") == 2 * len(ROWS) + 1
    mix = rpc_table(lines)
    assert "CLOSE 1,000, OPEN 1,000" in mix and "2.00" in mix


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    samples = samples_of("pynfsd", {1: 2.0, 2: 2.2}) + samples_of("ganesha", {1: 0.4})
    samples += samples_of("pynfsd", {1: 0.2}, "seqwrite", "krb5p", ops=1024)
    path = tmp_path / "cpu.png"
    plot(lines_for(samples, "pynfsd", "ganesha", ["sys", "krb5p"]), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_parse_boot_reports_failures_and_an_unfinished_guest(tmp_path: Path) -> None:
    class Gone:
        name, pid = "pynfsd", None

    marks = CpuMarks(Gone())  # type: ignore[arg-type]
    boot = Boot("pynfsd", 1)
    lines = ["@@MOUNT sys 1.2.3.4:/e /mnt/bench nfs4 rw 0 0", "@@BENCHFAIL create sys: x",
             *made_up("create", "sys", 1, 10, {"OPEN": 10})]
    parse_boot(Transcript(lines=lines, aborted="phase create sys 1 still running"), marks, boot)
    assert boot.errors == ["@@BENCHFAIL create sys: x",
                           "VM stopped: phase create sys 1 still running"]
    assert len(boot.samples) == 1 and boot.samples[0].cpu is None
    done = Boot("ganesha", 2)
    parse_boot(Transcript(lines=["@@BENCHDONE"]), marks, done)
    assert done.errors == [] and done.samples == []


def test_sizes_per_flavour_reach_the_guest_config(tmp_path: Path) -> None:
    assert parse_sizes("512") == (("", 512),)
    params = Params(secs=("sys", "krb5i", "krb5p"), size_mb=parse_sizes("sys=1024,krb5p=64,=8"))
    config = guest_settings(params, 2)
    assert (config["ROUND"], config["SECS"]) == (2, "sys krb5i krb5p")
    assert [config[f"SIZE_MB_{s}"] for s in params.secs] == [1024, 8, 64]
    assert size_for(Params(size_mb=(("sys", 4),)), "krb5p") == 256
    fill_listing(tmp_path / "listing", 25)
    assert sorted(os.listdir(tmp_path / "listing")) == sorted(f"e{i}" for i in range(25))


@pytest.fixture(scope="module")
def fsops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (scripts/vm-deps.sh)")
    binary = tmp_path_factory.mktemp("fsops") / "fsops"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(binary), str(FSOPS)],
                   check=True, capture_output=True, text=True)
    return binary


def _fsops(binary: Path, *args: str) -> str:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_fsops_metadata_operations(fsops: Path, tmp_path: Path) -> None:
    d = str(tmp_path)
    assert _fsops(fsops, "create", d, "50") == "fsops create 50\n"
    assert sorted(os.listdir(d)) == sorted(f"f{i}" for i in range(50))
    assert _fsops(fsops, "stat", d, "50") == "fsops stat 50\n"
    assert _fsops(fsops, "readdir", d, "3", "0") == "fsops readdir 50\n"   # never drop caches
    assert _fsops(fsops, "rename", d, "50") == "fsops rename 50\n"
    assert sorted(os.listdir(d)) == sorted(f"g{i}" for i in range(50))
    assert _fsops(fsops, "unlink", d, "50") == "fsops unlink 50\n"
    assert os.listdir(d) == []
    failed = subprocess.run([str(fsops), "stat", d, "1"], capture_output=True, text=True)
    assert failed.returncode == 1 and "No such file" in failed.stderr
    assert subprocess.run([str(fsops), "bogus", d, "1"], capture_output=True).returncode == 2
    assert subprocess.run([str(fsops), "stat", d, "x"], capture_output=True).returncode == 2


def _direct_io_works(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True


def test_fsops_random_direct_io_keeps_the_size_and_writes_blocks(fsops: Path,
                                                                tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(bytes(256 * 4096))
    if not _direct_io_works(big):
        pytest.skip(f"{tmp_path} does not support O_DIRECT")
    assert _fsops(fsops, "randread", str(big), "200", "3") == "fsops randread 200\n"
    assert _fsops(fsops, "randwrite", str(big), "200", "3") == "fsops randwrite 200\n"
    data = big.read_bytes()
    assert len(data) == 256 * 4096
    blocks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    written = [b for b in blocks if b == b"\x5a" * 4096]
    assert 50 < len(written) < 200   # 200 writes at random blocks: many, some twice
    assert all(b in (bytes(4096), b"\x5a" * 4096) for b in blocks)


def test_a_run_dumped_to_json_loads_back_the_same(tmp_path: Path) -> None:
    params = Params(secs=("krb5p",), files=7, size_mb=(("krb5p", 3), ("", 5)))
    boot = Boot("ganesha", 2, samples_of("ganesha", {2: 0.7}, sec="krb5p"), ["x"], "m",
                ["note"], (1.5, 2.5), "/w")
    dump(tmp_path / "run.json", params, [boot])
    assert load(tmp_path / "run.json") == (params, [boot])
