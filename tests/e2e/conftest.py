"""Fixtures of the end-to-end suite: the three real processes, started as a user would.

- `trio`: one write service + projector + read service shared by every test that does not stop, kill
  or restart a process (they use their own orders and customers, so they do not interfere).
- `make_trio`: a private trio in the test's own temporary directory, for tests that signal, kill or
  restart processes or need a fresh event store; nothing is started until the test says so.

With ORDERS_E2E_BACKEND=postgres (`make test-e2e-postgres`) every trio runs on fresh PostgreSQL
databases instead of SQLite files; tests marked `sqlite_files` (they look at the files) and
`own_databases` (PostgreSQL already) are deselected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e_support import Trio
from postgres_support import database_url, fresh_database_name

ON_POSTGRES = os.environ.get("ORDERS_E2E_BACKEND", "sqlite") == "postgres"


def _stores(stack: ExitStack) -> dict[str, str]:
    """Trio keyword arguments: fresh PostgreSQL databases (dropped when `stack` closes), or none."""
    if not ON_POSTGRES:
        return {}
    events = stack.enter_context(fresh_database_name())
    read = stack.enter_context(fresh_database_name())
    return {"event_store": database_url(events), "read_database": database_url(read)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, tests that open the SQLite files by hand are not part of the run (deselected,
    not skipped: they test the SQLite files themselves, which this run has none of), nor those that
    make their own PostgreSQL databases whatever the backend (the SQLite pass ran them already)."""
    if not ON_POSTGRES:
        return
    for item in items:
        item.add_marker(pytest.mark.postgres)
    elsewhere = [
        item for item in items if "sqlite_files" in item.keywords or "own_databases" in item.keywords
    ]
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = [item for item in items if item not in elsewhere]


def _services_written() -> bool:
    root = Path(__file__).resolve().parents[2]
    return all((root / m / "__main__.py").exists() for m in ("write_service", "projector", "read_service"))


@pytest.fixture(scope="session")
def shared_trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    if not _services_written():
        pytest.fail("write_service/, projector/ and read_service/ must all have a __main__.py")
    with ExitStack() as stack:
        trio = Trio(tmp_path_factory.mktemp("shared-trio"), **_stores(stack))
        try:
            trio.start_all()
            yield trio
        finally:
            trio.close()


@pytest.fixture
def trio(shared_trio: Trio) -> Iterator[Trio]:
    """The shared trio; a process that a test crashed is reported and restarted for the next test."""
    for proc in shared_trio.processes():
        if not proc.alive():
            # An earlier test crashed it (and was failed for it); give the next tests a working trio.
            if proc is shared_trio.write:
                shared_trio.start_write()
            elif proc is shared_trio.read:
                shared_trio.start_read()
            else:
                shared_trio.start_projector()
    yield shared_trio
    dead = [p for p in shared_trio.processes() if not p.alive()]
    if dead:
        pytest.fail(
            "a request crashed a process: "
            + "; ".join(
                f"{p.module} exited with {p.proc.returncode if p.proc else '?'}, stderr:\n{p.stderr_tail()}"
                for p in dead
            )
        )


@pytest.fixture
def make_trio(tmp_path: Path) -> Iterator[Callable[..., Trio]]:
    """Build private trios (`make_trio(read_args=[...], metrics_listen=...)`); all stopped after."""
    if not _services_written():
        pytest.fail("write_service/, projector/ and read_service/ must all have a __main__.py")
    made: list[Trio] = []
    stack = ExitStack()

    def make(read_args: list[str] | None = None, name: str = "trio", metrics_listen: str = "") -> Trio:
        trio = Trio(
            tmp_path / f"{name}-{len(made)}",
            read_args=list(read_args or []),
            metrics_listen=metrics_listen,
            **_stores(stack),
        )
        made.append(trio)
        return trio

    with stack:
        yield make
        for trio in made:
            trio.close()
