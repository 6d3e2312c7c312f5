"""The command way with real programs (small shell scripts): the reply read from standard
output, arguments decoded from the request words, and every failure a lost request (non-zero
exit, no line, garbage, another key's answer, a stdout flood, a program that sleeps past the
timeout: its whole process group killed) while other keys are still answered and the event
loop keeps running; the bound on running and queued requests; close."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from pynfsd.cache import lines as L
from pynfsd.cache.caches import CacheLimits, ServerCaches
from pynfsd.cache.command import MAX_OUTPUT, CommandWay, argv_words
from pynfsd.cache.core import State
from pynfsd.cache.deferral import CacheDelay

EXPIRY = 4102444800  # 2100-01-01: the real clock is used with real programs
KEY = L.ExportKey("127.0.0.1", "/srv/a")


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(stat.S_IRWXU)
    return str(path)


ANSWER = f'echo "$2 $3 {EXPIRY} 0 65534 65534 1"'  # nfsd.export: domain path expiry flags...


def caches(*ways: CommandWay, **limits: float) -> ServerCaches:
    return ServerCaches({"nfsd.export": list(ways)}, CacheLimits(**limits))  # type: ignore[arg-type]


class Ticker:
    """A task counting loop turns: it advances only while the loop is free."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    def stop(self) -> None:
        self.task.cancel()


def test_arguments_are_decoded_words_and_binary_words_stay_hex() -> None:
    assert argv_words(b"my\\040domain /srv/with\\040space\n") == [b"my domain", b"/srv/with space"]
    assert argv_words(b"d 1 \\x00000001\n") == [b"d", b"1", b"\\x00000001"]
    assert argv_words(b"d /a\\000b\n") == [b"d", b"/a\\000b"]


