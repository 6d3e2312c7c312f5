"""Delegations with two real Linux NFSv4.0 clients in qemu guests (AUTH_SYS).

One bridge namespace, one ``pynfsd serve --delegations on`` and two guests, A and B, each with
its own address so that the server's callbacks (CB_RECALL, CB_GETATTR) reach each guest's
callback service. Both boots are shared by three parts, each shown on a timeline
(``pytest -s``):

* read delegation: A opens, reads and closes ``r.txt`` again and again; the guest's
  ``/proc/self/mountstats`` shows no OPEN or CLOSE after the first. B writes the file: the
  server recalls A's delegation (A sends DELEGRETURN), B's OPEN then succeeds, and A reads B's
  data.
* write delegation: A opens ``w.txt`` for write and writes over it, past its end; the data stays
  dirty in A's page cache (writeback off, the file kept open by ``helpers/holdwrite.c``). B's
  ``stat`` sees A's size while the server's file is unchanged: the server asked A with
  CB_GETATTR (RFC 7530 §10.4.3). B's open recalls the delegation and A returns it. Had A
  flushed first (§10.4.1 says it should), B's first read has A's data; the Debian 6.1 kernel,
  which still has the file open for write, returns the delegation without flushing (its open
  stateid covers the dirty pages), so A's data reaches the server when A closes the file, and
  B's next open reads it.
* a recall ignored: a client of the project's library (``tests/vm/deleg_holder.py``, inside the
  namespace) holds a read delegation and never answers its CB_RECALL; B's write waits
  (NFS4ERR_DELAY) until the server revokes the delegation after the lease, then succeeds, and
  the holder's READ with the delegation stateid gets NFS4ERR_BAD_STATEID.
* the read and write parts again with ``sec=krb5i`` (a realm whose KDC runs in the namespace,
  rpc.gssd and rpc.svcgssd in each guest with its own ``nfs/<guest>`` key): the callbacks
  (CB_NULL, CB_RECALL, CB_GETATTR) run over RPCSEC_GSS, initiated as ``nfs@nfs-server.test``
  and accepted by the guest's rpc.svcgssd.
* restart: A holds ``r2.txt`` open with a read delegation when the server is killed and
  started again; A reclaims the open with CLAIM_PREVIOUS and its delegation (the server's
  client table shows it again; mountstats counts the reclaim as OPEN_NOATTR, and no plain
  OPEN), and later open/read/close of the file sends no OPEN while A keeps it (the server may
  ask for a reclaimed delegation back at once, as knfsd does when the callback path is not yet
  confirmed: then A returns it, and the timeline says so).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_kernel_client import vm_skip_reason
from tests.e2e.test_kernel_krb5 import krb5_skip_reason
from tests.vm.kernel import GuestKernel
from tests.vm.krb5guest import (
    SERVER_NAME,
    GuestRealm,
    Krb5PynfsdServer,
    add_guest_principal,
    assemble_krb5,
    run_layer_krb5,
    start_guest_realm,
)
from tests.vm.multi import Guest, GuestNet
from tests.vm.network import Network
from tests.vm.scene import Scene
from tests.vm.servers import REPO_ROOT


@functools.cache
def delegations_skip_reason() -> str | None:
    """Why these tests cannot run: no VM here, or a server without ``--delegations``."""
    if (why := vm_skip_reason()) is not None:
        return why
    helptext = subprocess.run([sys.executable, "-m", "pynfsd", "serve", "--help"],
                              capture_output=True, text=True, cwd=REPO_ROOT).stdout
    return None if "--delegations" in helptext else "pynfsd serve has no --delegations"


pytestmark = [pytest.mark.vm, pytest.mark.skipif(delegations_skip_reason() is not None,
                                                 reason=str(delegations_skip_reason()))]

LEASE = 10
GRACE = 20
REPEATS = 5


def ops(guest: Guest) -> dict[str, int]:
    """RPCs the guest's client has sent on its mount, per operation (``mountstats``)."""
    _, out = guest.sh("ops", show=False)
    return {words[1]: int(words[2]) for words in (line.split() for line in out)
            if len(words) == 3 and words[0] == "OPS"}


