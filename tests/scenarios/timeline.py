"""A readable timeline of what each actor did and what the server answered.

    tl = Timeline("a: two containers share a hostname")
    tl.log("A", 'SETCLIENTID id="ctr" principal=sys:0 -> clientid 0x...')
    tl.check(status == N.NFS4ERR_CLID_INUSE, "the second client is refused")

Every line is printed at once (visible with `pytest -s`) and kept, so a failed `check` carries
the whole story in its assertion message; the conftest also attaches it to the test report.
"""

from __future__ import annotations

import threading
import time

from pynfsd.gen import nfs4 as N


def status_name(status: int) -> str:
    return N.nfsstat4_names.get(status, str(status))


class Timeline:
    """Lines of `t=<seconds since start>  <actor>  <event>`, printed as they happen."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self._lock = threading.Lock()    # guests' and helpers' reader threads log too
        print(f"\n=== {title}", flush=True)

    def log(self, actor: str, event: str) -> None:
        line = f"t={time.monotonic() - self.t0:6.2f}s  {actor:<6} {event}"
        with self._lock:
            self.lines.append(line)
            print(line, flush=True)

    def note(self, event: str) -> None:
        """A line from the narrator: waits, server restarts, conclusions."""
        self.log("--", event)

    def text(self) -> str:
        return "\n".join([f"=== {self.title}", *self.lines])

    def check(self, condition: bool, what: str) -> None:
        """Assert `condition`; the failure message holds `what` and the timeline so far."""
        if not condition:
            self.log("!!", f"FAILED: {what}")
            raise AssertionError(f"{what}\n{self.text()}")
        self.log("ok", what)

    def sleep(self, seconds: float, why: str) -> None:
        self.note(f"wait {seconds:.1f}s: {why}")
        time.sleep(seconds)
