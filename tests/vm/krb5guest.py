"""Kerberos for the guest: rpc.gssd in the initramfs, a throwaway realm, krb5 servers.

How it fits together
--------------------
* ``gssd_root()``: ``apt-get download`` nfs-common and the packages its ``rpc.gssd`` links
  against (libc6, libtirpc3 + libtirpc-common for ``/etc/netconfig``, libevent-core, libkeyutils,
  libcom-err, the MIT krb5 libraries), ``dpkg -x`` them into one cached tree (nothing is
  installed on the host). Cache: ``$PYNFSD_VM_CACHE`` or ``/var/cache/pynfsd-vm``.
* ``gssd_layer(kernel)``: a cached gzip'd cpio with ``rpc.gssd`` and ``rpc.svcgssd`` (the
  acceptor of the server's RPCSEC_GSS callbacks, with libnfsidmap's plugins and an
  ``/etc/idmapd.conf``), the closure of their ``DT_NEEDED`` libraries (from that tree, never
  the host's), the loader, ``/etc/netconfig``, ``/etc/nsswitch.conf`` (``files`` only) and
  the crypto modules the krb5 mechanism loads on
  demand (``cts``; ``aesni_intel``/``sha1_ssse3`` for speed), listed in
  ``/etc/krb5-modules.order`` because the guest's ``modprobe`` upcall is disabled.
* ``GuestRealm``: a k5test realm with ``nfs/nfs-server.test`` (server keytab) and
  ``nfs/guest.test`` (the guest's ``/etc/krb5.keytab``), all four AES enctypes (the Debian 6.1
  kernel uses 18/17). Its KDC listens on every address where the network mode puts it: on the
  host (user mode: the guest reaches it as 10.0.2.2) or inside the test's namespace (netns);
  it is stopped by its PID.
* ``run_layer_krb5()``: per run ``/etc/krb5.conf`` (KDC by address, TCP, no DNS), ``/etc/hosts``
  (guest and server names; gssd derives ``nfs@nfs-server.test`` from the server address),
  the keytab and the standard ``workload.sh`` as ``/krb5/workload.sh``; for another guest
  of the same realm, its name, network and keytab (``add_guest_principal``).
* ``assemble_krb5()``: base initramfs + gssd layer + krb5 run layer + the usual run layer
  (``/workload.sh`` is ``guest/krb5_driver.sh``: it starts gssd and runs the workload once per
  flavour). ``Krb5PynfsdServer``/``Krb5GaneshaServer``: the two servers with a
  ``sec=``-restricted export and the realm's keytab.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.vm.cpio import CpioWriter
from tests.vm.initramfs import GUEST, base_initramfs, module_load_order, run_layer
from tests.vm.kernel import GuestKernel, cache_dir, cache_lock
from tests.vm.network import Network, make_network
from tests.vm.servers import GaneshaServer, PynfsdServer, Server

SERVER_NAME = "nfs-server.test"
GUEST_NAME = "guest.test"
FLAVOURS = ("krb5", "krb5i", "krb5p")
GSSD_PACKAGES = ("nfs-common", "libc6", "libtirpc3", "libtirpc-common", "libevent-core-2.1-7",
                 "libkeyutils1", "libcom-err2", "libkrb5-3", "libgssapi-krb5-2", "libk5crypto3",
                 "libkrb5support0", "libnfsidmap1")
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
LOADER = "lib64/ld-linux-x86-64.so.2"
GSSD = "usr/sbin/rpc.gssd"
SVCGSSD = "usr/sbin/rpc.svcgssd"   # accepts the server's RPCSEC_GSS callbacks (CB_RECALL ...)
IDMAP_PLUGINS = "usr/lib/x86_64-linux-gnu/libnfsidmap"
IDMAPD_CONF = b"[General]\nDomain = test\n[Translation]\nMethod = nsswitch\n"
# Loaded by the krb5 mechanism through request_module (disabled in the guest): cts for
# aes-cts, and the accelerated AES/SHA-1 drivers (TCG emulates AES-NI and SSSE3).
CRYPTO_MODULES = ["cts", "aesni_intel", "sha1_ssse3"]
ENCTYPES = ("aes256-cts-hmac-sha1-96:normal,aes128-cts-hmac-sha1-96:normal,"
            "aes256-cts-hmac-sha384-192:normal,aes128-cts-hmac-sha256-128:normal")
NSSWITCH = b"passwd: files\ngroup: files\nhosts: files\n"
DRIVER = GUEST / "krb5_driver.sh"


def _download(package: str, dest: Path) -> Path:
    subprocess.run(["apt-get", "download", package], cwd=dest, check=True,
                   capture_output=True, text=True)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} produced no .deb in {dest}")
    return debs[0]


def gssd_root() -> Path:
    """The cached tree of the unpacked GSSD_PACKAGES (downloaded on first use)."""
    return unpacked_root("gssd", GSSD_PACKAGES)


def unpacked_root(name: str, packages: tuple[str, ...]) -> Path:
    """The cached tree ``<cache>/<name>-root-<hash>`` of ``packages`` downloaded with
    ``apt-get download`` and unpacked with ``dpkg -x`` (nothing is installed on the host)."""
    key = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    dest = cache_dir() / f"{name}-root-{key}"
    with cache_lock(name):
        if (dest / ".complete").exists():
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            staging = Path(tmp) / "root"
            debs = [_download(p, Path(tmp)) for p in packages]
            for deb in debs:
                subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True)
            (staging / ".complete").write_text("".join(f"{d.name}\n" for d in debs))
            staging.rename(dest)
    return dest


def elf_needed(binary: Path) -> list[str]:
    """The ``DT_NEEDED`` sonames of an ELF file (``readelf -d``)."""
    out = subprocess.run(["readelf", "-d", str(binary)], check=True, capture_output=True,
                         text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", out)


def find_library(root: Path, soname: str) -> Path:
    for d in LIB_DIRS:
        if (root / d / soname).exists():
            return root / d / soname
    raise FileNotFoundError(f"{soname} is in none of {LIB_DIRS} under {root}")


def library_closure(root: Path, binary: Path) -> dict[str, Path]:
    """soname -> file under ``root`` for everything ``binary`` needs, transitively."""
    found: dict[str, Path] = {}
    pending = elf_needed(binary)
    while pending:
        soname = pending.pop()
        if soname in found or soname.startswith("ld-linux"):
            continue
        found[soname] = find_library(root, soname)
        pending.extend(elf_needed(found[soname]))
    return found


def _write_gssd_layer(kernel: GuestKernel, root: Path, out: Path) -> None:
    cpio = CpioWriter()
    libraries: dict[str, Path] = {}
    for daemon in (GSSD, SVCGSSD):
        cpio.add_file(daemon, root / daemon, 0o755)
        libraries.update(library_closure(root, root / daemon))
    cpio.add_file(LOADER, (root / LOADER).resolve(), 0o755)
    for soname, path in sorted(libraries.items()):
        cpio.add_file(f"lib/x86_64-linux-gnu/{soname}", path.resolve(), 0o755)
    cpio.mkdir(IDMAP_PLUGINS)
    for plugin in sorted((root / IDMAP_PLUGINS).glob("*.so")):   # dlopen'ed by libnfsidmap
        cpio.add_file(f"{IDMAP_PLUGINS}/{plugin.name}", plugin.resolve(), 0o755)
    cpio.add_file("etc/netconfig", root / "etc" / "netconfig", 0o644)
    cpio.add_bytes("etc/nsswitch.conf", NSSWITCH)
    cpio.add_bytes("etc/idmapd.conf", IDMAPD_CONF)
    order = module_load_order(kernel.modules_dir, CRYPTO_MODULES)
    for rel in order:
        cpio.add_file(f"lib/modules/{rel}", kernel.modules_dir / rel, 0o644)
    listing = "".join(f"/lib/modules/{r}\n" for r in order)
    cpio.add_bytes("etc/krb5-modules.order", listing.encode())
    for d in ("run/rpc_pipefs", "var/lib/nfs", "krb5"):
        cpio.mkdir(d)
    out.write_bytes(cpio.gzipped())


def gssd_layer(kernel: GuestKernel) -> Path:
    """The cached gssd initramfs layer for ``kernel`` (built on first use, ~2 MB)."""
    root = gssd_root()
    digest = hashlib.sha256(kernel.version.encode() + Path(__file__).read_bytes())
    digest.update((root / ".complete").read_bytes())
    path = cache_dir() / f"gssd-layer-{kernel.version}-{digest.hexdigest()[:16]}.cpio.gz"
    with cache_lock("gssd"):
        if not path.exists():
            for stale in cache_dir().glob(f"gssd-layer-{kernel.version}-*.cpio.gz"):
                stale.unlink()
            tmp = path.with_suffix(".tmp")
            _write_gssd_layer(kernel, root, tmp)
            tmp.rename(path)
    return path


# ---- the realm -------------------------------------------------------------------------------

@dataclass
class GuestRealm:
    """A running throwaway realm: the KDC where the guest can reach it, and the two keytabs."""

    k5: Any
    network: Network
    server_keytab: Path
    guest_keytab: Path
    kdc_pid: int

    @property
    def realm(self) -> str:
        return str(self.k5.realm)

    @property
    def kdc_port(self) -> int:
        return int(self.k5.portbase)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.k5.env)

    @property
    def kdc_log(self) -> Path:
        return Path(self.k5.tmpdir) / "kdc.log"

    def stop(self) -> None:
        """Stop the KDC (by its PID) and remove the realm's directory."""
        from tests.interop.conftest import stop_realm
        stop_realm(self.k5)


