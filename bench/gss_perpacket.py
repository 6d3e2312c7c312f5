"""Per-packet Kerberos GSS crypto: pynfsd's RFC 4121 tokens against MIT krb5 and OpenSSL.

For each enctype (default 18 = aes256-cts-hmac-sha1-96 and 20 = aes256-cts-hmac-sha384-192)
and message size (128 B to 1 MiB) it measures, in MB/s of payload for one full op pair:

* krb5p: wrap(conf) on one side + unwrap on the other;
* krb5i: get_mic + verify_mic;

for pynfsd (`Krb5Context` built from lucid exports of both sides of a real context), for MIT
krb5 through python-gssapi (`gssapi.raw`, the fast API), and for the "OpenSSL floor": the
same primitives in `openssl speed` at the same buffer size (krb5p = AES-CBC encrypt + decrypt
+ 2 HMACs; krb5i = 2 HMACs), with no per-message set-up at all. Ratios are printed beside
the issue's goals (krb5p >= 4x MIT and >= 90 % of the floor from 64 KiB; >= 1.3x MIT at
1 KiB; krb5i >= 2x MIT at 64 KiB).

Times are CPU seconds of this process (`time.process_time`, and `openssl speed`'s default
user-time divisor), so other load on the machine disturbs the figures less. The realm is a
throwaway k5test KDC (tests/interop/conftest.py; needs scripts/krb5-deps.sh).

    python -m bench.gss_perpacket [--enctypes 18,20] [--sizes 128,1024,...] [--seconds 0.5]
                                  [--heap-buffers]

Large messages: every 1 MiB token is a fresh buffer; served from mmap, its first touch costs a
page fault per 4 KiB (~0.7 ms/MiB measured here). --heap-buffers applies the start-up malloc
tuning `pynfsd.gss.krb5crypto.keep_large_buffers_in_heap()` to show the difference.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SIZES = [128, 1024, 8192, 65536, 1 << 20]
ENCTYPES = [18, 20]
AES = {17: "aes-128-cbc", 18: "aes-256-cbc", 19: "aes-128-cbc", 20: "aes-256-cbc"}
HASH = {17: "sha1", 18: "sha1", 19: "sha256", 20: "sha384"}


@dataclass
class Row:
    enctype: int
    size: int
    ours_p: float
    mit_p: float
    floor_p: float
    ours_i: float
    mit_i: float
    floor_i: float


def rate(size: int, op: Callable[[], object], seconds: float) -> float:
    """MB/s of payload for `op` (CPU time), best of three batches of about seconds/3."""
    n, spent = 1, 0.0
    while spent < seconds / 30:  # calibrate
        n *= 2
        t0 = time.process_time()
        for _ in range(n):
            op()
        spent = time.process_time() - t0
    n = max(1, int(n * (seconds / 3) / spent))
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(n):
            op()
        best = min(best, (time.process_time() - t0) / n)
    return size / best / 1e6


def openssl_rate(args: list[str], size: int, seconds: int) -> float:
    """Bytes/s that `openssl speed` reports for one algorithm at one buffer size, in MB/s."""
    cmd = ["openssl", "speed", "-mr", "-seconds", str(seconds), "-bytes", str(size), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = re.findall(r"^\+F:\d+:[^:]+:([0-9.]+)", out, re.M)
    if not found:
        raise RuntimeError(f"cannot parse `{' '.join(cmd)}`:\n{out}")
    return float(found[-1]) / 1e6


def floors(enctype: int, size: int, seconds: int) -> tuple[float, float]:
    enc = openssl_rate(["-evp", AES[enctype]], size, seconds)
    dec = openssl_rate(["-decrypt", "-evp", AES[enctype]], size, seconds)
    mac = openssl_rate(["-hmac", HASH[enctype]], size, seconds)
    return 1 / (1 / enc + 1 / dec + 2 / mac), mac / 2


def establish(service: str, enctype: int) -> tuple[Any, Any]:
    from gssapi.raw import RequirementFlag as Flag

    from tests.interop.conftest import establish_mit_pair

    flags = [Flag.mutual_authentication, Flag.integrity, Flag.confidentiality]
    return establish_mit_pair(service, enctype, flags)


def measure(service: str, enctype: int, size: int, seconds: float, ossl: int) -> Row:
    import gssapi.raw as gr
    from gssapi.raw.ext_krb5 import krb5_export_lucid_sec_context

    from pynfsd.gss.lucid import Krb5Context

    mit_i, mit_a = establish(service, enctype)
    lucid = [krb5_export_lucid_sec_context(c, 1) for c in establish(service, enctype)]
    ours_i, ours_a = (Krb5Context(x) for x in lucid)
    msg = os.urandom(size)
    row = Row(enctype, size, 0, 0, 0, 0, 0, 0)
    row.ours_p = rate(size, lambda: ours_a.unwrap(ours_i.wrap(msg)), seconds)
    row.mit_p = rate(size, lambda: gr.unwrap(mit_a, gr.wrap(mit_i, msg, True).message), seconds)
    row.ours_i = rate(size, lambda: ours_a.verify_mic(msg, ours_i.get_mic(msg)), seconds)
    row.mit_i = rate(size, lambda: gr.verify_mic(mit_a, msg, gr.get_mic(mit_i, msg)), seconds)
    if ossl:
        row.floor_p, row.floor_i = floors(enctype, size, ossl)
    return row


def goal_notes(row: Row) -> str:
    notes = []
    if row.size >= 65536:
        notes.append(mark("p>=4xMIT", row.ours_p >= 4 * row.mit_p))
        if row.floor_p:
            notes.append(mark("p>=90%floor", row.ours_p >= 0.9 * row.floor_p))
    if row.size == 1024:
        notes.append(mark("p>=1.3xMIT", row.ours_p >= 1.3 * row.mit_p))
    if row.size == 65536:
        notes.append(mark("i>=2xMIT", row.ours_i >= 2 * row.mit_i))
    return " ".join(notes)


def mark(name: str, ok: bool) -> str:
    return f"{name}:{'ok' if ok else 'MISS'}"


def pct(a: float, b: float) -> str:
    return f"{100 * a / b:5.0f}%" if b else "    -"


def print_row(row: Row) -> None:
    print(
        f"{row.enctype:>3} {row.size:>8} | krb5p {row.ours_p:7.1f} {row.mit_p:7.1f} "
        f"{row.floor_p:7.1f} {row.ours_p / row.mit_p:5.2f}x {pct(row.ours_p, row.floor_p)} | "
        f"krb5i {row.ours_i:7.1f} {row.mit_i:7.1f} {row.floor_i:7.1f} "
        f"{row.ours_i / row.mit_i:5.2f}x {pct(row.ours_i, row.floor_i)} | {goal_notes(row)}",
        flush=True,
    )


HEADER = (
    "MB/s of payload per op pair (CPU time); columns: pynfsd, MIT, OpenSSL floor, "
    "pynfsd/MIT, pynfsd/floor\n"
    " et     size |        pynfsd     MIT   floor  ×MIT  %flr |        pynfsd     MIT"
    "   floor  ×MIT  %flr | goals"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--enctypes", default=",".join(map(str, ENCTYPES)))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seconds", type=float, default=0.6, help="CPU seconds per measurement")
    ap.add_argument(
        "--heap-buffers",
        action="store_true",
        help="call krb5crypto.keep_large_buffers_in_heap() first (server start-up tuning)",
    )
    ap.add_argument(
        "--openssl-seconds", type=int, default=1, help="per `openssl speed` run; 0 skips"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.interop.conftest import start_realm, stop_realm

    if args.heap_buffers:
        from pynfsd.gss.krb5crypto import keep_large_buffers_in_heap

        print("malloc tuned:", keep_large_buffers_in_heap())
    k5 = start_realm()
    os.environ.update(k5.env)
    try:
        print(HEADER)
        for enctype in (int(e) for e in args.enctypes.split(",")):
            for size in (int(s) for s in args.sizes.split(",")):
                row = measure(
                    f"nfs@{k5.hostname}", enctype, size, args.seconds, args.openssl_seconds
                )
                print_row(row)
    finally:
        stop_realm(k5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
