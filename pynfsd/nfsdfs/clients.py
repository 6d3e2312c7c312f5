"""`nfsd/clients/<n>/{info,states,ctl}`: the NFSv4 clients as knfsd shows them.

Theory of operation.  knfsd makes one directory per confirmed client under
`/proc/fs/nfsd/clients/` (named by a counter) and removes it when the client goes; rpc.mountd
watches the directory with inotify and nfsdclnts reads the files (NFS-UTILS-INTEROP.md).
inotify only sees changes made through the VFS, so `ClientDirs.sync` makes and removes the
directories by calling mkdir(2)/rmdir(2) on the mounted tree from a worker thread; the FUSE
`mkdir` (from this process only) lands in `make_dir`, which fills the new directory.  `run`
syncs every `SYNC_INTERVAL` seconds against the state manager's confirmed clients.

* `info`: `clientid: 0x<id>`, `address: "<addr>:<port>"` (the address and source port of the
  connection that sent SETCLIENTID, as knfsd's `%pISpc`: `"192.0.2.1:851"`, `"[2001:db8::1]:851"`),
  `status: confirmed|courtesy`,
  `seconds from last renew: N`, `name: "<co_ownerid>"` (non-printable bytes as `\\xNN`),
  `minor version: 0`, as knfsd prints them.
* `states`: one YAML line per open and lock state, always with `type` and `superblock`
  (`MAJ:MIN:INODE` in hex, hex, decimal) and `filename` (the last two path components; the
  backend's `where` is called in a worker thread), e.g.
  `- 0x0000000100000001...: { type: open, access: rw, deny: --, superblock: "fd:01:1234",
  filename: "dir/a.txt", owner: "..." }`.
* `ctl`: writing `expire` revokes the client (its stateids get NFS4ERR_ADMIN_REVOKED, RFC 7530
  §9.8), as knfsd expires it; anything else is EINVAL.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
from collections.abc import Callable
from typing import Any

from pynfsd.nfs4.fh import KIND_EXPORT, decode_fh
from pynfsd.nfs4.state.clients import printable_id
from pynfsd.nfsdfs.tree import File, Node, Tree, TreeError

log = logging.getLogger(__name__)

SYNC_INTERVAL = 1.0
ACCESS_READ, ACCESS_WRITE = 1, 2  # OPEN4_SHARE_ACCESS_* and OPEN4_SHARE_DENY_*


def rw(bits: int) -> str:
    return ("r" if bits & ACCESS_READ else "-") + ("w" if bits & ACCESS_WRITE else "-")


def superblock(dev: int, ino: int) -> str:
    return f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"


def last_two(path: str) -> str:
    return "/".join(path.rstrip("/").split("/")[-2:]) if path else ""


def sockaddr_text(addr: str, port: int) -> str:
    """An address and port as knfsd's `%pISpc` prints them: `a.b.c.d:port`, `[v6]:port` (the
    IPv6 address compressed, without its scope)."""
    host = addr.partition("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{addr}:{port}"
    return f"{ip.compressed}:{port}" if ip.version == 4 else f"[{ip.compressed}]:{port}"


def stateid_hex(stateid: Any) -> str:
    return "0x" + stateid.seqid.to_bytes(4, "big").hex() + stateid.other.hex()


class ClientDirs:
    """The `nfsd/clients/` directory kept in step with the server's clients."""

    def __init__(self, tree: Tree, state: Any, backends: Any, runner: Any,
                 clock: Callable[[], float]) -> None:
        self.tree = tree
        self.state = state  # a StateManager
        self.backends = backends
        self.runner = runner
        self.clock = clock
        self.folder = tree.mkdirs("nfsd/clients")
        self.mountpoint = ""
        self.dirs: dict[int, str] = {}  # clientid -> directory name
        self._coming: dict[str, int] = {}  # names being made -> clientid
        self._next = 1

    # ------------------------------------------------------------ directories
    def clients(self) -> dict[int, Any]:
        return dict(self.state.clients.confirmed)

    async def sync(self) -> None:
        """Make and remove directories (through the mount) to match the confirmed clients."""
        if not self.mountpoint:
            return
        clients = self.clients()
        base = os.path.join(self.mountpoint, "nfsd", "clients")
        for clientid in [c for c in clients if c not in self.dirs]:
            name = str(self._next)
            self._next += 1
            self._coming[name] = clientid
            try:
                await self.runner.run(os.mkdir, os.path.join(base, name))
            except OSError as e:
                log.warning("nfsd/clients/%s: not made: %s", name, e)
                continue
            finally:
                self._coming.pop(name, None)
            self.dirs[clientid] = name
        for clientid in [c for c in self.dirs if c not in clients]:
            name = self.dirs.pop(clientid)
            try:
                await self.runner.run(os.rmdir, os.path.join(base, name))
            except OSError as e:
                log.warning("nfsd/clients/%s: not removed: %s", name, e)

    async def run(self, mountpoint: str, interval: float = SYNC_INTERVAL) -> None:
        self.mountpoint = mountpoint
        while True:
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("nfsd/clients: sync failed")
            await asyncio.sleep(interval)

    def make_dir(self, parent: Node, name: str) -> Node:
        """The FUSE mkdir of a client directory (only those `sync` is making)."""
        clientid = self._coming.get(name)
        if parent.inode != self.folder.inode or clientid is None or name in parent.children:
            raise TreeError(errno.EPERM)
        node = self.tree.add(parent.inode, name)
        self.tree.add(node.inode, "info", File(0o444, show=lambda: self.info(clientid)))
        self.tree.add(node.inode, "states", File(0o444, show=lambda: self.states(clientid)))
        self.tree.add(node.inode, "ctl", File(
            0o200, store=lambda data, pid: self.ctl(clientid, data)))
        return node

    # ------------------------------------------------------------ files
    def info(self, clientid: int) -> bytes:
        c = self.state.clients.confirmed.get(clientid)
        if c is None:
            return b""
        now = self.clock()
        renewed = max(0, int(now - (c.expires - self.state.enforced_lease)))
        lines = [f"clientid: 0x{clientid:x}", f'address: "{sockaddr_text(c.client_addr, c.client_port)}"',
                 f"status: {'courtesy' if c.courteous or now >= c.expires else 'confirmed'}",
                 f"seconds from last renew: {renewed}",
                 f'name: "{printable_id(c.ownerid)}"', "minor version: 0"]
        return ("\n".join(lines) + "\n").encode()

    async def states(self, clientid: int) -> bytes:
        c = self.state.clients.confirmed.get(clientid)
        if c is None:
            return b""
        rows: list[tuple[str, Any, str]] = []  # (stateid, the state, kind)
        for oo in list(c.open_owners.values()):
            rows += [(stateid_hex(o.stateid()), o, "open") for o in oo.opens.values()]
        for lo in list(c.lock_owners.values()):
            rows += [(stateid_hex(ls.stateid()), ls, "lock") for ls in lo.lock_states]
        rows += [(stateid_hex(d.stateid()), d, "deleg") for d in list(c.delegations.values())]
        out = []
        for sid, st, kind in rows:
            key = st.open.file_key if kind == "lock" else st.file_key
            dev, ino, path = await self.runner.run(self._where, key)
            fields = [f"type: {kind}"]
            if kind == "open":
                fields += [f"access: {rw(st.access)}", f"deny: {rw(st.deny)}"]
            elif kind == "deleg":  # knfsd: "access: r" or "access: w", no owner
                fields += [f"access: {'w' if st.write else 'r'}"]
            fields += [f'superblock: "{superblock(dev, ino)}"', f'filename: "{last_two(path)}"']
            if kind != "deleg":
                fields += [f'owner: "{printable_id(st.owner.owner)}"']
            out.append(f"- {sid}: {{ {', '.join(fields)} }}\n")
        return "".join(out).encode()

    def _where(self, file_key: bytes) -> tuple[int, int, str]:
        try:
            d = decode_fh(file_key)
        except Exception:  # noqa: BLE001 - not a handle of ours
            return 0, 0, ""
        backend = self.backends.get(d.fsid) if d.kind == KIND_EXPORT else None
        if backend is None:
            return 0, 0, ""
        try:
            dev, ino, path = backend.where(d.ident)
            return int(dev), int(ino), str(path)
        except OSError:  # removed meanwhile (an open file kept by its hold)
            return 0, 0, ""

    def ctl(self, clientid: int, data: bytes) -> int:
        if data.strip() != b"expire":
            return errno.EINVAL
        if not self.state.revoke_client(clientid):
            return errno.ENOENT
        log.warning("nfsd/clients: client 0x%x expired by a write of `expire` to its ctl",
                    clientid)
        return 0
