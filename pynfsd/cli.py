"""The `pynfsd` command line.

    pynfsd serve [--export 'LINE']... [--exports FILE] [--bind ADDR] [--port N]
                 [--state-dir DIR] [--lease SECONDS] [--grace SECONDS] [--log-level LEVEL]
                 [Kerberos options] [limits]       (`pynfsd serve --help` lists them all)
    pynfsd clients [--state-dir DIR] [--json]
    pynfsd clients revoke ID [--state-dir DIR] [--json]
    pynfsd status [--state-dir DIR] [--json]
    pynfsd listen [add|remove ADDR:PORT] [--state-dir DIR] [--json]
    pynfsd exportfs [-r|-v] [--state-dir DIR]; pynfsd cache show|flush|status [NAME]

The admin commands talk to a running server over `<state-dir>/control.sock` (root only).

`serve` checks everything it can before it listens: option values (argparse: a usage error),
the exports (each problem named `file:line` or `--export #N`), the state directory and the
Kerberos files; each failure is one line on stderr and an exit code from `_EXIT_CODES` (shown
by `pynfsd serve --help`).  Once listening it logs each address once, each export as
`exportfs -v` shows it and the mount command a client would use.

Sockets passed in by systemd (LISTEN_FDS, sd_listen_fds(3)) replace the default listener; with
them, `--bind`/`--port` add listeners only when given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence

from pynfsd import __version__, admin, exportsvc
from pynfsd.admincli import DEFAULT_STATE_DIR, add_admin_commands, admin_main
from pynfsd.blocking import default_runner
from pynfsd.exports import ExportsError, parse_export_line
from pynfsd.exports.describe import export_lines, mount_lines, unreachable
from pynfsd.exports.mounts import DEFAULT_MAX_MOUNTS
from pynfsd.exports.sources import gather_exports
from pynfsd.exports.types import ExportEntry
from pynfsd.gss.principals import Identity, load_map_file
from pynfsd.metrics.http import DEFAULT_PORT as METRICS_PORT
from pynfsd.metrics.http import MetricsServer, parse_address
from pynfsd.metrics.serve import snapshotter, start_metrics
from pynfsd.metrics.snapshot import Sources, gss_of, op_names
from pynfsd.metrics.stats import Stats
from pynfsd.nfs4.backends import keyed_local_backend
from pynfsd.nfs4.server import (
    DEFAULT_MAX_COMPOUND_OPS,
    DEFAULT_MAX_REPLY,
    REPLY_HEADROOM,
    NFSServer,
    ServerConfig,
)
from pynfsd.nfs4.state.delegations import DEFAULT_MAX_CLIENT_DELEGATIONS, DEFAULT_MAX_DELEGATIONS
from pynfsd.nfsdfs import serve as nfsdfs_serve
from pynfsd.recovery import serve as recovery_serve
from pynfsd.rpc.auth import AuthRegistry
from pynfsd.rpc.drc import DEFAULT_MAX_BYTES as DEFAULT_DRC_BYTES
from pynfsd.rpc.drc import ReplyCache
from pynfsd.rpc.flavors import RPCSEC_GSS
from pynfsd.rpc.listeners import DEFAULT_MAX_LISTENERS, ListenerError, PassedSocket, passed_sockets
from pynfsd.rpc.server import RpcServer
from pynfsd.rpc.transport import (
    ALL_ADDRESSES,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_RECORD,
    DEFAULT_PARTIAL_BUDGET,
    Limits,
    RpcTcpServer,
    bind_sockets,
    default_max_connections,
    fd_limit,
    install_event_loop,
    serve_sockets,
)
from pynfsd.statelock import StateDirBusy, lock_state_dir

log = logging.getLogger("pynfsd")

DEFAULT_EXPORT = "/srv/pynfsd"
#: Exit codes of `pynfsd serve` (also in its --help).
EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3
#: Longest lease and grace period accepted (knfsd's limit for both).
MAX_LEASE = 3600

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
                       epilog=_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--export", action="append", default=[], metavar="LINE",
                   help="one exports(5) line, e.g. '/srv/share *(rw,no_root_squash)'; repeatable")
    s.add_argument("--exports", metavar="FILE", help="an exports(5) file")
    s.add_argument("--bind", action="append", default=[], metavar="ADDR",
                   help="address to listen on; repeatable (default: all IPv4 and IPv6 addresses, "
                   "unless systemd passed listening sockets: then only those)")
    s.add_argument("--port", type=_int_in(0, 65535), metavar="N",
                   help="TCP port (default 2049; 0: any free port, logged)")
    s.add_argument("--no-listen", action="store_true",
                   help="start with no listening socket of --bind/--port, as knfsd starts: "
                   "sockets come from `pynfsd listen add` or rpc.nfsd (--nfsd-fs portlist)")
    s.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"where client records and filehandle keys are kept (default {DEFAULT_STATE_DIR})")
    s.add_argument("--lease", type=_int_in(1, MAX_LEASE), default=90, metavar="SECONDS",
                   help="lease time announced to clients (default 90); a client that stops renewing "
                   "loses its lease this long plus min(10%%, 2 s) after its last renewal; "
                   f"1 to {MAX_LEASE}")
    s.add_argument("--grace", type=_int_in(0, MAX_LEASE), default=90, metavar="SECONDS",
                   help=f"grace period after a restart for state reclaim (default 90; 0 to {MAX_LEASE})")
    s.add_argument("--delegations", choices=["on", "off"], default="on",
                   help="grant read and write delegations to clients whose callback path "
                   "works (default on; the export option no_delegations turns them off per export)")
    s.add_argument("--max-delegations", type=_int_in(0, 1 << 24),
                   default=DEFAULT_MAX_DELEGATIONS, metavar="N",
                   help=f"delegations out at once, in all (default {DEFAULT_MAX_DELEGATIONS})")
    s.add_argument("--max-client-delegations", type=_int_in(0, 1 << 24),
                   default=DEFAULT_MAX_CLIENT_DELEGATIONS, metavar="N",
                   help="delegations one client holds at most "
                   f"(default {DEFAULT_MAX_CLIENT_DELEGATIONS})")
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
    s.add_argument("--metrics", type=metrics_address, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. "
                   f"127.0.0.1:{METRICS_PORT} (default: off)")
    add_limit_options(s)
    exportsvc.add_arguments(s, _positive, _positive_seconds)
    recovery_serve.add_arguments(s, _positive)
    nfsdfs_serve.add_argument(s)
    add_admin_commands(sub)
    return parser


_EXIT_CODES = """\
exit codes:
  0  stopped by SIGTERM or SIGINT
  1  internal error (a traceback is logged)
  2  usage or configuration error: a bad option, an exports line (file:line), an export
     directory that does not exist or is not a directory, an unusable state directory,
     a missing --keytab or --principal-map, a socket passed by systemd (LISTEN_FDS) that
     is not a listening TCP socket, more listening sockets than --max-listeners
  3  unavailable: the port or address cannot be used (in use, not permitted, no such
     address), another server holds the state directory, or etcd (--recovery) does not
     answer
