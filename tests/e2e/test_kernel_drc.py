"""Lost replies under the Linux kernel client (a Debian kernel booted in qemu): the duplicate
request cache makes each retransmission answer as the original did.

The guest mounts through `ReplyDropper`, a TCP proxy on the host's loopback.  For each watched
operation (mkdir's CREATE, the OPEN of a created file, CLOSE, rm's REMOVE, mv's RENAME) it lets
the first call through, throws the server's reply away and resets both connections, as a network
failure after the server did the work would.  The client reconnects (a new source port) and
retransmits with the same xid.  With the cache the retransmission gets the original reply and
the workload's creates, removes and renames all succeed; without it (`--drc-size 0`, the
control run) a retransmitted REMOVE gets NFS4ERR_NOENT, RENAME NFS4ERR_NOENT and CREATE
NFS4ERR_EXIST, and the guest's `rm`/`mv`/`mkdir` fail.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pynfsd import admin
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.header import BadCall, decode_call
from pynfsd.rpc.record import RecordError, RecordReader, encode_record
from pynfsd.xdr.runtime import Unpacker, XdrError
from tests.e2e.test_kernel_client import vm_skip_reason
from tests.vm.harness import WorkloadRun, parse_transcript, prepare_export
from tests.vm.initramfs import GUEST, assemble
from tests.vm.kernel import guest_kernel
from tests.vm.network import UserNet
from tests.vm.qemu import GuestVM, Transcript
from tests.vm.servers import PynfsdServer

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason()))]

WATCH = {N.OP_CREATE: "CREATE", N.OP_OPEN: "OPEN", N.OP_CLOSE: "CLOSE",
         N.OP_REMOVE: "REMOVE", N.OP_RENAME: "RENAME"}
STEPS = "small_files renames"
MAX_RECORD = 4 << 20


@dataclass
class ReplyDropper:
    """guest ↔ proxy ↔ server; loses the reply to the first call of each op in `WATCH`."""

    server_port: int
    dropped: list[str] = field(default_factory=list)
    port: int = 0
    _left: dict[int, str] = field(default_factory=lambda: dict(WATCH))
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> ReplyDropper:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        server.close()
        loop.close()

    def victim(self, record: bytes) -> str | None:
        """The watched op in this COMPOUND call whose reply is still to be lost, if any."""
        try:
            call = decode_call(record)
            u = Unpacker(call.args)
            u.unpack_opaque()
            u.unpack_uint()
            ops = [N.unpack_nfs_argop4(u).argop for _ in range(u.unpack_uint())]
        except (BadCall, XdrError):
            return None
        for opnum in ops:
            if opnum in self._left:
                return self._left.pop(opnum)
        return None

    async def _serve(self, guest_r: asyncio.StreamReader, guest_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.server_port)
        doomed: dict[int, str] = {}  # xid → op whose reply is lost

        async def upstream() -> None:
            reader = RecordReader(MAX_RECORD, 1 << 10)
            while data := await guest_r.read(1 << 16):
                for record in reader.feed(data):
                    name = self.victim(record)
                    if name is not None:
                        doomed[int.from_bytes(record[:4], "big")] = name
                    server_w.write(encode_record(record))
            server_w.close()

        async def downstream() -> None:
            reader = RecordReader(MAX_RECORD, 1 << 10)
            while data := await server_r.read(1 << 16):
                for record in reader.feed(data):
                    name = doomed.get(int.from_bytes(record[:4], "big"))
                    if name is not None:  # the server did the work; the reply never arrives
                        self.dropped.append(name)
                        guest_w.transport.abort()
                        server_w.transport.abort()
                        return
                    guest_w.write(encode_record(record))
            guest_w.close()

        with suppress(ConnectionError, RecordError, OSError):
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        guest_w.transport.abort()
        server_w.transport.abort()


class ControlServer(PynfsdServer):
    """pynfsd without its duplicate request cache."""

    def command(self) -> list[str]:
        return [*super().command(), "--drc-size", "0"]


@dataclass
class LossyRun:
    run: WorkloadRun
    dropped: list[str]
    drc: dict[str, int] | None


def lossy_workload(workdir: Path, server_cls: type[PynfsdServer]) -> LossyRun:
    kernel = guest_kernel()
    workdir.mkdir(parents=True, exist_ok=True)
    with UserNet() as net:
        server = server_cls(workdir, net)
        prepare_export(server.export_dir, 0)
        with server, ReplyDropper(server.port) as proxy:
            config: dict[str, str | int] = {
                "SERVER_IP": net.server_addr, "NFS_PORT": proxy.port,
                "EXPORT_PATH": str(server.export_dir), "MOUNT_EXTRA": net.mount_extra,
                "GUEST_IP": net.guest_ip, "GUEST_PREFIX": net.guest_prefix, "BIG_MB": 0,
                "SMALL_FILES": 200, "BIGDIR_COUNT": 0, "ONLY": STEPS, "STEP_TIMEOUT": 240}
            initrd = assemble(kernel, GUEST / "workload.sh", config, workdir / "initrd.img")
            vm = GuestVM(kernel, initrd, net, workdir, 400.0)
            run = WorkloadRun("pynfsd", net.name, server.export_dir, vm.console_log,
                              server.log_path, Transcript())
            run.transcript = vm.run()
            status = admin.call(str(server.state_dir), {"cmd": "status"})
    parse_transcript(run)
    print(f"\n{server_cls.__name__}: lost replies to {proxy.dropped}; reply cache {status.get('drc')}")
    return LossyRun(run, list(proxy.dropped), status.get("drc"))


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LossyRun]:
    yield lossy_workload(tmp_path_factory.mktemp("drc"), PynfsdServer)


def test_every_watched_reply_was_lost_once(lossy: LossyRun) -> None:
    assert sorted(lossy.dropped) == sorted(WATCH.values()), lossy.run.diagnostics()


@pytest.mark.parametrize("step", STEPS.split())
def test_workload_succeeds_despite_lost_replies(lossy: LossyRun, step: str) -> None:
    ok, detail = lossy.run.results.get(step, (False, "no result"))
    assert ok, f"{step}: {detail}\n{lossy.run.diagnostics()}"
    assert (lossy.run.export_dir / "keep" / "renamed").read_text() == "keep\n"
    assert not (lossy.run.export_dir / "small").exists()


def test_retransmissions_were_answered_from_the_cache(lossy: LossyRun) -> None:
    assert lossy.drc is not None
    assert lossy.drc["hits"] >= len(lossy.dropped), (lossy.drc, lossy.dropped)


def test_control_without_the_cache_fails(tmp_path: Path) -> None:
    """The same run with --drc-size 0: the guest's rm/mv/mkdir see NOENT/EXIST."""
    control = lossy_workload(tmp_path, ControlServer)
    assert control.dropped and control.drc is None
    failed = [s for s in STEPS.split() if not control.run.results.get(s, (False, ""))[0]]
    assert failed, control.run.diagnostics()
