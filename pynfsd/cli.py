"""The `pynfsd` command line.

    pynfsd serve [--export 'LINE']... [--exports FILE] [--bind ADDR] [--port N]
                 [--state-dir DIR] [--lease SECONDS] [--grace SECONDS] [--log-level LEVEL]
                 [Kerberos options] [limits]       (`pynfsd serve --help` lists them all)
    pynfsd clients [--state-dir DIR] [--json]
    pynfsd clients revoke ID [--state-dir DIR] [--json]
    pynfsd status [--state-dir DIR] [--json]

The admin commands talk to a running server over `<state-dir>/control.sock` (root only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pynfsd import __version__, admin
from pynfsd.blocking import default_runner
from pynfsd.exports import ExportsError, load_exports, parse_export_line
from pynfsd.exports.mounts import DEFAULT_MAX_MOUNTS
from pynfsd.exports.resolver import StaticExportResolver
from pynfsd.exports.types import ExportEntry
from pynfsd.nfs4.server import (
    DEFAULT_MAX_COMPOUND_OPS,
    DEFAULT_MAX_REPLY,
    REPLY_HEADROOM,
    NFSServer,
    ServerConfig,
)
from pynfsd.rpc.auth import AuthRegistry
from pynfsd.rpc.drc import DEFAULT_MAX_BYTES as DEFAULT_DRC_BYTES
from pynfsd.rpc.drc import ReplyCache
from pynfsd.rpc.flavors import RPCSEC_GSS
from pynfsd.rpc.server import RpcServer
from pynfsd.rpc.transport import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PARTIAL_BUDGET,
    Limits,
    default_max_connections,
    fd_limit,
    install_event_loop,
    serve,
)
from pynfsd.statelock import StateDirBusy, lock_state_dir

log = logging.getLogger("pynfsd")

DEFAULT_EXPORT = "/srv/pynfsd"
DEFAULT_STATE_DIR = "/var/lib/pynfsd"

_DESCRIPTION = f"""\
pynfsd is an NFSv4.0 server (RFC 7530) written in Python.

  pynfsd serve --export '/srv/share *(rw,no_root_squash,insecure)'

