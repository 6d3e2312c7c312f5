"""Takeover between two pynfsd nodes under a Linux NFSv4.0 client in qemu (one VM boot).

Node A and node B each run in their own network namespace and serve the same host directory;
the guest mounts the floating service address, which starts on A (``tests/vm/failover.py``,
``tests/vm/takeover.py``). The guest holds a whole-file fcntl lock on ``locked.dat`` and
appends fsync'ed records to ``journal.dat`` under another; a second client (the project's
client library, ``tests/vm/contender.py``, in the bridge namespace) has ``locked.dat`` open
and sees the guest's lock. A is killed with SIGKILL mid-write. Two ways to keep the nodes'
client records (one VM boot each):

* ``etcd``: a 3-member etcd cluster in the test's namespace, ``--recovery etcd://...``; B
  runs from the start, notices that A's membership lapsed, begins the cluster's grace for
  A's clients, and then receives the service address;
* ``state-dir``: one shared ``--state-dir`` (the embedded file store on shared storage); B
  starts once the address is on its side, and its grace period is the takeover's.

What must hold: the kernel reclaims its opens and both locks on B and the writer finishes
without an error; every record the guest saw fsync'ed is on the disk, in order and intact;
the second client, after reclaiming its open, asks for the guest's lock during the takeover
and is answered NFS4ERR_GRACE until grace ends, then NFS4ERR_DENIED while the guest holds it
(its blocking request queued), and is granted the lock once the guest releases it, before
a later request of the guest itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.test_kernel_client import vm_skip_reason
from tests.e2e.test_kernel_scenarios import (
    RECORD,
    fsynced,
    lost_lock_messages,
    mount,
    record,
    try_lock,
)
from tests.vm.failover import FLOATING_ADDR, FLOATING_MAC
from tests.vm.multi import Guest
from tests.vm.takeover import STORES, Contender, TakeoverScene

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason()))]

LEASE = 10
GRACE = 20
COUNT = 60
# end the holder of locked.dat and wait until its descriptors (and so its lock) are gone
UNHOLD = ("p=$(cat /tmp/holder.locked.dat); kill $p; "
          "while [ -n \"$(ls /proc/$p/fd 2>/dev/null)\" ]; do sleep 0.1; done")


def hold_and_write(g1: Guest) -> None:
    mount(g1)
    g1.ok("holder locked.dat")
    g1.ok(f"writer journal.dat G1 {COUNT} 300")
    g1.wait_line(r"^@@FSYNCED G1 10$", 60)


def lock_answers(c2: Contender) -> list[str]:
    """The statuses of the second client's LOCK polls after the takeover, in order."""
    return [ln.text.split()[1] for ln in c2.find(r"^@@LOCK ")]


def check_grace_then_denied(scene: TakeoverScene, c2: Contender) -> None:
    tl = scene.timeline
    c2.wait_line(r"^@@LOCK NFS4ERR_DENIED$", GRACE + LEASE + 60)
    answers = lock_answers(c2)
    graced = answers.index("NFS4ERR_DENIED")
    during = answers[:graced]
    tl.check("NFS4ERR_GRACE" in during and set(during) <= {"NFS4ERR_GRACE", "NFS4ERR_DELAY"},
             f"C2's lock was refused with NFS4ERR_GRACE {during.count('NFS4ERR_GRACE')} times "
             "(NFS4ERR_DELAY aside), then NFS4ERR_DENIED (grace over, G1's reclaimed lock in "
             "the way)")
    ended = [ln for ln in scene.log_lines("nfs4.grace") if "grace ended" in ln]
    tl.check(len(ended) == 1, "node B's log shows the end of its grace period once")
    if scene.etcd is not None:
        cluster = scene.show_cluster(scene.server)
        tl.check(cluster.get("recovery_epoch") == 0
                 and [n.get("name") for n in cluster.get("nodes", [])] == ["b"],
                 "etcd: the cluster's grace is lifted and node b is its only member")


def check_journal(scene: TakeoverScene, g1: Guest) -> None:
    tl = scene.timeline
    last = fsynced(g1, "G1")
    data = (scene.server.export_dir / "journal.dat").read_bytes()
    records = [data[i:i + RECORD] for i in range(0, len(data), RECORD)]
    tl.note(f"host: journal.dat has {len(data)} bytes = {len(data) / RECORD:g} records; "
            f"last fsync'ed: {last}")
    tl.check(last == COUNT and len(data) % RECORD == 0, "the file is whole records, all fsync'ed")
    tl.check(records == [record("G1", n) for n in range(1, last + 1)],
             f"records 1..{last} are all present, in order and intact")


@pytest.mark.parametrize("store", STORES)
def test_takeover_to_the_other_node(tmp_path: Path, store: str) -> None:
    """kill -9 node A under a locking, fsync'ing kernel client; node B takes the address."""
    # Without delegations: under a write delegation the kernel keeps its fcntl locks to itself
    # (RFC 7530 §10.4); here the locks must be on the server, to be reclaimed on node B.
    with TakeoverScene(tmp_path, f"takeover ({store}): kill -9 node A, node B takes the "
                       "address", lease=LEASE, grace=GRACE, store=store,
                       server_args=("--delegations", "off")) as scene:
        tl = scene.timeline
        g1 = scene.guest("G1", "t-one", "t-one-id")
        hold_and_write(g1)
        with scene.contender("locked.dat") as c2:
            c2.wait_line(r"^@@LOCKT ", 30)
            tl.check(bool(c2.find(r"^@@LOCKT NFS4ERR_DENIED$")), "C2 sees G1's lock on node A")
            scene.kill_server()
            before = fsynced(g1, "G1")
            tl.note(f"last record G1 saw fsync'ed before the kill: {before}")
            scene.take_over("b")
            c2.send("takeover")
            tl.check(c2.wait_line(r"^@@RECLAIM (?!NFS4ERR_DELAY)", 90).text == "@@RECLAIM NFS4_OK",
                     "C2 reclaims its open on node B (same filehandle, CLAIM_PREVIOUS)")
            g1.wait_line(rf"^@@FSYNCED G1 {before + 5}$", GRACE + LEASE + 60)
            tl.note("G1's writer makes progress again on node B")
            tl.check(FLOATING_MAC in " ".join(g1.ok(f"ip neigh show {FLOATING_ADDR}")),
                     "G1 reaches the service address at the MAC it learnt on node A")
            mine = [c for c in scene.clients() if "t-one-id" in str(c["co_ownerid"])]
            tl.check(len(mine) == 1 and int(mine[0]["opens"]) >= 2
                     and int(mine[0]["locks"]) >= 2,
                     "node B holds G1's two opens and two locks again: reclaimed")
            check_grace_then_denied(scene, c2)
            done = g1.wait_line(r"^@@DONE G1 ", GRACE + LEASE + 120)
            tl.check(done.text == f"@@DONE G1 {COUNT} 0", "G1's writer finished without an error")
            tl.check(not lost_lock_messages(g1), "G1's kernel lost no state")
            released = time.monotonic()
            g1.ok(UNHOLD)
            tl.check(try_lock(g1, "locked.dat") == "denied",
                     "right after releasing it, G1 cannot take the lock back: C2 is served first")
            granted = c2.wait_line(r"^@@GRANTED$", 30)
            tl.check(granted.at > released, "C2 got the lock after G1 released it")
            c2.send("release")
            c2.wait_line(r"^@@RELEASED$", 30)
        check_journal(scene, g1)
