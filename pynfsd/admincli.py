"""The admin commands of the `pynfsd` command line: one request each to a running server.

    pynfsd clients [revoke ID]            pynfsd status
    pynfsd listen [add|remove ADDR:PORT]
    pynfsd exportfs [-r | -v]             pynfsd cache show|flush|status [NAME]
    pynfsd nfs-utils -- CMD [ARGS...]     (pynfsd.nfsutils: CMD sees the server's control tree)

Each talks to the server running with `--state-dir` over `<state-dir>/control.sock` (root
only, `pynfsd.admin`), prints what it answers (or JSON with `--json`) and exits 0, or 1 with
the server's or the socket's message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pynfsd import admin, nfsutils

DEFAULT_STATE_DIR = "/var/lib/pynfsd"
CACHES = ("auth.unix.ip", "nfsd.export", "nfsd.fh", "auth.unix.gid")


def add_admin_options(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--state-dir", default=default, metavar="DIR",
                   help=f"the running server's --state-dir (default {DEFAULT_STATE_DIR})")
    p.add_argument("--json", action="store_true", default=default if default is argparse.SUPPRESS
                   else False, help="machine-readable JSON output")


LISTEN_TEXT = """
List the addresses the server running with --state-dir listens on, or add or remove one.  A
removed address accepts no new connection; its connections stay open.  ADDR:PORT is numeric:
0.0.0.0:2049, 192.0.2.1:2049, [::]:2049 (IPv6 only), [::1]:2050; port 0 picks a free port.
"""

EXPORTFS_TEXT = """
-r: read the exports the server was started with again (--exports, --export) and flush its
caches; mounted clients keep working, a removed export's filehandles become stale.  -v (the
default): every export with all its options.  A table with errors is refused with the
file:line message and the running one stays.
"""


def _text(block: str) -> str:
    """A help text block as one paragraph (argparse wraps it)."""
    return " ".join(block.split())


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *,
             help: str, description: str) -> argparse.ArgumentParser:
    """One admin command, with the options every admin command has."""
    p = sub.add_parser(name, help=help, description=description)
    add_admin_options(p, DEFAULT_STATE_DIR)
    return p


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = _command(sub, "clients", help="list the clients of a running server (root only)",
                       description="List the NFSv4 clients of the server running with --state-dir:"
                       " client id, state, lease left, opens, locks, client-id collisions, "
                       "principal, address and client id string (co_ownerid).")
    actions = c.add_subparsers(dest="action", metavar="[revoke ID]")
    r = actions.add_parser("revoke", help="revoke all state of one client",
                           description="Revoke all opens and locks of a client: its later use of "
                           "them gets NFS4ERR_ADMIN_REVOKED.")
    r.add_argument("id", metavar="ID", help="client id (hexadecimal, as `pynfsd clients` shows)")
    add_admin_options(r, argparse.SUPPRESS)
    _command(sub, "status", help="show the status of a running server (root only)",
             description="Version, uptime, clients, state and grace period of the "
             "server running with --state-dir.")
    add_listen_command(sub)
    add_export_commands(sub)
    t = _command(sub, "takeover", help="take over a dead cluster node's clients (root only)",
                 description="On a server started with --recovery etcd://...: end NODE's "
                 "membership now (it is down) and begin a cluster-wide grace in which NODE's "
                 "clients reclaim here.  Run it before moving NODE's address to this server.")
    t.add_argument("node", metavar="NODE", help="the --node-id of the node taken over")
    nfsutils.add_command(sub, DEFAULT_STATE_DIR)


def add_listen_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ls = _command(sub, "listen", help="list, add or remove listening sockets (root only)",
                  description=_text(LISTEN_TEXT))
    actions = ls.add_subparsers(dest="action", metavar="[add|remove ADDR:PORT]")
    for name, text in (("add", "listen on ADDR:PORT too"), ("remove", "stop listening on ADDR:PORT")):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("address", metavar="ADDR:PORT")
        add_admin_options(a, argparse.SUPPRESS)


def add_export_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = _command(sub, "exportfs", help="reload or show the exports (root only)",
                 description=_text(EXPORTFS_TEXT))
    how = e.add_mutually_exclusive_group()
    how.add_argument("-r", dest="reload", action="store_true", help="reload the exports")
    how.add_argument("-v", dest="show", action="store_true", help="show the exports (default)")
    c = _command(sub, "cache", help="show or flush the export and credential caches (root only)",
                       description="The caches the server's access decisions read: "
                       f"{', '.join(CACHES)}.  show: their contents in the kernel's format "
                       "(/proc/net/rpc/NAME/content; a line starting with '# ' is not usable "
                       "now); flush: drop every entry, so the next request asks again; status: "
                       "sizes and counters.")
    c.add_argument("action", choices=("show", "flush", "status"))
    c.add_argument("name", nargs="?", choices=CACHES, metavar="NAME",
                   help="one cache (default: all)")


def admin_request(args: argparse.Namespace) -> dict[str, object]:
    """The control request of an admin command."""
    if args.command == "status":
        return {"cmd": "status"}
    if args.command == "listen":
        return {"cmd": "listen", "action": args.action, "address": getattr(args, "address", None)}
    if args.command == "exportfs":
        return {"cmd": "exportfs", "action": "reload" if args.reload else "show"}
    if args.command == "cache":
        return {"cmd": "cache", "action": args.action, "name": args.name}
    if args.command == "takeover":
        return {"cmd": "takeover", "node": args.node}
    if getattr(args, "action", None) == "revoke":
        return {"cmd": "revoke", "clientid": args.id}
    return {"cmd": "clients"}


def format_exportfs(request: dict[str, object], result: Any) -> str:
    if request["action"] == "show":
        return "".join(f"{line}\n" for line in result) or "nothing is exported\n"
    parts = [f"{result['exports']} export(s)"]
    parts += [f"{what} {', '.join(result[what])}" for what in ("added", "removed", "changed")
              if result[what]]
    return "exports reloaded: " + "; ".join(parts) + "\n"


def format_cache(request: dict[str, object], result: Any) -> str:
    if request["action"] == "flush":
        return f"flushed {', '.join(result)}\n"
    if request["action"] == "status":
        return "".join(f"{name}: " + " ".join(f"{k}={v}" for k, v in sorted(row.items())) + "\n"
                       for name, row in result.items())
    return "".join(f"# {name}\n{text}" for name, text in result.items())


def admin_main(args: argparse.Namespace) -> int:
    """An admin command: one request to the control socket, its answer printed."""
    if args.command == "nfs-utils":
        return nfsutils.nfs_utils_main(args)
    request = admin_request(args)
    try:
        result = admin.call(args.state_dir, request)
    except admin.AdminClientError as e:
        print(f"pynfsd: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif request["cmd"] == "status":
        print(admin.format_status(result), end="")
    elif request["cmd"] == "listen":
        print(format_listen(args.action, result), end="")
    elif request["cmd"] == "exportfs":
        print(format_exportfs(request, result), end="")
    elif request["cmd"] == "cache":
        print(format_cache(request, result), end="")
    elif request["cmd"] == "takeover":
        print(f"node {result['node']} takes over the clients of {result['took_over']}: "
              f"cluster grace, epoch {result['epoch']} (recovering epoch "
              f"{result['recovery_epoch']})")
    elif request["cmd"] == "revoke":
        print(f"revoked client {result['clientid']} (\"{result['co_ownerid']}\"): "
              f"{result['opens']} open(s), {result['locks']} lock(s)")
    else:
        print(admin.format_clients(result), end="")
    return 0


def format_listen(action: str | None, result: Any) -> str:
    if action == "add":
        return f"listening on {result['listen']}\n"
    if action == "remove":
        return (f"no longer listening on {result['listen']} ({result['accepted']} connections "
                "accepted there; open ones stay)\n")
    return "".join(f"{admin.format_listeners([row])}\n" for row in result) or "no listening socket\n"
