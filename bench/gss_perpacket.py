"""Per-packet Kerberos GSS crypto: pynfsd's RFC 4121 tokens against MIT krb5 and OpenSSL.

For each enctype (default 18 = aes256-cts-hmac-sha1-96 and 20 = aes256-cts-hmac-sha384-192)
and message size (64 B to 1 MiB) it measures, in MB/s of payload for one full op pair:

* krb5p: wrap(conf) on one side + unwrap on the other;
* krb5i: get_mic + verify_mic;

for pynfsd (`Krb5Context` built from lucid exports of both sides of a real context), for MIT
krb5 through python-gssapi (`gssapi.raw`, the fast API), and for the "OpenSSL floor": the
same primitives in `openssl speed` at the same buffer size (krb5p = AES-CBC encrypt + decrypt
+ 2 HMACs; krb5i = 2 HMACs), with no per-message set-up at all. Ratios are printed beside
the goals (krb5p and krb5i >= 1.0x MIT at 128, 256 and 512 B; krb5p >= 4x MIT and >= 90 % of
the floor from 64 KiB; >= 1.3x MIT at 1 KiB; krb5i >= 2x MIT at 64 KiB).

Each (enctype, size) is measured --rounds times on the same contexts, pynfsd and MIT
alternating; the rates printed are medians, and the ratio columns are followed by their
spread over the rounds (lowest-highest). --plot writes a PNG: MB/s against message size (log
scales) for pynfsd, MIT and the floor, one panel per enctype and service.

Times are CPU seconds of this process (`time.process_time`, and `openssl speed`'s default
user-time divisor), so other load on the machine disturbs the figures less. The realm is a
throwaway k5test KDC (tests/interop/conftest.py; needs scripts/krb5-deps.sh).

    python -m bench.gss_perpacket [--enctypes 18,20] [--sizes 128,1024,...] [--seconds 0.6]
                                  [--rounds 3] [--plot gss_perpacket.png] [--heap-buffers]

Large messages: every 1 MiB token is a fresh buffer; served from mmap, its first touch costs a
page fault per 4 KiB (~0.7 ms/MiB measured here). --heap-buffers applies the start-up malloc
tuning `pynfsd.gss.krb5crypto.keep_large_buffers_in_heap()` to show the difference.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SIZES = [64, 128, 256, 512, 1024, 8192, 65536, 1 << 20]
SMALL_GOAL_SIZES = (128, 256, 512)
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
    # (lowest, highest) pynfsd/MIT ratio over the rounds, for krb5p and krb5i
    spread_p: tuple[float, float] = field(default=(0.0, 0.0))
    spread_i: tuple[float, float] = field(default=(0.0, 0.0))

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


def measure(
    service: str, enctype: int, size: int, seconds: float, ossl: int, rounds: int
) -> Row:
    """Median rates over `rounds` (pynfsd and MIT alternating), and the ratios' spread."""
    import gssapi.raw as gr
    from gssapi.raw.ext_krb5 import krb5_export_lucid_sec_context

    from pynfsd.gss.lucid import Krb5Context

    mit_i, mit_a = establish(service, enctype)
    lucid = [krb5_export_lucid_sec_context(c, 1) for c in establish(service, enctype)]
    ours_i, ours_a = (Krb5Context(x) for x in lucid)
    msg = os.urandom(size)
    ops: list[Callable[[], object]] = [
        lambda: ours_a.unwrap(ours_i.wrap(msg)),
        lambda: gr.unwrap(mit_a, gr.wrap(mit_i, msg, True).message),
        lambda: ours_a.verify_mic(msg, ours_i.get_mic(msg)),
        lambda: gr.verify_mic(mit_a, msg, gr.get_mic(mit_i, msg)),
    ]
    runs = [[rate(size, op, seconds) for op in ops] for _ in range(rounds)]
    med = [statistics.median(r[k] for r in runs) for k in range(4)]
    row = Row(enctype, size, med[0], med[1], 0, med[2], med[3], 0)
    row.spread_p = spread([r[0] / r[1] for r in runs])
    row.spread_i = spread([r[2] / r[3] for r in runs])
    if ossl:
        row.floor_p, row.floor_i = floors(enctype, size, ossl)
    return row


def spread(ratios: list[float]) -> tuple[float, float]:
    return min(ratios), max(ratios)


def goal_notes(row: Row) -> str:
    notes = []
    if row.size in SMALL_GOAL_SIZES:
        notes.append(mark("p>=1xMIT", row.ours_p >= row.mit_p))
        notes.append(mark("i>=1xMIT", row.ours_i >= row.mit_i))
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
        f"{row.floor_p:7.1f} {row.ours_p / row.mit_p:5.2f}x {span(row.spread_p)} "
        f"{pct(row.ours_p, row.floor_p)} | krb5i {row.ours_i:7.1f} {row.mit_i:7.1f} "
        f"{row.floor_i:7.1f} {row.ours_i / row.mit_i:5.2f}x {span(row.spread_i)} "
        f"{pct(row.ours_i, row.floor_i)} | {goal_notes(row)}",
        flush=True,
    )


def span(bounds: tuple[float, float]) -> str:
    return f"({bounds[0]:.2f}-{bounds[1]:.2f})"


HEADER = (
    "MB/s of payload per op pair (CPU time, median of the rounds); columns: pynfsd, MIT, "
    "OpenSSL floor, pynfsd/MIT (its lowest-highest over the rounds), pynfsd/floor\n"
    " et     size |        pynfsd     MIT   floor  ×MIT    (spread)  %flr |        pynfsd"
    "     MIT   floor  ×MIT    (spread)  %flr | goals"
)


def plot(rows: list[Row], path: str) -> None:
    """One log-log panel per enctype and service: pynfsd, MIT and the floor against size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    enctypes = sorted({r.enctype for r in rows})
    fig, axes = plt.subplots(
        len(enctypes), 2, figsize=(11, 4 * len(enctypes)), squeeze=False, sharex=True
    )
    for line, enctype in zip(axes, enctypes, strict=True):
        mine = sorted((r for r in rows if r.enctype == enctype), key=lambda r: r.size)
        sizes = [r.size for r in mine]
        for ax, service, fields in (
            (line[0], "krb5p (wrap + unwrap)", ("ours_p", "mit_p", "floor_p")),
            (line[1], "krb5i (get_mic + verify_mic)", ("ours_i", "mit_i", "floor_i")),
        ):
            for name, attr, style in zip(
                ("pynfsd", "MIT krb5", "OpenSSL floor"), fields, ("o-", "s--", ":"), strict=True
            ):
                values = [getattr(r, attr) for r in mine]
                if any(values):
                    ax.plot(sizes, values, style, label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"enctype {enctype}: {service}")
            ax.set_xlabel("message size (bytes)")
            ax.set_ylabel("MB/s of payload per op pair")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--enctypes", default=",".join(map(str, ENCTYPES)))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seconds", type=float, default=0.6, help="CPU seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per row (median)")
    ap.add_argument("--plot", metavar="PNG", help="write the plot of the rows to this file")
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
        rows = []
        for enctype in (int(e) for e in args.enctypes.split(",")):
            for size in (int(s) for s in args.sizes.split(",")):
                service = f"nfs@{k5.hostname}"
                rows.append(
                    measure(service, enctype, size, args.seconds, args.openssl_seconds, args.rounds)
                )
                print_row(rows[-1])
        if args.plot:
            plot(rows, args.plot)
            print("plot:", args.plot)
    finally:
        stop_realm(k5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
