"""A test upcall daemon: connects to a pynfsd daemon socket and answers from a small table.

    python -m tests.support_upcalld --socket STATE/upcall.sock \\
        --entry 'auth.unix.ip nfsd 127.0.0.1=127.0.0.1' \\
        --entry 'nfsd.export 127.0.0.1 /srv/a=8192 65534 65534 1' [--ttl 3600] [flags]

It says `hello` for the caches named by `--hello` (default: all four), then answers each
request `<cache> <words>` with `<cache> <words> <now+ttl> <tail>`, the tail being the table's
(matched on the request's words as sent); a key not in the table gets a negative answer (for
`auth.unix.gid`: no groups).  Flags make it misbehave, for the hostile tests:

`--hang` reads requests and never answers; `--garbage` answers every request with a line that
is not a reply; `--unsolicited` first answers a key nobody asked about; `--disconnect-after N`
exits on reading its N-th request, unanswered; `--reverse N` holds requests until N have come,
then answers them last first; `--overlong` sends a line over 32 KiB after its hello;
`--no-hello` sends a request-like line instead of its hello.  `--log FILE` appends every
line it receives.  It exits when the server closes the connection.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

ALL = ("auth.unix.ip", "nfsd.export", "nfsd.fh", "auth.unix.gid")
UNASKED = {
    "auth.unix.ip": "nfsd 192.0.2.99 {e} unasked",
    "nfsd.export": "unasked.example /unasked {e} 0 65534 65534 0",
    "nfsd.fh": "unasked.example 1 \\x00000063 {e} /unasked",
    "auth.unix.gid": "4242 {e} 1 4242",
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--hello", nargs="*", default=list(ALL))
    p.add_argument("--entry", action="append", default=[], help="'CACHE WORDS=TAIL'")
    p.add_argument("--ttl", type=int, default=3600)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--garbage", action="store_true")
    p.add_argument("--unsolicited", action="store_true")
    p.add_argument("--disconnect-after", type=int, default=0)
    p.add_argument("--reverse", type=int, default=0)
    p.add_argument("--overlong", action="store_true")
    p.add_argument("--no-hello", action="store_true")
    p.add_argument("--log")
    return p.parse_args(argv)


def table(entries: list[str]) -> dict[str, str]:
    out = {}
    for e in entries:
        key, _, tail = e.partition("=")
        out[" ".join(key.split())] = tail.strip()
    return out


def reply(args: argparse.Namespace, answers: dict[str, str], request: str) -> str:
    expiry = int(time.time()) + args.ttl
    cache = request.split(" ", 1)[0]
    if args.garbage:
        return f"{cache} this is not a reply\n"
    tail = answers.get(request, "0" if cache == "auth.unix.gid" else "")
    return " ".join(w for w in (request, str(expiry), tail) if w) + "\n"


def main(argv: list[str]) -> int:
    args = parse(argv)
    answers = table(args.entry)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    out = sock.makefile("w", encoding="utf-8", errors="surrogateescape", newline="\n")
    inp = sock.makefile("r", encoding="utf-8", errors="surrogateescape", newline="\n")
    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    out.write("nfsd.export 127.0.0.1 /srv/a\n" if args.no_hello
              else "hello " + " ".join(args.hello) + "\n")
    if args.overlong:
        out.write("nfsd.export " + "x" * 40000 + "\n")
    out.flush()
    held: list[str] = []
    count = 0
    for raw in inp:
        request = " ".join(raw.split())
        count += 1
        if log:
            log.write(request + "\n")
            log.flush()
        if args.disconnect_after and count >= args.disconnect_after:
            return 0
        if args.hang:
            continue
        held.append(request)
        if len(held) < args.reverse:
            continue
        for r in reversed(held):
            if args.unsolicited:
                cache = r.split(" ", 1)[0]
                out.write(cache + " " + UNASKED[cache].format(e=int(time.time()) + args.ttl) + "\n")
            out.write(reply(args, answers, r))
        held.clear()
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
