"""Boot the guest in qemu, stream its serial console and let the host act mid-workload.

The guest console is ttyS0 (qemu stdout, logged line by line to ``console_log``). ttyS1 is a
unix-socket chardev: when the guest prints ``@@PAUSE <what>`` it blocks reading a line from
ttyS1; the harness calls ``on_pause(what)`` and then writes ``go`` (or the line ``on_pause``
returned, e.g. a command for a guest agent). ``on_line`` sees every console line as it arrives,
from the reader thread, so also while ``on_pause`` blocks. A hard timeout kills qemu, and so
does ``watchdog()`` returning a reason (e.g. the server died, so a hard NFS mount would hang
until the timeout); qemu is always ended by its PID.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tests.vm.kernel import GuestKernel
from tests.vm.network import Network

KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 rdinit=/init"


@dataclass
class Transcript:
    """What a guest run printed, plus how it ended."""

    lines: list[str] = field(default_factory=list)
    timed_out: bool = False
    exit_code: int | None = None     # qemu's exit status
    pause_errors: list[str] = field(default_factory=list)
    aborted: str | None = None       # why the harness ended the VM early (watchdog)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])


def accel_args() -> list[str]:
    """KVM only on a real KVM (not the paravirtual kvm_pvm found here); TCG otherwise."""
    kvm_ok = os.access("/dev/kvm", os.W_OK) and not Path("/sys/module/kvm_pvm").exists()
    if kvm_ok and os.environ.get("PYNFSD_VM_ACCEL", "") != "tcg":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def qemu_command(kernel: GuestKernel, initrd: Path, network: Network, control: Path,
                 memory: int = 1024, smp: int = 2) -> list[str]:
    return ["qemu-system-x86_64", *accel_args(), "-smp", str(smp), "-m", str(memory),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", str(kernel.image), "-initrd", str(initrd), "-append", KERNEL_CMDLINE,
            "-serial", "stdio",
            "-chardev", f"socket,id=ctl,path={control},server=on,wait=off",
            "-serial", "chardev:ctl", *network.qemu_args()]


class GuestVM:
    """One boot of the guest; ``run()`` returns when qemu exits or the timeout hits."""

    def __init__(self, kernel: GuestKernel, initrd: Path, network: Network, workdir: Path,
                 timeout: float = 300.0,
                 on_pause: Callable[[str], str | None] | None = None,
                 watchdog: Callable[[], str | None] | None = None, *,
                 on_line: Callable[[str], None] | None = None,
                 smp: int = 2, memory: int = 1024) -> None:
        self.kernel = kernel
        self.initrd = initrd
        self.network = network
        self.timeout = timeout
        self.on_pause: Callable[[str], str | None] = on_pause or (lambda what: None)
        self.watchdog = watchdog or (lambda: None)
        self.on_line = on_line or (lambda line: None)
        self.smp = smp
        self.memory = memory
        self.console_log = workdir / "console.log"
        self.control_path = workdir / "control.sock"   # replaced by a short path in run()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    def run(self) -> Transcript:
        """Boot, stream the console until qemu exits, the timeout hits or the watchdog fires."""
        # unix socket paths are limited to 108 bytes; pytest's tmp paths can be longer
        with tempfile.TemporaryDirectory(prefix="pynfsd-vm-", dir="/tmp") as short:
            self.control_path = Path(short) / "ctl"
            return self._run()

    def _run(self) -> Transcript:
        transcript = Transcript()
        argv = self.network.wrap(qemu_command(self.kernel, self.initrd, self.network,
                                              self.control_path, self.memory, self.smp))
        lines: queue.Queue[str | None] = queue.Queue()
        with open(self.console_log, "w", encoding="utf-8", errors="replace") as log:
            log.write(f"# {' '.join(argv)}\n")
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            reader = threading.Thread(target=self._read_console, args=(lines, log), daemon=True)
            reader.start()
            try:
                self._connect_control()
                self._pump(lines, transcript)
            finally:
                self._end()
                reader.join(10)
        transcript.exit_code = self._proc.returncode
        return transcript

    def _read_console(self, lines: queue.Queue[str | None], log: TextIO) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            log.write(line + "\n")
            log.flush()
            self.on_line(line)   # from this reader thread: also while a pause is pending
            lines.put(line)
        lines.put(None)

    def _connect_control(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.control_path))
                self._control = sock
                return
            except OSError:
                sock.close()
                if time.monotonic() > deadline or (self._proc and self._proc.poll() is not None):
                    return  # no control channel: a @@PAUSE will then fail in the guest
                time.sleep(0.05)

    def _pump(self, lines: queue.Queue[str | None], transcript: Transcript) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                transcript.timed_out = True
                return
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if (why := self.watchdog()) is not None:
                    transcript.aborted = why
                    return
                continue
            if line is None:
                return
            transcript.lines.append(line)
            if line.startswith("@@PAUSE "):
                self._handle_pause(line.split(None, 1)[1].strip(), transcript)

    def _handle_pause(self, what: str, transcript: Transcript) -> None:
        reply = b"go\n"
        try:
            answer = self.on_pause(what)
            if answer is not None:
                reply = answer.encode() + b"\n"
        except Exception as exc:  # the guest must still be released; the test reports it
            transcript.pause_errors.append(f"{what}: {exc!r}")
            reply = b"fail\n"
        if self._control is not None:
            try:
                self._control.sendall(reply)
            except OSError as exc:  # qemu died (or was killed) while the guest waited
                transcript.pause_errors.append(f"{what}: reply not delivered: {exc!r}")

    def running(self) -> bool:
        """qemu has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """Pull the plug: SIGKILL this qemu (by PID) now; ``run()`` then returns."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)

    def _end(self) -> None:
        if self._control is not None:
            self._control.close()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # only our qemu, by PID
        if proc is not None:
            proc.wait(30)
