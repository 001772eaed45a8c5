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
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LISTENING = "listening on "
_TICKS = os.sysconf("SC_CLK_TCK")


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
