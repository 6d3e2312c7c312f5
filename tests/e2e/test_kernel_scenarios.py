"""Issue 3's identity and recovery scenarios with real Linux NFSv4.0 clients in qemu guests.

Each test builds a private bridge namespace, starts pynfsd on it with short leases and grace,
boots one or more Debian-kernel guests (``tests/vm/guest/scenario_agent.sh``), drives them
command by command from the host and prints a timeline (``pytest -s``) of what each guest,
the host and the server did; a failed check carries the whole timeline.

a. two guests with the same hostname (one co_ownerid, AUTH_SYS root): one client that keeps
   rebooting; neither keeps its lock; the server warns once about the collision.
d. server crash; the lock holder comes back with a changed identity: nothing to reclaim, and
   after grace another guest takes the lock.
e. server crash; the holder keeps its identity: it reclaims its lock in grace, while another
   guest's attempt waits for grace and is then refused.
f. a's setup with a unique identifier per guest: no collision, both keep their locks.
g. kill -9 of pynfsd under a guest that holds an fcntl lock and appends fsync'ed records: the
   client reclaims, the writer finishes, and no fsync'ed record is missing on the server's disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_kernel_client import vm_skip_reason
from tests.vm.multi import Guest
from tests.vm.scene import Scene

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason()))]

LEASE = 10
GRACE = 15
RECORD = 64


def mount(guest: Guest) -> None:
    guest.ok("nfs_identity && nfs_mount")


def try_lock(guest: Guest, name: str, limit: int = 60) -> str:
    """One non-blocking whole-file lock attempt in the guest: "granted" or "denied"."""
    rc, out = guest.sh(f"try {name}", limit)
    guest.timeline.check(rc == 0 and out[-1:] in (["granted"], ["denied"]),
                         f"{guest.label}: the lock attempt on {name} completes")
    return out[-1]


def fsynced(guest: Guest, tag: str) -> int:
    """The highest record number the guest's lockwriter has reported fsync'ed so far."""
    return max((int(ln.text.split()[2]) for ln in guest.find(rf"^@@FSYNCED {tag} \d+$")),
               default=0)


def lost_lock_messages(guest: Guest) -> list[str]:
    """The guest kernel's "lost N locks" messages (NFSv4 state it could not recover)."""
    _, out = guest.sh("dmesg | grep -i 'lost' || true")
    return [line for line in out if "lost" in line]


def collision_warnings(scene: Scene, hostname: str) -> list[str]:
    return scene.log_lines(f'client id "Linux NFSv4.0 {hostname}/')


def test_a_same_hostname_collides(tmp_path: Path) -> None:
    """a: same hostname, no unique id: one co_ownerid, one client that keeps rebooting."""
    # Without delegations: under a write delegation the kernel keeps its fcntl lock to itself
    # (RFC 7530 §10.4), so no lock of either guest would be on the server to be taken over;
    # this scenario is about the server's locks changing hands through a shared client id.
    with Scene(tmp_path, "a: two guests, same hostname, AUTH_SYS root, no nfs4_unique_id",
               guests=2, lease=LEASE, grace=GRACE,
               server_args=("--delegations", "off")) as scene:
        tl = scene.timeline
        g1, g2 = boot(scene, ("G1", "ctr", ""), ("G2", "ctr", ""))
        mount(g1)
        g1.ok("writer shared.dat G1 200 500")
        g1.wait_line(r"^@@FSYNCED G1 3$", 60)
        tl.note("G1 holds a whole-file fcntl lock on shared.dat and appends fsync'ed records")
        tl.note("G2 mounts the same export: same hostname, so the same co_ownerid")
        mount(g2)
        tl.check(try_lock(g2, "shared.dat") == "granted",
                 "G2 gets the lock G1 still believes it holds (its SETCLIENTID_CONFIRM "
                 "replaced G1's client and dropped G1's state)")
        g1.wait_line(r"^@@IOERR G1 ", 30)
        tl.check(bool(g1.find(r"^@@IOERR G1 ")), "G1's writer gets EIO: its kernel lost the lock")
        g2.ok("writer shared.dat G2 200 500")
        g2.wait_line(r"^@@LOCKED G2$", 60)
        tl.note("G2 now holds the lock; G1's kernel re-establishes its (shared) client id ...")
        g2.wait_line(r"^@@IOERR G2 ", 4 * LEASE)
        tl.check(True, "... and G2's writer gets EIO in turn: neither keeps its lock")
        tl.check(bool(lost_lock_messages(g1)) and bool(lost_lock_messages(g2)),
                 "both kernels logged lost locks")
        warnings = collision_warnings(scene, "ctr")
        tl.check(len(warnings) == 1 and all(ip in warnings[0] for ip in
                                            (g1.net.guest_ip, g2.net.guest_ip)),
                 "the server logged one collision warning naming both guests' addresses")
        listed = [c for c in scene.clients() if "ctr/" in str(c["co_ownerid"])]
        tl.check(len(listed) == 1 and int(listed[0]["collisions"]) > 0,
                 "pynfsd clients shows one client id for both guests, with collisions")


