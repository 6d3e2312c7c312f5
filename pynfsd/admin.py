"""The admin view: a local control socket and the client the `pynfsd clients`/`status` CLI uses.

Theory of operation
-------------------
`pynfsd serve` listens on the unix socket `<state-dir>/control.sock`.  The socket is bound under
a fresh private directory, given mode 0600 and renamed into place, so it appears atomically with
its final mode and replaces a stale file left by a crash; a socket that still answers belongs to
another running server and is left alone.  It is removed on a clean exit (only if it is still
ours).  Each connection's peer is checked with SO_PEERCRED: only root (and the server's own
user) may talk to it, everyone else gets an error and is disconnected.

The protocol is one JSON object per line each way:

    {"cmd": "clients"}                       -> {"ok": true, "result": [ {client}, ... ]}
    {"cmd": "revoke", "clientid": "<hex>"}   -> {"ok": true, "result": {revoked client}}
    {"cmd": "status"}                        -> {"ok": true, "result": {status}}
    {"cmd": "listen"}                        -> {"ok": true, "result": [ {listener}, ... ]}
    {"cmd": "listen", "action": "add" or "remove", "address": "ADDR:PORT"}
                                             -> {"ok": true, "result": {listener}}
    anything wrong                           -> {"ok": false, "error": "<message for people>"}

`AdminCore` answers request lines with reply lines (no I/O: it reads the state manager on the
event loop, where the COMPOUNDs run, so no locking is needed); `AdminServer` is the asyncio skin.
`listen add` is the one request that waits (for the transport to start serving a new socket):
`answer` awaits it, `handle_line` serves the others.
`call()` and the `format_*` functions are the client side used by `pynfsd.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import logging
import os
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from pynfsd import __version__
from pynfsd.metrics.snapshot import headline
from pynfsd.nfs4.state.clients import printable_id
from pynfsd.recovery.cluster import format_cluster
from pynfsd.rpc.listeners import ListenerError

if TYPE_CHECKING:
    from pynfsd.metrics.snapshot import Snapshot
    from pynfsd.nfs4.server import NFSServer
    from pynfsd.nfs4.state.owners import Client
    from pynfsd.rpc.connections import ConnectionTable
    from pynfsd.rpc.drc import ReplyCache
    from pynfsd.rpc.transport import RpcTcpServer

log = logging.getLogger(__name__)

CONTROL_SOCKET = "control.sock"
MAX_REQUEST = 64 * 1024  # bytes in one request line
MAX_REPLY = 256 << 20  # bytes in one reply line (a client list of many thousands of clients)
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class AdminError(Exception):
    """A request the server refuses; the message is shown to the administrator."""


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, CONTROL_SOCKET)


# ------------------------------------------------------------------ server side (sans-IO core)


class AdminCore:
    """Answers control requests about one `NFSServer` (see the module docstring)."""

    def __init__(
        self, server: NFSServer, drc: ReplyCache | None = None,
        connections: ConnectionTable[Any] | None = None, listeners: RpcTcpServer | None = None,
        snapshot: Callable[[], Snapshot] | None = None,
        commands: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
    ) -> None:
        self.server = server
        self.commands = dict(commands or {})  # more requests: `exportfs`, `cache`
        self.drc = drc
        self.connections = connections
        self.listeners = listeners
        self.snapshot = snapshot  # the metrics' reading (`pynfsd.metrics.snapshot.take`)

    def handle_line(self, line: bytes) -> bytes:
        """One request line in, one reply line out (never raises for a bad request).

        Without the event loop: a request that must wait on it (`listen add`) is refused."""
        return self._reply(line, None)

    async def answer(self, line: bytes) -> bytes:
        """`handle_line`, awaiting the requests that wait on the event loop (`listen add`)."""
        pending: list[Awaitable[Any]] = []
        reply = self._reply(line, pending)
        if not pending:
            return reply
        try:
            return encode_reply({"ok": True, "result": await pending[0]})
        except (AdminError, ListenerError, ValueError) as e:
            return encode_reply({"ok": False, "error": str(e)})

    def _reply(self, line: bytes, pending: list[Awaitable[Any]] | None) -> bytes:
        """The reply to `line`; a request that waits goes to `pending` (refused if None)."""
        try:
            result = self.dispatch(decode_request(line))
            if inspect.isawaitable(result):
                if pending is None:
                    result.close()  # type: ignore[attr-defined]  # never started
                    raise AdminError("this request needs the running server")
                pending.append(result)
                return b""
            reply: dict[str, Any] = {"ok": True, "result": result}
        except (AdminError, ListenerError, ValueError) as e:  # JSONDecodeError is a ValueError
            reply = {"ok": False, "error": str(e)}
        return encode_reply(reply)

    def dispatch(self, request: dict[str, Any]) -> Any:
        cmd = request.get("cmd")
        if cmd == "clients":
            return self.clients()
        if cmd == "revoke":
            return self.revoke(request.get("clientid"))
        if cmd == "status":
            return self.status()
        if cmd == "listen":
            return self.listen(request.get("action"), request.get("address"))
        handler = self.commands.get(cmd) if isinstance(cmd, str) else None
        if handler is not None:
            return handler(request)
        known = ", ".join(["clients", "revoke", "status", "listen", *self.commands])
        raise AdminError(f"unknown command {cmd!r} (known: {known})")

    def listen(self, action: object, address: object) -> Any:
        """List the listening sockets, or add or remove one (`pynfsd listen`)."""
        if self.listeners is None:
            raise AdminError("this server does not report its listening sockets")
        if action is None:
            return [item.status() for item in self.listeners.listeners]
        if action not in ("add", "remove") or not isinstance(address, str):
            raise AdminError("listen takes no action, or add/remove with an address ADDR:PORT")
        if action == "remove":
            return self.listeners.remove_listener(address).status()
        return self._add(self.listeners, address)

    async def _add(self, listeners: RpcTcpServer, address: str) -> dict[str, object]:
        return (await listeners.add_listener(address)).status()

    def clients(self) -> list[dict[str, Any]]:
        """Every client record: id, identity, lease left, opens, locks, delegations,
        collisions."""
        state = self.server.state
        now = state.clock()
        rows = []
        for info in state.client_list():
            record = self._record(info.clientid, info.confirmed)
            left = record.expires - now if record is not None else info.lease_left
            rows.append({
                "clientid": f"{info.clientid:016x}",
                "co_ownerid": printable_id(info.ownerid),
                "principal": info.principal,
                "address": info.client_addr,
                "confirmed": info.confirmed,
                "lease_left": round(left, 1),
                "courtesy": info.confirmed and left <= 0,  # expired, state kept until conflict
                "opens": info.opens,
                "locks": info.locks,
                "delegations": info.delegations,
                "collisions": state.clients.collisions.count(info.ownerid),
            })
        return rows

    def _record(self, clientid: int, confirmed: bool) -> Client | None:
        table = self.server.state.clients
        return (table.confirmed if confirmed else table.unconfirmed).get(clientid)

    def revoke(self, clientid: object) -> dict[str, Any]:
        """Revoke all state of a confirmed client: its stateids get NFS4ERR_ADMIN_REVOKED."""
        cid = parse_clientid(clientid)
        row = next((r for r in self.clients() if r["clientid"] == f"{cid:016x}" and r["confirmed"]),
                   None)
        if row is None or not self.server.state.revoke_client(cid):  # RFC 7530 §9.8
            raise AdminError(f"no confirmed client with id {cid:016x}")
        log.warning('admin revoked client %s ("%s", %s, %s): %d opens, %d locks',
                    row["clientid"], row["co_ownerid"], row["principal"], row["address"],
                    row["opens"], row["locks"])
        return row

    def status(self) -> dict[str, Any]:
        server = self.server
        counts = server.state.counts()
        uptime = (server.config.wallclock_ns() - server.boot_ns) / 1e9
        drc = {} if self.drc is None else {"drc": self.drc.status()}
        conns: dict[str, Any] = {} if self.connections is None else {
            "connections": self.connections.status()}
        if self.listeners is not None:
            conns["listeners"] = [item.status() for item in self.listeners.listeners]
        metrics = {} if self.snapshot is None else {"metrics": headline(self.snapshot())}
        store_status = getattr(server.client_store, "status", None)  # a cluster's store
        cluster = {"cluster": store_status()} if callable(store_status) else {}
        return {
            "version": __version__,
            "uptime": round(uptime, 1),
            "clients": counts.clients,
            "unconfirmed_clients": counts.unconfirmed_clients,
            "opens": counts.opens,
            "locks": counts.locks,
            "delegations": counts.delegations,
            "lease_time": server.config.lease_time,
            "collisions": server.state.clients.collisions.total,
            "grace": grace_status(server),
            **drc,
            **cluster,
            **conns,
            **metrics,
        }


def decode_request(line: bytes) -> dict[str, Any]:
    request = json.loads(line)
    if not isinstance(request, dict):
        raise AdminError("a request is a JSON object")
    return request


def encode_reply(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, default=str).encode() + b"\n"


def parse_clientid(value: object) -> int:
    """A client id as `pynfsd clients` shows it: hexadecimal, with or without 0x."""
    if not isinstance(value, str):
        raise AdminError("revoke needs a client id (hexadecimal, as `pynfsd clients` shows it)")
    try:
        cid = int(value.strip().removeprefix("0x"), 16)
    except ValueError:
        raise AdminError(f"not a client id: {value!r} (expected hexadecimal)") from None
    if not 0 <= cid < 1 << 64:
        raise AdminError(f"not a client id: {value!r} (more than 64 bits)")
    return cid


def grace_status(server: object) -> Any:
    """`server.grace.status()` (a dict), or None when the server has no grace period object."""
    grace = getattr(server, "grace", None)
    if grace is None or not callable(getattr(grace, "status", None)):
        return None
    return grace.status()


# ------------------------------------------------------------------ server side (asyncio skin)


class AdminServer:
    """The control socket of a running server; `await AdminServer.start(...)`, then `close()`."""

    def __init__(self, core: AdminCore, path: str, allowed_uids: Collection[int]) -> None:
        self.core = core
        self.path = path
        self.allowed_uids = frozenset(allowed_uids)
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None

    @classmethod
    async def start(
        cls, server: NFSServer, path: str, allowed_uids: Collection[int] | None = None,
        drc: ReplyCache | None = None, connections: ConnectionTable[Any] | None = None,
        listeners: RpcTcpServer | None = None, snapshot: Callable[[], Snapshot] | None = None,
        commands: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
    ) -> AdminServer:
        """Bind `path` (see the module docstring) and serve it on the running loop."""
        uids = {0, os.geteuid()} if allowed_uids is None else allowed_uids
        core = AdminCore(server, drc, connections, listeners, snapshot, commands)
        admin = cls(core, path, uids)
        sock = bind_control_socket(path)
        st = os.stat(path)
        admin._inode = (st.st_dev, st.st_ino)
        admin._server = await asyncio.start_unix_server(admin._serve, sock=sock, limit=MAX_REQUEST)
        return admin

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid not in self.allowed_uids:
                log.warning("control socket: refused a request from uid %d", uid)
                with contextlib.suppress(ValueError, asyncio.TimeoutError):
                    await asyncio.wait_for(reader.readline(), 2)  # read it: no reset on close
                writer.write(refusal(uid))
            else:
                await self._requests(reader, writer)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the peer went away
        finally:
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                writer.write(b'{"ok": false, "error": "request line too long"}\n')
                return
            if not line.endswith(b"\n"):
                return  # end of stream
            writer.write(await self.core.answer(line))
            await writer.drain()

    def close(self) -> None:
        """Stop listening and remove the socket file if it is still the one we created."""
        with contextlib.suppress(OSError):  # checked while our socket still pins its inode
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        self._inode = None
        if self._server is not None:
            self._server.close()
            self._server = None


def refusal(uid: int) -> bytes:
    msg = f"permission denied: only root may use the pynfsd control socket (you are uid {uid})"
    return json.dumps({"ok": False, "error": msg}).encode() + b"\n"


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
    _pid, uid, _gid = PEERCRED.unpack(creds)
    return int(uid)


def bind_control_socket(path: str) -> socket.socket:
    """A listening unix socket at `path`, mode 0600, created atomically (module docstring)."""
    if is_live(path):
        raise AdminError(f"{path} is in use by another running pynfsd")
    tmpdir = tempfile.mkdtemp(prefix=".c", dir=os.path.dirname(path) or ".")  # mode 0700
    tmp = os.path.join(tmpdir, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, 0o600)
        sock.listen(64)
        os.replace(tmp, path)  # atomic; replaces a stale socket file
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.rmdir(tmpdir)
    sock.setblocking(False)
    return sock


def is_live(path: str) -> bool:
    """True if something accepts connections on the unix socket `path` (never blocks)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        err = probe.connect_ex(path)
    finally:
        probe.close()
    return err in (0, errno.EAGAIN)  # EAGAIN: a full backlog, a live but busy server


