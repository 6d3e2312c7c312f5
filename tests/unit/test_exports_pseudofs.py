"""The NFSv4 pseudo-file system (RFC 7530 §7.3): with and without fsid=0, nested exports."""

from __future__ import annotations

from pynfsd.exports import ClientExport, PseudoFs, PseudoNode, StaticExportResolver, parse_exports
from pynfsd.exports.pseudofs import node_id


def exports_of(table: str, addr: str = "10.0.0.1") -> tuple[ClientExport, ...]:
    return StaticExportResolver(parse_exports(table)).exports_for_names(addr)


def build(table: str, addr: str = "10.0.0.1") -> PseudoFs:
    return PseudoFs.build(exports_of(table, addr))


def walk(fs: PseudoFs, path: str) -> PseudoNode:
    node = fs.root
    for comp in path.strip("/").split("/"):
        child = fs.lookup(node, comp.encode())
        assert child is not None, comp
        node = child
    return node


TABLE = """
/srv/a         *(rw,sec=krb5p)
/srv/a/b/c     *(ro,sec=sys:krb5)
/data          *(sec=krb5i:krb5p)
"""


def test_synthesised_root_joins_exports() -> None:
    fs = build(TABLE)
    root = fs.root
    assert (root.path, root.real_path, root.export, root.is_pseudo) == ("/", "/", None, True)
    assert set(root.children) == {b"srv", b"data"}
    srv = walk(fs, "srv")
    assert srv.is_pseudo and set(srv.children) == {b"a"}
    a = walk(fs, "srv/a")
    assert a.export is not None and a.export.path == "/srv/a" and not a.is_pseudo
    b = walk(fs, "srv/a/b")
    assert b.export is None and b.covering is a.export  # a real directory inside /srv/a
    c = walk(fs, "srv/a/b/c")
    assert c.export is not None and c.export.path == "/srv/a/b/c" and c.covering is c.export
    assert fs.lookup(root, b"nope") is None


def test_security_flavours() -> None:
    fs = build(TABLE)
    # RFC 7530 §7.3: the pseudo-root offers the union of its exports' flavours, in order.
    assert fs.root.sec == ("krb5i", "krb5p", "sys", "krb5")
    assert walk(fs, "srv").sec == ("krb5p", "sys", "krb5")
    assert walk(fs, "srv/a").sec == ("krb5p",)
    assert walk(fs, "srv/a/b").sec == ("krb5p",)
    assert walk(fs, "srv/a/b/c").sec == ("sys", "krb5")


def test_parent_and_find() -> None:
    fs = build(TABLE)
    c = walk(fs, "srv/a/b/c")
    assert fs.parent(c) is walk(fs, "srv/a/b")
    assert fs.parent(fs.root) is None
    for node in fs:
        assert fs.find_by_id(node.id) is node
        assert fs.find_path(node.path) is node
        assert len(node.id) == 16 and node.fileid > 0
    assert fs.find_by_id(b"\0" * 16) is None
    assert fs.find_path("/srv/zz") is None
    assert [e.path for e in fs.exports()] == ["/data", "/srv/a", "/srv/a/b/c"]


def test_ids_are_stable_across_builds_and_clients() -> None:
    one = build(TABLE)
    two = PseudoFs.build(reversed(exports_of(TABLE)))
    assert [(n.path, n.id) for n in one] == [(n.path, n.id) for n in two]
    assert walk(one, "srv").id == node_id("/srv") == walk(two, "srv").id


def test_client_sees_only_its_exports() -> None:
    table = "/pub *(ro)\n/priv 10.0.0.0/8(rw)\n"
    assert set(build(table, "10.1.1.1").root.children) == {b"pub", b"priv"}
    assert set(build(table, "192.0.2.1").root.children) == {b"pub"}
    empty = build(table, "192.0.2.1").root.children[b"pub"]
    assert empty.export is not None and not empty.export.options.rw


def test_no_exports_gives_an_empty_root() -> None:
    fs = PseudoFs.build(())
    assert fs.root.children == {} and fs.root.sec == () and fs.root.is_pseudo


def test_exported_root_directory() -> None:
    # RFC 7530 §7.6: "/" exported and "/a/b" exported; "/a" is then part of "/".
    fs = build("/ *(ro)\n/a/b *(rw)")
    assert fs.root.export is not None and fs.root.export.path == "/"
    a = walk(fs, "a")
    assert a.covering is fs.root.export and not a.is_pseudo
    assert walk(fs, "a/b").export is not None


PSEUDO_ROOT = """
/srv/nfs4           *(ro,fsid=0,sec=sys:krb5p)
/srv/nfs4/music     *(rw)
/srv/nfs4/x/photos  *(rw,sec=krb5)
/elsewhere          *(rw)
"""


def test_fsid0_export_is_the_root() -> None:
    fs = build(PSEUDO_ROOT)
    root = fs.root
    assert root.export is not None and root.export.path == "/srv/nfs4"
    assert root.export.fsid == 0 and (root.path, root.real_path) == ("/", "/srv/nfs4")
    assert set(root.children) == {b"music", b"x"}
    music = walk(fs, "music")
    assert music.export is not None and music.export.path == "/srv/nfs4/music"
    assert (music.path, music.real_path) == ("/music", "/srv/nfs4/music")
    x = walk(fs, "x")
    assert x.covering is root.export and not x.is_pseudo
    assert walk(fs, "x/photos").sec == ("krb5",)
    assert root.sec == ("sys", "krb5p")
    assert [e.path for e in fs.unreachable] == ["/elsewhere"]
    assert fs.find_path("/srv") is None


def test_fsid_root_spelling_and_per_client_root() -> None:
    table = "/exp 10.0.0.0/8(fsid=root) 192.0.2.0/24(ro)\n/exp/sub *\n"
    fs10 = build(table, "10.0.0.1")
    assert fs10.root.export is not None and set(fs10.root.children) == {b"sub"}
    fs192 = build(table, "192.0.2.1")
    assert fs192.root.export is None and set(fs192.root.children) == {b"exp"}
    assert set(walk(fs192, "exp").children) == {b"sub"}


def test_names_with_odd_bytes() -> None:
    fs = PseudoFs.build(exports_of('"/srv/my dir" *\n/srv/\\303\\251 *\n'))
    srv = fs.root.children[b"srv"]
    assert set(srv.children) == {b"my dir", "é".encode()}