"""


class ConfigError(ValueError):
    """A setting that cannot be used (exit code 2, like an exports error)."""


class ListenError(Exception):
    """The listening sockets could not be made (exit code 3); the message says why."""


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a decimal integer from `low` to `high` (no upper bound if None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text}: must be {bounds}")
        return value
    return parse


_positive = _int_in(1)


def _seconds(text: str) -> float:
    """A finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number of seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0 seconds")
    return value


def metrics_address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _partial_budget(text: str) -> int:
    value = byte_size(text)
    if value < DEFAULT_MAX_RECORD:
        raise argparse.ArgumentTypeError(f"{text}: must hold one record of the maximum size "
                                         f"({DEFAULT_MAX_RECORD} bytes)")
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
    g.add_argument("--max-mounts", type=_positive, default=DEFAULT_MAX_MOUNTS, metavar="N",
                   help="filesystems mounted inside exports that are crossed (crossmnt) and "
                   f"remembered per set of exports (default {DEFAULT_MAX_MOUNTS})")
    g.add_argument("--drc-size", type=byte_size, default=DEFAULT_DRC_BYTES, metavar="BYTES",
                   help="duplicate request cache: bytes of replies to non-idempotent calls kept "
                   f"for retransmissions, e.g. 64M; 0 disables (default {DEFAULT_DRC_BYTES >> 20}M)")
    g.add_argument("--max-connections", type=_positive, metavar="N",
                   help="refuse new TCP connections past N (default: from the open-file limit, "
                   "which pynfsd raises to its hard limit: half of what is left after 256 "
                   "descriptors and 512 per export)")
    g.add_argument("--idle-timeout", type=_seconds, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="close a connection with no call in progress that has completed no "
                   f"request for SECONDS; 0: never (default {DEFAULT_IDLE_TIMEOUT:g})")
    g.add_argument("--partial-record-budget", type=_partial_budget, default=DEFAULT_PARTIAL_BUDGET,
                   metavar="BYTES", help="memory for partially received requests over all "
                   "connections, e.g. 512M; past it, the connections whose request began longest "
                   f"ago are closed (default {DEFAULT_PARTIAL_BUDGET >> 20}M)")
    g.add_argument("--max-listeners", type=_positive, default=DEFAULT_MAX_LISTENERS, metavar="N",
                   help="listening sockets (bound at start, passed by systemd and added with "
                   f"`pynfsd listen add`); adding one more is refused (default {DEFAULT_MAX_LISTENERS})")


