"""The connection to etcd: `--recovery etcd://HOST:PORT[,HOST:PORT...]/PREFIX`, the keys under
PREFIX, and every call bounded by one timeout.

Theory of operation: one `aetcd.Client` (asyncio, gRPC) talks to all the members named in the
URL; the host names are resolved once at start and handed to gRPC as one multi-address
target with round-robin balancing, so a member that dies is skipped and its requests go to
the others (etcd forwards writes to the leader).  Every call goes through `EtcdKv.call`, which
bounds it by the timeout and turns every failure (no member reachable, no quorum, deadline)
into `EtcdUnavailable`.  The handle key is created once for the whole cluster by a
create-if-absent transaction and read by every node.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
KEY_LEN = 32
DEFAULT_PORT = 2379


class EtcdUnavailable(Exception):
    """etcd did not answer within the timeout (no member reachable, or no quorum)."""


@dataclass(frozen=True, slots=True)
class EtcdUrl:
    """`etcd://HOST:PORT[,HOST:PORT...]/PREFIX` parsed: the members and the key prefix."""

    members: tuple[tuple[str, int], ...]
    prefix: str

    @classmethod
    def parse(cls, text: str) -> EtcdUrl:
        parts = urlsplit(text)
        if parts.scheme != "etcd" or not parts.netloc:
            raise ValueError(f"not an etcd URL: {text!r} (etcd://HOST:PORT[,HOST:PORT...]/PREFIX)")
        members = tuple(_host_port(item) for item in parts.netloc.split(","))
        prefix = "/" + parts.path.strip("/")
        if prefix == "/":
            raise ValueError(f"{text!r}: a key prefix is needed, e.g. etcd://HOST:2379/pynfsd")
        return cls(members, prefix)

    def key(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

    def __str__(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.members)
        return f"etcd://{hosts}{self.prefix}"


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"no host in {item!r}")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in {item!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad port in {item!r}")
    return host, number


def grpc_target(members: tuple[tuple[str, int], ...]) -> tuple[str, int]:
    """(host, port) for aetcd, whose target is f"{host}:{port}": a gRPC `ipv4:`/`ipv6:` list
    of every member's resolved address (resolved here, once; blocking: call at start)."""
    addrs: list[tuple[int, str, int]] = []
    for host, port in members:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = info[0]
        addrs.append((family, str(sockaddr[0]), port))
    if all(f == socket.AF_INET for f, _, _ in addrs):
        items = [f"{a}:{p}" for _, a, p in addrs]
        scheme = "ipv4:"
    else:
        items = [f"[{a}]:{p}" if f == socket.AF_INET6 else f"[::ffff:{a}]:{p}" for f, a, p in addrs]
        scheme = "ipv6:"
    last_host, _, last_port = items[-1].rpartition(":")
    return scheme + ",".join([*items[:-1], last_host]), int(last_port)


class EtcdKv:
    """An aetcd client whose every call is bounded and fails as `EtcdUnavailable`."""

    def __init__(self, url: EtcdUrl, timeout: float) -> None:
        import aetcd  # the `etcd` extra: imported only when --recovery etcd is used

        # gRPC's own DEBUG lines (every call, and a call cancelled at shutdown as a traceback)
        # say nothing about pynfsd: its failures reach the log as EtcdUnavailable instead
        logging.getLogger("grpc").setLevel(logging.INFO)

        self.url = url
        self.timeout = timeout
        self._aetcd = aetcd
        host, port = grpc_target(url.members)
        self.client = aetcd.Client(host=host, port=port, timeout=max(1, round(timeout)),
                                   options={"grpc.lb_policy_name": "round_robin"})
        self.tx = self.client.transactions

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.wait_for(fn(*args, **kwargs), self.timeout)
        except (TimeoutError, self._aetcd.ClientError, OSError) as e:
            raise EtcdUnavailable(f"{self.url}: {type(e).__name__}: {e}".strip()) from None
        except Exception as e:  # grpc errors aetcd does not wrap
            if type(e).__module__.startswith("grpc"):
                raise EtcdUnavailable(f"{self.url}: {e}") from None
            raise

    async def get(self, key: bytes) -> Any:
        return await self.call(self.client.get, key)

    async def get_prefix(self, key: bytes) -> list[Any]:
        return list(await self.call(self.client.get_prefix, key + b"/"))

    async def count(self, key: bytes) -> int:
        """How many keys are under ``key/`` (keys only: the values are not sent)."""
        found = await self.call(self.client.get_prefix, key + b"/", keys_only=True)
        return int(found.count)

    async def txn(self, compare: list[Any], success: list[Any],
                  failure: list[Any] | None = None) -> tuple[bool, list[Any]]:
        ok, responses = await self.call(self.client.transaction, compare, success, failure or [])
        return bool(ok), list(responses)

    async def shared_key(self) -> bytes:
        """The cluster's handle key: made by the first node (create-if-absent), read by all."""
        key = self.url.key("fh-key")
        fresh = secrets.token_bytes(KEY_LEN)
        ok, responses = await self.txn([self.tx.version(key) == 0], [self.tx.put(key, fresh)],
                                       [self.tx.get(key)])
        value = fresh if ok else responses[0][0][0]
        if len(value) != KEY_LEN:
            raise ValueError(f"{self.url}: the handle key {key.decode()} is corrupt")
        return bytes(value)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.close(), self.timeout)
        except Exception:  # closing a channel to dead members: nothing left to do
            pass
