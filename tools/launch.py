"""The three services' command lines, said once.

`make run` (tools/run_all.py), the soak (tools/soak.py), the end-to-end suite and the benchmark all start
the write service, the projector and the read service as a user would, `python -m MODULE FLAGS`. The
flags each one takes to share one event store and one read database live here, built from one small
settings object, so a new flag (say `--metrics-listen`) is added in one place.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRITE, PROJECTOR, READ = "write_service", "projector", "read_service"
SERVICES = (WRITE, PROJECTOR, READ)  # the module of each process, in start order


@dataclass(frozen=True)
class Settings:
    """Where the trio keeps its data and listens.

    `event_store` and `read_db` are paths (SQLite) or `postgresql://` URLs, passed on as given.
    `metrics_listen`, when set, is given to every process (`HOST:0` lets each pick its own port).
    `extra` holds more flags for one process, by module name.
    """

    event_store: str
    read_db: str
    write_listen: str = "127.0.0.1:0"
    read_listen: str = "127.0.0.1:0"
    metrics_listen: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def in_dir(cls, data_dir: Path, **kwargs: Any) -> Settings:
        """Settings with `data_dir/events.db` and `data_dir/read.db`."""
        return cls(str(data_dir / "events.db"), str(data_dir / "read.db"), **kwargs)


def flags(settings: Settings, service: str) -> list[str]:
    """The flags `service` (one of SERVICES) is started with."""
    if service == WRITE:
        args = ["--listen", settings.write_listen, "--event-store", settings.event_store]
    elif service == PROJECTOR:
        args = ["--event-store", settings.event_store, "--read-db", settings.read_db]
    elif service == READ:
        args = [
            "--listen",
            settings.read_listen,
            "--read-db",
            settings.read_db,
            "--event-store",
            settings.event_store,
        ]
    else:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    if settings.metrics_listen:
        args += ["--metrics-listen", settings.metrics_listen]
    return [*args, *settings.extra.get(service, ())]


def argv(module: str, args: Sequence[str]) -> list[str]:
    """`python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def commands(settings: Settings) -> dict[str, list[str]]:
    """The full command line of each service, in start order."""
    return {service: argv(service, flags(settings, service)) for service in SERVICES}
