"""``python -m bench.cache_clients``: GETATTR from many client addresses, cold and warm caches.

    python -m bench.cache_clients [--addresses 1000] [--variant network|names|both]
                                  [--peer ganesha|none] [--concurrency 16] [--repeat 1]
                                  [--json OUT]

Every call comes from its own loopback address 127.0.X.Y (Linux routes all of 127.0.0.0/8 to
``lo``; the client socket is bound to the address before it connects), so the server sees
``--addresses`` distinct clients.  A call is what a mounted client's GETATTR is: a new TCP
connection, PUTFH of the export's root + GETATTR, then the connection is closed; at most
``--concurrency`` are open at a time (the server's connection cap is never the limit).  An
NFS4ERR_DELAY answer (a request that waited for an upcall too long) is retried on the same
connection after a short pause, as a client does, and counted.

Variants (the export's client spec):

- ``network``: ``127.0.0.0/8``, decided from the address alone;
- ``names``: ``*.bench.pynfsd.test``, a wildcard that needs each address's host name (reverse
  lookup with forward check).  The servers run in a private mount namespace
  (``unshare --mount --propagation private``) where a made ``/etc/hosts`` names every address
  (``127.0.X.Y  c-X-Y.bench.pynfsd.test``) and ``/etc/nsswitch.conf`` says ``hosts: files``;
  both are bind-mounted there only, the host's /etc is never changed.  Before the rounds, a
  call from an address with no name (``OUTSIDER``) must be refused, or the run is an error.

Rounds, on a fresh server, after a warm-up from one extra address (``WARMUP_CALLS`` calls, at
least four per connection slot, so that connection handling has reached its steady size):

- ``cold``: the first call from each address: every client is a cache miss;
- ``warm``: a second call from each address, in the same order;
- ``flushed`` and ``warm-again`` (pynfsd, when it has ``pynfsd cache flush``): the caches
  flushed, then the same two rounds again (misses on a server whose memory has already grown).

Reported per round: calls/s, the server's CPU per call (``/proc/PID/stat``, all threads) and
this process's CPU per call (the client shares the machine's cores); the warm/cold ratio; the
miss cost (cold minus warm server CPU per call); memory per cached client: growth of the
server's RSS over the cold round divided by the address count (its growth over the warm
round, which adds no client, shows what else moves it, and the difference of the two is
given as the net figure), and, where pynfsd has
``pynfsd cache show``, how many ``auth.unix.ip`` entries per address the cold round added.  With
``--peer ganesha`` NFS-Ganesha (VFS FSAL, the same export and client spec in a CLIENT block)
runs the same rounds in the same run, servers alternating (A B B A ...), and the table gives
pynfsd/Ganesha ratios.  Figures are medians over ``--repeat`` servers of each kind.

A benchmark, not a test: nothing here asserts on timings.  Ends only the servers it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.cache_targets import (
    OUTSIDER,
    VARIANTS,
    GaneshaTarget,
    PynfsdTarget,
    Target,
    Variant,
    addresses,
    has_cache_command,
    rss_bytes,
    write_etc,
)
from bench.cpu import cpu_seconds
from bench.report import format_table, ratio
from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred, RpcError
from tests.scenarios.helpers import connect_from
from tests.serverproc import lookup_path

CRED = AuthSysCred(0, 0)
ATTRS = (N.FATTR4_TYPE, N.FATTR4_CHANGE, N.FATTR4_SIZE, N.FATTR4_FSID, N.FATTR4_FILEID,
         N.FATTR4_MODE, N.FATTR4_NUMLINKS, N.FATTR4_TIME_MODIFY)
WARMUP_CALLS = 50
CALL_TIMEOUT = 60.0     # seconds one call may take, retries on NFS4ERR_DELAY included
DELAY_PAUSE = 0.05      # seconds before a call answered NFS4ERR_DELAY is sent again


# ------------------------------------------------------------------ the calls


@dataclass
class Round:
    """One pass over the addresses: one call from each."""

    name: str
    calls: int = 0
    errors: int = 0
    delays: int = 0                    # NFS4ERR_DELAY answers, each followed by a retry
    seconds: float = 0.0
    server_cpu: float | None = None    # server CPU seconds inside the round
    client_cpu: float = 0.0            # this process's CPU seconds inside the round
    first_errors: list[str] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float | None:
        return self.calls / self.seconds if self.seconds else None

    @property
    def server_us_per_call(self) -> float | None:
        return None if self.server_cpu is None or not self.calls else 1e6 * self.server_cpu / self.calls

    @property
    def client_us_per_call(self) -> float | None:
        return 1e6 * self.client_cpu / self.calls if self.calls else None

    def failed(self, why: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(why)


async def getattr_from(addr: str, port: int, fh: bytes, rnd: Round) -> None:
    """One call from `addr`: connect, PUTFH + GETATTR (again after NFS4ERR_DELAY), close."""
    try:
        client = await asyncio.wait_for(connect_from(addr, port, CRED), CALL_TIMEOUT)
    except (OSError, TimeoutError) as e:
        return rnd.failed(f"{addr}: connect: {e!r}")
    try:
        await asyncio.wait_for(_call(client, fh, rnd), CALL_TIMEOUT)
    except (RpcError, OSError, TimeoutError) as e:
        rnd.failed(f"{addr}: {e!r}")
    finally:
        await client.close()
        if client.rpc is not None:
            await client.rpc.wait_closed()


async def _call(client: Nfs4Client, fh: bytes, rnd: Round) -> None:
    while True:
        res = await client.compound([op.putfh(fh), op.getattr(*ATTRS)])
        if res.status != N.NFS4ERR_DELAY:
            break
        rnd.delays += 1
        await asyncio.sleep(DELAY_PAUSE)
    if res.status != N.NFS4_OK:
        rnd.failed(N.nfsstat4_names.get(res.status, str(res.status)))


async def run_round(name: str, target: Target, fh: bytes, addrs: Sequence[str],
                    concurrency: int) -> Round:
    """One call from each of `addrs`, at most `concurrency` connections at a time."""
    rnd = Round(name, calls=len(addrs))
    todo = iter(addrs)

    async def worker() -> None:
        for addr in todo:
            await getattr_from(addr, target.port, fh, rnd)

    cpu0, t0, c0 = cpu_seconds(target.pid), time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(addrs)))))
    rnd.seconds, rnd.client_cpu = time.perf_counter() - t0, time.process_time() - c0
    cpu1 = cpu_seconds(target.pid)
    rnd.server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return rnd


async def export_fh(target: Target, addr: str) -> bytes:
    """The export root's filehandle, looked up from `addr` through the pseudo-filesystem."""
    client = await connect_from(addr, target.port, CRED)
    try:
        res = await client.check([*lookup_path(target.export), op.getfh()])
    finally:
        await client.close()
    fh: bytes = res[-1].object
    return fh