async def start_admin(
    server: NFSServer, state_dir: str, drc: ReplyCache | None = None,
    connections: ConnectionTable[Any] | None = None, listeners: RpcTcpServer | None = None,
    snapshot: Callable[[], Snapshot] | None = None,
    commands: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
) -> AdminServer | None:
    """The control socket for `pynfsd serve`; logs and returns None if it cannot be created."""
    path = socket_path(state_dir)
    try:
        admin = await AdminServer.start(server, path, drc=drc, connections=connections,
                                        listeners=listeners, snapshot=snapshot, commands=commands)
    except (AdminError, OSError) as e:
        log.error("no control socket (pynfsd clients/status will not work): %s", e)
        return None
    log.info("control socket %s", path)
    return admin


# ------------------------------------------------------------------ client side (the CLI)


class AdminClientError(Exception):
    """Why a control request failed, in words for the administrator."""


def call(state_dir: str, request: dict[str, Any], timeout: float = 30.0) -> Any:
    """Send one request to the server running with `state_dir`; return its result."""
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        connect(sock, path, state_dir)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(json.dumps(request).encode() + b"\n")  # a refusal may be sent first
        reply = read_line(sock)
    try:
        decoded = json.loads(reply)
    except ValueError:
        raise AdminClientError(f"unreadable reply from the server on {path}") from None
    if not decoded.get("ok"):
        raise AdminClientError(str(decoded.get("error", "request failed")))
    return decoded.get("result")


