"""Where one operation's server CPU goes, by stage, from ``bench.server_cpu --pyspy`` samples.

    python -m bench.server_cpu --rows getattr --samples 1 --ops 4000 --pyspy /tmp/ga
    python -m bench.profile_stages /tmp/ga.0 --us 240 [--compare /tmp/ga.1 --compare-us 300]

py-spy samples every thread that is running (not idle) without pausing the server, so the
share of samples is the share of CPU. Each sample goes to the stage of its innermost frame
that names one (`STAGES`, first match from the leaf up): attribute encoding inside an op
handler counts as attribute encoding, a filesystem call on a worker thread as the worker's.
``--us`` (the unprofiled µs of server CPU per op, from the same bench) turns shares into µs.
Time in C (system calls) is charged to the Python frame that called it; uvloop's own code
(polling, socket reads, callbacks) to the event loop. A worker thread waiting at its queue is
left out (py-spy does not always see it idle).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

#: (stage, [(function prefix, file part)]); a frame is ``function (file:line)``.
STAGES: list[tuple[str, list[tuple[str, str]]]] = [
    ("attribute encoding", [("encode_fattr4", "nfs4/attrs/encode.py"),
                            ("requested_attrs", "nfs4/attrs/")]),
    ("state (opens, stateids, seqids)", [("", "nfs4/state/")]),
    ("worker threads (filesystem calls)", [("BlockingPool._work", "pynfsd/blocking.py")]),
    ("op arguments decode", [("unpack_", "pynfsd/gen/nfs4.py"), ("_unpack", "pynfsd/gen/nfs4.py")]),
    ("results encode", [("pack_", "pynfsd/gen/nfs4.py"), ("_pack", "pynfsd/gen/nfs4.py"),
                        ("encode_reply", "nfs4/compound.py"), ("make_result", "nfs4/compound.py"),
                        ("OpSpec.pack_ok", "nfs4/optable.py")]),
    ("send (reply to the socket)", [("_send", "rpc/transport.py"),
                                    ("_Connection._flush", "rpc/transport.py"),
                                    ("_Connection._reply", "rpc/transport.py")]),
    ("receive (socket, record marking)", [("_Connection.data_received", "rpc/transport.py")]),
    ("RPC header, credential", [("decode_call", "rpc/header.py"), ("", "rpc/auth.py"),
                                ("encode_accepted", "rpc/")]),
    ("reply cache", [("", "rpc/drc.py")]),
    ("COMPOUND context (export view, Vfs)", [("NFSServer._context", "nfs4/server.py")]),
    ("op handlers (Vfs, backend on the loop)", [("run_op", "nfs4/compound.py")]),
    ("COMPOUND loop, RPC dispatch", [("", "nfs4/compound.py"), ("", "rpc/server.py"),
                                     ("NFSServer.compound", "nfs4/server.py")]),
]
REST = "other Python code"
LOOP = "event loop (uvloop: polling, reads, callbacks)"
#: A worker thread's leaf at its queue: waiting for work or for the GIL, which py-spy does not
#: always recognise as idle (bench/profiling.py drops the same leaves).
IDLE_LEAF = "BlockingPool._work (pynfsd/blocking.py"
LOOP_LEAF = "Runner.run (asyncio/runners.py"  # uvloop's own native code runs under this frame


def _stage(frames: list[str]) -> str | None:
    """The stage of one sample; None for a worker waiting at its queue (not CPU)."""
    if frames[-1].startswith(IDLE_LEAF):
        return None
    if frames[-1].startswith(LOOP_LEAF):
        return LOOP
    for frame in reversed(frames):
        func, _, where = frame.partition(" (")
        for stage, rules in STAGES:
            if any(func.startswith(f) and part in where for f, part in rules):
                return stage
    return REST


def shares(path: str) -> tuple[dict[str, float], int]:
    """Fraction of samples per stage, and the number of samples."""
    counts: Counter[str] = Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        stage = _stage(stack.split(";")) if stack and n.isdigit() else None
        if stage is not None:
            counts[stage] += int(n)
    total = sum(counts.values()) or 1
    return {s: counts[s] / total for s in [*(s for s, _ in STAGES), LOOP, REST]}, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_stages", description=__doc__.split("\n")[0])
    p.add_argument("samples", help="a bench.server_cpu --pyspy file (OUT.0)")
    p.add_argument("--us", type=float, required=True, help="µs of server CPU per op, unprofiled")
    p.add_argument("--compare", help="a second file (OUT.1)")
    p.add_argument("--compare-us", type=float, help="its µs per op")
    args = p.parse_args(argv)
    cols = [(shares(args.samples), args.us)]
    if args.compare:
        cols.append((shares(args.compare), args.compare_us or args.us))
    print(f"{'stage':<46}" + "".join(f"{'µs':>8}{'share':>7}" for _ in cols))
    for stage in cols[0][0][0]:
        print(f"{stage:<46}" + "".join(f"{s[stage] * us:>8.1f}{s[stage]:>7.0%}" for (s, _), us in cols))
    print(f"{'samples':<46}" + "".join(f"{n:>15}" for (_, n), _ in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