# ------------------------------------------------------------------ one server


@dataclass
class ServerResult:
    """Every round of one server process, and what it held before and after each round."""

    server: str
    variant: str
    addresses: int
    rounds: dict[str, Round] = field(default_factory=dict)
    rss: dict[str, int | None] = field(default_factory=dict)       # "before" or round -> bytes
    ip_entries: dict[str, int | None] = field(default_factory=dict)  # the same -> entries
    errors: list[str] = field(default_factory=list)

    def growth(self, probe: str, before: str, after: str) -> float | None:
        """What `probe` ("rss" or "ip_entries") grew by from `before` to `after`, per address."""
        values: dict[str, int | None] = getattr(self, probe)
        a, b = values.get(before), values.get(after)
        return None if a is None or b is None else (b - a) / self.addresses

    def figure(self, name: str) -> float | None:
        """A headline figure by name (see FIGURES)."""
        return FIGURES[name][1](self)


async def measure(target: Target, addrs: Sequence[str], probe: str, concurrency: int) -> ServerResult:
    """Warm up from `probe`, then the rounds from `addrs` (see the module docstring)."""
    out = ServerResult(target.kind, target.variant.name, len(addrs))
    fh = await export_fh(target, probe)
    await run_round("warm-up", target, fh, [probe] * max(WARMUP_CALLS, 4 * concurrency), concurrency)
    if target.variant.names:
        await check_refused(target, fh, out)
    known = set(addrs)

    def probe_memory(when: str) -> None:
        out.rss[when], out.ip_entries[when] = rss_bytes(target.pid), target.ip_entries(known)

    probe_memory("before")
    for name in ["cold", "warm"] + (["flushed", "warm-again"] if target.can_flush() else []):
        if name == "flushed":
            target.flush()
        out.rounds[name] = await run_round(name, target, fh, addrs, concurrency)
        probe_memory(name)
    for rnd in out.rounds.values():
        out.errors += [f"{rnd.name}: {e}" for e in rnd.first_errors]
    return out