async def test_a_command_answers_with_its_arguments_and_a_clean_environment(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    prog = script(tmp_path, "answer", f'printf "%s|" "$@" > {seen}; env | sort >> {seen}\n'
                                      f"printf '%s %s %s\\n' \"$2\" '/srv/with\\040space' '{EXPIRY} 0 65534 65534 1'")
    way = CommandWay(prog)
    sc = caches(way)
    key = L.ExportKey("127.0.0.1", "/srv/with space")
    entry = await sc.export.get(key, "c1")
    assert entry.value is not None and entry.value.fsid == 1
    text = seen.read_text()
    assert text.startswith("nfsd.export|127.0.0.1|/srv/with space|")
    env = dict(line.split("=", 1) for line in text.split("|")[-1].splitlines() if "=" in line)
    assert env.get("PYNFSD_CACHE") == "nfsd.export" and env.get("LC_ALL") == "C"
    assert "HOME" not in env and "PYTHONPATH" not in env
    await asyncio.sleep(0)
    assert way.stats["answered"] == 1 and way.running == 0
    await sc.close()


@pytest.mark.parametrize("body, why", [
    ("exit 3", "exit status 3"),
    ("kill -9 $$", "killed by signal 9"),
    ("true", "no reply line"),
    ("echo this is not a reply", None),
    (f'echo "$2 /srv/other {EXPIRY} 0 65534 65534 1"', None),
    ("printf 'a\\nb\\n'", "more than one line"),
    ("yes 127.0.0.1", f"more than {MAX_OUTPUT} bytes"),
    ("exec cat /dev/zero", f"more than {MAX_OUTPUT} bytes"),
], ids=["non-zero", "signal", "no line", "garbage", "another key", "two lines", "flood",
        "binary flood"])
async def test_a_failing_command_falls_back_to_the_next(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, body: str, why: str | None) -> None:
    caplog.set_level(logging.WARNING)
    bad = CommandWay(script(tmp_path, "bad", body))
    good = CommandWay(script(tmp_path, "good", ANSWER))
    sc = caches(bad, good)
    entry = await sc.export.get(KEY, "c1")
    assert entry.value is not None and entry.value.fsid == 1
    assert sc.status()["nfsd.export"]["upcall_fallbacks"] == 1
    if why is not None:
        assert any(why in r.getMessage() for r in caplog.records), caplog.text
    assert sc.export.cache.state(L.ExportKey("127.0.0.1", "/srv/other")) is State.MISSING
    await sc.close()


async def test_a_command_that_cannot_run_is_lost(tmp_path: Path) -> None:
    sc = caches(CommandWay(str(tmp_path / "missing")))
    with pytest.raises(CacheDelay):
        await sc.export.get(KEY, "c1")
    assert sc.export.cache.state(KEY) is State.MISSING
    await sc.close()


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


async def test_a_sleeping_command_is_killed_with_its_group_while_others_are_answered(
        tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(tmp_path, "maybe-sleep",
                  f'if [ "$3" = /srv/slow ]; then sleep 1000 & echo $! >> {pids}; '
                  f'echo $$ >> {pids}; wait; fi\n{ANSWER}')
    way = CommandWay(prog, timeout=2.0, max_running=2)
    sc = caches(way, wait=60)
    ticker = Ticker()
    slow = asyncio.ensure_future(sc.export.get(L.ExportKey("127.0.0.1", "/srv/slow"), "c1"))
    for i in range(5):  # answered one after the other on the second slot
        entry = await sc.export.get(L.ExportKey("127.0.0.1", f"/srv/{i}"), "c2")
        assert entry.value is not None
    await asyncio.sleep(0)
    assert not slow.done() and way.running == 1
    during = ticker.ticks
    with pytest.raises(CacheDelay):
        await slow
    ticker.stop()
    await asyncio.sleep(0)
    assert ticker.ticks > during  # the loop ran while the program slept
    assert way.stats["failed"] == 1 and way.running == 0
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid)
    await sc.close()


async def test_running_and_queued_requests_are_bounded(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    prog = script(tmp_path, "gated", f"while [ ! -e {gate} ]; do sleep 0.05; done\n{ANSWER}")
    way = CommandWay(prog, max_running=1, max_queued=2)
    sc = caches(way, wait=60)
    keys = [L.ExportKey("127.0.0.1", f"/srv/{i}") for i in range(3)]
    tasks = [asyncio.ensure_future(sc.export.get(k, "c1")) for k in keys]
    await asyncio.sleep(0)
    assert way.running == 1 and way.queued("nfsd.export") == 2
    assert not way.ready("nfsd.export") and way.ready("nfsd.fh")
    # no way ready: negative for a while, as the kernel's cache with no daemon listening
    assert (await sc.export.get(L.ExportKey("127.0.0.1", "/srv/x"), "c2")).negative
    sent: list[bytes] = []
    way.send("nfsd.export", b"127.0.0.1 /srv/1\n", sent.append, lambda why: None)
    assert way.queued("nfsd.export") == 2 and way.stats["joined"] == 1  # not queued twice
    gate.touch()
    for task in tasks:
        assert (await task).value is not None
    await asyncio.sleep(0)
    assert len(sent) == 1 and sent[0].startswith(b"127.0.0.1 /srv/1 ")
    await sc.close()


async def test_stderr_is_logged_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    prog = script(tmp_path, "noisy", f"yes complaint | head -c 1000000 >&2\n{ANSWER}")
    sc = caches(CommandWay(prog))
    assert (await sc.export.get(KEY, "c1")).value is not None
    logged = [r.getMessage() for r in caplog.records if "complaint" in r.getMessage()]
    assert len(logged) == 1 and len(logged[0]) < 4096
    await sc.close()


async def test_close_kills_the_running_and_loses_the_queued(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(tmp_path, "forever", f"echo $$ >> {pids}; exec sleep 1000")
    way = CommandWay(prog, max_running=1)
    lost: list[str] = []
    way.send("nfsd.export", b"127.0.0.1 /srv/a\n", lambda line: None, lost.append)
    way.send("nfsd.export", b"127.0.0.1 /srv/b\n", lambda line: None, lost.append)
    while not pids.exists() or not pids.read_text().strip():
        await asyncio.sleep(0.02)
    await way.close()
    assert len(lost) == 2 and not way.ready("nfsd.export")
    assert not alive(int(pids.read_text()))
    way.send("nfsd.export", b"127.0.0.1 /srv/c\n", lambda line: None, lost.append)
    await asyncio.sleep(0)
    assert len(lost) == 3
    assert zombies() == []


def zombies() -> list[int]:
    """Children of this process that exited and were not reaped."""
    out = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            out.append(int(stat_file.parent.name))
    return out


async def test_a_descendant_that_leaves_the_group_holding_stdout_does_not_hold_the_request(
        tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(tmp_path, "escape", f"setsid sh -c 'echo $$ > {pids}; exec sleep 60' &\nexit 0")
    way = CommandWay(prog, timeout=1.0)
    sc = caches(way, wait=60)
    try:
        with pytest.raises(CacheDelay):  # stdout never closes: timed out, pipes given up
            await sc.export.get(KEY, "c1")
        await asyncio.sleep(0)
        assert way.stats["failed"] == 1 and way.running == 0
    finally:
        await sc.close()
        for pid in map(int, pids.read_text().split()):
            os.kill(pid, 9)  # it left our group: the test ends what it started
