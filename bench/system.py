"""The three services of one data directory, started exactly as CONTRACT.md says, stopped together.

Peak memory is read before stopping (a stopped process has no /proc entry), and every exit code is kept:
a service that does not exit 0 on SIGTERM is reported, since the contract promises it does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

from bench import processes
from bench.processes import Process
from tools import launch

log = logging.getLogger(__name__)

WRITE, PROJECTOR, READ = launch.WRITE, launch.PROJECTOR, launch.READ


class OrderSystem:
    """Write service(s), projector and read service on `data_dir/events.db` and `data_dir/read.db`,
    or on the `event_store` and `read_db` URLs given (PostgreSQL)."""

    def __init__(
        self, data_dir: Path, log_dir: Path, label: str, *, event_store: str = "", read_db: str = ""
    ) -> None:
        settings = launch.Settings.in_dir(data_dir)
        self._settings = launch.Settings(event_store or settings.event_store, read_db or settings.read_db)
        self._log_dir = log_dir
        self._label = label
        self._processes: dict[str, Process] = {}
        self.exit_codes: dict[str, int] = {}

    def __enter__(self) -> OrderSystem:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self, module: str, args: list[str], *, server: bool, name: str = "") -> Process:
        name = name or module
        process = processes.start(f"{self._label}-{name}", module, args, self._log_dir, server=server)
        self._processes[name] = process
        return process

    def start_write(self) -> Process:
        return self._start(WRITE, launch.flags(self._settings, WRITE), server=True)

    def start_another_write(self) -> Process:
        """One more write service on the same event store (PostgreSQL takes several)."""
        name = f"{WRITE}-{len(self.write_addresses) + 1}"
        return self._start(WRITE, launch.flags(self._settings, WRITE), server=True, name=name)

    def start_projector(self) -> Process:
        return self._start(PROJECTOR, launch.flags(self._settings, PROJECTOR), server=False)

    def start_read(self) -> Process:
        return self._start(READ, launch.flags(self._settings, READ), server=True)

    def projector_flags(self) -> list[str]:
        """The projector's flags, for a projector command (`rebuild`, `verify`) on the same files."""
        return launch.flags(self._settings, PROJECTOR)

    def start_all(self) -> None:
        self.start_write()
        self.start_read()
        self.start_projector()

    def process(self, name: str) -> Process:
        return self._processes[name]

    @property
    def write_address(self) -> str:
        return self._processes[WRITE].address

    @property
    def write_addresses(self) -> list[str]:
        """Every write service's address, the first one first."""
        return [p.address for name, p in self._processes.items() if name.startswith(WRITE)]

    @property
    def read_address(self) -> str:
        return self._processes[READ].address

    def names_by_pid(self) -> dict[str, str]:
        """Each running service's name (write_service, write_service-2, ...) by its pid, as text."""
        return {str(p.pid): name for name, p in self._processes.items()}

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values()]

    def check_alive(self) -> None:
        for process in self._processes.values():
            process.check_alive()

    def peak_rss_kib(self) -> dict[str, int]:
        """VmHWM of every running service, in KiB."""
        return {name: p.peak_rss_kib() for name, p in self._processes.items() if p.alive()}

    def stop(self) -> dict[str, int]:
        """SIGTERM every service (projector first: it has the least to finish) and collect exit codes."""
        order = [PROJECTOR, READ, *(name for name in self._processes if name.startswith(WRITE))]
        for name in order:
            process = self._processes.pop(name, None)
            if process is not None:
                self.exit_codes[name] = processes.stop(process)
        return self.exit_codes