async def check_refused(target: Target, fh: bytes, out: ServerResult) -> None:
    """A call from an address without a host name must fail: the client spec is in force."""
    control = await run_round("control", target, fh, [OUTSIDER], 1)
    if not control.errors:
        out.errors.append(f"a call from {OUTSIDER} (no host name) was served")


def run_server(kind: str, variant: Variant, base: Path, addrs: Sequence[str], probe: str,
               args: argparse.Namespace) -> ServerResult:
    workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-{variant.name}-", dir=base))
    etc = base / "etc" if variant.names else None
    target: Target | None = None
    try:
        if kind == "pynfsd":
            target = PynfsdTarget(workdir, variant, etc, args.cache_cli)
        else:
            target = GaneshaTarget(workdir, variant, etc)
        return asyncio.run(measure(target, addrs, probe, args.concurrency))
    except Exception as e:
        tail = target.log_tail() if target is not None else ""
        raise RuntimeError(f"{kind}/{variant.name}: {e!r}\n{tail}") from e
    finally:
        if target is not None:
            target.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ reporting


def _round(name: str, how: Callable[[Round], float | None]) -> Callable[[ServerResult], float | None]:
    return lambda r: how(r.rounds[name]) if name in r.rounds else None


def _warm_cold(r: ServerResult) -> float | None:
    warm, cold = r.rounds.get("warm"), r.rounds.get("cold")
    return None if warm is None or cold is None else ratio(warm.calls_per_s, cold.calls_per_s)


def _miss_cost(r: ServerResult) -> float | None:
    cold, warm = r.figure("cold srv-cpu us/call"), r.figure("warm srv-cpu us/call")
    return None if cold is None or warm is None else cold - warm


def _net_rss(r: ServerResult) -> float | None:
    """The cold round's growth less the warm round's (the same connections, no new client)."""
    cold, warm = r.growth("rss", "before", "cold"), r.growth("rss", "cold", "warm")
    return None if cold is None or warm is None else cold - warm


#: name -> (digits, figure); rates: higher is better, CPU and bytes: lower is better.
FIGURES: dict[str, tuple[int, Callable[[ServerResult], float | None]]] = {
    "cold calls/s": (0, _round("cold", lambda x: x.calls_per_s)),
    "warm calls/s": (0, _round("warm", lambda x: x.calls_per_s)),
    "warm/cold calls/s": (2, _warm_cold),
    "cold srv-cpu us/call": (0, _round("cold", lambda x: x.server_us_per_call)),
    "warm srv-cpu us/call": (0, _round("warm", lambda x: x.server_us_per_call)),
    "miss srv-cpu us (cold-warm)": (0, _miss_cost),
    "flushed calls/s": (0, _round("flushed", lambda x: x.calls_per_s)),
    "flushed srv-cpu us/call": (0, _round("flushed", lambda x: x.server_us_per_call)),
    "warm-again srv-cpu us/call": (0, _round("warm-again", lambda x: x.server_us_per_call)),
    "client cpu us/call (cold)": (0, _round("cold", lambda x: x.client_us_per_call)),
    "RSS bytes per cached client": (0, lambda r: r.growth("rss", "before", "cold")),
    "RSS bytes per address, warm round": (0, lambda r: r.growth("rss", "cold", "warm")),
    "RSS bytes per cached client, net": (0, _net_rss),
    "auth.unix.ip entries per address": (2, lambda r: r.growth("ip_entries", "before", "cold")),
    "NFS4ERR_DELAY retries": (0, lambda r: float(sum(x.delays for x in r.rounds.values()))),
    "failed calls": (0, lambda r: float(sum(x.errors for x in r.rounds.values()))),
}


