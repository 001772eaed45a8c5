"""Fixtures of the end-to-end suite: the three real processes, started as a user would.

- `trio`: one write service + projector + read service shared by every test that does not stop, kill
  or restart a process (they use their own orders and customers, so they do not interfere).
- `make_trio`: a private trio in the test's own temporary directory, for tests that signal, kill or
  restart processes or need a fresh event store; nothing is started until the test says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_support import Trio


def _services_written() -> bool:
    root = Path(__file__).resolve().parents[2]
    return all((root / m / "__main__.py").exists() for m in ("write_service", "projector", "read_service"))


@pytest.fixture(scope="session")
def shared_trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    if not _services_written():
        pytest.fail("write_service/, projector/ and read_service/ must all have a __main__.py")
    trio = Trio(tmp_path_factory.mktemp("shared-trio"))
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

    def make(read_args: list[str] | None = None, name: str = "trio", metrics_listen: str = "") -> Trio:
        trio = Trio(
            tmp_path / f"{name}-{len(made)}", read_args=list(read_args or []), metrics_listen=metrics_listen
        )
        made.append(trio)
        return trio

    yield make
    for trio in made:
        trio.close()
