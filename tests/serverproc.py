"""Run a real `python -m pynfsd serve` process for end-to-end and fuzz tests.

    with ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], state_dir) as srv:
        conn = BlockingRpc(srv.port)            # or Nfs4Client.connect("127.0.0.1", srv.port)
        ...
        srv.restart()                            # same port, same state dir
        assert_log_clean(srv.log_text())

The server listens on 127.0.0.1 only.  Without a port it binds port 0 and the port it reports
in its log ("listening on 127.0.0.1 port N") is kept for restarts.  stdout and stderr of every
run are appended to one log file (default: `<state_dir>.log`).  The process is only ever ended
by its own PID.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from pynfsd.client.nfs4 import Nfs4Client, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred, BadReply, decode_reply, encode_call
from pynfsd.rpc.record import encode_record
from tests.aio import run

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"pynfsd: listening on 127\.0\.0\.1 port (\d+)")
NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND = N.NFS4_PROGRAM, N.NFS_V4, N.NFSPROC4_COMPOUND


class ServerStartError(RuntimeError):
    """The server exited or did not start listening in time; the message holds its log."""


class ServerProcess:
    """One pynfsd server process; see the module docstring."""

    def __init__(
        self,
        export_lines: Sequence[str],
        state_dir: str | os.PathLike[str],
        port: int | None = None,
        extra_args: Sequence[str] = (),
        *,
        log_path: str | os.PathLike[str] | None = None,
        log_level: str = "DEBUG",
        start_timeout: float = 20.0,
    ) -> None:
        self.export_lines = list(export_lines)
        self.state_dir = Path(state_dir)
        self._port = port
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else self.state_dir.with_name(self.state_dir.name + ".log")
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # ------------------------------------------------------------ lifecycle
    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "pynfsd", "serve", "--bind", HOST]
        for line in self.export_lines:
            args += ["--export", line]
        args += ["--port", str(self._port or 0), "--state-dir", str(self.state_dir)]
        return args + ["--log-level", self.log_level, *self.extra_args]

    def start(self) -> ServerProcess:
        if self.running:
            raise RuntimeError("server already running")
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._port = self._wait_listening()
        return self

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            m = _LISTENING.search(self._run_log())
            if m:
                return int(m.group(1))
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"pynfsd exited with {self.proc.returncode}:\n{self.log_text()}")
            time.sleep(0.02)
        self.kill9()
        raise ServerStartError(f"pynfsd did not listen within {self.start_timeout} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig` and wait for the exit (SIGKILL after `timeout`); return the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def kill9(self) -> int | None:
        return self.stop(signal.SIGKILL)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------ inspection
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server has not started")
        return self._port

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server has not started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_text(self, since: int = 0) -> str:
        """What every run of this server has logged so far (from byte offset `since`)."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10.0, since: int = 0) -> str:
        """The log (from byte offset `since`) once it holds `needle` (lines logged just after
        start-up may lag behind the listening socket); fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while needle not in (text := self.log_text(since)):
            assert time.monotonic() < deadline, f"{needle!r} not logged; log:\n{text[-3000:]}"
            time.sleep(0.05)
        return text

    def log_mark(self) -> int:
        """The current end of the log, for `log_text(since=...)`."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def _run_log(self) -> bytes:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            return f.read()

    def rss_kib(self) -> int:
        """Resident set size of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    async def connect(self, uid: int = 0, gid: int | None = None,
                      gids: tuple[int, ...] = (), local_addr: str | None = None) -> Nfs4Client:
        """A new NFSv4 client of this server under AUTH_SYS `uid` (`gid` defaults to `uid`),
        from the loopback address `local_addr` (any of 127.0.0.0/8) when given."""
        cred = AuthSysCred(uid, uid if gid is None else gid, gids)
        return await Nfs4Client.connect(HOST, self.port, cred=cred, local_addr=local_addr)

    async def assert_healthy(self) -> None:
        """A fresh client's PUTROOTFH+GETATTR must succeed (AssertionError otherwise)."""
        assert self.running, f"server is not running:\n{self.log_text()[-4000:]}"
        await probe(self.port)

    def healthy(self) -> None:
        """`assert_healthy` from sync code (not from a coroutine: it runs its own loop)."""
        run(self.assert_healthy())


def assert_log_clean(text: str) -> None:
    """No traceback and no NFS4ERR_SERVERFAULT anywhere in a server log."""
    for bad in ("Traceback", "SERVERFAULT"):
        assert bad not in text, f"{bad!r} in server log:\n{_around(text, bad)}"


def _around(text: str, needle: str, width: int = 3000) -> str:
    at = text.index(needle)
    return text[max(0, at - width // 3) : at + width]


def lookup_path(path: str | os.PathLike[str]) -> list[N.nfs_argop4]:
    """PUTROOTFH then one LOOKUP per component: reaches an export through the pseudo-fs."""
    return [op.putrootfh(), *(op.lookup(os.fsencode(c)) for c in Path(path).parts[1:])]


async def probe(port: int, host: str = HOST) -> None:
    """PUTROOTFH + GETATTR(type) on a new connection; AssertionError unless NFS4_OK."""
    client = await Nfs4Client.connect(host, port, cred=AuthSysCred(0, 0))
    try:
        res = await asyncio.wait_for(client.compound([op.putrootfh(), op.getattr(N.FATTR4_TYPE)]), 10)
    finally:
        await client.close()
    assert res.status == N.NFS4_OK, N.nfsstat4_names.get(res.status, res.status)


class BlockingRpc:
    """A blocking socket speaking NFSv4 COMPOUND records, for tight fuzz loops.

    `compound_raw` sends raw COMPOUND args and returns the raw results; RPC-level failures
    raise the `pynfsd.rpc.client` errors (e.g. `GarbageArgsError`), a closed connection
    raises `ConnectionError`.
    """

    def __init__(self, port: int, host: str = HOST, cred: AuthSysCred | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.cred = (cred or AuthSysCred(0, 0)).opaque_auth()
        self.xid = 0x1000

    def compound_raw(self, args: bytes) -> bytes:
        self.xid += 1
        call = encode_call(self.xid, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args, self.cred)
        self.sock.sendall(encode_record(call))
        xid, results = decode_reply(self.recv_record())
        if xid != self.xid:
            raise BadReply(f"reply xid {xid:#x} for call {self.xid:#x}")
        return results

    def compound(self, ops: Sequence[N.nfs_argop4]) -> bytes:
        return self.compound_raw(encode_compound(ops))

    def recv_record(self) -> bytes:
        parts: list[bytes] = []
        while True:
            marker = int.from_bytes(self.recv_exact(4), "big")
            parts.append(self.recv_exact(marker & 0x7FFFFFFF))
            if marker & 0x80000000:
                return b"".join(parts)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"server closed the connection ({len(buf)}/{n} bytes read)")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BlockingRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