def connect(sock: socket.socket, path: str, state_dir: str) -> None:
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise AdminClientError(
            f"pynfsd is not running with state dir {state_dir} (no server on {path})"
        ) from None
    except PermissionError:
        raise AdminClientError(
            f"permission denied: only root may use the pynfsd control socket {path}"
        ) from None
    except OSError as e:
        raise AdminClientError(f"cannot connect to {path}: {e.strerror or e}") from None


def read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            raise AdminClientError("the server did not answer in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if not chunks:
                raise AdminClientError("the server closed the connection without an answer")
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > MAX_REPLY:
            return b"".join(chunks)


CLIENT_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("CLIENTID", lambda r: str(r["clientid"])),
    ("STATE", lambda r: client_state(r)),
    ("LEASE", lambda r: f"{r['lease_left']:.0f}s"),
    ("OPENS", lambda r: str(r["opens"])),
    ("LOCKS", lambda r: str(r["locks"])),
    ("DELEGS", lambda r: str(r.get("delegations", 0))),
    ("COLLISIONS", lambda r: str(r["collisions"])),
    ("PRINCIPAL", lambda r: str(r["principal"])),
    ("ADDRESS", lambda r: str(r["address"])),
    ("CO_OWNERID", lambda r: f'"{r["co_ownerid"]}"'),
]