def _add_principal(k5: Any, principal: str, keytab: Path) -> None:
    k5.run_kadminl(f"addprinc -randkey -e {ENCTYPES} {principal}")
    k5.run_kadminl(f"ktadd -k {keytab} -norandkey {principal}")


def start_guest_realm(network: Network, workdir: Path) -> GuestRealm:
    """A realm with the server's and the guest's principal; the KDC runs inside ``network``."""
    from k5test import K5Realm

    from tests.interop.conftest import _free_portbase, stop_realm
    k5 = K5Realm(portbase=_free_portbase(), create_host=False, start_kdc=False,
                 get_creds=False, create_user=False)
    try:
        server_kt, guest_kt = workdir / "server.keytab", workdir / "guest.keytab"
        _add_principal(k5, f"nfs/{SERVER_NAME}@{k5.realm}", server_kt)
        _add_principal(k5, f"nfs/{GUEST_NAME}@{k5.realm}", guest_kt)
        # the KDC listens on all addresses (kdc_ports = portbase): in the namespace for netns
        k5._kdc_proc = k5._start_daemon(network.wrap([k5.krb5kdc, "-n"]), None, "starting...")
    except BaseException:
        stop_realm(k5)
        raise
    return GuestRealm(k5, network, server_kt, guest_kt, k5._kdc_proc.pid)


