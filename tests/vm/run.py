"""Run the workload by hand: ``python -m tests.vm.run [--server S] [--net N] [--big-mb M] DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.vm.harness import run_workload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="pynfsd", choices=["pynfsd", "ganesha"])
    parser.add_argument("--net", default="user", choices=["user", "netns"])
    parser.add_argument("--big-mb", type=int, default=0)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--step-timeout", type=int, default=120)
    parser.add_argument("--only", default="", help="space-separated step names (default all)")
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    run = run_workload(args.server, args.net, args.workdir, big_mb=args.big_mb,
                       small_files=args.small_files, timeout=args.timeout, only=args.only,
                       step_timeout=args.step_timeout)
    for name, (ok, detail) in run.results.items():
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}")
    for key, value in run.values.items():
        print(f"VALUE {key} {value}")
    for err in run.errors:
        print(f"ERROR {err}")
    failed = run.errors or not run.results or not all(ok for ok, _ in run.results.values())
    if failed:
        print(run.diagnostics(), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