def sent(before: dict[str, int], after: dict[str, int], *names: str) -> dict[str, int]:
    """How many of each named RPC were sent between two ``ops`` readings."""
    return {n: after.get(n, 0) - before.get(n, 0) for n in names}


def delegation_count(row: dict[str, Any]) -> int:
    held = row.get("delegations", 0)
    return len(held) if isinstance(held, list | dict) else int(held)


def delegations_of(scene: Scene, hostname: str) -> int:
    """Delegations the server's client table shows for the guest named ``hostname``."""
    rows = [r for r in scene.clients() if f" {hostname}/" in str(r["co_ownerid"])]
    return sum(delegation_count(r) for r in rows if r["confirmed"])


def wait_delegations(scene: Scene, hostname: str, limit: float = 120.0) -> int:
    """Poll ``pynfsd clients`` until the guest holds a delegation again (or ``limit``)."""
    end = time.monotonic() + limit
    while (held := delegations_of(scene, hostname)) == 0 and time.monotonic() < end:
        time.sleep(3)
    return held


def read_delegation(scene: Scene, a: Guest, b: Guest) -> None:
    tl = scene.timeline
    tl.note("read delegation: A reads r.txt, B writes it")
    a.ok("cat $M/r.txt")
    tl.check(ops(a).get("OPEN", 0) >= 1, "A's first open of r.txt sent an OPEN")
    tl.check(delegations_of(scene, a.config.hostname) >= 1,
             "the server's client table shows a delegation for A")
    before = ops(a)
    a.ok(f"for i in $(seq {REPEATS}); do cat $M/r.txt > /dev/null; done")
    counts = sent(before, ops(a), "OPEN", "CLOSE", "READ")
    tl.note(f"A sent for {REPEATS} more open/read/close: {counts}")
    tl.check(counts["OPEN"] == 0 and counts["CLOSE"] == 0,
             "A opens and closes r.txt under its read delegation: no OPEN, no CLOSE")
    before = ops(a)
    b.ok("echo 'v2 from B' > $M/r.txt", limit=120)
    tl.check(sent(before, ops(a), "DELEGRETURN")["DELEGRETURN"] == 1,
             "B's open for write recalled A's delegation: A sent DELEGRETURN")
    tl.check(a.ok("cat $M/r.txt") == ["v2 from B"], "A then reads B's data")


HOST_TEXT = "host data\n"
A_TEXT = "A's data, longer than the host's"


def write_delegation(scene: Scene, a: Guest, b: Guest) -> None:
    tl = scene.timeline
    disk = scene.server.export_dir / "w.txt"
    tl.note("write delegation: A writes over w.txt and keeps it dirty, B stats and reads it")
    a.ok("keep_dirty")
    before = ops(a)
    a.ok(f'hold_open w.txt w "{A_TEXT}"')   # no stat in A: it would flush
    early = sent(before, ops(a), "OPEN", "WRITE")
    tl.check(early == {"OPEN": 1, "WRITE": 0} and disk.read_text() == HOST_TEXT,
             f"A's data is dirty in its page cache ({early}): the server's file is unchanged")
    tl.check(delegations_of(scene, a.config.hostname) >= 1, "the server shows A's delegation")
    tl.check(b.ok("stat -c %s $M/w.txt") == [str(len(A_TEXT))],
             "B's stat shows A's size: the server asked A with CB_GETATTR")
    tl.check(disk.read_text() == HOST_TEXT, "the server's file is unchanged "
             "(CB_GETATTR is no flush)")
    out = b.ok("cat $M/w.txt; echo", limit=120)   # A_TEXT has no newline of its own
    counts = sent(before, ops(a), "OPEN", "WRITE", "DELEGRETURN")
    tl.note(f"A sent since it opened w.txt: {counts}; the server's file: {disk.read_text()!r}")
    tl.check(counts["DELEGRETURN"] == 1, "B's open recalled A's write delegation: A returned it")
    if counts["WRITE"]:
        tl.check(out[:1] == [A_TEXT], "A flushed before returning: B's first read has A's data")
    else:
        tl.note("A still has w.txt open for write: Linux 6.1 returns the delegation without "
                "flushing (its open stateid covers the dirty pages; close-to-open applies)")
    a.ok("release w.txt")
    tl.check(sent(before, ops(a), "WRITE")["WRITE"] >= 1 and disk.read_text() == A_TEXT,
             "A's data is on the server's disk once A closed the file")
    tl.check(b.ok("cat $M/w.txt; echo")[:1] == [A_TEXT], "B's next open reads A's data")


