"""The grace period after a server restart (RFC 7530 §9.6.2) and when it may end early.

Theory of operation
-------------------
A `GracePeriod` starts with the co_ownerids the client store recorded before the restart.
Until it ends, the state manager serves only reclaims (OPEN CLAIM_PREVIOUS, LOCK with
reclaim) and answers other OPEN, LOCK, LOCKT and I/O with special stateids NFS4ERR_GRACE.

It ends after `duration` seconds, or earlier once no recorded client can still reclaim:

- with no recorded clients there is no grace at all;
- a recorded client is *done* once it has confirmed a client id in this boot and then sends
  a non-reclaim OPEN or LOCK (an NFSv4.0 client has no RECLAIM_COMPLETE; it resumes normal
  opens only after its reclaim pass, RFC 7530 §9.6.2);
- a recorded client that confirmed a client id in this boot but sent no reclaim within a
  lease of doing so (a new incarnation, which lost its state) is done too, as is one whose
  state is dropped (`client_gone`: lease cancelled, revoked, replaced);
- when every recorded client is done, grace ends.

The reason is logged once and kept for `status()`.  `on_end` runs once when grace ends (the
client store then forgets clients that did not come back).  Sans-IO: time comes from the
injected clock and every check is lazy, made when the state manager asks `in_grace()`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.store import ClientStore

log = logging.getLogger("pynfsd.nfs4.grace")  # the name operators filter on


class GraceTracker(Protocol):
    """The grace period as the state manager sees it (the real one is `GracePeriod`).

    `in_grace` answers whether only reclaims are served now; the other hooks report each
    recorded client's progress so grace can end early once none can still reclaim.
    """

    def in_grace(self) -> bool: ...

    def client_confirmed(self, ownerid: bytes) -> None: ...

    def reclaimed(self, ownerid: bytes) -> None: ...

    def non_reclaim(self, ownerid: bytes) -> None: ...

    def client_gone(self, ownerid: bytes) -> None: ...


class FixedGrace:
    """A `GraceTracker` that only asks a callable whether grace is on (tests, no tracking)."""

    def __init__(self, in_grace: Callable[[], bool] | None = None) -> None:
        self._in_grace = in_grace if in_grace is not None else (lambda: False)

    def in_grace(self) -> bool:
        return self._in_grace()

    def client_confirmed(self, ownerid: bytes) -> None:
        return None

    def reclaimed(self, ownerid: bytes) -> None:
        return None

    def non_reclaim(self, ownerid: bytes) -> None:
        return None

    def client_gone(self, ownerid: bytes) -> None:
        return None


@dataclass(slots=True)
class _Progress:
    """How far one recorded client has come in this grace period."""

    confirmed_at: float | None = None
    reclaimed: bool = False


def _clients(n: int) -> str:
    return f"{n} recorded client" if n == 1 else f"all {n} recorded clients"


class GracePeriod:
    """Reclaim-only period after a restart; implements `GraceTracker`."""

    def __init__(
        self,
        clock: Callable[[], float],
        duration: float,
        recorded: Iterable[bytes],
        *,
        lease: float | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self.started = clock()
        self.duration = duration
        self.lease = duration if lease is None else lease
        self._on_end = on_end
        self._pending = {ownerid: _Progress() for ownerid in recorded}
        self.recorded = len(self._pending)
        self.reclaimed_clients: set[bytes] = set()
        self._deadlines: deque[tuple[float, bytes]] = deque()  # (confirmed_at + lease, ownerid)
        self.ended_reason: str | None = None
        if not self._pending:
            self._end("no grace: no clients were recorded")
        elif duration <= 0:
            self._end("no grace: the grace period is disabled")

    # -- queries --------------------------------------------------------------------------

    def in_grace(self) -> bool:
        """Whether only reclaims are served now (ends grace lazily when it is over)."""
        if self.ended_reason is not None:
            return False
        now = self._clock()
        if now >= self.started + self.duration:
            self._end(f"grace ended after {self.duration:g} s")
        else:
            self._expire_silent(now)
        return self.ended_reason is None

    def status(self) -> dict[str, object]:
        """For the admin `status` command: in_grace, seconds_left, counts, ended_reason."""
        active = self.in_grace()
        left = self.started + self.duration - self._clock() if active else 0.0
        return {
            "in_grace": active,
            "seconds_left": max(0.0, left),
            "recorded": self.recorded,
            "reclaimed": len(self.reclaimed_clients),
            "pending": len(self._pending) if active else 0,
            "ended_reason": self.ended_reason,
        }

    def waiting(self) -> list[bytes]:
        """The recorded clients that may still reclaim (none once grace is over)."""
        return list(self._pending) if self.in_grace() else []

    # -- progress (the GraceTracker hooks) --------------------------------------------------

    def client_confirmed(self, ownerid: bytes) -> None:
        progress = self._pending.get(ownerid)
        if progress is not None and self.ended_reason is None:
            progress.confirmed_at = now = self._clock()
            self._deadlines.append((now + self.lease, ownerid))

    def reclaimed(self, ownerid: bytes) -> None:
        progress = self._pending.get(ownerid)
        if progress is not None:
            progress.reclaimed = True
            self.reclaimed_clients.add(ownerid)

    def non_reclaim(self, ownerid: bytes) -> None:
        """A non-reclaim OPEN/LOCK: an NFSv4.0 client sends one only after reclaiming."""
        self._done(ownerid)

    def client_gone(self, ownerid: bytes) -> None:
        self._done(ownerid)

    # -- ending ---------------------------------------------------------------------------

    def _expire_silent(self, now: float) -> None:
        """Recorded clients that came back but reclaimed nothing within a lease are done."""
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, ownerid = self._deadlines.popleft()
            progress = self._pending.get(ownerid)
            if progress is None or progress.reclaimed or progress.confirmed_at is None:
                continue
            if progress.confirmed_at + self.lease == deadline:  # its latest confirm
                self._done(ownerid)

    def _done(self, ownerid: bytes) -> None:
        if self._pending.pop(ownerid, None) is None or self.ended_reason is not None:
            return
        if not self._pending:
            elapsed = self._clock() - self.started
            self._end(
                f"grace ended early: {_clients(self.recorded)} finished reclaiming "
                f"({len(self.reclaimed_clients)} reclaimed state, after {elapsed:.0f} s)"
            )

    def _end(self, reason: str) -> None:
        self.ended_reason = reason
        self._pending.clear()
        self._deadlines.clear()
        log.info("%s", reason)
        if self._on_end is not None:
            self._on_end()


def check_reclaim(grace: GraceTracker, store: ClientStore, ownerid: bytes, reclaim: bool) -> None:
    """Only reclaims during grace, and reclaims only during grace (§9.6.2)."""
    if not reclaim:
        grace.non_reclaim(ownerid)  # may end grace early
        if grace.in_grace():
            raise E.NFS4ERR_GRACE()  # §9.6.2: MUST reject non-reclaim requests
    elif not grace.in_grace():
        raise E.NFS4ERR_NO_GRACE()  # §9.6.2: reclaim outside the grace period
    elif not store.may_reclaim(ownerid):
        raise E.NFS4ERR_RECLAIM_BAD("client held no state before the restart")  # §9.6.3.4.3
    else:
        grace.reclaimed(ownerid)
