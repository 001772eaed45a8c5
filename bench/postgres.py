"""PostgreSQL for a run: is a server there, fresh databases dropped afterwards, prebuilt event logs.

The stages on PostgreSQL measure the same services on the same workloads as on SQLite, so their logs
are the same planned events (`bench.fixtures`), written with COPY into a database whose schema the
service's own migrations created (`eventcore.postgres.connection.migrate`): the fixture cannot drift
from what the write service creates. Each run's databases are named `bench_<random>_<role>` and
dropped, with whatever connected to them, when the stage ends.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from bench import fixtures, workload
from eventcore.postgres.connection import create_database, drop_database, migrate, redact, with_database

log = logging.getLogger(__name__)

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
_COPY = (
    "COPY events (position, stream_id, stream_version, type, schema_version, payload, event_id,"
    " command_id, recorded_at) FROM STDIN"
)


def server_version(server_url: str) -> str:
    with psycopg.connect(server_url, connect_timeout=3, autocommit=True) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def server_pids(server_url: str) -> list[int]:
    """Every process of the server (backends and background workers) but the one answering this.

    The server does much of the work on this backend; watching its CPU keeps "foreign" CPU meaning
    other programs, and shows the server's CPU per call beside the service's.
    """
    with psycopg.connect(server_url, autocommit=True) as connection:
        rows = connection.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()").fetchall()
    return [int(row[0]) for row in rows]


@contextmanager
def databases(server_url: str, *roles: str) -> Iterator[list[str]]:
    """One new, empty database per role (C collation, as the services create them); their URLs."""
    prefix = f"bench_{uuid.uuid4().hex[:10]}"
    names = [f"{prefix}_{role}" for role in roles]
    created: list[str] = []
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in names:
                create_database(admin, name)
                created.append(name)
        yield [with_database(server_url, name) for name in names]
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in created:
                drop_database(admin, name)


def _rows(plan: fixtures.Plan) -> Iterator[tuple[object, ...]]:
    events, customers = plan
    for position, event in enumerate(events, start=1):
        yield (
            position,
            "order-" + workload.order_id(event.order_index),
            event.stream_version,
            event.type,
            1,
            fixtures.payload(event, customers),
            uuid.uuid4(),
            "",
            fixtures.recorded_at(position),
        )


def build_event_store(url: str, plan: fixtures.Plan, what: str) -> int:
    """The event-store schema in the (empty) database at `url`, then the planned events; the head."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        migrate(connection, url, "event_store")
        written = 0
        with connection.transaction(), connection.cursor() as cursor, cursor.copy(_COPY) as copy:
            for row in _rows(plan):
                copy.write_row(row)
                written += 1
        connection.execute("ANALYZE events")
    log.info("fixture %s: %s in %.1f s", redact(url), what, time.perf_counter() - started)
    return written