def connection_limits(args: argparse.Namespace, exports: int) -> Limits:
    """The transport limits from the options (ValueError when they do not fit together)."""
    nofile = fd_limit(raise_soft=True)
    limits = Limits(max_connections=args.max_connections or default_max_connections(nofile, exports),
                    idle_timeout=args.idle_timeout, partial_budget=args.partial_record_budget,
                    max_listeners=args.max_listeners)
    log.info("at most %d connections (open-file limit %d), idle timeout %g s, partial-record "
             "budget %d MiB", limits.max_connections, nofile, limits.idle_timeout,
             limits.partial_budget >> 20)
    return limits


def export_entries(args: argparse.Namespace) -> list[ExportEntry]:
    """The exports of --exports and --export (ExportsError naming file:line), or the default."""
    if args.exports or args.export:
        return list(gather_exports(args.exports, args.export))
    try:
        os.makedirs(DEFAULT_EXPORT, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the default export {DEFAULT_EXPORT}: {e.strerror}") from None
    return [parse_export_line(f"{DEFAULT_EXPORT} *(rw,root_squash,insecure)")]


def make_state_dir(path: str) -> None:
    """Create --state-dir (mode 0700) unless it exists; ConfigError when it cannot be."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError(f"state directory {path} is not a directory")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create state directory {path}: {e.strerror}") from None


def log_startup(addresses: list[tuple[str, int]], entries: list[ExportEntry]) -> None:
    """Where the server listens, each export as `exportfs -v` shows it, and how to mount it."""
    for host, port in addresses:
        log.info("listening on %s port %d", host, port)
    if not addresses:
        log.info("no listening socket yet: add one with `pynfsd listen add` or rpc.nfsd")
    named = [host for host, _ in addresses if host not in ("0.0.0.0", "::")]
    host = named[0] if len(named) == len(addresses) and named else socket.gethostname()
    port = addresses[0][1] if addresses else 2049
    for entry in entries:
        origins = [f" ({o})" for o in entry.origins] or [""] * len(entry.clients)
        for line, where in zip(export_lines(entry), origins, strict=True):
            log.info("exporting %s%s", line, where)
        for line in mount_lines(entries, entry, host, port):
            log.info("  %s", line)
        for pattern in unreachable(entries, entry):
            log.warning("%s cannot be reached by %s: it is outside that client's fsid=0 export",
                        entry.path, pattern)


def _principal_map(path: str | None) -> dict[str, Identity] | None:
    if path is None:
        return None
    try:
        return load_map_file(path)
    except OSError as e:
        raise ConfigError(f"--principal-map {path}: {e.strerror}") from None


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
    if args.keytab and not use_proxy and not os.path.isfile(args.keytab):
        raise ConfigError(f"--keytab {args.keytab}: no such file")
    keytab = args.keytab or default_keytab()
    if keytab is None and not use_proxy:
        return registry
    try:
        from pynfsd.gss.principals import PrincipalMapper
        from pynfsd.rpc.gss import RpcsecGss

        static = _principal_map(args.principal_map)
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


async def listen(rpc: RpcServer, args: argparse.Namespace, limits: Limits,
                 passed: Sequence[PassedSocket] = ()) -> RpcTcpServer:
    """Serve on the sockets passed in and, without them or when asked, on --bind/--port."""
    sockets = [(p.sock, f"systemd fd {p.fd} ({p.name})") for p in passed]
    port = 2049 if args.port is None else args.port
    try:
        if not args.no_listen and (not passed or args.bind or args.port is not None):
            wildcard = not args.bind
            hosts = ALL_ADDRESSES if wildcard else args.bind
            sockets += [(s, "--bind") for s in bind_sockets(hosts, port, optional_v6=wildcard)]
    except OSError as e:
        for sock, _ in sockets:
            sock.close()
        where = ", ".join(args.bind) or "all addresses"
        raise ListenError(f"cannot listen on {where} port {port}: {e.strerror or e}") from None
    try:
        return await serve_sockets(rpc, sockets, limits)
    except ListenerError as e:
        raise ConfigError(str(e)) from None


async def metrics_endpoint(address: tuple[str, int], sources: Sources) -> MetricsServer:
    """The --metrics endpoint, started before the NFS listeners (exit 3 if it cannot be)."""
    try:
        return await start_metrics(address, snapshotter(sources), default_runner())
    except OSError as e:
        raise ListenError(f"cannot serve metrics on {address[0]} port {address[1]}: "
                          f"{e.strerror or e}") from None


async def run_server(
    args: argparse.Namespace, entries: list[ExportEntry], auth: AuthRegistry | None = None,
    limits: Limits | None = None, passed: Sequence[PassedSocket] = (),
) -> None:
    registry = auth or AuthRegistry.default()
    gss = RPCSEC_GSS in registry.flavors()  # callbacks may need the server's GSS identity
    keytab = (args.keytab or default_keytab()) if gss else None
    io_size = ServerConfig.io_size_for(args.max_reply_size)
    config = ServerConfig(state_dir=args.state_dir, lease_time=args.lease, grace_time=args.grace,
                          callback_keytab=keytab, maxread=io_size, maxwrite=io_size,
                          max_compound_ops=args.max_compound_ops,
                          max_reply=args.max_reply_size, max_mounts=args.max_mounts,
                          delegations=args.delegations == "on",
                          max_delegations=args.max_delegations,
                          max_client_delegations=args.max_client_delegations)
    cluster = await recovery_serve.join(args, config)
    if cluster is not None:
        config.backend_factory = keyed_local_backend(cluster.key)
    stats = Stats()
    exports = await exportsvc.ExportService.start(args, entries, lambda: export_entries(args),
                                                  config.max_mounts)
    nfs = NFSServer(config, exports.views, stats=stats,
                    client_store=cluster.recovery if cluster else None,
                    grace=cluster.grace if cluster else None)
    if cluster is not None:
        cluster.run()
    drc = ReplyCache(args.drc_size) if args.drc_size else None
    rpc = RpcServer(registry, drc, stats)
    nfs.register(rpc)
    limits = limits or Limits(max_connections=default_max_connections(fd_limit()))
    sources = Sources(stats, nfs.state, nfs.grace, drc, None, gss_of(registry), op_names(nfs.ops))
    metrics = await metrics_endpoint(args.metrics, sources) if args.metrics else None
    server = await listen(rpc, args, limits, passed)
    sources.connections = server.table
    control = await admin.start_admin(nfs, args.state_dir, drc, server.table, listeners=server,
                                      snapshot=snapshotter(sources),
                                      commands=exports.admin_commands())
    try:
        tree = await nfsdfs_serve.start(args, exports, server, nfs) if args.nfsd_fs else None
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"--nfsd-fs {args.nfsd_fs}: cannot mount the control tree: {e}") from None
    log_startup(server.addresses, entries)
    sweeper = asyncio.create_task(nfs.housekeeping())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(exports.reload_logged()))
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        if tree is not None:
            await tree.close()
    if control is not None:
        control.close()
    if metrics is not None:
        metrics.close()
    sweeper.cancel()
    server.close()
    await server.wait_closed()
    await nfs.shutdown()
    if cluster is not None:
        await cluster.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        return admin_main(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        entries = export_entries(args)
        make_state_dir(args.state_dir)
        state_lock = lock_state_dir(args.state_dir)  # noqa: F841 - held until exit
        exportsvc.check_arguments(args)
        nfsdfs_serve.check(args)
        recovery_serve.check(args)
        limits = connection_limits(args, len(entries))
        auth = auth_registry(args)
        passed = passed_sockets()
    except StateDirBusy as e:
        print(f"pynfsd: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ExportsError, OSError, ValueError, ListenerError) as e:
        print(f"pynfsd: {e}", file=sys.stderr)
        return EXIT_CONFIG
    # READ/WRITE payloads and krb5p tokens are ~1 MiB buffers: serve them from the heap
    # instead of fresh mmaps that page-fault on every use (bounded: 4 MiB blocks, 16 MiB kept).
    from pynfsd.gss.krb5crypto import keep_large_buffers_in_heap

    keep_large_buffers_in_heap(4 << 20)
    uvloop = install_event_loop()
    log.info("pynfsd %s starting (%s event loop)", __version__, "uvloop" if uvloop else "asyncio")
    try:
        asyncio.run(run_server(args, entries, auth, limits, passed))
    except (ListenError, recovery_serve.EtcdUnavailable) as e:
        print(f"pynfsd: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ConfigError as e:
        print(f"pynfsd: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