def client_state(row: dict[str, Any]) -> str:
    if not row["confirmed"]:
        return "unconfirmed"
    return "courtesy" if row["courtesy"] else "active"


def format_clients(rows: list[dict[str, Any]]) -> str:
    """The `pynfsd clients` table (plus a hint when ids collide)."""
    if not rows:
        return "no clients\n"
    table = [[name for name, _ in CLIENT_COLUMNS]]
    table += [[cell(r) for _, cell in CLIENT_COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(CLIENT_COLUMNS))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
           for line in table]
    colliding = {r["co_ownerid"] for r in rows if r["collisions"]}
    if colliding:
        out.append(f"\n{len(colliding)} client id(s) are used by more than one machine "
                   "(COLLISIONS): give each client a unique nfs4_unique_id")
    return "\n".join(out) + "\n"


def format_status(st: dict[str, Any]) -> str:
    grace_text = format_grace(st.get("grace"))
    lines = [
        f"pynfsd {st['version']}, up {format_duration(float(st['uptime']))}",
        f"clients: {st['clients']} ({st['unconfirmed_clients']} unconfirmed)",
        f"opens: {st['opens']}, locks: {st['locks']}, delegations: {st.get('delegations', 0)}",
        f"lease: {st['lease_time']}s, colliding SETCLIENTIDs: {st['collisions']}",
        f"grace: {grace_text}",
        f"reply cache: {format_drc(st.get('drc'))}",
    ]
    if isinstance(st.get("cluster"), dict):
        lines.extend(format_cluster(st["cluster"]))
    if isinstance(st.get("connections"), dict):
        lines.append(f"connections: {format_connections(st['connections'])}")
    if isinstance(st.get("listeners"), list):
        lines.append(f"listening: {format_listeners(st['listeners'])}")
    if isinstance(st.get("metrics"), dict):
        lines.extend(format_metrics(st["metrics"]))
    return "\n".join(lines) + "\n"


