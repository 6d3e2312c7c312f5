"""Callback paths of every confirmed client: what the server calls (`CallbackClient`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.callback.channel import CallbackChannel
from pynfsd.nfs4.callback.codec import (
    CB_COMPOUND,
    CB_NULL,
    cb_getattr,
    cb_recall,
    decode_cb_compound_res,
    encode_cb_compound,
)
from pynfsd.nfs4.callback.errors import BadCallbackReply, CallbackError
from pynfsd.nfs4.callback.initiator import ServerGssIdentity
from pynfsd.nfs4.callback.path import CallbackPath, PathState
from pynfsd.nfs4.callback.target import CallbackTarget

log = logging.getLogger(__name__)


class HasCallback(Protocol):
    """A client record as the state manager keeps it (`callback` a `CallbackTarget`)."""

    clientid: int
    callback: object


@dataclass(slots=True)
class _Entry:
    target: CallbackTarget
    path: CallbackPath
    channel: CallbackChannel | None = None
    tasks: set[asyncio.Task[CallbackPath]] = field(default_factory=set)


class CallbackClient:
    """Callback paths of every confirmed client; what the server calls.

    Wiring: after SETCLIENTID_CONFIRM succeeds, call `confirmed(clientid, target)` with the
    `CallbackTarget` recorded at SETCLIENTID; when a client's state is purged, `forget` (or
    `retain` the clients still confirmed).
    """

    def __init__(self, gss: ServerGssIdentity | None = None, *, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gss = gss
        self.timeout = timeout
        self._clock = clock
        self._entries: dict[int, _Entry] = {}

    def path(self, clientid: int) -> CallbackPath:
        entry = self._entries.get(clientid)
        return entry.path if entry is not None else CallbackPath()

    def confirmed(self, clientid: int, target: object) -> asyncio.Task[CallbackPath]:
        """Record the client's (possibly new) callback and probe it in the background."""
        self._register(clientid, target)
        task = asyncio.get_running_loop().create_task(self.probe(clientid))
        entry = self._entries[clientid]
        entry.tasks.add(task)
        task.add_done_callback(entry.tasks.discard)
        return task

    def _register(self, clientid: int, target: object) -> _Entry:
        if not isinstance(target, CallbackTarget):
            raise TypeError(f"expected a CallbackTarget, got {type(target).__name__}")
        entry = self._entries.get(clientid)
        if entry is None:
            entry = self._entries[clientid] = _Entry(target, CallbackPath())
        self._drop_channel(entry)
        entry.target = target
        entry.path.reset(self._clock())
        return entry

    async def probe(self, client: int | HasCallback) -> CallbackPath:
        """CB_NULL (RFC 7530 §17.1: confirms the path); the path is up or down afterwards."""
        if not isinstance(client, int):
            self._register(client.clientid, client.callback)
            client = client.clientid
        entry = self._entry(client)
        generation = entry.path.probing(self._clock())
        try:
            await self._channel(entry).call(CB_NULL, b"")
        except CallbackError as e:
            self._record(client, entry, generation, e.reason)
        else:
            self._record(client, entry, generation, None)
        return entry.path

    async def compound(self, clientid: int, ops: Sequence[N.nfs_cb_argop4],
                       tag: bytes = b"") -> N.CB_COMPOUND4res:
        """One CB_COMPOUND (§17.2); a failure marks the path down and raises CallbackError."""
        entry = self._entry(clientid)
        generation = entry.path.generation
        args = encode_cb_compound(entry.target.ident, ops, tag)
        try:
            res = decode_cb_compound_res(await self._channel(entry).call(CB_COMPOUND, args), ops)
        except CallbackError as e:
            self._record(clientid, entry, generation, e.reason)
            raise
        self._record(clientid, entry, generation, None)
        return res

    async def recall(self, clientid: int, stateid: N.stateid4, truncate: bool, fh: bytes) -> int:
        """CB_RECALL of one delegation: the client's nfsstat4."""
        return (await self.compound(clientid, [cb_recall(stateid, truncate, fh)])).status

    async def getattr(self, clientid: int, fh: bytes, attrs: list[int]) -> N.CB_GETATTR4res:
        res = await self.compound(clientid, [cb_getattr(fh, attrs)])
        if not res.resarray:
            raise BadCallbackReply(f"CB_GETATTR failed before the op: status {res.status}")
        value: N.CB_GETATTR4res = res.resarray[0].value
        return value

    def forget(self, clientid: int) -> None:
        entry = self._entries.pop(clientid, None)
        if entry is not None:
            self._drop_channel(entry)
            for task in entry.tasks:
                task.cancel()

    def retain(self, live: Container[int]) -> int:
        """Forget every client not in `live` (the ids the state manager still has confirmed):
        their entries, connections and probes; returns how many were forgotten."""
        gone = [clientid for clientid in self._entries if clientid not in live]
        for clientid in gone:
            self.forget(clientid)
        return len(gone)

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        tasks = [t for e in self._entries.values() for t in e.tasks]
        for clientid in list(self._entries):
            self.forget(clientid)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _entry(self, clientid: int) -> _Entry:
        entry = self._entries.get(clientid)
        if entry is None:
            raise CallbackError(f"no callback recorded for client {clientid:#x}")
        return entry

    def _channel(self, entry: _Entry) -> CallbackChannel:
        if entry.channel is None:
            entry.channel = CallbackChannel(entry.target, self.gss, self.timeout)
        return entry.channel

    def _drop_channel(self, entry: _Entry) -> None:
        if entry.channel is not None:
            entry.channel.close()
            entry.channel = None

    def _record(self, clientid: int, entry: _Entry, generation: int, error: str | None) -> None:
        before = entry.path.state
        if not entry.path.record(generation, error, self._clock()):
            return
        if error is not None:
            self._drop_channel(entry)
        if entry.path.state is not before and entry.path.state is PathState.DOWN:
            # INFO, not WARNING: many clients run no callback service; they get no delegations
            # (a failed recall is logged as a warning by pynfsd.nfs4.recall).
            log.info("callback path of client %#x is down: %s", clientid, error)
        elif entry.path.state is not before:
            log.info("callback path of client %#x is %s", clientid, entry.path.state.value)
