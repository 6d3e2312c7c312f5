"""The command way: one program run per upcall (`pynfsd serve --upcall-command PROG`).

Theory of operation.  For a request of cache `C` the server runs

    PROG C WORD...

with the request line's words as arguments: text words decoded (a path with a space in it is
one argument, as `qword_get` reads it), binary words (`\\x<hex>`, such as an `nfsd.fh` fsid)
left as written, since an argument cannot hold a NUL.  No shell is involved.  The program gets
stdin from /dev/null, a process group of its own (a new session) and a small clean
environment (`PATH`, `LC_ALL=C`, and `PYNFSD_CACHE=C`).  It prints the reply line, in the
kernel's format for `C` (`lines.py`), on standard output and exits 0, for example

    $ PROG nfsd.export 192.168.1.0/24 /srv/a
    192.168.1.0/24 /srv/a 1767225600 8192 65534 65534 0

Its standard error is logged (the first `MAX_STDERR` bytes of each run, the rest read and
dropped; at most one line per `LOG_INTERVAL`).  The request is *lost* (and the router falls
back to the next way) when the program exits non-zero or by a signal, prints nothing, prints
more than one line, prints more than `MAX_OUTPUT` bytes (it is killed at once), cannot be
started, or is still running after `timeout` seconds: then its whole process group is
killed with SIGKILL and reaped.  No run outlives its request, and none is left a zombie.

At most `max_running` programs run at once; further requests wait in one FIFO in the order
they came, at most `max_queued` per cache (the cache's `max_entries`).  A request already
waiting is not queued twice: a second `send` of it joins the first and both hear the same
outcome.  `ready(cache)` is False while that cache's share of the FIFO is full, so the router
falls back to the next way instead.  Everything runs as asyncio tasks (asyncio subprocesses
and pipes): the event loop never waits for a program.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from pynfsd.cache.core import DEFAULT_MAX_ENTRIES
from pynfsd.cache.qword import LineError, split_line
from pynfsd.cache.ways import Answer, Lost
from pynfsd.rpc.connections import LOG_INTERVAL, RateLimitedLog

log = logging.getLogger(__name__)

MAX_OUTPUT = 32 * 1024  # bytes of standard output; more is garbage
MAX_STDERR = 2048  # bytes of standard error logged per run
DEFAULT_TIMEOUT = 10.0  # seconds one run may take
DEFAULT_MAX_RUNNING = 8
REAP_GRACE = 2.0  # seconds a killed run's pipes may stay open (see _reap)
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class _Failed(Exception):
    """The run did not give a reply line; the message is the reason."""


@dataclass
class _Job:
    cache: str
    request: bytes
    callers: list[tuple[Answer, Lost]] = field(default_factory=list)


def argv_words(request: bytes) -> list[bytes]:
    """The program's arguments after the cache name (see the module docstring)."""
    decoded = split_line(request)
    raw = [w for w in request.rstrip(b"\n").split(b" ") if w]
    return [r if r.startswith(b"\\x") or b"\0" in d else d for r, d in zip(raw, decoded, strict=True)]


