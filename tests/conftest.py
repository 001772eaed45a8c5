"""What every layer shares: tests marked `postgres` need the PostgreSQL server (tests/postgres_support.py).

Without a reachable server (and without $CI) they are deselected, not skipped, and the run ends with one
line saying why; with $CI set they stay in the run and fail.
"""

from __future__ import annotations

import pytest
from postgres_support import leaves_out_postgres_tests, unreachable_reason

_LEFT_OUT: list[int] = []


@pytest.hookimpl(trylast=True)  # after the e2e conftest has marked its items for a PostgreSQL run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needing = [item for item in items if item.get_closest_marker("postgres") is not None]
    if needing and leaves_out_postgres_tests():
        config.hook.pytest_deselected(items=needing)
        items[:] = [item for item in items if item.get_closest_marker("postgres") is None]
        _LEFT_OUT.append(len(needing))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LEFT_OUT:
        terminalreporter.write_line(
            f"{sum(_LEFT_OUT)} PostgreSQL tests not run: {unreachable_reason()} "
            "(start the server, see README; with CI set they fail instead)"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run of PostgreSQL tests only (the e2e pass on PostgreSQL) that left them all out passed:
    nothing in it failed, and the summary line says what was not run."""
    if _LEFT_OUT and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