def format_metrics(m: dict[str, Any]) -> list[str]:
    """The headline counters (`pynfsd.metrics.snapshot.headline`) as status lines (opens,
    locks and reply-cache hits are on the lines above)."""
    calls = ", ".join(f"{name} {n}" for name, n in m["rpc_calls"].items()) or "none"
    states = ", ".join(f"{n} {name}" for name, n in m["clients_by_state"].items())
    return [
        f"operations: {m['ops']}; RPC calls by flavour: {calls}",
        f"data: {m['read_bytes']} bytes read, {m['write_bytes']} bytes written",
        f"clients by state: {states}",
    ]


def format_drc(drc: Any) -> str:
    if not isinstance(drc, dict):
        return "off"
    return (f"{drc['entries']} replies, {drc['bytes'] >> 10} of {drc['max_bytes'] >> 10} KiB; "
            f"{drc['hits']} replayed, {drc['in_progress_drops']} dropped in progress, "
            f"{drc['evicted_age'] + drc['evicted_size']} evicted")


def format_connections(c: dict[str, Any]) -> str:
    return (f"{c['open']} of {c['max']} open; {c['refused']} refused, {c['idle_closed']} closed "
            f"idle, {c['evicted']} closed over the partial-record budget "
            f"({c['partial_bytes'] >> 10} of {c['partial_budget'] >> 10} KiB held)")


def format_listeners(rows: list[dict[str, Any]]) -> str:
    """'0.0.0.0:2049 (--bind, 3 accepted), [::1]:2050 (added, 0 accepted)' or 'nothing'."""
    return ", ".join(f"{r['listen']} ({r['origin']}, {r['accepted']} accepted)"
                     for r in rows) or "nothing (new clients cannot connect)"


def format_grace(grace: Any) -> str:
    if grace is None:
        return "not reported by this server"
    if not isinstance(grace, dict):
        return str(grace)
    if grace.get("in_grace"):
        return (f"in grace, {float(grace.get('seconds_left', 0)):.0f}s left; "
                f"{grace.get('reclaimed')} of {grace.get('recorded')} recorded clients reclaimed, "
                f"{grace.get('pending')} pending")
    if "ended_reason" in grace:
        return f"over ({grace['ended_reason']})"
    return ", ".join(f"{k}={v}" for k, v in grace.items())


def format_duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    text = f"{hours}h {minutes:02d}m {s:02d}s" if hours or days else f"{minutes}m {s:02d}s"
    return f"{days}d {text}" if days else text
