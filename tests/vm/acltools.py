"""nfs4-acl-tools for the guest: ``nfs4_getfacl`` and ``nfs4_setfacl`` in an initramfs layer.

``acl_tools_layer()`` is a gzip'd cpio (appended to a run's initrd: the kernel unpacks
concatenated archives) with Debian's unmodified binaries, the closure of their ``DT_NEEDED``
libraries and the loader, all from the packages unpacked into the VM cache
(``krb5guest.unpacked_root``: ``apt-get download`` + ``dpkg -x``, nothing installed on the
host). The tools read and write the kernel client's ``system.nfs4_acl`` xattr, which is the
`acl` attribute as XDR.
"""

from __future__ import annotations

from pathlib import Path

from tests.vm.cpio import CpioWriter
from tests.vm.kernel import cache_dir, cache_lock
from tests.vm.krb5guest import LOADER, library_closure, unpacked_root

PACKAGES = ("nfs4-acl-tools", "libc6")
TOOLS = ("usr/bin/nfs4_getfacl", "usr/bin/nfs4_setfacl")


def _write_layer(root: Path, out: Path) -> None:
    cpio = CpioWriter()
    cpio.add_file(LOADER, (root / LOADER).resolve(), 0o755)
    libs: dict[str, Path] = {}
    for tool in TOOLS:
        cpio.add_file(tool, root / tool, 0o755)
        libs.update(library_closure(root, root / tool))
    for soname, path in sorted(libs.items()):
        cpio.add_file(f"lib/x86_64-linux-gnu/{soname}", path.resolve(), 0o755)
    out.write_bytes(cpio.gzipped())


def acl_tools_layer() -> Path:
    """The cached layer (built on first use from the cached packages)."""
    root = unpacked_root("acltools", PACKAGES)
    path = cache_dir() / f"acltools-layer-{root.name}.cpio.gz"
    with cache_lock("acltools-layer"):
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            _write_layer(root, tmp)
            tmp.rename(path)
    return path
