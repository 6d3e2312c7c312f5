"""Where the time of one small GSS token goes: per-call costs of pynfsd's per-message code.

For each enctype and size it times, in CPU microseconds (best of many batches), the four
per-message calls of a `Krb5Context` built from random keys (no KDC needed), and beside them
the C-level primitives one token cannot avoid: a confounder, one HMAC from pre-keyed hash
states, one AES-CBC call on the token's blocks. What is left is Python-level glue (frames,
slicing, headers, the CTS block swap). `--profile` adds a cProfile listing of one op pair.

    python -m bench.gss_token_profile [--enctypes 18,20] [--sizes 128,256,512] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import timeit
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pynfsd.gss import rfc4121 as cfx
from pynfsd.gss.krb5crypto import profile
from pynfsd.gss.lucid import Krb5Context
from pynfsd.gss.primitives import Confounders, HmacKey


def micros(op: Callable[[], object], number: int = 4000, repeat: int = 25) -> float:
    """CPU µs per call, the best of `repeat` batches (other load only ever adds time)."""
    return min(timeit.repeat(op, number=number, repeat=repeat, timer=time.process_time)) / number * 1e6


def pair(enctype: int) -> tuple[Krb5Context, Krb5Context]:
    key = os.urandom(profile(enctype).key_size)
    return (
        Krb5Context.from_keys(cfx.CfxKeys(True, enctype, key)),
        Krb5Context.from_keys(cfx.CfxKeys(False, enctype, key)),
    )


def report(enctype: int, size: int) -> str:
    ini, acc = pair(enctype)
    msg = os.urandom(size)
    mic, token = ini.get_mic(msg), ini.wrap(msg)
    hk = HmacKey(os.urandom(32), profile(enctype).hash_name)
    confounders = Confounders(os.urandom(16))

    def confounder() -> object:
        try:
            return confounders.next()
        except StopIteration:
            return confounders.refill()
    cbc = Cipher(algorithms.AES(os.urandom(32)), modes.CBC(bytes(16))).encryptor()
    blocks = bytes(-(-(size + 32) // 16) * 16)
    costs = {
        "get_mic": micros(lambda: ini.get_mic(msg)),
        "verify_mic": micros(lambda: acc.verify_mic(msg, mic)),
        "wrap": micros(lambda: ini.wrap(msg)),
        "unwrap": micros(lambda: acc.unwrap(token)),
        "hmac": micros(lambda: hk.digest(msg)),
        "aes-cbc": micros(lambda: cbc.update(blocks)),
        "confounder": micros(confounder),
    }
    return f"{enctype:>3} {size:>6} | " + " ".join(f"{k} {v:5.2f}" for k, v in costs.items())


def profile_pair(enctype: int, size: int) -> None:
    ini, acc = pair(enctype)
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
    ap.add_argument("--profile", action="store_true", help="also a cProfile of one op pair")
    args = ap.parse_args(argv)
    print("CPU µs per call (best of 25 batches)")
    for enctype in (int(e) for e in args.enctypes.split(",")):
        for size in (int(s) for s in args.sizes.split(",")):
            print(report(enctype, size), flush=True)
            if args.profile:
                profile_pair(enctype, size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
