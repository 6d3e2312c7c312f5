"""``python -m bench.profiled_serve [--cpu] OUT.pstats serve ...``: pynfsd under cProfile, all threads.

With ``--cpu`` each thread's profile counts that thread's CPU time (``time.thread_time``)
instead of wall time: a call that waits (for the GIL, a lock, the disk) then costs only what
it computes, so the figures add up to the server's CPU.

cProfile only follows the thread that enabled it, and pynfsd runs filesystem calls on a thread
pool. Every thread started after ``threading.setprofile`` gets its own ``cProfile.Profile``
(enabled from inside that thread on its first profiling event); at exit all of them are merged
into one pstats file, so call counts cover the event loop and the workers alike.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from types import FrameType
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_timer: list[Any] = []  # [time.thread_time] with --cpu


def _enable_in_thread(frame: FrameType, event: str, arg: Any) -> None:
    """First profiling event of a new thread: replace this hook with a real profiler."""
    profile = _new_profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()


def _new_profile() -> cProfile.Profile:
    return cProfile.Profile(*_timer)


class _Snapshot:
    """What ``pstats.Stats`` loads from: a ``stats`` dict and a no-op ``create_stats``."""

    def __init__(self, profile: cProfile.Profile) -> None:
        profile.snapshot_stats()  # type: ignore[attr-defined]  # not disable(): other thread
        self.stats = profile.stats  # type: ignore[attr-defined]

    def create_stats(self) -> None:
        pass


def write_stats(main: cProfile.Profile, out: str) -> None:
    main.disable()
    with _lock:
        others = list(_profiles)
    stats = pstats.Stats(_Snapshot(main))  # type: ignore[arg-type]
    for profile in others:
        snapshot = _Snapshot(profile)
        if snapshot.stats:  # pstats refuses an empty profile (a thread that ran nothing yet)
            stats.add(snapshot)  # type: ignore[arg-type]
    stats.dump_stats(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--cpu"]:
        _timer.append(time.thread_time)
        argv = argv[1:]
    if len(argv) < 2:
        print("usage: python -m bench.profiled_serve [--cpu] OUT.pstats serve [pynfsd args]",
              file=sys.stderr)
        return 2
    from pynfsd.cli import main as pynfsd_main
    threading.setprofile(_enable_in_thread)
    profile = _new_profile()
    profile.enable()
    try:
        return pynfsd_main(argv[1:])
    finally:
        write_stats(profile, argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
