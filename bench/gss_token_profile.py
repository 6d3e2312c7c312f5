"""Where the time of one small GSS token goes: per-call costs of pynfsd's per-message code.

For each enctype and size it times, in CPU microseconds (best of many batches), the four
per-message calls of a `Krb5Context`, and beside them the C-level primitives one token
cannot avoid: one HMAC from a pre-keyed state, one AES-CBC call on the token's blocks, a
confounder. What is left is Python-level glue (frames, slicing, headers, the CTS block swap).
`--floor` adds what the primitives alone cost per call (and "least MIC pair": two HMACs,
truncation and the constant-time compare, with no other step a MIC pair must take); `--mit` runs a throwaway KDC (as
`bench.gss_perpacket` does), builds pynfsd's contexts from lucid exports of a real one, and
times MIT krb5's own calls through python-gssapi in the same run, alternating with
pynfsd's. `--profile` adds a cProfile listing of one op pair.

    python -m bench.gss_token_profile [--enctypes 18,20] [--sizes 128,256,512] [--mit]
                                      [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import timeit
from collections.abc import Callable
from hmac import compare_digest
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pynfsd.gss import rfc4121 as cfx
from pynfsd.gss.krb5crypto import profile
from pynfsd.gss.lucid import Krb5Context
from pynfsd.gss.primitives import Confounders, HmacKey

CALLS = ("get_mic", "verify_mic", "wrap", "unwrap")


def micros(op: Callable[[], object], number: int = 4000, repeat: int = 25) -> float:
    """CPU µs per call, the best of `repeat` batches (other load only ever adds time)."""
    return min(timeit.repeat(op, number=number, repeat=repeat, timer=time.process_time)) / number * 1e6


def pair(enctype: int, service: str | None) -> tuple[Krb5Context, Krb5Context]:
    """An initiator and an acceptor: from random keys, or exported from a real context."""
    if service is not None:
        from gssapi.raw.ext_krb5 import krb5_export_lucid_sec_context

        from bench.gss_perpacket import establish

        made = [Krb5Context(krb5_export_lucid_sec_context(c, 1)) for c in establish(service, enctype)]
        return made[0], made[1]
    key = os.urandom(profile(enctype).key_size)
    return (
        Krb5Context.from_keys(cfx.CfxKeys(True, enctype, key)),
        Krb5Context.from_keys(cfx.CfxKeys(False, enctype, key)),
    )


def ours(ini: Any, acc: Any, msg: bytes) -> dict[str, Callable[[], object]]:
    mic, token = ini.get_mic(msg), bytes(ini.wrap(msg))
    return {
        "get_mic": lambda: ini.get_mic(msg),
        "verify_mic": lambda: acc.verify_mic(msg, mic),
        "wrap": lambda: ini.wrap(msg),
        "unwrap": lambda: acc.unwrap(token),
    }


def mits(service: str, enctype: int, msg: bytes) -> dict[str, Callable[[], object]]:
    import gssapi.raw as gr

    from bench.gss_perpacket import establish

    ini, acc = establish(service, enctype)
    mic, token = gr.get_mic(ini, msg), gr.wrap(ini, msg, True).message
    return {
        "get_mic": lambda: gr.get_mic(ini, msg),
        "verify_mic": lambda: gr.verify_mic(acc, msg, mic),
        "wrap": lambda: gr.wrap(ini, msg, True),
        "unwrap": lambda: gr.unwrap(acc, token),
    }


def primitives(enctype: int, size: int) -> dict[str, Callable[[], object]]:
    msg = os.urandom(size)
    hk = HmacKey(os.urandom(32), profile(enctype).hash_name)
    cbc = Cipher(algorithms.AES(os.urandom(32)), modes.CBC(bytes(16))).encryptor()
    blocks = bytes(-(-(size + 48) // 16) * 16)  # confounder, message, header, the reset block
    confounders = Confounders(os.urandom(16))

    def confounder() -> object:
        try:
            return confounders.next()
        except StopIteration:
            return confounders.refill()

    size_ = profile(enctype).mac_size
    header = os.urandom(16)

    def least_mic_pair() -> object:
        """A MIC pair with nothing but its HMACs, truncation and the constant-time compare:
        a fixed header, no expiry, no header check, no context."""
        state = hk.start()
        state.update(msg)
        state.update(header)
        token = header + state.finalize()[:size_]
        state = hk.start()
        state.update(msg)
        state.update(token[:16])
        return compare_digest(state.finalize()[:size_], token[16:])

    return {"hmac": lambda: hk.digest(msg), "aes-cbc": lambda: cbc.update(blocks),
            "confounder": confounder, "least MIC pair": least_mic_pair}


def floors(prim: dict[str, float]) -> dict[str, float]:
    """What the primitives alone cost per call: the floor of pure Python over these libraries."""
    crypt = prim["hmac"] + prim["aes-cbc"]
    return {"get_mic": prim["hmac"], "verify_mic": prim["hmac"],
            "wrap": crypt + prim["confounder"], "unwrap": crypt}


def line(enctype: int, size: int, who: str, costs: dict[str, float]) -> str:
    pairs = {"MIC pair": costs["get_mic"] + costs["verify_mic"],
             "Wrap pair": costs["wrap"] + costs["unwrap"]}
    if who == "MIT/pyn":  # a ratio of pairs is not the sum of the ratios
        pairs = {}
    return f"{enctype:>3} {size:>6} {who:>7} | " + " ".join(
        f"{k} {v:5.2f}" for k, v in {**costs, **pairs}.items()
    )


def report(enctype: int, size: int, service: str | None, floor: bool) -> list[str]:
    msg = os.urandom(size)
    mine = ours(*pair(enctype, service), msg)
    theirs = mits(service, enctype, msg) if service is not None else {}
    got: dict[str, dict[str, float]] = {"pynfsd": {}, "MIT": {}, "primitives": {}}
    runs = {"pynfsd": mine, "MIT": theirs, "primitives": primitives(enctype, size)}
    for _ in range(2):  # alternating, the lower of two
        for who, ops in runs.items():
            for call, op in ops.items():
                t = micros(op)
                got[who][call] = min(t, got[who].get(call, t))
    prim = got["primitives"]
    lines = [line(enctype, size, "pynfsd", got["pynfsd"])
             + " | " + " ".join(f"{k} {v:5.2f}" for k, v in prim.items())]
    if theirs:
        lines.append(line(enctype, size, "MIT", got["MIT"]))
        ratio = {c: got["MIT"][c] / got["pynfsd"][c] for c in CALLS}
        lines.append(line(enctype, size, "MIT/pyn", ratio))
    if floor:
        lines.append(line(enctype, size, "floor", floors(prim)))
    return lines


def profile_pair(enctype: int, size: int) -> None:
    ini, acc = pair(enctype, None)
    msg = os.urandom(size)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(50_000):
        acc.unwrap(ini.wrap(msg))
        acc.verify_mic(msg, ini.get_mic(msg))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--enctypes", default="18,20")
    ap.add_argument("--sizes", default="128,256,512")
    ap.add_argument("--mit", action="store_true", help="also MIT krb5's calls (needs a KDC)")
    ap.add_argument("--floor", action="store_true", help="also the primitives' floor per call")
    ap.add_argument("--profile", action="store_true", help="also a cProfile of one op pair")
    args = ap.parse_args(argv)
    realm, service = None, None
    if args.mit:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.interop.conftest import start_realm

        realm = start_realm()
        os.environ.update(realm.env)
        service = f"nfs@{realm.hostname}"
    try:
        print("CPU µs per call (best of 25 batches; MIT/pyn: how many times pynfsd's speed)")
        for enctype in (int(e) for e in args.enctypes.split(",")):
            for size in (int(s) for s in args.sizes.split(",")):
                print("\n".join(report(enctype, size, service, args.floor)), flush=True)
                if args.profile:
                    profile_pair(enctype, size)
    finally:
        if realm is not None:
            from tests.interop.conftest import stop_realm

            stop_realm(realm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
