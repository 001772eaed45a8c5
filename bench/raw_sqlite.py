"""The storage ceiling: appending event rows with nothing but `sqlite3`, on the real schema.

No gRPC, no domain, no JSON encoding at append time (rows are prepared first): what one process can
append per second into the events table with a given batch size and `synchronous` level. A durable
command can never be faster than one fsync'd transaction; a group commit of 100 shows what batching buys.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench import fixtures


@dataclass(frozen=True)
class AppendCase:
    name: str
    per_transaction: int
    synchronous: str
    events: int


def cases(scale: float) -> list[AppendCase]:
    """The measured cases; `scale` shrinks the event counts for --quick."""
    return [
        AppendCase("append_1_per_txn_full", 1, "FULL", int(4000 * scale)),
        AppendCase("append_100_per_txn_full", 100, "FULL", int(60_000 * scale)),
        AppendCase("append_500_per_txn_normal", 500, "NORMAL", int(150_000 * scale)),
    ]


def measure(case: AppendCase, path: Path) -> float:
    """Events per second for one case, into a fresh event-store file at `path`."""
    fixtures.create_event_store(path)
    prepared = list(fixtures.rows(fixtures.created_only(case.events), customers=1000))
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={case.synchronous}")
        insert = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)"
        iterator = iter(prepared)
        started = time.perf_counter()
        while chunk := list(itertools.islice(iterator, case.per_transaction)):
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(insert, chunk)
            connection.execute("COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    return case.events / elapsed


def run(directory: Path, scale: float) -> dict[str, float]:
    """Every case, each in its own file; results in events/s."""
    return {case.name: round(measure(case, directory / f"raw-{case.name}.db"), 1) for case in cases(scale)}
