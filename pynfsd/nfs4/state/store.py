"""Stable storage of NFSv4.0 client records: the embedded file store (RFC 7530 §9.6.2, §9.6.3.4).

The interface contract (`ClientStore`, below)
--------------------------------------------------------------
A store answers one question after a restart: which clients held state before it, and so may
reclaim in this boot's grace period.  The state manager drives it from the event loop thread:

- `client_has_state(ownerid, principal)`: a confirmed client got its first open of this boot
  (knfsd records a client at the same moment).  The record must be durable before the reply
  to that OPEN leaves the server.
- `client_removed(ownerid)`: the client's state went (lease cancelled, revoked, or replaced by
  a rebooted client's new incarnation).  Its record goes, and it may no longer reclaim now:
  another client may since have been granted conflicting state (§9.6.3.4.1).
- `may_reclaim(ownerid)`: the client had a record when this boot started and has not lost it.
- `grace_done()`: grace ended.  Records of clients that did not come back go, so that they
  cannot reclaim after a further restart (the second edge condition of §9.6.3.4.2).
- `client_confirmed(ownerid, principal)`: a client id was confirmed (this store ignores it).
- `async sync(run_blocking)`: returns once everything queued before the call is durable; a
  store whose medium is unreachable raises `StoreUnavailable` (the file store never does).

The hooks never block: they only queue.  `sync` performs the queued writes and removals in a
worker thread (`run_blocking`, e.g. a `pynfsd.blocking.Runner`'s `run`); the op layer awaits it before
replying.  A distributed store implements the same six calls over its own medium.

The file store
--------------
One small JSON file per recorded client in `<state-dir>/clients/`, named after a hash of the
co_ownerid (`<blake2b-128 hex>.rec`) and holding the co_ownerid, the principal and the time
it was written.  A record is written to `.tmp-<name>`, fsync'ed, renamed over the record and
the directory fsync'ed, so a crash leaves either the old or the new record, never part of
one; leftover temp files are removed at start-up.  Files that are not valid records are
logged and skipped.  I/O errors are logged and do not stop the server: the client keeps its
state, it just may not be able to reclaim after a restart.  The start-up load is synchronous
and runs once, before the server accepts requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

log = logging.getLogger("pynfsd.nfs4.clientstore")  # the name operators filter on


# runs a blocking callable in a worker thread (a `pynfsd.blocking.Runner`'s `run`)
RunBlocking = Callable[[Callable[[], None]], Awaitable[None]]


class StoreUnavailable(Exception):
    """`sync` could not make the queued changes durable now (a distributed store whose
    medium cannot be reached); they stay queued.  OPEN answers NFS4ERR_DELAY."""


class ClientStore(Protocol):
    """Stable storage of client records (the embedded one is `FileClientStore`).

    The state manager calls the synchronous hooks on the event loop thread; they must not
    block (a store queues its I/O and performs it in `sync`, which the op layer awaits before
    replying to the operation whose record must be durable):

    - `client_confirmed`: a client id was confirmed (stores may ignore it);
    - `client_has_state`: a confirmed client got its first open of this server boot: record it;
    - `client_removed`: the client's state went (expiry, revocation, a rebooted client's new
      incarnation): forget its record, and it may no longer reclaim in this boot;
    - `may_reclaim`: whether a client id string held state before the restart (grace, §9.6.2);
    - `grace_done`: the grace period ended: records of clients that did not come back go, so
      they cannot reclaim after a later restart (§9.6.3.4.3, second edge condition).
    """

    def client_confirmed(self, ownerid: bytes, principal: str) -> None: ...

    def client_has_state(self, ownerid: bytes, principal: str) -> None: ...

    def client_removed(self, ownerid: bytes) -> None: ...

    def may_reclaim(self, ownerid: bytes) -> bool: ...

    def grace_done(self) -> None: ...

    async def sync(self, run_blocking: RunBlocking) -> None: ...


class ServerStore(ClientStore, Protocol):
    """What the server also asks of its store: who may reclaim at start, and a final flush."""

    def recorded(self) -> frozenset[bytes]: ...

    def flush(self) -> None: ...


class NullClientStore:
    """A `ClientStore` that remembers nothing: no client may reclaim."""

    def client_confirmed(self, ownerid: bytes, principal: str) -> None:
        return None

    def client_has_state(self, ownerid: bytes, principal: str) -> None:
        return None

    def client_removed(self, ownerid: bytes) -> None:
        return None

    def may_reclaim(self, ownerid: bytes) -> bool:
        return False

    def grace_done(self) -> None:
        return None

    async def sync(self, run_blocking: RunBlocking) -> None:
        return None


RECORD_VERSION = 1
MAX_RECORD_BYTES = 16 * 1024  # a record is ~2.2 KiB at most (1024-byte co_ownerid in hex)
TEMP_PREFIX = ".tmp-"
_RECORD_NAME = re.compile(r"[0-9a-f]{32}\.rec")


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """What is kept of one client: its co_ownerid, principal and when it was recorded."""

    ownerid: bytes
    principal: str
    time: float


def record_id(ownerid: bytes) -> str:
    """A client's record name without suffix (a hash: co_ownerids are arbitrary bytes); the
    file store's file and a cluster's etcd key are named by it."""
    return hashlib.blake2b(ownerid, digest_size=16).hexdigest()


def record_name(ownerid: bytes) -> str:
    return record_id(ownerid) + ".rec"


def encode_record(rec: ClientRecord) -> bytes:
    body = {
        "version": RECORD_VERSION,
        "ownerid": rec.ownerid.hex(),
        "principal": rec.principal,
        "time": rec.time,
    }
    return json.dumps(body, sort_keys=True).encode() + b"\n"


def decode_record(data: bytes) -> ClientRecord:
    """Parse a record file; ValueError (or a subclass) if it is not one."""
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("version") != RECORD_VERSION:
        raise ValueError("not a version 1 client record")
    ownerid, principal, when = body.get("ownerid"), body.get("principal"), body.get("time")
    if not isinstance(ownerid, str) or not isinstance(principal, str):
        raise ValueError("ownerid and principal must be strings")
    if not isinstance(when, int | float) or isinstance(when, bool):
        raise ValueError("time must be a number")
    return ClientRecord(bytes.fromhex(ownerid), principal, float(when))


class FileClientStore:
    """The embedded `ClientStore`: one atomically written file per client (see above)."""

    def __init__(
        self, directory: str | os.PathLike[str], wallclock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self._wallclock = wallclock
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._previous: dict[bytes, ClientRecord] = self._load()  # may reclaim in this boot
        self._current: dict[bytes, ClientRecord] = {}  # recorded in this boot
        self._pending: dict[bytes, ClientRecord | None] = {}  # None: remove the record
        self._queued = 0  # changes queued so far
        self._durable = 0  # changes known to be on disk (or given up on after an error)
        self._flushing: asyncio.Future[None] | None = None

    # -- start-up ---------------------------------------------------------------------------

    def _load(self) -> dict[bytes, ClientRecord]:
        records: dict[bytes, ClientRecord] = {}
        try:
            paths = sorted(self.directory.iterdir())
        except OSError as e:  # §9.6.3.4.3: damaged storage, so no client may reclaim
            log.error("cannot read client records in %s: %s", self.directory, e)
            return records
        for path in paths:
            rec = self._load_one(path)
            if rec is not None:
                records[rec.ownerid] = rec
        log.info("%d client record(s) in %s", len(records), self.directory)
        return records

    def _load_one(self, path: Path) -> ClientRecord | None:
        """One directory entry as a record, or None (logged) if it is not a valid one."""
        if path.name.startswith(TEMP_PREFIX):
            log.info("removing %s, left by an interrupted write", path)
            try:
                _unlink_quietly(path)
            except OSError as e:
                log.warning("cannot remove %s: %s", path, e)
            return None
        if not _RECORD_NAME.fullmatch(path.name) or not path.is_file():
            log.warning("ignoring %s: not a client record", path)
            return None
        try:
            with path.open("rb") as f:
                data = f.read(MAX_RECORD_BYTES + 1)
            if len(data) > MAX_RECORD_BYTES:
                raise ValueError("too large")
            rec = decode_record(data)
        except (OSError, ValueError) as e:
            log.warning("ignoring client record %s: %s", path, e)
            return None
        if record_name(rec.ownerid) != path.name:
            log.warning("ignoring client record %s: its name does not match its ownerid", path)
            return None
        return rec

    # -- the ClientStore hooks (event loop, non-blocking) ---------------------------------

    def recorded(self) -> frozenset[bytes]:
        """The co_ownerids allowed to reclaim in this boot, as loaded at start-up."""
        return frozenset(self._previous)

    def records(self) -> list[ClientRecord]:
        """Every record as it will be on disk once the queue is flushed."""
        merged = {**self._previous, **self._current}
        return sorted(merged.values(), key=lambda r: r.ownerid)

    def client_confirmed(self, ownerid: bytes, principal: str) -> None:
        return None  # recorded when it first holds state, not at every confirm

    def client_has_state(self, ownerid: bytes, principal: str) -> None:
        rec = ClientRecord(ownerid, principal, self._wallclock())
        self._current[ownerid] = rec
        self._queue(ownerid, rec)

    def client_removed(self, ownerid: bytes) -> None:
        current = self._current.pop(ownerid, None)
        previous = self._previous.pop(ownerid, None)
        if current is not None or previous is not None:
            self._queue(ownerid, None)

    def may_reclaim(self, ownerid: bytes) -> bool:
        return ownerid in self._previous

    def grace_done(self) -> None:
        for ownerid in self._previous:
            if ownerid not in self._current:
                self._queue(ownerid, None)
        self._previous = {}

    def _queue(self, ownerid: bytes, rec: ClientRecord | None) -> None:
        self._pending[ownerid] = rec
        self._queued += 1

    # -- durability -------------------------------------------------------------------------

    async def sync(self, run_blocking: RunBlocking) -> None:
        """Return once every change queued before the call is on disk (one flush at a time)."""
        target = self._queued
        while self._durable < target:
            if self._flushing is None:
                self._flushing = asyncio.ensure_future(self._flush_in(run_blocking))
            await asyncio.shield(self._flushing)

    async def _flush_in(self, run_blocking: RunBlocking) -> None:
        batch, upto = self._pending, self._queued
        self._pending = {}
        try:
            await run_blocking(partial(self._apply, batch))
        except Exception:
            log.exception("client records in %s not written", self.directory)
        finally:
            self._durable = max(self._durable, upto)
            self._flushing = None

    def flush(self) -> None:
        """Write everything queued now, in this thread (start-up, shutdown and tests)."""
        batch, upto = self._pending, self._queued
        self._pending = {}
        self._apply(batch)
        self._durable = max(self._durable, upto)

    def _apply(self, batch: dict[bytes, ClientRecord | None]) -> None:
        """Write and remove records, then fsync the directory once (worker thread)."""
        if not batch:
            return
        for ownerid, rec in batch.items():
            try:
                if rec is None:
                    _unlink_quietly(self.directory / record_name(ownerid))
                else:
                    self._write(rec)
            except OSError as e:
                log.error(
                    "cannot update the client record of %r in %s: %s", ownerid, self.directory, e
                )
        try:
            _fsync_dir(self.directory)
        except OSError as e:
            log.error("cannot fsync %s: %s", self.directory, e)

    def _write(self, rec: ClientRecord) -> None:
        name = record_name(rec.ownerid)
        tmp = self.directory / (TEMP_PREFIX + name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = memoryview(encode_record(rec))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / name)  # atomic: the old record or the new one


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
