"""Build the guest initramfs: a cached base layer plus a small per-run layer.

Base layer (cached under the VM cache dir, keyed by kernel version and a hash of its inputs):
static busybox with its applet links, the NFS client modules and their dependency closure (from
``modules.dep``), the static C helpers from ``helpers/*.c`` and ``guest/init.sh`` as ``/init``.
Per-run layer: ``/workload.sh`` and ``/config`` (shell variable assignments), appended as a
second gzip'd cpio that the kernel unpacks over the first.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.vm.cpio import CpioWriter
from tests.vm.kernel import GuestKernel, cache_dir, cache_lock

HERE = Path(__file__).resolve().parent
HELPERS = HERE / "helpers"
GUEST = HERE / "guest"
BUSYBOX = Path("/bin/busybox")

# Roots of the module closure; order matters only for readability, loading follows modules.dep.
MODULES = ["virtio_pci", "virtio_net", "nfsv4", "nfs", "lockd", "auth_rpcgss",
           "rpcsec_gss_krb5", "dns_resolver", "fscache", "netfs", "grace", "sunrpc"]


def _parse_modules_dep(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """Map module name -> (relative path, dependency paths) from ``modules.dep``."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        table[name] = (path, deps.split())
    return table


def module_load_order(modules_dir: Path, roots: list[str] = MODULES) -> list[str]:
    """Relative paths of the closure of ``roots``, each after everything it depends on."""
    table = _parse_modules_dep(modules_dir)
    by_path = {path: deps for path, deps in table.values()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in by_path[path]:
            visit(dep)
        order.append(path)

    for root in roots:
        if root in table:  # built-in modules (e.g. virtio on some configs) have no entry
            visit(table[root][0])
    return order


def compile_helpers(out_dir: Path) -> list[Path]:
    """Compile each ``helpers/*.c`` with ``gcc -static`` into ``out_dir``."""
    binaries = []
    for source in sorted(HELPERS.glob("*.c")):
        binary = out_dir / source.stem
        subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(binary), str(source)],
                       check=True, capture_output=True, text=True)
        binaries.append(binary)
    return binaries


def _busybox_applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True)
    return [a for a in out.stdout.split() if a and a != "busybox"]


def _input_hash(kernel: GuestKernel) -> str:
    digest = hashlib.sha256(kernel.version.encode())
    inputs = [BUSYBOX, GUEST / "init.sh", Path(__file__), *sorted(HELPERS.glob("*.c"))]
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _write_base(kernel: GuestKernel, out: Path) -> None:
    cpio = CpioWriter()
    for d in ("dev", "proc", "sys", "tmp", "mnt", "run", "etc", "root", "sbin", "usr/bin"):
        cpio.mkdir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.add_file("bin/busybox", BUSYBOX, 0o755)
    for applet in _busybox_applets():
        cpio.symlink(f"bin/{applet}", "busybox")
    cpio.add_file("init", GUEST / "init.sh", 0o755)
    order = module_load_order(kernel.modules_dir)
    for rel in order:
        cpio.add_file(f"lib/modules/{rel}", kernel.modules_dir / rel, 0o644)
    cpio.add_bytes("etc/modules.order", "".join(f"/lib/modules/{r}\n" for r in order).encode())
    with tempfile.TemporaryDirectory() as tmp:
        for binary in compile_helpers(Path(tmp)):
            cpio.add_file(f"bin/{binary.name}", binary, 0o755)
    cpio.add_bytes("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.add_bytes("etc/group", b"root:x:0:\n")
    out.write_bytes(cpio.gzipped())


def base_initramfs(kernel: GuestKernel) -> Path:
    """The cached base initramfs for ``kernel``, built on first use."""
    path = cache_dir() / f"initramfs-{kernel.version}-{_input_hash(kernel)}.cpio.gz"
    with cache_lock("initramfs"):
        if not path.exists():
            for stale in cache_dir().glob(f"initramfs-{kernel.version}-*.cpio.gz"):
                stale.unlink()  # older inputs; assemble() copies under the same lock
            tmp = path.with_suffix(".tmp")
            _write_base(kernel, tmp)
            tmp.rename(path)
    return path


def run_layer(workload: Path, config: Mapping[str, str | int]) -> bytes:
    """The per-run gzip'd cpio with ``/workload.sh``, ``/guestlib.sh`` (helpers a script may
    source) and ``/config``."""
    cpio = CpioWriter()
    cpio.add_file("workload.sh", workload, 0o755)
    cpio.add_file("guestlib.sh", GUEST / "guestlib.sh", 0o644)
    lines = "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in config.items())
    cpio.add_bytes("config", lines.encode())
    return cpio.gzipped()


def assemble(kernel: GuestKernel, workload: Path, config: Mapping[str, str | int],
             out: Path) -> Path:
    """Write base + per-run layer to ``out`` (the kernel unpacks concatenated archives)."""
    base_path = base_initramfs(kernel)
    with cache_lock("initramfs"), open(out, "wb") as fh, open(base_path, "rb") as base:
        shutil.copyfileobj(base, fh)
    with open(out, "ab") as fh:
        fh.write(run_layer(workload, config))
    return out