def ignored_recall(scene: Scene, b: Guest) -> None:
    tl = scene.timeline
    tl.note("a client that ignores recalls (tests/vm/deleg_holder.py, the project's client "
            "library inside the namespace) holds a read delegation on g.txt; B writes g.txt")
    srv = scene.server
    argv = [sys.executable, "-m", "tests.vm.deleg_holder", srv.network.server_addr,
            str(srv.port), str(srv.export_dir), "g.txt"]
    holder = subprocess.Popen(scene.bridge.wrap(argv), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=srv.environment(),
                              cwd=REPO_ROOT)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        held = holder.stdout.readline().strip()
        tl.log("holder", held)
        tl.check(held.startswith("@@HOLDING "), "the ignoring client holds a read delegation")
        b.ok("echo 'from B' > $M/g.txt", limit=4 * LEASE)
        out, _ = holder.communicate("check\n", timeout=60)
        for line in out.splitlines():
            tl.log("holder", line)
        tl.check("@@RECALLS 1" in out and "@@READ NFS4ERR_BAD_STATEID" in out,
                 "it was recalled once, did not return, and its delegation was revoked")
        tl.check(bool(scene.log_lines("revoking the read delegation")),
                 "the server logged the revocation")
        tl.check((srv.export_dir / "g.txt").read_text() == "from B\n",
                 "B's write went through once the delegation was revoked")
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def reclaim_after_restart(scene: Scene, a: Guest) -> None:
    tl = scene.timeline
    tl.note("restart: A holds r2.txt open under a read delegation when the server dies")
    a.ok("cat $M/r2.txt && hold_open r2.txt r")
    tl.check(delegations_of(scene, a.config.hostname) >= 1, "the server shows A's delegations")
    before = ops(a)
    scene.crash_restart_server()
    held = wait_delegations(scene, a.config.hostname)
    tl.check(held >= 1, "after the restart A's client reclaimed a delegation in grace")
    # the kernel sends its reclaims (CLAIM_PREVIOUS) as OPEN_NOATTR in mountstats' terms
    reopen = sent(before, ops(a), "OPEN", "OPEN_NOATTR")
    tl.check(reopen == {"OPEN": 0, "OPEN_NOATTR": 1},
             f"A reopened r2.txt with one reclaim and no plain OPEN: {reopen}")
    reopened = ops(a)
    scene.log_lines("pynfsd.nfs4.grace")
    a.ok("release r2.txt")
    before = ops(a)
    a.ok(f"for i in $(seq {REPEATS}); do cat $M/r2.txt > /dev/null; done", limit=120)
    counts = sent(reopened, ops(a), "OPEN", "DELEGRETURN")
    if counts["DELEGRETURN"] == 0:
        tl.check(sent(before, ops(a), "OPEN")["OPEN"] == 0,
                 "A reads r2.txt under the reclaimed delegation: no OPEN")
    else:
        tl.note(f"the server asked for the reclaimed delegation back (recall flag: the callback "
                f"path was not yet confirmed when A reclaimed) and A returned it: {counts}")


