"""The servers `bench.cache_clients` drives, and the private /etc of its names variant.

`PynfsdTarget` is a real ``python -m pynfsd serve`` (`tests.serverproc.ServerProcess`),
`GaneshaTarget` NFS-Ganesha with the VFS FSAL (`tests.vm.servers.GaneshaServer`), both on
127.0.0.1, each exporting a fresh directory to the variant's client spec only.  A variant that
needs host names runs its server in a private mount namespace (``unshare --mount
--propagation private``) where a made ``hosts`` and ``nsswitch.conf`` are bind-mounted over
/etc's: the host's /etc is never changed, and the namespace ends with the server.  `unshare`
(no --fork) and ``sh -c 'exec ...'`` keep the PID, so CPU and memory are read from the server.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.serverproc import REPO, ServerProcess
from tests.vm.network import UserNet
from tests.vm.servers import GaneshaServer

DOMAIN = "bench.pynfsd.test"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetgroup: files\n"
PRIVATE_ETC = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/nsswitch.conf && '
               'shift 2 && exec "$@"')
MAX_ADDRESSES = 255 * 254 - 1
OUTSIDER = "127.1.0.1"  # named in no hosts line: the names variant must refuse it


@dataclass(frozen=True)
class Variant:
    name: str
    clients: str       # the export's client spec, the same for both servers
    names: bool        # needs a host name per address: run in the private /etc


VARIANTS = {"network": Variant("network", "127.0.0.0/8", False),
            "names": Variant("names", f"*.{DOMAIN}", True)}


def addresses(n: int) -> list[str]:
    """n distinct addresses 127.0.X.Y (X >= 1, Y in 1..254): never 127.0.0.1."""
    if not 1 <= n <= MAX_ADDRESSES:
        raise ValueError(f"between 1 and {MAX_ADDRESSES} addresses")
    return [f"127.0.{1 + i // 254}.{1 + i % 254}" for i in range(n)]


def host_name(addr: str) -> str:
    _, _, x, y = addr.split(".")
    return f"c-{x}-{y}.{DOMAIN}"


def hosts_text(addrs: Sequence[str]) -> str:
    return "127.0.0.1\tlocalhost\n" + "".join(f"{a}\t{host_name(a)}\n" for a in addrs)


def write_etc(base: Path, addrs: Sequence[str]) -> None:
    """`base`/etc/hosts naming `addrs`, and `base`/etc/nsswitch.conf (hosts from files)."""
    etc = base / "etc"
    etc.mkdir()
    (etc / "hosts").write_text(hosts_text(addrs))
    (etc / "nsswitch.conf").write_text(NSSWITCH)


def private_etc(argv: list[str], etc: Path) -> list[str]:
    """`argv` run in a private mount namespace seeing `etc`/hosts and `etc`/nsswitch.conf.

    `unshare` without --fork and `sh`'s exec keep the PID: it is the server's."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_ETC, "sh",
            str(etc / "hosts"), str(etc / "nsswitch.conf"), *argv]


def rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((1024 * int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")),
                None)


# ------------------------------------------------------------------ the servers


class Target:
    """One server process under test: its PID, port, export and what it can tell of its caches."""

    kind = "abstract"

    def __init__(self, workdir: Path, variant: Variant, etc: Path | None) -> None:
        self.workdir = workdir
        self.variant = variant
        self.export = workdir / "export"
        self.export.mkdir(parents=True)
        self.etc = etc        # the private /etc (variants that need names), else None
        self.pid = self.port = 0  # set once the server listens

    def can_flush(self) -> bool:
        return False

    def flush(self) -> None:
        raise NotImplementedError

    def ip_entries(self, addrs: set[str]) -> int | None:
        return None

    def log_tail(self) -> str:
        return ""

    def stop(self) -> None:
        raise NotImplementedError


class _PynfsdProcess(ServerProcess):
    """A ServerProcess run in the private /etc when `etc` is given."""

    def __init__(self, etc: Path | None, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.etc = etc

    def argv(self) -> list[str]:
        argv = super().argv()
        return argv if self.etc is None else private_etc(argv, self.etc)


def pynfsd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pynfsd", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def has_cache_command() -> bool:
    """True when this pynfsd has `pynfsd cache show|flush`."""
    return pynfsd_cli("cache", "--help").returncode == 0


class PynfsdTarget(Target):
    kind = "pynfsd"

    def __init__(self, workdir: Path, variant: Variant, etc: Path | None, cache_cli: bool) -> None:
        super().__init__(workdir, variant, etc)
        self.state = workdir / "state"
        line = f"{self.export} {variant.clients}(rw,no_root_squash,insecure)"
        self.server = _PynfsdProcess(etc, [line], self.state,
                                     extra_args=["--grace", "0"], log_level="INFO")
        self.cache_cli = cache_cli
        self.server.start()
        self.pid, self.port = self.server.pid, self.server.port

    def can_flush(self) -> bool:
        return self.cache_cli

    def flush(self) -> None:
        done = pynfsd_cli("cache", "flush", "--state-dir", str(self.state))
        if done.returncode != 0:
            raise RuntimeError(f"pynfsd cache flush: {done.stderr.strip()}")

    def ip_entries(self, addrs: set[str]) -> int | None:
        """auth.unix.ip rows (usable or not) naming one of `addrs`, from `pynfsd cache show`."""
        if not self.cache_cli:
            return None
        done = pynfsd_cli("cache", "show", "auth.unix.ip", "--state-dir", str(self.state))
        if done.returncode != 0:
            raise RuntimeError(f"pynfsd cache show: {done.stderr.strip()}")
        rows = (ln.removeprefix("# ").split() for ln in done.stdout.splitlines())
        return sum(1 for words in rows if len(words) >= 2 and words[1] in addrs)

    def log_tail(self) -> str:
        return self.server.log_text()[-3000:]

    def stop(self) -> None:
        self.server.stop(timeout=60)


class _PrivateEtcNet(UserNet):
    """Loopback as UserNet, each server command run in the private /etc."""

    def __init__(self, etc: Path) -> None:
        self.etc = etc

    def wrap(self, argv: list[str]) -> list[str]:
        return private_etc(argv, self.etc)


class _RestrictedGanesha(GaneshaServer):
    """Ganesha with the export open only to the variant's clients (a CLIENT block)."""

    clients = "*"

    def command(self) -> list[str]:
        argv = super().command()
        conf = self.workdir / "ganesha.conf"
        text = conf.read_text()
        block = f"    Access_Type = None;\n    CLIENT {{ Clients = {self.clients}; Access_Type = RW; }}\n"
        restricted = text.replace("    Access_Type = RW;\n", block, 1)
        if restricted == text:
            raise RuntimeError("the Ganesha configuration has no export Access_Type to restrict")
        conf.write_text(restricted)
        return argv


class GaneshaTarget(Target):
    kind = "ganesha"

    def __init__(self, workdir: Path, variant: Variant, etc: Path | None) -> None:
        super().__init__(workdir, variant, etc)
        net = UserNet() if etc is None else _PrivateEtcNet(etc)
        self.server = _RestrictedGanesha(workdir, net)
        self.server.clients = variant.clients
        self.server.start()
        self.pid, self.port = self.server.pid or 0, self.server.port

    def log_tail(self) -> str:
        return self.server.log_tail()

    def stop(self) -> None:
        self.server.stop(timeout=60)