# ---- per-run guest files ---------------------------------------------------------------------

def krb5_conf(realm: str, kdc_addr: str, kdc_port: int) -> str:
    """The guest's krb5.conf: the KDC by address over TCP, no DNS, no reverse lookups."""
    return (f"[libdefaults]\n default_realm = {realm}\n dns_lookup_kdc = false\n"
            f" dns_lookup_realm = false\n rdns = false\n dns_canonicalize_hostname = false\n"
            f" udp_preference_limit = 1\n"
            f"[realms]\n {realm} = {{\n  kdc = {kdc_addr}:{kdc_port}\n }}\n"
            f"[domain_realm]\n .test = {realm}\n test = {realm}\n")


def hosts_file(network: Network, guest_name: str = GUEST_NAME) -> str:
    short = guest_name.split(".")[0]
    return (f"127.0.0.1 localhost\n{network.guest_ip} {guest_name} {short}\n"
            f"{network.server_addr} {SERVER_NAME} nfs-server\n")


def add_guest_principal(realm: GuestRealm, guest_name: str, keytab: Path) -> Path:
    """``nfs/<guest_name>`` in the realm, its key in ``keytab`` (a second guest's machine
    credential and callback service)."""
    _add_principal(realm.k5, f"nfs/{guest_name}@{realm.realm}", keytab)
    return keytab


def run_layer_krb5(realm: GuestRealm, guest_name: str = GUEST_NAME,
                   network: Network | None = None, keytab: Path | None = None) -> bytes:
    """Per-run files: krb5.conf, hosts, the guest keytab, the standard workload (by default
    for the realm's one guest, ``GUEST_NAME`` on the realm's network)."""
    net = network or realm.network
    cpio = CpioWriter()
    cpio.add_bytes("etc/krb5.conf", krb5_conf(realm.realm, net.server_addr,
                                              realm.kdc_port).encode())
    cpio.add_bytes("etc/hosts", hosts_file(net, guest_name).encode())
    cpio.add_bytes("etc/hostname", f"{guest_name}\n".encode())
    cpio.add_file("etc/krb5.keytab", keytab or realm.guest_keytab, 0o600)
    cpio.add_file("krb5/workload.sh", GUEST / "workload.sh", 0o755)
    cpio.add_file("krb5/gssd.sh", GUEST / "krb5_gssd.sh", 0o644)
    return cpio.gzipped()


