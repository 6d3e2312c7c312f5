"""The example systemd units (contrib/systemd): systemd accepts them, the service's command
line is one `pynfsd serve` accepts, and the socket is what the LISTEN_FDS code serves."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pynfsd.cli import build_parser

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def test_the_service_runs_pynfsd_serve_with_options_it_accepts() -> None:
    argv = shlex.split(unit("pynfsd.service")["Service"]["ExecStart"])
    assert Path(argv[0]).name == "pynfsd"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.state_dir, args.exports) == ("serve", "/var/lib/pynfsd", "/etc/exports")
    assert not args.bind and args.port is None  # so only the passed socket is served


def test_the_socket_passes_one_listening_tcp_socket() -> None:
    socket = unit("pynfsd.socket")["Socket"]
    assert (socket["ListenStream"], socket["Accept"]) == ("2049", "no")


def test_the_service_keeps_the_capabilities_pynfsd_needs() -> None:
    caps = set(unit("pynfsd.service")["Service"]["CapabilityBoundingSet"].split())
    assert caps == {f"CAP_{c}" for c in ("SETUID", "SETGID", "DAC_READ_SEARCH", "DAC_OVERRIDE",
                                          "CHOWN", "FOWNER", "FSETID", "MKNOD")}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    for name in ("pynfsd.socket", "pynfsd.service"):
        text = (UNITS / name).read_text()
        # the command need not be installed here: point it at one that exists
        (tmp_path / name).write_text(text.replace("/usr/local/bin/pynfsd", "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "pynfsd.socket"),
                           str(tmp_path / "pynfsd.service")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
