"""Colliding client ids (issue 3 item 6): one co_ownerid from several addresses or principals.

The state manager runs on a manual clock; the warning is checked in the log records.
"""

from __future__ import annotations

import logging

import pytest
from state_support import ENFORCED, make_world, new_client, open_confirmed

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state import StateManager
from pynfsd.nfs4.state.clients import (
    COLLISION_WARN_INTERVAL,
    MAX_COLLIDING_IDS,
    CollisionTracker,
    printable_id,
)

LOGGER = "pynfsd.nfs4.state_clients"
WEB = b"Linux NFSv4.0 web-1"


def setclientid(sm: StateManager, name: bytes, addr: str, principal: str = "sys:0",
                verifier: bytes = b"verf0001") -> int:
    clientid, _ = sm.setclientid(verifier, name, principal, None, addr)
    return clientid


def confirmed(sm: StateManager, name: bytes, addr: str, principal: str = "sys:0",
              verifier: bytes = b"verf0001") -> int:
    clientid, confirm = sm.setclientid(verifier, name, principal, None, addr)
    sm.setclientid_confirm(clientid, confirm, principal)
    return clientid


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)


def test_two_machines_same_principal_warn_once_naming_both(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    confirmed(w.sm, WEB, "10.0.0.5")
    confirmed(w.sm, WEB, "10.0.0.7", verifier=b"verf0002")  # the other container "reboots" it
    assert warnings(caplog) == [
        'client id "Linux NFSv4.0 web-1" is used by 10.0.0.5 (sys:0) and 10.0.0.7 (sys:0): '
        "these look like different machines sharing one NFSv4 client identifier; give each a "
        "unique one (nfs4_unique_id / /sys/fs/nfs/net/nfs_client/identifier)"
    ]
    assert w.sm.clients.collisions.count(WEB) == 1


def test_flapping_is_counted_every_time_but_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    for i in range(10):
        w.clock.advance(5)
        addr = "10.0.0.5" if i % 2 == 0 else "10.0.0.7"
        confirmed(w.sm, WEB, addr, verifier=b"verf%04d" % i)
    assert len(warnings(caplog)) == 1
    assert w.sm.clients.collisions.count(WEB) == 9
    assert w.sm.clients.collisions.total == 9


def test_warning_repeats_after_the_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    c = confirmed(w.sm, WEB, "10.0.0.5")
    for i in range(3):
        w.clock.advance(60)
        c = confirmed(w.sm, WEB, ["10.0.0.7", "10.0.0.5"][i % 2], verifier=b"verf%04d" % i)
    assert len(warnings(caplog)) == 1
    for _ in range(int(COLLISION_WARN_INTERVAL // 60)):
        w.clock.advance(60)
        w.sm.renew(c)  # 10.0.0.7 stays live
    confirmed(w.sm, WEB, "10.0.0.5", verifier=b"verfXXXX")
    msgs = warnings(caplog)
    assert len(msgs) == 2
    assert "(3 colliding SETCLIENTIDs since the last warning)" in msgs[1]
    assert w.sm.clients.collisions.count(WEB) == 4


def test_different_principals_same_address(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    c = confirmed(w.sm, WEB, "10.0.0.5", "sys:0")
    open_confirmed(w.sm, c, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_CLID_INUSE):  # §16.33.5: the id holds state for sys:0
        setclientid(w.sm, WEB, "10.0.0.5", "sys:1000")
    (msg,) = warnings(caplog)
    assert "used by 10.0.0.5 (sys:0) and 10.0.0.5 (sys:1000)" in msg
    for _ in range(5):  # the refused client keeps retrying: counted, not warned again
        with pytest.raises(E.NFS4ERR_CLID_INUSE):
            setclientid(w.sm, WEB, "10.0.0.5", "sys:1000")
    assert len(warnings(caplog)) == 1
    assert w.sm.clients.collisions.count(WEB) == 6


def test_pending_unconfirmed_record_from_elsewhere_collides(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    setclientid(w.sm, WEB, "10.0.0.5")
    setclientid(w.sm, WEB, "10.0.0.7", verifier=b"verf0002")
    assert w.sm.clients.collisions.count(WEB) == 1
    assert len(warnings(caplog)) == 1


def test_one_machine_rebooting_is_not_a_collision(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    for i in range(5):
        w.clock.advance(10)
        confirmed(w.sm, WEB, "10.0.0.5", verifier=b"boot%04d" % i)  # new verifier every time
        setclientid(w.sm, WEB, "10.0.0.5", verifier=b"boot%04d" % i)  # callback update
    assert warnings(caplog) == []
    assert w.sm.clients.collisions.count(WEB) == 0
    assert w.sm.clients.collisions.ids == {}  # nothing remembered for ordinary clients


def test_new_address_after_the_lease_ran_out_is_not_a_collision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = make_world()
    confirmed(w.sm, WEB, "10.0.0.5")
    w.clock.advance(ENFORCED + 1)  # the machine went away (or got a new address by DHCP)
    confirmed(w.sm, WEB, "10.0.0.9", verifier=b"verf0002")
    assert warnings(caplog) == []
    assert w.sm.clients.collisions.count(WEB) == 0


def test_renewed_client_stays_live_for_collisions(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    c = confirmed(w.sm, WEB, "10.0.0.5")
    for _ in range(10):  # long after its SETCLIENTID, it keeps renewing
        w.clock.advance(60)
        w.sm.renew(c)
    setclientid(w.sm, WEB, "10.0.0.7", verifier=b"verf0002")
    assert w.sm.clients.collisions.count(WEB) == 1


def test_unrelated_ids_are_counted_separately(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    new_client(w.sm, b"db-1")
    confirmed(w.sm, WEB, "10.0.0.5")
    confirmed(w.sm, WEB, "10.0.0.7", verifier=b"verf0002")
    confirmed(w.sm, b"db-2", "10.0.0.7")
    assert w.sm.clients.collisions.count(b"db-1") == 0
    assert w.sm.clients.collisions.count(b"db-2") == 0
    assert w.sm.clients.collisions.count(WEB) == 1


def test_three_machines_are_all_named(caplog: pytest.LogCaptureFixture) -> None:
    tracker = CollisionTracker(warn_interval=100)
    tracker.observe(WEB, ("a", "p"), [("b", "p")], 0)
    tracker.observe(WEB, ("c", "p"), [("a", "p")], 150)
    msgs = warnings(caplog)
    assert len(msgs) == 2
    assert "used by b (p), a (p) and c (p) (1 colliding SETCLIENTIDs" in msgs[1]


def test_tracked_ids_are_bounded() -> None:
    tracker = CollisionTracker()
    logging.getLogger(LOGGER).disabled = True
    try:
        for i in range(MAX_COLLIDING_IDS + 10):
            tracker.observe(b"id-%d" % i, ("a", "p"), [("b", "p")], float(i))
    finally:
        logging.getLogger(LOGGER).disabled = False
    assert len(tracker.ids) == MAX_COLLIDING_IDS
    assert tracker.count(b"id-0") == 0  # the oldest were forgotten
    assert tracker.total == MAX_COLLIDING_IDS + 10


def test_printable_id_escapes_unprintable_bytes() -> None:
    assert printable_id(b'web "1"\\\x00\xff') == 'web \\"1\\"\\\\\\x00\\xff'
    assert printable_id(b"x" * 200, 10) == "x" * 10 + "..."