def median(results: Sequence[ServerResult], name: str) -> float | None:
    values = [v for v in (r.figure(name) for r in results) if v is not None]
    return statistics.median(values) if values else None


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def comparison_table(results: Sequence[ServerResult], servers: Sequence[str]) -> str:
    by = {s: [r for r in results if r.server == s] for s in servers}
    rows = []
    for name, (digits, _) in FIGURES.items():
        values = [median(by[s], name) for s in servers]
        row = [name, *(_num(v, digits) for v in values)]
        if len(servers) == 2:
            row.append(_num(ratio(values[0], values[1]), 2))
        rows.append(row)
    header = ["measure", *servers] + ([f"{servers[0]}/{servers[1]}"] if len(servers) == 2 else [])
    return format_table(header, rows)


def to_json(results: Sequence[ServerResult], args: argparse.Namespace) -> dict[str, Any]:
    def one(r: ServerResult) -> dict[str, Any]:
        d = asdict(r)
        d["figures"] = {name: r.figure(name) for name in FIGURES}
        return d

    params = {k: v for k, v in vars(args).items() if k not in ("json",)}
    return {"params": params, "runs": [one(r) for r in results]}


# ------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cache_clients", description=__doc__.split("\n")[0])
    p.add_argument("--addresses", type=int, default=1000, help="client addresses (default 1000)")
    p.add_argument("--variant", choices=("network", "names", "both"), default="both",
                   help="the export's client spec: a network, host names, or both (default)")
    p.add_argument("--peer", choices=("ganesha", "none"), default="ganesha",
                   help="NFS-Ganesha in the same run (default, when installed) or none")
    p.add_argument("--concurrency", type=int, default=16, help="connections open at a time (default 16)")
    p.add_argument("--repeat", type=int, default=1, help="servers of each kind per variant (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--json", metavar="OUT", help="write every run as JSON")
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.repeat < 1:
        p.error("--concurrency and --repeat are at least 1")
    return args


def servers_for(args: argparse.Namespace) -> list[str]:
    if args.peer == "ganesha" and shutil.which("ganesha.nfsd"):
        return ["pynfsd", "ganesha"]
    if args.peer == "ganesha":
        print("ganesha.nfsd not found: pynfsd alone", file=sys.stderr)
    return ["pynfsd"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    every = addresses(args.addresses + 1)
    addrs, probe = every[:-1], every[-1]
    args.cache_cli = has_cache_command()
    servers = servers_for(args)
    variants = [VARIANTS[v] for v in (("network", "names") if args.variant == "both" else (args.variant,))]
    base = Path(tempfile.mkdtemp(prefix="pynfsd-bench-cache-", dir="/tmp"))
    results: list[ServerResult] = []
    try:
        write_etc(base, every)
        for variant in variants:
            for rep in range(args.repeat):   # A B, B A, ...: a drift in host load weighs on both
                for kind in servers if rep % 2 == 0 else servers[::-1]:
                    r = run_server(kind, variant, base, addrs, probe, args)
                    results.append(r)
                    print(f"[{kind}/{variant.name} #{rep + 1}] " + ", ".join(
                        f"{x.name} {_num(x.calls_per_s, 0)}/s" for x in r.rounds.values()), file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report(results, variants, servers, args)
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results, args), indent=2) + "\n")
    return 1 if any(r.errors for r in results) else 0


def report(results: Sequence[ServerResult], variants: Sequence[Variant], servers: Sequence[str],
           args: argparse.Namespace) -> None:
    flush = "with" if args.cache_cli else "without (no flushed rounds, no entry counts)"
    print(f"{args.addresses} client addresses, {args.concurrency} connections at a time, "
          f"medians of {args.repeat} server(s) each; pynfsd {flush} `pynfsd cache`\n")
    for variant in variants:
        print(f"variant {variant.name}: export to {variant.clients}")
        print(comparison_table([r for r in results if r.variant == variant.name], servers) + "\n")
    for r in results:
        for e in r.errors:
            print(f"{r.server}/{r.variant}: {e}")


if __name__ == "__main__":
    sys.exit(main())