def assemble_krb5(kernel: GuestKernel, workload: Path, config: Mapping[str, str | int],
                  realm: GuestRealm, out: Path, krb5_layer: bytes | None = None) -> Path:
    """base + gssd layer + krb5 run layer (default: ``run_layer_krb5(realm)``) + run layer
    (``workload`` as ``/workload.sh``)."""
    base_path, layer_path = base_initramfs(kernel), gssd_layer(kernel)
    with open(out, "wb") as fh:
        with cache_lock("initramfs"), open(base_path, "rb") as base:
            shutil.copyfileobj(base, fh)
        with cache_lock("gssd"), open(layer_path, "rb") as layer:
            shutil.copyfileobj(layer, fh)
        fh.write(run_layer_krb5(realm) if krb5_layer is None else krb5_layer)
        fh.write(run_layer(workload, {"GUEST_NAME": GUEST_NAME, **config}))
    return out


# ---- servers with Kerberos on ----------------------------------------------------------------

class Krb5PynfsdServer(PynfsdServer):
    """pynfsd exporting with ``sec=`` (default krb5 only) and the realm's server keytab."""

    def __init__(self, workdir: Path, network: Network, realm: GuestRealm,
                 sec: str = "krb5:krb5i:krb5p") -> None:
        super().__init__(workdir, network)
        self.realm = realm
        self.sec = sec

    def command(self) -> list[str]:
        argv = super().command()
        argv[argv.index("--export") + 1] = (f"{self.export_dir} *(rw,sec={self.sec},"
                                            "no_root_squash,insecure)")
        return [*argv, "--keytab", str(self.realm.server_keytab)]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.update(self.realm.env)
        env["KRB5_KTNAME"] = str(self.realm.server_keytab)
        return env


class Krb5GaneshaServer(GaneshaServer):
    """NFS-Ganesha with ``NFS_KRB5`` active and ``SecType`` from ``sec`` (comma list)."""

    def __init__(self, workdir: Path, network: Network, realm: GuestRealm,
                 sec: str = "krb5, krb5i, krb5p") -> None:
        super().__init__(workdir, network)
        self.realm = realm
        self.sec = sec

    def command(self) -> list[str]:
        argv = super().command()
        conf = self.workdir / "ganesha.conf"
        text = conf.read_text()
        krb5 = (f'NFS_KRB5 {{ PrincipalName = nfs; KeytabPath = "{self.realm.server_keytab}";'
                f' Active_krb5 = true; }}')
        for old, new in (("NFS_KRB5 { Active_krb5 = false; }", krb5),
                         ("SecType = sys;", f"SecType = {self.sec};")):
            if old not in text:
                raise RuntimeError(f"ganesha.conf from GANESHA_CONF: {old!r} not found")
            text = text.replace(old, new)
        conf.write_text(text)
        return argv

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.update(self.realm.env)
        env["KRB5_KTNAME"] = str(self.realm.server_keytab)
        return env


def make_krb5_server(name: str, workdir: Path, realm: GuestRealm, sys_too: bool = False,
                     ) -> Server:
    """``pynfsd`` or ``ganesha`` exporting krb5/krb5i/krb5p (and sys first if ``sys_too``)."""
    flavours = (["sys"] if sys_too else []) + list(FLAVOURS)
    if name == "pynfsd":
        return Krb5PynfsdServer(workdir, realm.network, realm, ":".join(flavours))
    if name == "ganesha":
        return Krb5GaneshaServer(workdir, realm.network, realm, ", ".join(flavours))
    raise ValueError(f"unknown server {name!r}")



@contextmanager
def krb5_setup(server_name: str, net_name: str, workdir: Path, *, sys_too: bool = False,
               ) -> Iterator[tuple[GuestRealm, Server]]:
    """Network, realm (KDC inside it) and a krb5 server, not yet started; all torn down after
    (the KDC's log is kept as ``workdir/kdc.log``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with make_network(net_name) as net:
        realm = start_guest_realm(net, workdir)
        try:
            yield realm, make_krb5_server(server_name, workdir, realm, sys_too)
        finally:
            if realm.kdc_log.exists():  # the realm's directory goes with it
                shutil.copy(realm.kdc_log, workdir / "kdc.log")
            realm.stop()


def guest_config(server: Server, net: Network, **extra: str | int) -> dict[str, str | int]:
    """The /config every krb5 guest script reads (plus ``extra``)."""
    return {"SERVER_IP": net.server_addr, "NFS_PORT": server.port,
            "EXPORT_PATH": str(server.export_dir), "MOUNT_EXTRA": net.mount_extra,
            "GUEST_IP": net.guest_ip, "GUEST_PREFIX": net.guest_prefix, **extra}
