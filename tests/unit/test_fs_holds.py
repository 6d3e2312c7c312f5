"""The hold bookkeeping of the local backend (sans-IO): nested holds, keeping within the
bound, the last release handing the kept entry back."""

from __future__ import annotations

from pynfsd.fs.holds import Holds


def test_holds_nest_and_the_last_release_returns_the_kept_entry() -> None:
    h: Holds[str] = Holds(max_kept=4)
    assert h.inode_of(b"a") is None
    h.hold(b"a", 7)
    h.hold(b"a", 7)
    assert h.inode_of(b"a") == 7
    assert h.to_keep(7) == (b"a", False)
    assert h.keep(b"a", "entry") and h.kept(b"a") == "entry" and len(h) == 1
    assert h.to_keep(7) == (None, False)  # kept already
    assert h.release(b"a") is None  # one hold left
    assert h.release(b"a") == "entry" and h.kept(b"a") is None
    assert h.to_keep(7) == (None, False)  # no longer held


def test_keeping_stops_at_the_bound_and_after_a_release() -> None:
    h: Holds[str] = Holds(max_kept=1)
    h.hold(b"a", 1)
    h.hold(b"b", 2)
    assert h.keep(b"a", "A")
    assert h.to_keep(2) == (b"b", True)  # the bound is reached: the backend lets b go stale
    h.release(b"b")
    assert not h.keep(b"b", "B")  # released meanwhile: the caller closes its descriptor
    assert h.drain() == ["A"] and len(h) == 0
