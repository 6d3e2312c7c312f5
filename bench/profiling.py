"""Profiling hooks for the benchmark: py-spy per phase, or the whole server under cProfile.

``PhaseProfiler`` is called by the host at the guest's begin/end marks. ``PySpyProfiler``
attaches ``py-spy record --format raw`` to the pynfsd process for each phase of the first
repetition and writes ``pyspy-<phase>.txt`` (collapsed stacks; ``summarize_collapsed`` ranks
functions by self and inclusive samples). ``CProfiledPynfsd`` runs the server through
``bench.profiled_serve`` so the whole run lands in one pstats file with call counts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.vm.network import Network
from tests.vm.servers import PynfsdServer


class PhaseProfiler:
    """No profiling: the default hooks do nothing."""

    def begin(self, phase: str, rep: int, pid: int) -> None:
        """The guest is about to start timing ``phase`` against server ``pid``."""

    def end(self, phase: str, rep: int, pid: int) -> None:
        """The guest has finished timing ``phase``."""

    def close(self) -> None:
        """Stop anything still running."""


class PySpyProfiler(PhaseProfiler):
    """``py-spy record`` on the server during each phase of repetition 1."""

    def __init__(self, out_dir: Path, rate: int = 250) -> None:
        if shutil.which("py-spy") is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out_dir = out_dir
        self.rate = rate
        self._proc: subprocess.Popen[bytes] | None = None

    def output(self, phase: str) -> Path:
        return self.out_dir / f"pyspy-{phase}.txt"

    def begin(self, phase: str, rep: int, pid: int) -> None:
        if rep != 1:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # --gil: only the thread holding the GIL is sampled, i.e. where Python code runs
        # (idle pool workers and the event loop's epoll would otherwise dominate).
        argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate",
                str(self.rate), "--gil", "--threads", "--output", str(self.output(phase))]
        log = open(self.out_dir / f"pyspy-{phase}.log", "wb")
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def end(self, phase: str, rep: int, pid: int) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


class CProfiledPynfsd(PynfsdServer):
    """pynfsd run through ``bench.profiled_serve``: one pstats file for the whole run."""

    def __init__(self, workdir: Path, network: Network, pstats_out: Path) -> None:
        super().__init__(workdir, network)
        self.pstats_out = pstats_out

    def command(self) -> list[str]:
        argv = super().command()
        serve = argv.index("serve")
        return [sys.executable, "-m", "bench.profiled_serve", str(self.pstats_out),
                *argv[serve:]]


# Leaves that mean "waiting": a pool worker blocked on its queue. The event loop's own native
# code (uvloop) shows up as a ``Runner.run`` leaf: idle epoll and real loop work alike.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py",)


class VariantPynfsd(PynfsdServer):
    """pynfsd with an experimental change patched in (``bench.experiment_serve``)."""

    def __init__(self, workdir: Path, network: Network, variant: str) -> None:
        super().__init__(workdir, network)
        self.variant = variant

    def command(self) -> list[str]:
        argv = super().command()
        serve = argv.index("serve")
        return [sys.executable, "-m", "bench.experiment_serve", self.variant, *argv[serve:]]


def _frames(stack: str) -> list[str]:
    """Frames of one collapsed stack, without the leading thread/process frames."""
    return [f for f in stack.split(";") if not f.startswith(("thread (", "process "))]


def summarize_collapsed(path: Path, top: int = 20) -> str:
    """Top functions of a py-spy raw profile by self samples and by inclusive samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        if frames and frames[-1].startswith(IDLE_LEAVES):
            continue
        total += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"{path.name}: {total} non-idle samples"]
    for title, counter in (("self", own), ("inclusive", incl)):
        lines.append(f"  -- top {top} by {title} samples --")
        lines += [f"  {100 * n / max(total, 1):5.1f}%  {frame}"
                  for frame, n in counter.most_common(top)]
    return "\n".join(lines)