def test_f_unique_ids_do_not_collide(tmp_path: Path) -> None:
    """f: a's setup with nfs4_unique_id set per guest: two clients, both keep their locks."""
    with Scene(tmp_path, "f: same hostname, a unique nfs4 identifier per guest",
               guests=2, lease=LEASE, grace=GRACE) as scene:
        tl = scene.timeline
        g1, g2 = boot(scene, ("G1", "ctr", "f-guest-1"), ("G2", "ctr", "f-guest-2"))
        mount(g1)
        mount(g2)
        g1.ok("writer one.dat G1 40 500")
        g2.ok("writer two.dat G2 40 500")
        g1.wait_line(r"^@@LOCKED G1$", 60)
        g2.wait_line(r"^@@LOCKED G2$", 60)
        tl.check(try_lock(g2, "one.dat") == "denied", "G2 cannot take G1's lock")
        tl.check(try_lock(g1, "two.dat") == "denied", "G1 cannot take G2's lock")
        done1 = g1.wait_line(r"^@@DONE G1 ", 4 * LEASE + 60)
        done2 = g2.wait_line(r"^@@DONE G2 ", 60)
        tl.check(done1.text == "@@DONE G1 40 0" and done2.text == "@@DONE G2 40 0",
                 "both writers kept their locks for more than two leases: 40 records, no EIO")
        tl.check(not lost_lock_messages(g1) and not lost_lock_messages(g2),
                 "neither kernel lost state")
        tl.check(not collision_warnings(scene, "ctr"), "no collision warning in the server log")
        listed = [c for c in scene.clients() if "ctr/" in str(c["co_ownerid"])]
        tl.check(len(listed) == 2 and all(int(c["collisions"]) == 0 for c in listed),
                 "pynfsd clients shows two client ids without collisions")


def boot(scene: Scene, *who: tuple[str, str, str]) -> list[Guest]:
    """Boot guests (label, hostname, unique id) in parallel; wait until all are ready."""
    guests = [scene.guest(label, host, uid, wait=False) for label, host, uid in who]
    for guest in guests:
        guest.wait_ready()
    return guests


def hold_and_check(scene: Scene, holder: Guest, other: Guest) -> None:
    mount(holder)
    holder.ok("holder locked.dat")
    mount(other)
    scene.timeline.check(try_lock(other, "locked.dat") == "denied",
                         f"{other.label} cannot take {holder.label}'s lock")


def test_d_changed_identity_cannot_reclaim(tmp_path: Path) -> None:
    """d: server crash; the holder reboots with a new identity; after grace the lock is free."""
    with Scene(tmp_path, "d: server restart, the lock holder comes back with a new identity",
               guests=3, lease=LEASE, grace=GRACE) as scene:
        tl = scene.timeline
        g1, g2 = boot(scene, ("G1", "d-one", "d-one-boot-1"), ("G2", "d-two", ""))
        hold_and_check(scene, g1, g2)
        scene.kill_server()
        g1.kill()
        tl.note("G1 reboots while the server is down, now with identifier d-one-boot-2")
        scene.start_server()
        g1b = scene.guest("G1'", "d-one", "d-one-boot-2")
        mount(g1b)
        tl.note("G2's attempt waits out grace (NFS4ERR_GRACE) in its kernel")
        tl.check(try_lock(g2, "locked.dat", GRACE + 60) == "granted",
                 "after grace G2 takes the lock G1 held: G1's old identity never reclaimed it")
        g2.ok("holder locked.dat")
        tl.check(try_lock(g1b, "locked.dat") == "denied",
                 "G1' (new identity) finds its old lock taken by G2: lock stealing")
        ended = [ln for ln in scene.log_lines("nfs4.grace") if "grace ended" in ln]
        tl.check(len(ended) == 1 and "grace ended early" not in ended[0],
                 "grace ran to its end: G1's old identity, still recorded, never reclaimed")
        ids = [str(c["co_ownerid"]) for c in scene.clients()]
        tl.check(any("d-one-boot-2" in i for i in ids) and
                 not any("d-one-boot-1" in i for i in ids),
                 "the server knows G1' under its new id; the old id is gone")


