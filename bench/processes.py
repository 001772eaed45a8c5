"""Starting, watching and stopping the processes under test, as a user would run them.

Each process is `python -m <module> ...` with the repository on its path, its stderr in a log file
(shown when it fails), and its stdout drained by a thread so a chatty server never blocks on a full pipe.
Memory and CPU are read from /proc, so the figures are the kernel's, not the process's own opinion.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LISTENING = "listening on "
_TICKS = os.sysconf("SC_CLK_TCK")
BUSY_CORES = 0.15  # CPU used by other programs during a measurement that makes it suspect


class ProcessFailed(RuntimeError):
    """A process under test did not start, or died; the message carries the tail of its stderr."""


def python_env() -> dict[str, str]:
    """The environment for child processes: the repository importable, nothing else changed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Process:
    """A running child: its name, the address it listens on (servers), where its stderr goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""
    stdout_lines: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.perf_counter)  # perf_counter just after spawning

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessFailed(f"{self.name} exited with {self.popen.returncode}: {self.stderr_tail()}")

    def stderr_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no stderr log)"
        return " | ".join(text[-lines:]) or "(empty stderr)"

    def peak_rss_kib(self) -> int:
        """VmHWM: the peak resident set since the process started, in KiB."""
        return read_vm_hwm_kib(self.pid)

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)


def read_vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise ProcessFailed(f"no VmHWM for pid {pid}")


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name may contain spaces; fields after the closing parenthesis are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def read_system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


@dataclass(frozen=True)
class CpuSample:
    """CPU time at one moment: the whole machine, this process, and each watched process."""

    at: float
    machine: float
    own: float
    watched: dict[int, float]

    @classmethod
    def take(cls, pids: list[int]) -> CpuSample:
        """A process that has gone (a database backend that disconnected) is left out of the sample."""
        watched = {}
        for pid in pids:
            try:
                watched[pid] = read_cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return cls(time.perf_counter(), read_system_busy_seconds(), time.process_time(), watched)

    def since(self, earlier: CpuSample) -> dict[str, Any]:
        """Cores used between two samples: by this process, by the watched ones, and by everything else.

        "Foreign" CPU is what neither the client nor the processes under test used: another program on
        the machine. Figures measured while it is high are not worth comparing.
        """
        elapsed = max(self.at - earlier.at, 1e-9)
        # A process in only one of the samples counts as foreign: its CPU in the window is unknown.
        watched = {
            pid: self.watched[pid] - earlier.watched[pid] for pid in self.watched if pid in earlier.watched
        }
        own = self.own - earlier.own
        foreign = (self.machine - earlier.machine) - own - sum(watched.values())
        return {
            "seconds": elapsed,
            "client_cores": own / elapsed,
            "watched_seconds": watched,
            "foreign_cores": max(0.0, foreign / elapsed),
        }


def wait_for_quiet_machine(max_wait: float, threshold: float, window: float = 1.0) -> float:
    """Wait (up to max_wait seconds) until other programs use under `threshold` cores for one window.

    Returns the cores they used in the last window, so the caller can say it gave up on a busy machine.
    """
    deadline = time.monotonic() + max_wait
    said = 0.0
    while True:
        before = CpuSample.take([])
        time.sleep(window)
        foreign: float = CpuSample.take([]).since(before)["foreign_cores"]
        if foreign < threshold or time.monotonic() >= deadline:
            return foreign
        if time.monotonic() - said > 10:
            log.info("machine busy (other programs use %.2f cores); waiting", foreign)
            said = time.monotonic()


def start(
    name: str, module: str, args: list[str], log_dir: Path, *, server: bool, timeout: float = 30.0
) -> Process:
    """Start `python -m module args`; for a server, wait for its `listening on HOST:PORT` line."""
    log_path = log_dir / f"{name}.stderr.log"
    stderr: IO[bytes] = log_path.open("ab")
    command = [sys.executable, "-m", module, *args]
    log.debug("starting %s: %s", name, " ".join(command))
    popen = subprocess.Popen(
        command, cwd=ROOT, env=python_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
    )
    stderr.close()
    process = Process(name, popen, log_path)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(popen, process, lines), daemon=True, name=f"{name}-stdout").start()
    if server:
        process.address = _await_listening(process, lines, timeout)
        log.info("%s (pid %d) listening on %s", name, process.pid, process.address)
    else:
        log.info("%s started (pid %d)", name, process.pid)
    return process


def venv_command(name: str) -> str:
    """A console script installed beside this interpreter (the virtual environment's bin/)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def start_command(name: str, argv: list[str], log_dir: Path, *, timeout: float = 30.0) -> Process:
    """Start a server that takes `--listen HOST:PORT` but announces nothing: a free port is picked,
    and the server counts as started once that port accepts connections."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    log_path = log_dir / f"{name}.stderr.log"
    with log_path.open("ab") as output:
        popen = subprocess.Popen(
            [*argv, "--listen", address], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    process = Process(name, popen, log_path, address)
    deadline = time.monotonic() + timeout
    while True:
        process.check_alive()
        try:
            socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=1).close()
            break
        except OSError:
            if time.monotonic() >= deadline:
                stop(process)
                raise ProcessFailed(
                    f"{name} did not accept connections on {address} in {timeout:.0f} s"
                ) from None
            time.sleep(0.05)
    log.info("%s (pid %d) listening on %s", name, process.pid, address)
    return process


def _drain(popen: subprocess.Popen[bytes], process: Process, lines: queue.Queue[str | None]) -> None:
    assert popen.stdout is not None
    for raw in popen.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        process.stdout_lines.append(line)
        lines.put(line)
    lines.put(None)


def _await_listening(process: Process, lines: queue.Queue[str | None], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop(process)
            raise ProcessFailed(f"{process.name} printed no '{LISTENING}HOST:PORT' in {timeout:.0f} s")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            process.popen.wait()
            code = process.popen.returncode
            raise ProcessFailed(
                f"{process.name} exited with {code} before listening: {process.stderr_tail()}"
            )
        if line.startswith(LISTENING):
            return line[len(LISTENING) :].strip()
        # The contract says the address is the first line; tolerate nothing else silently.
        log.warning("%s: unexpected first stdout line %r", process.name, line)


def stop(process: Process, timeout: float = 30.0) -> int:
    """SIGTERM, then wait; a process that ignores it for `timeout` seconds is killed (and says so)."""
    if process.alive():
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", process.name, timeout)
            process.popen.kill()
            process.popen.wait()
    code = process.popen.returncode
    if code != 0:
        log.warning("%s exited with %s: %s", process.name, code, process.stderr_tail(3))
    return code