def test_read_and_write_delegations_recalled_and_reclaimed(tmp_path: Path) -> None:
    """Read and write delegations, recalled over the callback channel, reclaimed in grace."""
    with Scene(tmp_path, "delegations: two kernel clients, AUTH_SYS", guests=2, lease=LEASE,
               grace=GRACE, server_args=["--delegations", "on"]) as scene:
        export = scene.server.export_dir
        (export / "r.txt").write_text("v1 from the host\n")
        (export / "r2.txt").write_text("reclaim me\n")
        (export / "w.txt").write_text(HOST_TEXT)
        (export / "g.txt").write_text("the ignoring client's\n")
        a = scene.guest("A", "deleg-a", wait=False)
        b = scene.guest("B", "deleg-b", wait=False)
        for guest in (a, b):
            guest.wait_ready()
            guest.ok("nfs_mount")
        read_delegation(scene, a, b)
        write_delegation(scene, a, b)
        ignored_recall(scene, b)
        reclaim_after_restart(scene, a)


class NamedKrb5Pynfsd(Krb5PynfsdServer):
    """The krb5 server with ``SERVER_NAME`` as its host name (its own UTS namespace): it then
    initiates its callbacks as ``nfs@nfs-server.test``, the name the guests' gssd reached it
    by, the only callback principal the Linux client accepts (check_gss_callback_principal)."""

    def command(self) -> list[str]:
        return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', SERVER_NAME,
                *super().command()]


def krb5_assembler(realm: GuestRealm, net: GuestNet, keytab: Path) -> Any:
    """Builds a guest's initramfs with rpc.gssd, rpc.svcgssd and its own machine keytab."""
    def build(kernel: GuestKernel, agent: Path, cfg: dict[str, str | int], out: Path) -> Path:
        layer = run_layer_krb5(realm, str(cfg["GUEST_NAME"]), net, keytab)
        return assemble_krb5(kernel, agent, cfg, realm, out, krb5_layer=layer)
    return build


@pytest.mark.skipif(krb5_skip_reason() is not None, reason=str(krb5_skip_reason()))
def test_krb5i_delegations_recalled_over_rpcsec_gss(tmp_path: Path) -> None:
    """The read and write delegation parts with sec=krb5i: callbacks over RPCSEC_GSS."""
    realms: list[GuestRealm] = []

    def server(workdir: Path, net: Network) -> NamedKrb5Pynfsd:
        realms.append(start_guest_realm(net, workdir))   # the KDC runs in the namespace
        return NamedKrb5Pynfsd(workdir, net, realms[0], sec="krb5i")

    try:
        with Scene(tmp_path, "delegations: two kernel clients, sec=krb5i", guests=2,
                   lease=LEASE, grace=GRACE, server_args=["--delegations", "on"],
                   server=server) as scene:
            export = scene.server.export_dir
            (export / "r.txt").write_text("v1 from the host\n")
            (export / "w.txt").write_text(HOST_TEXT)
            guests = []
            for index, (label, host) in enumerate((("A", "deleg-a.test"), ("B", "deleg-b.test"))):
                keytab = add_guest_principal(realms[0], host, tmp_path / f"{label}.keytab")
                build = krb5_assembler(realms[0], scene.bridge.guest(index), keytab)
                guests.append(scene.guest(label, host, wait=False, assembler=build))
            for guest in guests:
                guest.wait_ready()
                guest.ok(". /krb5/gssd.sh && load_krb5_modules && start_gssd && start_svcgssd")
                guest.ok("MOUNT_EXTRA=,sec=krb5i; nfs_mount")
            a, b = guests
            read_delegation(scene, a, b)
            write_delegation(scene, a, b)
            rows = [r for r in scene.clients() if " deleg-a.test/" in str(r["co_ownerid"])]
            scene.timeline.check(any("deleg-a.test" in str(r["principal"]) for r in rows),
                                 "A's client id was set up under its krb5 machine principal, "
                                 "so its callbacks run over RPCSEC_GSS")
            accepted = a.ok("grep -c 'clnt: nfs@nfs-server.test' /tmp/svcgssd.log")
            scene.timeline.check(int(accepted[-1]) >= 1, "A's rpc.svcgssd accepted the server's "
                                 "callback contexts from nfs@nfs-server.test")
    finally:
        for realm in realms:
            realm.stop()