def test_e_same_identity_reclaims(tmp_path: Path) -> None:
    """e: server crash; the holder keeps its identity and reclaims its lock in grace."""
    with Scene(tmp_path, "e: server restart, the lock holder keeps its identity",
               guests=2, lease=LEASE, grace=GRACE) as scene:
        tl = scene.timeline
        g1, g2 = boot(scene, ("G1", "e-one", "e-one-id"), ("G2", "e-two", "e-two-id"))
        hold_and_check(scene, g1, g2)
        scene.crash_restart_server()
        tl.note("G2 asks during grace: its kernel gets NFS4ERR_GRACE and retries")
        tl.check(try_lock(g2, "locked.dat", GRACE + 60) == "denied",
                 "G2's attempt made during grace is refused: G1 reclaimed the lock")
        tl.check(try_lock(g2, "locked.dat") == "denied", "after grace G1 still holds it")
        tl.check(not lost_lock_messages(g1), "G1's kernel lost nothing")
        g1.ok("holding locked.dat")
        scene.log_lines("nfs4.grace")
        g1_id = [c for c in scene.clients() if "e-one-id" in str(c["co_ownerid"])]
        tl.check(len(g1_id) == 1 and int(g1_id[0]["locks"]) >= 1,
                 "pynfsd clients shows G1 with its reclaimed lock")


def test_g_kill9_during_fsync_writes_loses_nothing(tmp_path: Path) -> None:
    """g: kill -9 of pynfsd under a locked, fsync'ing writer: reclaim, finish, nothing lost."""
    count = 60
    with Scene(tmp_path, "g: kill -9 pynfsd under an fcntl-locked writer that fsyncs",
               guests=1, lease=LEASE, grace=GRACE) as scene:
        tl = scene.timeline
        (g1,) = boot(scene, ("G1", "g-one", "g-one-id"))
        mount(g1)
        g1.ok(f"writer journal.dat G1 {count} 200")
        g1.wait_line(r"^@@FSYNCED G1 15$", 60)
        scene.kill_server()
        before = fsynced(g1, "G1")
        tl.note(f"last record the guest saw fsync'ed before the kill: {before}")
        tl.sleep(2, "server down")
        scene.start_server()
        g1.wait_line(rf"^@@FSYNCED G1 {before + 5}$", GRACE + LEASE + 60)
        mine = [c for c in scene.clients() if "g-one-id" in str(c["co_ownerid"])]
        # The writer's open may come with a write delegation, under which the kernel keeps
        # its fcntl lock to itself (RFC 7530 §10.4): then the delegation is what it reclaims.
        tl.check(len(mine) == 1 and int(mine[0]["opens"]) >= 1
                 and int(mine[0]["locks"]) + int(mine[0]["delegations"]) >= 1,
                 "after the restart the server has G1's open and its lock (or the write "
                 "delegation under which the kernel keeps the lock) again: reclaimed")
        done = g1.wait_line(r"^@@DONE G1 ", GRACE + LEASE + 120)
        tl.check(done.text == f"@@DONE G1 {count} 0", "the writer finished without an error")
        tl.check(not lost_lock_messages(g1), "the kernel reclaimed its open and lock")
        last = fsynced(g1, "G1")
        data = (scene.server.export_dir / "journal.dat").read_bytes()
        records = [data[i:i + RECORD] for i in range(0, len(data), RECORD)]
        tl.note(f"host: journal.dat has {len(data)} bytes = {len(data) / RECORD:g} records; "
                f"last fsync'ed: {last}")
        tl.check(len(data) % RECORD == 0, "the file is whole records")
        tl.check(records == [record("G1", n) for n in range(1, last + 1)],
                 f"records 1..{last} are all present, in order and intact")


def record(tag: str, n: int) -> bytes:
    """Record ``n`` exactly as ``helpers/lockwriter.c`` writes it."""
    head = f"{tag} {n:06d} ".encode()
    filler = bytes(ord("a") + (n + i) % 26 for i in range(len(head), RECORD - 1))
    return head + filler + b"\n"
