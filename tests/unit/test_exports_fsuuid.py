"""The uuid rpc.mountd gives an export without `fsid=` (`pynfsd.exports.fsuuid`), and the
embedded resolver's answers carrying it: the statfs fsid as mountd prints it, libblkid asked
only outside mountd's list of filesystems, `with_fs_uuid`, the nfsd.export and nfsd.fh
answers of such an export, and two exports of one filesystem kept apart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pynfsd.cache import lines as L
from pynfsd.exports import ExportOptions, export_fsid, fsuuid, parse_exports
from pynfsd.exports.embedded import EmbeddedWay
from pynfsd.exports.fsuuid import NONBLKID, uuid_by_path, uuid_text, with_fs_uuid
from pynfsd.exports.kernelform import client_export, fh_key, fsid_key, path_facts
from pynfsd.exports.resolver import check_fsids, uuid_fold
from pynfsd.exports.types import ExportsError
from pynfsd.fs.linux import statfs
from tests.unit.test_exports_embedded import Dns, ask, way

TMPFS_MAGIC = 0x01021994


def statvfs_text(path: Path) -> str:
    """The fsid words as mountd's `%08x%08x`, from os.statvfs (glibc packs the two words of
    f_fsid into one number, the first in the low half)."""
    fsid = os.statvfs(path).f_fsid
    return f"{fsid & 0xFFFFFFFF:08x}{fsid >> 32:08x}"




class Recorder:
    """libblkid as `fsuuid` uses it, recording the devices asked about."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked: list[int] = []

    def uuid(self, st_dev: int) -> str | None:
        self.asked.append(st_dev)
        return self.answer


def test_statfs_gives_the_magic_and_the_fsid_words(small_tmpfs: Path) -> None:
    magic, words = statfs(os.fsencode(small_tmpfs))
    assert magic == TMPFS_MAGIC and magic in NONBLKID
    assert f"{words[0]:08x}{words[1]:08x}" == statvfs_text(small_tmpfs)


def test_on_tmpfs_the_statfs_fsid_is_the_uuid_and_blkid_is_not_asked(
        small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blkid = Recorder("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    monkeypatch.setattr(fsuuid, "_library", lambda: blkid)
    text = statvfs_text(small_tmpfs)
    assert text != "0" * 16  # Linux gives tmpfs an fsid (from its superblock's uuid)
    assert uuid_text(str(small_tmpfs)) == text and blkid.asked == []
    assert uuid_by_path(str(small_tmpfs)) == bytes.fromhex(text) + bytes(8)  # get_uuid's fold


def test_elsewhere_blkid_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if statfs(os.fsencode(tmp_path))[0] in NONBLKID:
        pytest.skip("the test directory is on a filesystem mountd never asks blkid about")
    blkid = Recorder("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    monkeypatch.setattr(fsuuid, "_library", lambda: blkid)
    assert uuid_text(str(tmp_path)) == blkid.answer
    assert blkid.asked == [os.stat(tmp_path).st_dev]
    assert uuid_by_path(str(tmp_path)) == bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
    blkid.answer = None  # no UUID tag (or a btrfs device): the statfs fsid
    assert uuid_text(str(tmp_path)) == statvfs_text(tmp_path)


def test_no_filesystem_no_uuid(tmp_path: Path) -> None:
    assert uuid_text(str(tmp_path / "missing")) is None
    assert uuid_by_path(str(tmp_path / "missing")) is None


def test_with_fs_uuid_fills_only_a_missing_fsid(tmp_path: Path) -> None:
    path = str(tmp_path)
    plain = ExportOptions()
    uuid = uuid_by_path(path)
    assert uuid is not None
    assert with_fs_uuid(path, plain).fsid == uuid.hex()
    for given in (ExportOptions(fsid=7), ExportOptions(fsid="0f" * 16),
                  ExportOptions(fsid=0, pseudo_root=True)):
        assert with_fs_uuid(path, given) is given
    assert with_fs_uuid(str(tmp_path / "missing"), plain) is plain  # path hash, as before


async def test_the_embedded_answer_carries_mountds_uuid_and_fh_finds_it(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    w: EmbeddedWay = way(Dns(), f"{a} *(rw)\n{b} *(ro)\n")
    try:
        infos = {}
        for path in (a, b):
            line = L.encode_export_request(L.ExportKey("*", str(path)))
            infos[path] = L.decode_export_reply(await ask(w, "nfsd.export", line)).value
        uuid = uuid_by_path(str(a))
        assert infos[a] is not None and infos[a].uuid == uuid  # what rpc.mountd sends
        assert infos[b] is not None and infos[b].uuid == uuid  # one filesystem, one uuid
        ea, eb = client_export(str(a), infos[a]), client_export(str(b), infos[b])
        assert ea.fsid != eb.fsid  # ... but two exports: their handles stay apart
        assert ea.fsid == export_fsid(str(a), with_fs_uuid(str(a), ExportOptions()))
        for path, export in ((a, ea), (b, eb)):
            key = fh_key(export.options, export.fsid, path_facts(str(path)))
            assert key[0] == 4 and key[1][4:] == uuid_fold(uuid.hex(), 4)  # FSID_UUID4_INUM
            line = L.encode_fh_request(L.FhKey("*", *key))
            assert L.decode_fh_reply(await ask(w, "nfsd.fh", line)).value == str(path)
    finally:
        await w.close()


def test_one_uuid_may_not_name_two_exports() -> None:
    """Exports of one filesystem without fsid= are fine (their fsids differ); one uuid given
    as fsid= to two paths is refused, as one fsid= number is."""
    check_fsids(parse_exports("/a *(rw)\n/b *(rw)\n"))
    with pytest.raises(ExportsError, match="already used by /a"):
        check_fsids(parse_exports(f"/a *(fsid={'0f' * 16})\n/b *(fsid={'0F' * 16})\n"))


async def test_fh_of_the_root_by_number_whichever_way_it_is_written(tmp_path: Path) -> None:
    for written in ("root", "0"):
        w: EmbeddedWay = way(Dns(), f"{tmp_path} *(ro,fsid={written})\n")
        try:
            line = L.encode_fh_request(L.FhKey("*", *fsid_key(0)))
            assert L.decode_fh_reply(await ask(w, "nfsd.fh", line)).value == str(tmp_path)
        finally:
            await w.close()
