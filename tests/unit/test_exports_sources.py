"""The exports table from its sources: file:line on every error, the directory checks, the
warnings for a path or a client written twice, and the start-up description of each export."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from pynfsd.exports import ExportsError, parse_export_line, parse_exports
from pynfsd.exports.describe import (
    export_lines,
    mount_command,
    mount_lines,
    option_text,
    pseudo_path,
    unreachable,
)
from pynfsd.exports.sources import gather_exports


def write(tmp_path: Path, text: str) -> str:
    f = tmp_path / "exports"
    f.write_text(text)
    return str(f)


def gather_error(exports: str | None, *args: str) -> str:
    with pytest.raises(ExportsError) as info:
        gather_exports(exports, args)
    return str(info.value)


def test_missing_directory_names_the_line(tmp_path: Path) -> None:
    f = write(tmp_path, f"# comment\n{tmp_path} *(rw)\n\n{tmp_path}/nope *(ro)\n")
    assert gather_error(f) == f"{f}:4: {tmp_path}/nope: does not exist"


def test_file_instead_of_directory_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    f = write(tmp_path, f"{tmp_path}/file *(rw)\n")
    assert gather_error(f) == f"{f}:1: {tmp_path}/file: not a directory"


def test_path_below_a_file_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    message = gather_error(None, f"{tmp_path}/file/sub")
    assert message.startswith(f"--export #1: {tmp_path}/file/sub: does not exist")


def test_export_arguments_are_numbered(tmp_path: Path) -> None:
    assert gather_error(None, str(tmp_path), f"{tmp_path}/gone") == f"--export #2: {tmp_path}/gone: does not exist"
    assert gather_error(None, str(tmp_path), "relative *(rw)") == "--export #2: export path 'relative' is not absolute"
    assert gather_error(None, f"{tmp_path} *(bogus)") == "--export #1: unknown option 'bogus'"
    assert gather_error(None, f'"{tmp_path} *') == "--export #1: unterminated quote"


def test_the_file_comes_before_the_arguments(tmp_path: Path) -> None:
    f = write(tmp_path, f"{tmp_path} 10.0.0.0/8(rw)\n")
    (entry,) = gather_exports(f, [f"{tmp_path} *(ro)"])
    assert [s.pattern for s, _ in entry.clients] == ["10.0.0.0/8", "*"]
    assert [str(o) for o in entry.origins] == [f"{f}:1", "--export #1"]


def test_unreadable_exports_file(tmp_path: Path) -> None:
    assert gather_error(str(tmp_path / "none")) == f"{tmp_path}/none: does not exist"
    assert gather_error(str(tmp_path)) == f"{tmp_path}: cannot read: Is a directory"


def test_errors_in_a_continued_line_name_the_physical_line(tmp_path: Path) -> None:
    f = write(tmp_path, f"{tmp_path} \\\n  host1(rw) \\\n  host2(nope)\n")
    assert gather_error(f) == f"{f}:3: unknown option 'nope'"


def test_same_path_on_two_lines_warns_with_both(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path, f"{tmp_path} h1(rw)\n{tmp_path} h2(ro)\n")
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        (entry,) = gather_exports(f, [])
    assert f"{f}:2: {tmp_path} is already exported at {f}:1" in caplog.text
    assert [s.pattern for s, _ in entry.clients] == ["h1", "h2"]


def test_same_path_in_the_file_and_an_argument_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path, f"{tmp_path} *(rw)\n")
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        (entry,) = gather_exports(f, [f"{tmp_path}/"])
    assert f"--export #1: {tmp_path} is already exported at {f}:1" in caplog.text
    assert f"--export #1: {tmp_path}: client * listed more than once (first at {f}:1); the first wins" in caplog.text
    assert entry.clients[0][1].rw and len(entry.clients) == 2


def test_an_exports_file_without_exports_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path, "# nothing exported yet\n\n")
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        assert gather_exports(f, []) == ()
    assert f"{f}: no exports in the file; clients see an empty pseudo-filesystem" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        assert len(gather_exports(f, [str(tmp_path)])) == 1
    assert caplog.text == ""


def test_one_line_per_path_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a").mkdir()
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        entries = gather_exports(None, [f"{tmp_path} h1(rw) h2(ro)", f"{tmp_path}/a"])
    assert caplog.text == "" and len(entries) == 2


def test_other_stat_errors_say_why(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    message = gather_error(None, f"{tmp_path}/loop")
    assert message == f"--export #1: {tmp_path}/loop: cannot access: Too many levels of symbolic links"


def test_a_symlink_to_a_directory_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    os.symlink("dir", tmp_path / "link")
    (entry,) = gather_exports(None, [f"{tmp_path}/link"])
    assert entry.path == f"{tmp_path}/link"


# ------------------------------------------------------------------ what the start-up log says


def test_option_text_shows_the_effective_options() -> None:
    (entry,) = parse_exports("/srv -rw,sync host1(no_root_squash,insecure,ro,anonuid=7,fsid=3,crossmnt)")
    assert option_text(entry.clients[0][1]) == (
        "ro,sec=sys,insecure,no_root_squash,no_all_squash,anonuid=7,fsid=3,crossmnt,sync")
    assert export_lines(parse_export_line("/srv")) == ["/srv  *(rw,sec=sys,secure,root_squash,no_all_squash)"]
    (entry,) = parse_exports("/srv *(all_squash,anongid=9,sec=krb5p:krb5)")
    assert option_text(entry.clients[0][1]) == "ro,sec=krb5p:krb5,secure,root_squash,all_squash,anongid=9"


def test_mount_command() -> None:
    (entry,) = parse_exports("/srv/a *(sec=krb5i:sys)")
    options = entry.clients[0][1]
    assert mount_command("nfs.example", 2049, "/srv/a", options) == (
        "mount -t nfs4 -o vers=4.0,port=2049,sec=krb5i nfs.example:/srv/a /mnt")
    (entry,) = parse_exports("/srv/a *")
    assert mount_command("::1", 20049, "/srv/a", entry.clients[0][1]) == (
        "mount -t nfs4 -o vers=4.0,port=20049 [::1]:/srv/a /mnt")


def test_mount_path_below_the_pseudo_root() -> None:
    entries = parse_exports("/exp *(fsid=0)\n/exp/a *(rw) h1(ro)\n/other *\n/exp/b h2\n/b h2(fsid=root)\n")
    exp, a, other, b, _ = entries
    star = exp.clients[0][0]
    assert pseudo_path(entries, "/exp", star) == "/"
    assert pseudo_path(entries, "/exp/a", star) == "/a"
    assert pseudo_path(entries, "/other", star) is None
    assert mount_lines(entries, a, "h", 2049) == ["mount -t nfs4 -o vers=4.0,port=2049 h:/a /mnt"]
    assert mount_lines(entries, other, "h", 2049) == []
    assert (unreachable(entries, other), unreachable(entries, a)) == (["*"], [])
    assert pseudo_path(entries, "/exp/b", b.clients[0][0]) is None  # h2's root is /b
    assert pseudo_path(parse_exports("/x *"), "/x", star) == "/x"