serves /srv/share to every client.  Each --export is one exports(5) line; a bare directory
means 'DIR *(rw,root_squash,sec=sys)'.  --exports reads a whole exports(5) file.  With neither,
pynfsd exports {DEFAULT_EXPORT} (created if missing) as 'DIR *(rw,root_squash,insecure)'.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pynfsd", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"pynfsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("serve", help="run the NFSv4.0 server", description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--export", action="append", default=[], metavar="LINE",
                   help="one exports(5) line, e.g. '/srv/share *(rw,no_root_squash)'; repeatable")
    s.add_argument("--exports", metavar="FILE", help="an exports(5) file")
    s.add_argument("--bind", action="append", default=[], metavar="ADDR",
                   help="address to listen on; repeatable (default: all IPv4 and IPv6 addresses)")
    s.add_argument("--port", type=int, default=2049, metavar="N", help="TCP port (default 2049)")
    s.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"where client records and filehandle keys are kept (default {DEFAULT_STATE_DIR})")
    s.add_argument("--lease", type=int, default=90, metavar="SECONDS",
                   help="lease time announced to clients (default 90); a client that stops renewing "
                   "loses its lease this long plus min(10%%, 2 s) after its last renewal")
    s.add_argument("--grace", type=int, default=90, metavar="SECONDS",
                   help="grace period after a restart for state reclaim (default 90)")
    s.add_argument("--keytab", metavar="FILE",
                   help="Kerberos keytab for RPCSEC_GSS (sec=krb5, krb5i, krb5p); default: "
                   "KRB5_KTNAME or /etc/krb5.keytab when present and python-gssapi is installed")
    s.add_argument("--gss-backend", choices=["gssapi", "gssproxy"], default="gssapi",
                   help="how RPCSEC_GSS contexts are established (default gssapi: in-process)")
    s.add_argument("--gssproxy-socket", default="/run/gssproxy.sock", metavar="PATH",
                   help="the gssproxy daemon's socket, for --gss-backend gssproxy (its own "
                   "configuration names the keytab; default /run/gssproxy.sock)")
    s.add_argument("--principal-map", metavar="FILE",
                   help="static Kerberos principal map: 'principal user' or "
                   "'principal uid:gid[:gids]' per line (checked before the passwd database)")
    s.add_argument("--log-level", default="INFO", metavar="LEVEL",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
                   help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    add_limit_options(s)
    add_admin_commands(sub)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _reply_size(text: str) -> int:
    value = byte_size(text)
    if ServerConfig.io_size_for(value) < 4096:
        raise argparse.ArgumentTypeError(f"{text}: must be at least {REPLY_HEADROOM + 4096}")
    return value


def byte_size(text: str) -> int:
    """A byte count, optionally with a K, M or G suffix (powers of 1024)."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    number = text[:-1] if scale > 1 else text
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 16777216, 16M)")
    return int(number) * scale


def add_limit_options(s: argparse.ArgumentParser) -> None:
    """The bounds on what clients can make the server hold (README: Limits)."""
    g = s.add_argument_group("limits")
    g.add_argument("--max-compound-ops", type=_positive, default=DEFAULT_MAX_COMPOUND_OPS,
                   metavar="N", help="operations per COMPOUND; op N+1 gets NFS4ERR_RESOURCE "
                   f"(default {DEFAULT_MAX_COMPOUND_OPS})")
    g.add_argument("--max-reply-size", type=_reply_size, default=DEFAULT_MAX_REPLY,
                   metavar="BYTES", help="bytes of a COMPOUND reply; the op that would pass it "
                   "gets NFS4ERR_RESOURCE.  maxread/maxwrite are announced as 1 MiB, or this "
                   f"less {REPLY_HEADROOM // 1024} KiB when smaller (default {DEFAULT_MAX_REPLY})")
    g.add_argument("--max-mounts", type=int, default=DEFAULT_MAX_MOUNTS, metavar="N",
                   help="filesystems mounted inside exports that are crossed (crossmnt) and "
                   f"remembered per set of exports (default {DEFAULT_MAX_MOUNTS})")
    g.add_argument("--drc-size", type=byte_size, default=DEFAULT_DRC_BYTES, metavar="BYTES",
                   help="duplicate request cache: bytes of replies to non-idempotent calls kept "
                   f"for retransmissions, e.g. 64M; 0 disables (default {DEFAULT_DRC_BYTES >> 20}M)")
    g.add_argument("--max-connections", type=int, metavar="N",
                   help="refuse new TCP connections past N (default: from the open-file limit, "
                   "which pynfsd raises to its hard limit: half of what is left after 256 "
                   "descriptors and 512 per export)")
    g.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="close a connection with no call in progress that has completed no "
                   f"request for SECONDS; 0: never (default {DEFAULT_IDLE_TIMEOUT:g})")
    g.add_argument("--partial-record-budget", type=byte_size, default=DEFAULT_PARTIAL_BUDGET,
                   metavar="BYTES", help="memory for partially received requests over all "
                   "connections, e.g. 512M; past it, the connections whose request began longest "
                   f"ago are closed (default {DEFAULT_PARTIAL_BUDGET >> 20}M)")


def connection_limits(args: argparse.Namespace, exports: int) -> Limits:
    """The transport limits from the options (ValueError when they do not fit together)."""
    nofile = fd_limit(raise_soft=True)
    limits = Limits(max_connections=args.max_connections or default_max_connections(nofile, exports),
                    idle_timeout=args.idle_timeout, partial_budget=args.partial_record_budget)
    log.info("at most %d connections (open-file limit %d), idle timeout %g s, partial-record "
             "budget %d MiB", limits.max_connections, nofile, limits.idle_timeout,
             limits.partial_budget >> 20)
    return limits


def add_admin_options(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--state-dir", default=default, metavar="DIR",
                   help=f"the running server's --state-dir (default {DEFAULT_STATE_DIR})")
    p.add_argument("--json", action="store_true", default=default if default is argparse.SUPPRESS
                   else False, help="machine-readable JSON output")


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("clients", help="list the clients of a running server (root only)",
                       description="List the NFSv4 clients of the server running with --state-dir:"
                       " client id, state, lease left, opens, locks, client-id collisions, "
                       "principal, address and client id string (co_ownerid).")
    add_admin_options(c, DEFAULT_STATE_DIR)
    actions = c.add_subparsers(dest="action", metavar="[revoke ID]")
    r = actions.add_parser("revoke", help="revoke all state of one client",
                           description="Revoke all opens and locks of a client: its later use of "
                           "them gets NFS4ERR_ADMIN_REVOKED.")
    r.add_argument("id", metavar="ID", help="client id (hexadecimal, as `pynfsd clients` shows)")
    add_admin_options(r, argparse.SUPPRESS)
    st = sub.add_parser("status", help="show the status of a running server (root only)",
                        description="Version, uptime, clients, state and grace period of the "
                        "server running with --state-dir.")
    add_admin_options(st, DEFAULT_STATE_DIR)


def export_entries(args: argparse.Namespace) -> list[ExportEntry]:
    entries: list[ExportEntry] = []
    if args.exports:
        entries.extend(load_exports(args.exports))
    for line in args.export:
        entries.append(parse_export_line(line))
    if not entries:
        os.makedirs(DEFAULT_EXPORT, exist_ok=True)
        entries.append(parse_export_line(f"{DEFAULT_EXPORT} *(rw,root_squash,insecure)"))
    for entry in entries:
        if not os.path.isdir(entry.path):
            raise ExportsError(f"{entry.path}: not a directory")
    return entries


def default_keytab() -> str | None:
    """KRB5_KTNAME (a FILE: name or a path) or /etc/krb5.keytab, if the file exists."""
    name = os.environ.get("KRB5_KTNAME", "/etc/krb5.keytab")
    path = name.split(":", 1)[1] if name.startswith(("FILE:", "WRFILE:")) else name
    return path if os.path.isfile(path) else None


def auth_registry(args: argparse.Namespace) -> AuthRegistry:
    """AUTH_NONE, AUTH_SYS and, with a keytab or gssproxy, RPCSEC_GSS (RFC 2203)."""
    registry = AuthRegistry.default()
    runner = default_runner()  # GSS steps and principal lookups block: the shared pool
    use_proxy = args.gss_backend == "gssproxy"
    keytab = args.keytab or default_keytab()
    if keytab is None and not use_proxy:
        return registry
    try:
        from pynfsd.gss.principals import PrincipalMapper, load_map_file
        from pynfsd.rpc.gss import RpcsecGss

        static = load_map_file(args.principal_map) if args.principal_map else None
        base = PrincipalMapper(static=static)
        if use_proxy:
            from pynfsd.gss.gssproxy import GssproxyAcceptor

            proxy = GssproxyAcceptor(args.gssproxy_socket)
            registry.register(RpcsecGss(proxy, proxy.mapper(base), runner=runner))
            log.info("RPCSEC_GSS (krb5, krb5i, krb5p) via gssproxy at %s", args.gssproxy_socket)
            return registry
        from pynfsd.gss.accept import GssapiAcceptor

        assert keytab is not None
        registry.register(RpcsecGss(GssapiAcceptor(keytab, runner=runner), base, runner=runner))
    except ImportError as e:
        if args.keytab or use_proxy:
            raise ExportsError(f"RPCSEC_GSS needs the {args.gss_backend} backend: {e}") from None
        log.info("no RPCSEC_GSS: %s", e)
        return registry
    log.info("RPCSEC_GSS (krb5, krb5i, krb5p) with keytab %s, in-process", keytab)
    return registry


async def run_server(
    args: argparse.Namespace, entries: list[ExportEntry], auth: AuthRegistry | None = None,
    limits: Limits | None = None,
) -> None:
    registry = auth or AuthRegistry.default()
    gss = RPCSEC_GSS in registry.flavors()  # callbacks may need the server's GSS identity
    keytab = (args.keytab or default_keytab()) if gss else None
    io_size = ServerConfig.io_size_for(args.max_reply_size)
    config = ServerConfig(state_dir=args.state_dir, lease_time=args.lease, grace_time=args.grace,
                          callback_keytab=keytab, maxread=io_size, maxwrite=io_size,
                          max_compound_ops=args.max_compound_ops,
                          max_reply=args.max_reply_size, max_mounts=args.max_mounts)
    nfs = NFSServer(config, StaticExportResolver(entries, runner=default_runner()))
    drc = ReplyCache(args.drc_size) if args.drc_size else None
    rpc = RpcServer(registry, drc)
    nfs.register(rpc)
    server = await serve(rpc, args.bind or None, args.port, limits=limits)
    control = await admin.start_admin(nfs, args.state_dir, drc, server.table)
    for host, port in server.addresses:
        log.info("listening on %s port %d", host, port)
    for entry in entries:
        log.info("exporting %s to %s", entry.path, " ".join(s.pattern for s, _ in entry.clients))
    sweeper = asyncio.create_task(nfs.housekeeping())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    if control is not None:
        control.close()
    sweeper.cancel()
    server.close()
    await server.wait_closed()
    await nfs.shutdown()


def admin_main(args: argparse.Namespace) -> int:
    """`pynfsd clients [revoke ID]` and `pynfsd status`: one request to the control socket."""
    if args.command == "status":
        request: dict[str, object] = {"cmd": "status"}
    elif getattr(args, "action", None) == "revoke":
        request = {"cmd": "revoke", "clientid": args.id}
    else:
        request = {"cmd": "clients"}
    try:
        result = admin.call(args.state_dir, request)
    except admin.AdminClientError as e:
        print(f"pynfsd: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif request["cmd"] == "status":
        print(admin.format_status(result), end="")
    elif request["cmd"] == "revoke":
        print(f"revoked client {result['clientid']} (\"{result['co_ownerid']}\"): "
              f"{result['opens']} open(s), {result['locks']} lock(s)")
    else:
        print(admin.format_clients(result), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        return admin_main(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        entries = export_entries(args)
        os.makedirs(args.state_dir, mode=0o700, exist_ok=True)
        state_lock = lock_state_dir(args.state_dir)  # noqa: F841 - held until exit
        limits = connection_limits(args, len(entries))
        auth = auth_registry(args)
    except (ExportsError, OSError, ValueError, StateDirBusy) as e:
        print(f"pynfsd: {e}", file=sys.stderr)
        return 2
    # READ/WRITE payloads and krb5p tokens are ~1 MiB buffers: serve them from the heap
    # instead of fresh mmaps that page-fault on every use (bounded: 4 MiB blocks, 16 MiB kept).
    from pynfsd.gss.krb5crypto import keep_large_buffers_in_heap

    keep_large_buffers_in_heap(4 << 20)
    uvloop = install_event_loop()
    log.info("pynfsd %s starting (%s event loop)", __version__, "uvloop" if uvloop else "asyncio")
    try:
        asyncio.run(run_server(args, entries, auth, limits))
    except OSError as e:
        where = ", ".join(args.bind) or "all addresses"
        print(f"pynfsd: cannot listen on {where} port {args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