class CommandWay:
    """`PROG <cache> <words...>` per request; see the module docstring."""

    name = "command"

    def __init__(self, program: str, timeout: float = DEFAULT_TIMEOUT,
                 max_running: int = DEFAULT_MAX_RUNNING,
                 max_queued: int = DEFAULT_MAX_ENTRIES,
                 log_interval: float = LOG_INTERVAL) -> None:
        if timeout <= 0 or max_running < 1 or max_queued < 1:
            raise ValueError("timeout > 0, max_running >= 1 and max_queued >= 1")
        self.program = program
        self.timeout = timeout
        self.max_running = max_running
        self.max_queued = max_queued
        self.stats: Counter[str] = Counter()
        self._queue: OrderedDict[tuple[str, bytes], _Job] = OrderedDict()
        self._queued: Counter[str] = Counter()  # per cache
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self._stderr_log = RateLimitedLog(log_interval, log)

    @property
    def running(self) -> int:
        return len(self._running)

    def queued(self, cache: str | None = None) -> int:
        return len(self._queue) if cache is None else self._queued[cache]

    def ready(self, cache: str) -> bool:
        return not self._closed and self._queued[cache] < self.max_queued

    def send(self, cache: str, request: bytes, answer: Answer, lost: Lost) -> None:
        if self._closed:
            asyncio.get_running_loop().call_soon(lost, "the command way is closed")
            return
        job = self._queue.get((cache, request))
        if job is None:
            job = self._queue[(cache, request)] = _Job(cache, request)
            self._queued[cache] += 1
        else:
            self.stats["joined"] += 1
        job.callers.append((answer, lost))
        self._start()

    def _start(self) -> None:
        while self._queue and len(self._running) < self.max_running:
            (cache, _), job = self._queue.popitem(last=False)
            self._queued[cache] -= 1
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._closed:
            self._start()

    async def _run(self, job: _Job) -> None:
        self.stats["runs"] += 1
        try:
            line = await self._reply(job)
        except _Failed as e:
            self.stats["failed"] += 1
            for _, lost in job.callers:
                lost(f"{self.program}: {e}")
            return
        except asyncio.CancelledError:
            for _, lost in job.callers:
                lost(f"{self.program}: cancelled (the server is closing)")
            raise
        self.stats["answered"] += 1
        for answer, _ in job.callers:
            answer(line)

    async def _reply(self, job: _Job) -> bytes:
        try:
            args = [job.cache.encode(), *argv_words(job.request)]
        except LineError as e:
            raise _Failed(f"request not a channel line: {e}") from None
        try:
            proc = await asyncio.create_subprocess_exec(
                self.program, *args, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, close_fds=True,
                env={"PATH": ENV_PATH, "LC_ALL": "C", "PYNFSD_CACHE": job.cache})
        except OSError as e:
            raise _Failed(f"cannot run: {e.strerror or e}") from None
        try:
            async with asyncio.timeout(self.timeout):
                out, status = await self._collect(proc)
        except TimeoutError:
            raise _Failed(f"no answer within {self.timeout} s: killed") from None
        finally:
            await _kill(proc)
        return _one_line(out, status)

    async def _collect(self, proc: asyncio.subprocess.Process) -> tuple[bytes, int]:
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.ensure_future(_read_bounded(proc.stderr, MAX_STDERR))
        try:
            out = await proc.stdout.read(MAX_OUTPUT + 1)
            while out and len(out) <= MAX_OUTPUT:
                more = await proc.stdout.read(MAX_OUTPUT + 1 - len(out))
                if not more:
                    break
                out += more
            if len(out) > MAX_OUTPUT:
                raise _Failed(f"more than {MAX_OUTPUT} bytes of output: killed")
            status = await proc.wait()
            self._log_stderr(await errors)
        finally:
            errors.cancel()
        return out, status

    def _log_stderr(self, text: bytes) -> None:
        if text.strip():
            loop = asyncio.get_running_loop()
            self._stderr_log.warning(loop.time(), "%s: %s", self.program,
                                     text.decode("utf-8", "replace").strip())

    async def close(self) -> None:
        """Kill every run (its requests are lost) and lose the queued requests."""
        self._closed = True
        queued, self._queue = list(self._queue.values()), OrderedDict()
        self._queued.clear()
        for job in queued:
            for _, lost in job.callers:
                lost(f"{self.program}: the server is closing")
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _one_line(out: bytes, status: int) -> bytes:
    if status != 0:
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        raise _Failed(how)
    if not out.strip():
        raise _Failed("no reply line on standard output")
    if not out.endswith(b"\n"):
        out += b"\n"
    if out.count(b"\n") > 1:
        raise _Failed("more than one line on standard output")
    return out


async def _read_bounded(stream: asyncio.StreamReader, keep: int) -> bytes:
    """The first `keep` bytes of `stream`; the rest is read and dropped until EOF."""
    kept = b""
    while chunk := await stream.read(65536):
        kept += chunk[: keep - len(kept)]
    return kept


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the run's process group if its leader is still there, then reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    await asyncio.shield(_reap(proc))


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for the run to end.  asyncio's `wait()` returns only once the pipes are closed too,
    and a pipe whose reader stopped (a flood) is paused: read both to EOF, which comes at once
    since the group is dead; a descendant that left the group and holds a pipe open gets
    `REAP_GRACE` seconds, then the pipes are closed from our side."""
    try:
        async with asyncio.timeout(REAP_GRACE):
            for stream in (proc.stdout, proc.stderr):
                while stream is not None and await stream.read(65536):
                    pass
    except TimeoutError:
        proc._transport.close()  # type: ignore[attr-defined]  # asyncio has no public close
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()
