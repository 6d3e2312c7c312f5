"""The native load generator of `bench.saturation`: build it, give it its calls, run it pinned.

`bench/loadgen/loadgen.c` (its header comment is the reference) keeps many pre-encoded
COMPOUNDs in flight over a few TCP connections and checks every reply.  `build()` compiles it
with gcc into a cache directory (``$PYNFSD_BENCH_CACHE``, else ``~/.cache/pynfsd-bench``), keyed
by a hash of the source, so a changed source is rebuilt and an unchanged one is not.  `Spec` is
what one run sends (`Spec.text()` is the file the program reads); `run()` starts it pinned to
one CPU with ``taskset``, and when the program says its measured window begins and ends, reads
the CPU time of the server and of the generator (`bench.cpu`, from ``/proc/PID/stat``) and the
busy time of every CPU (``/proc/stat``).  `parse_output` turns its lines into `GenOutput`; the
`Window` holds the figures of one run and whether it counts: the generator below
`GEN_LIMIT` of its core while the server uses at least `SERVER_FLOOR` of its own.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import cpu_seconds

SOURCE = Path(__file__).resolve().parent / "loadgen" / "loadgen.c"
GEN_LIMIT = 0.80      # a run counts only while the generator uses less of its core than this
SERVER_FLOOR = 0.90   # ... and the server at least this much of its own ("~100 %")


class GenError(RuntimeError):
    """The generator could not be built or did not run to its end."""


def cache_dir() -> Path:
    env = os.environ.get("PYNFSD_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pynfsd-bench"


def build(gcc: str = "gcc") -> Path:
    """The compiled generator, built now unless this source's build is cached."""
    source = SOURCE.read_bytes()
    exe = cache_dir() / f"loadgen-{hashlib.sha256(source).hexdigest()[:16]}"
    if exe.exists():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=exe.parent, prefix=".loadgen-")
    os.close(fd)
    cmd = [gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", tmp, str(SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(tmp)
        raise GenError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    os.replace(tmp, exe)   # atomic: a concurrent build of the same source is harmless
    return exe


@dataclass(frozen=True)
class SlotCalls:
    """openclose mode, one slot: its open-owner's next seqid and its OPEN and CLOSE calls with
    the offsets of their seqid fields and of the CLOSE's stateid."""

    seqid: int
    open_call: bytes
    open_seqid_at: int
    close_call: bytes
    close_seqid_at: int
    close_stateid_at: int


@dataclass(frozen=True)
class Spec:
    """One generator run: `requests` (simple mode) or one `SlotCalls` per slot (openclose)."""

    conns: int
    depth: int
    warmup: float
    seconds: float
    requests: tuple[bytes, ...] = ()
    expect: int = -1          # simple mode: every reply's COMPOUND4res length; -1: any
    slots: tuple[SlotCalls, ...] = ()
    drain: float = 10.0

    @property
    def in_flight(self) -> int:
        """Calls kept in flight: one per slot."""
        return self.conns * self.depth

    def text(self) -> str:
        mode = "openclose" if self.slots else "simple"
        lines = [f"mode {mode}", f"conns {self.conns}", f"depth {self.depth}",
                 f"warmup {self.warmup}", f"seconds {self.seconds}", f"drain {self.drain}",
                 f"expect {self.expect}"]
        lines += [f"req {r.hex()}" for r in self.requests]
        lines += [f"slot {s.seqid} {s.open_seqid_at} {s.close_seqid_at} {s.close_stateid_at} "
                  f"{s.open_call.hex()} {s.close_call.hex()}" for s in self.slots]
        return "\n".join(lines) + "\n"


@dataclass
class GenOutput:
    """What the generator printed: (replies, ops, errors) at begin, end and done."""

    begin: tuple[int, int, int] = (0, 0, 0)
    end: tuple[int, int, int] = (0, 0, 0)
    window_ns: int = 0
    done: tuple[int, int, int] = (0, 0, 0)
    lost: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    complete: bool = False


def parse_output(lines: list[str]) -> GenOutput:
    """The generator's stdout lines (see loadgen.c); unknown lines raise GenError."""
    out = GenOutput()
    for line in lines:
        words = line.split()
        if not words or words == ["ready"]:
            continue
        head, nums = words[0], words[1:]
        if head == "begin" and len(nums) == 3:
            out.begin = (int(nums[0]), int(nums[1]), int(nums[2]))
        elif head == "end" and len(nums) == 4:
            out.end, out.window_ns = (int(nums[0]), int(nums[1]), int(nums[2])), int(nums[3])
        elif head == "error" and len(nums) == 2:
            out.kinds[nums[0]] = out.kinds.get(nums[0], 0) + int(nums[1])
        elif head == "done" and len(nums) == 4:
            out.done, out.lost = (int(nums[0]), int(nums[1]), int(nums[2])), int(nums[3])
            out.complete = True
        else:
            raise GenError(f"unexpected generator output {line!r}")
    return out


@dataclass(frozen=True)
class Sample:
    """CPU times at one instant: wall clock, server and generator process, busy per CPU."""

    wall: float
    server: float | None
    gen: float | None
    busy: dict[int, float]


def cpu_busy() -> dict[int, float]:
    """Seconds each CPU has been busy (all but idle and iowait), from /proc/stat."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            t = [int(x) for x in ticks]
            out[int(name[3:])] = (sum(t[:8]) - t[3] - t[4]) / tck
    return out


def sample(server_pid: int, gen_pid: int) -> Sample:
    return Sample(time.monotonic(), cpu_seconds(server_pid), cpu_seconds(gen_pid), cpu_busy())


@dataclass
class Window:
    """One generator run against one server: the measured window and every error of the run."""

    out: GenOutput
    start: Sample
    stop: Sample
    server_cpu: int
    gen_cpu: int

    @property
    def ops(self) -> int:
        return self.out.end[1] - self.out.begin[1]

    @property
    def ops_per_s(self) -> float:
        return self.ops / (self.out.window_ns / 1e9) if self.out.window_ns else 0.0

    @property
    def errors(self) -> int:
        return self.out.done[2]

    def _use(self, a: float | None, b: float | None) -> float | None:
        wall = self.stop.wall - self.start.wall
        return None if a is None or b is None or wall <= 0 else (b - a) / wall

    @property
    def server_use(self) -> float | None:
        """The server process's CPU over wall time in the window (1.0: all of one core)."""
        return self._use(self.start.server, self.stop.server)

    @property
    def gen_use(self) -> float | None:
        return self._use(self.start.gen, self.stop.gen)

    def core_use(self, cpu: int) -> float | None:
        return self._use(self.start.busy.get(cpu), self.stop.busy.get(cpu))

    @property
    def ops_per_cpu_s(self) -> float | None:
        """Operations per second of server CPU: the load-insensitive capacity figure."""
        use = self.server_use
        return self.ops_per_s / use if use else None

    @property
    def gen_us_per_call(self) -> float | None:
        """The generator's CPU µs per call answered in the window: what it costs itself."""
        calls = self.out.end[0] - self.out.begin[0]
        if self.start.gen is None or self.stop.gen is None or not calls:
            return None
        return (self.stop.gen - self.start.gen) / calls * 1e6

    def why_not_counted(self) -> str:
        """'' when the run counts, else the reasons it does not."""
        why = []
        if not self.out.complete:
            why.append("generator did not finish")
        if self.gen_use is None or self.gen_use >= GEN_LIMIT:
            why.append(f"generator at {pct(self.gen_use)} of its core")
        if self.server_use is None or self.server_use < SERVER_FLOOR:
            why.append(f"server at {pct(self.server_use)} of its core")
        if self.errors:
            why.append(f"{self.errors} errors")
        if not self.ops:
            why.append("no operation completed")
        return "; ".join(why)


def pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.0f} %"


def run(exe: Path, spec: Spec, port: int, server_pid: int, gen_cpu: int,
        server_cpu: int, workdir: Path, host: str = "127.0.0.1") -> Window:
    """Run the generator pinned to `gen_cpu` against host:port; raises GenError if it fails."""
    spec_path = workdir / "loadgen.spec"
    spec_path.write_text(spec.text())
    argv = ["taskset", "-c", str(gen_cpu), str(exe), host, str(port), str(spec_path)]
    samples: dict[str, Sample] = {}
    lines: list[str] = []
    with open(workdir / "loadgen.err", "w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("begin", "end")):
                samples[line.split()[0]] = sample(server_pid, proc.pid)
        code = proc.wait()
        err.seek(0)
        problem = err.read().strip()
    out = parse_output(lines)
    if code != 0 or not out.complete or set(samples) != {"begin", "end"}:
        raise GenError(f"generator exit {code}: {problem or 'no output'}; printed {lines[-3:]}")
    return Window(out, samples["begin"], samples["end"], server_cpu, gen_cpu)
