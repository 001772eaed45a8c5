"""The read store in PostgreSQL: a table per collection, an index per declared index, and the
projector's leadership.

Indexed fields are jsonb columns, so one declaration serves whatever type a field holds (jsonb
orders numbers as numbers, strings in the database's C collation, as SQLite and Python do); keys are
text in the C collation. Readers run each snapshot as one REPEATABLE READ READ ONLY transaction on a
connection whose transactions default to read-only, so a query cannot write.

Several projectors may run against one read database; the active one holds a session advisory
lock (`LEADER_LOCK`), the others try for it every half second. The lock goes with the leader's
session, so a killed leader's successor takes over within a second or so; checkpoints are read
`FOR UPDATE` in each transaction, so even two writers could not apply one event twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg.pq import TransactionStatus

from eventcore.errors import Unavailable
from eventcore.json_text import json_dumps, json_loads
from eventcore.postgres.connection import (
    CHANGES_CHANNEL,
    LEADER_LOCK,
    MAINTENANCE_LOCK,
    Connection,
    Session,
    describe,
    open_reader,
    open_writer,
    redact,
    translated,
)
from eventcore.read_store import (
    Checkpoint,
    Collection,
    Cursor,
    Document,
    Page,
    ParkedStream,
    ReadStoreReader,
    ReadStoreWriter,
    ReadView,
    SkippedEvent,
    TrackingUnitOfWork,
    UnitOfWork,
)
from eventcore.sql_names import column_name, table_name

log = logging.getLogger(__name__)

SCHEMA = "read_store"
WHAT = "read database"
LEADER_RETRY = 0.5  # seconds between a standby's tries for leadership
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHECKPOINTS = (
    "SELECT name, version, position, (extract(epoch FROM updated_at) * 1000000)::bigint"
    " FROM projections ORDER BY name"
)


class _Statements:
    """The SQL of one collection, built once from its declaration."""

    def __init__(self, collection: Collection) -> None:
        table = table_name(collection)
        fields = collection.indexed_fields
        columns = ", ".join(["key", *(column_name(f) for f in fields), "doc"])
        updates = ", ".join(f"{c} = excluded.{c}" for c in [*(column_name(f) for f in fields), "doc"])
        self.fields = fields
        # Whole batches as arrays, one statement each: inside the flush's pipeline nothing waits.
        arrays = ", ".join(["%s::text[]", *(["%s::jsonb[]"] * (len(fields) + 1))])
        self.upsert = (
            f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays})"
            f" ON CONFLICT (key) DO UPDATE SET {updates}"
        )
        self.delete = f"DELETE FROM {table} USING unnest(%s::text[]) AS k(key) WHERE {table}.key = k.key"
        self.get = f"SELECT doc FROM {table} WHERE key = %s"
        # One index probe per key, whatever the planner thinks of a young table (see event_store.py).
        self.get_many = (
            f"SELECT d.key, d.doc FROM unnest(%s::text[]) AS k(key)"
            f" CROSS JOIN LATERAL (SELECT key, doc FROM {table} WHERE key = k.key) AS d"
        )
        self.create = [
            f'CREATE TABLE {table} (key text COLLATE "C" PRIMARY KEY, '
            + "".join(f"{column_name(f)} jsonb, " for f in fields)
            + "doc jsonb NOT NULL)"
        ]
        self.pages: dict[str, tuple[str, str]] = {}
        for index in collection.indexes:
            equals = [column_name(f) for f in index.equals]
            order = column_name(index.order_by)
            self.create.append(
                f"CREATE INDEX ix_{collection.name}_{index.name} ON {table} "
                f"({', '.join([*equals, order + ' DESC', 'key DESC'])})"
            )
            where = " AND ".join(f"{c} = %s::jsonb" for c in equals) or "true"
            select = f"SELECT {order}, key, doc FROM {table} WHERE {where}"
            tail = f" ORDER BY {order} DESC, key DESC LIMIT %s"
            self.pages[index.name] = (select + tail, select + f" AND ({order}, key) < (%s::jsonb, %s)" + tail)
        self.drop = f"DROP TABLE IF EXISTS {table}"


_statement_cache: dict[Collection, _Statements] = {}


def statements(collection: Collection) -> _Statements:
    found = _statement_cache.get(collection)
    if found is None:
        found = _statement_cache[collection] = _Statements(collection)
    return found


_FAULT = (
    "SELECT projection, stream_id, position, event_type, error, (extract(epoch FROM {}) * 1000000)::bigint"
)
_PARKED = _FAULT.format("parked_at") + " FROM parked_streams"
_SKIPPED = _FAULT.format("skipped_at") + " FROM skipped_events"


_SNAPSHOT_START = (
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
    " SELECT name, version, position, (extract(epoch FROM updated_at) * 1000000)::bigint,"
    " (SELECT count(*) FROM parked_streams) FROM projections ORDER BY name"
)


def _parked(connection: Connection) -> list[ParkedStream]:
    rows = connection.execute(_PARKED + " ORDER BY projection, stream_id").fetchall()
    return [ParkedStream(*row) for row in rows]


def _checkpoints(connection: Connection, lock: bool = False) -> list[Checkpoint]:
    rows = connection.execute(_CHECKPOINTS + (" FOR UPDATE" if lock else "")).fetchall()
    return [Checkpoint(name, v, p, at) for name, v, p, at in rows]


class _PostgresView(ReadView):
    def __init__(
        self, connection: Connection, checkpoints: list[Checkpoint] | None = None, parked: int | None = None
    ) -> None:
        """`checkpoints` and the number of `parked` streams, when the snapshot read them already."""
        self._connection = connection
        self._checkpoints = checkpoints
        self._parked = parked
        self._positions = {c.name: c.position for c in checkpoints} if checkpoints is not None else None

    def position(self, projection: str) -> int:
        if self._positions is None:
            self._positions = {c.name: c.position for c in self.checkpoints()}
        return self._positions.get(projection, 0)

    def get(self, collection: Collection, key: str) -> Document | None:
        row = self._connection.execute(statements(collection).get, (key,)).fetchone()
        return json_loads(row[0]) if row else None

    def page(
        self, collection: Collection, index: str, equals: Sequence[Any], after: Cursor | None, limit: int
    ) -> Page:
        first, following = statements(collection).pages[index]
        keys = [json_dumps(value) for value in equals]
        if after is None:
            rows = self._connection.execute(first, (*keys, limit + 1)).fetchall()
        else:
            rows = self._connection.execute(
                following, (*keys, json_dumps(after[0]), after[1], limit + 1)
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = (json_loads(rows[-1][0]), rows[-1][1]) if more else None
        return Page([json_loads(row[2]) for row in rows], cursor)

    def checkpoints(self) -> list[Checkpoint]:
        if self._checkpoints is not None:
            return list(self._checkpoints)
        return _checkpoints(self._connection)

    def parked_streams(self) -> list[ParkedStream]:
        if self._parked == 0:  # the usual case: no query needed
            return []
        return _parked(self._connection)

    def skipped_events(self) -> list[SkippedEvent]:
        rows = self._connection.execute(_SKIPPED + " ORDER BY projection, position").fetchall()
        return [SkippedEvent(*row) for row in rows]

    def scan(self, collection: Collection) -> Iterator[tuple[str, Document]]:
        rows = self._connection.execute(f"SELECT key, doc FROM {table_name(collection)} ORDER BY key")
        for key, doc in rows:
            yield key, json_loads(doc)


class PostgresReadStoreReader(ReadStoreReader):
    """Read-only snapshots; fails to open until a projector has created the schema."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @classmethod
    def open(cls, url: str) -> PostgresReadStoreReader:
        """Open read-only; DatabaseNotReady until a projector has created the schema."""
        return cls(Session(url, WHAT, lambda: _read_only(open_reader(url, SCHEMA, WHAT))))

    @contextmanager
    def snapshot(self) -> Iterator[ReadView]:
        """One REPEATABLE READ READ ONLY transaction. Its BEGIN, the checkpoints and the number of
        parked streams go in one round trip (a parameterless multi-statement query), since every
        answer needs them: a GetOrder's snapshot is then three round trips, not five."""
        with translated(self._session.url, WHAT):
            connection = self._session.connection
            try:
                with connection.cursor() as cursor:
                    cursor.execute(_SNAPSHOT_START)
                    cursor.nextset()
                    rows = cursor.fetchall()
                checkpoints = [Checkpoint(name, v, p, at) for name, v, p, at, _ in rows]
                parked = int(rows[0][4]) if rows else None
                yield _PostgresView(connection, checkpoints, parked)
            except BaseException:
                _roll_back(connection)
                raise
            connection.execute("COMMIT")

    def positions(self) -> dict[str, int]:
        """One statement (its own read-only transaction), not a snapshot's three round trips: the
        read service looks at the positions on every commit the projector announces."""
        with translated(self._session.url, WHAT):
            rows = self._session.connection.execute("SELECT name, position FROM projections").fetchall()
        return {name: position for name, position in rows}

    def close(self) -> None:
        self._session.close()


def _writer(url: str) -> Connection:
    """A projector's connection. Its commits do not wait for the WAL flush (`synchronous_commit =
    off`, as the SQLite read store runs NORMAL): a commit lost to a server crash loses its rows and
    its checkpoint together, and is projected again from the event store."""
    connection = open_writer(url, SCHEMA, WHAT)
    connection.execute("SET synchronous_commit = off")
    return connection


def _roll_back(connection: Connection) -> None:
    """End a failed snapshot's transaction, so the session is usable for the next one; a connection
    that broke meanwhile is left to `Session` to open again (the failure itself is being raised)."""
    if connection.closed or connection.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        connection.execute("ROLLBACK")
    except psycopg.Error as error:
        log.debug("rolling back a failed snapshot: %s", error)


def _read_only(connection: Connection) -> Connection:
    connection.isolation_level = IsolationLevel.REPEATABLE_READ
    connection.read_only = True
    return connection


class _PostgresUnitOfWork(TrackingUnitOfWork):
    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection

    def _load(self, collection: Collection, key: str) -> Document | None:
        row = self._connection.execute(statements(collection).get, (key,)).fetchone()
        return json_loads(row[0]) if row else None

    def _load_many(self, collection: Collection, keys: list[str]) -> dict[str, Document]:
        rows = self._connection.execute(statements(collection).get_many, (keys,))
        return {key: json_loads(doc) for key, doc in rows}

    def flush(self) -> None:
        # One pipeline: every write of the batch and the checkpoint go in one round trip.
        with self._connection.pipeline(), self._connection.cursor() as cursor:
            for collection, changes in self.dirty.items():
                sql = statements(collection)
                fields = sql.fields
                kept = [(key, doc) for key, doc in changes.items() if doc is not None]
                deletes = [key for key, doc in changes.items() if doc is None]
                if kept:
                    columns = [[key for key, _ in kept]]
                    columns += [[json_dumps(doc.get(f)) for _, doc in kept] for f in fields]
                    columns.append([json_dumps(doc) for _, doc in kept])
                    cursor.execute(sql.upsert, columns)
                if deletes:
                    cursor.execute(sql.delete, (deletes,))
            now = _EPOCH + timedelta(microseconds=time.time_ns() // 1000)
            if self.checkpoints:
                names = list(self.checkpoints)
                cursor.execute(
                    "INSERT INTO projections (name, version, position, updated_at)"
                    " SELECT *, %s FROM unnest(%s::text[], %s::integer[], %s::bigint[])"
                    " ON CONFLICT (name) DO UPDATE SET version = excluded.version,"
                    " position = excluded.position, updated_at = excluded.updated_at",
                    (
                        now,
                        names,
                        [self.checkpoints[n][0] for n in names],
                        [self.checkpoints[n][1] for n in names],
                    ),
                )
                position = max(p for _, p in self.checkpoints.values())
                cursor.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, str(position)))
            if self.parking:
                cursor.executemany(
                    "DELETE FROM parked_streams WHERE projection = %s AND stream_id = %s", list(self.parking)
                )
                parks = [(*p[:5], now) for p in self.parking.values() if p is not None]
                if parks:
                    cursor.executemany(
                        "INSERT INTO parked_streams"
                        " (projection, stream_id, position, event_type, error, parked_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        parks,
                    )
            if self.skips:
                cursor.executemany(
                    "INSERT INTO skipped_events"
                    " (projection, stream_id, position, event_type, error, skipped_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (projection, position) DO UPDATE SET"
                    " error = excluded.error, skipped_at = excluded.skipped_at",
                    [(*k[:5], now) for k in self.skips],
                )


class PostgresReadStoreWriter(ReadStoreWriter):
    """The active projector's store: it holds the leadership lock for as long as its session lives
    (or, opened by `open_maintainer`, the lock of the one operator command running beside it)."""

    def __init__(self, session: Session, lock: int = LEADER_LOCK) -> None:
        """`session` holds `lock` on its current connection."""
        self._session = session
        self._lock = lock
        self._locked = session.connection  # the connection whose session holds the lock
        self._in_transaction = False

    @classmethod
    def open_maintainer(cls, url: str) -> PostgresReadStoreWriter:
        """For the projector's operator commands, beside the active projector; one at a time.

        Both write in transactions that read the checkpoints FOR UPDATE, so they take turns as the
        two writers of a SQLite file do.
        """
        session = Session(url, WHAT, lambda: _writer(url))
        if not _try_lock(session, MAINTENANCE_LOCK):
            session.close()
            raise Unavailable(f"{WHAT} {redact(url)}: another projector command is running")
        return cls(session, MAINTENANCE_LOCK)

    @classmethod
    def open(cls, url: str, stop: threading.Event | None = None) -> PostgresReadStoreWriter | None:
        """Create database and schema if missing, then wait to become the leader.

        Returns None when `stop` is set before leadership came; without `stop`, refuses at once
        (Unavailable) when another projector leads.
        """
        session = Session(url, WHAT, lambda: _writer(url))
        announced = False
        while True:
            if _try_lock(session, LEADER_LOCK):
                if announced:
                    log.info("took over as the active projector of %s", redact(url))
                return cls(session)
            if stop is None:
                session.close()
                raise Unavailable(f"{WHAT} {redact(url)} has an active projector already")
            if not announced:
                log.info("standing by: another projector is active on %s", redact(url))
                announced = True
            if stop.wait(LEADER_RETRY):
                session.close()
                return None

    def checkpoints(self) -> dict[str, Checkpoint]:
        with translated(self._session.url, WHAT):
            found = _checkpoints(self._session.connection, lock=self._in_transaction)
        return {c.name: c for c in found}

    def parked_streams(self) -> dict[tuple[str, str], ParkedStream]:
        with translated(self._session.url, WHAT):
            found = _parked(self._session.connection)
        return {(p.projection, p.stream_id): p for p in found}

    def reset(self, projection: str, version: int, collections: Sequence[Collection]) -> None:
        with self.transaction() as work:
            for collection in collections:
                sql = statements(collection)
                self._session.connection.execute(sql.drop)
                for statement in sql.create:
                    self._session.connection.execute(statement)
            self._session.connection.execute(
                "DELETE FROM parked_streams WHERE projection = %s", (projection,)
            )
            work.set_checkpoint(projection, version, 0)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        url = self._session.url
        try:
            connection = self._session.connection
            self._require_leadership(connection)
            with connection.transaction():
                self._in_transaction = True
                try:
                    work = _PostgresUnitOfWork(connection)
                    yield work
                    work.flush()
                finally:
                    self._in_transaction = False
        except psycopg.Error as error:
            raise Unavailable(f"{WHAT} {redact(url)} unavailable: {describe(error, url)}") from None

    def discard(self, projection: str, collections: Sequence[Collection]) -> None:
        with self.transaction():
            execute = self._session.connection.execute
            for collection in collections:
                execute(statements(collection).drop)
            execute("DELETE FROM projections WHERE name = %s", (projection,))
            execute("DELETE FROM parked_streams WHERE projection = %s", (projection,))

    def replace(
        self, live: str, shadow: str, version: int, collections: Sequence[tuple[Collection, Collection]]
    ) -> bool:
        with self.transaction():
            execute = self._session.connection.execute
            rows = execute(
                "SELECT name, position FROM projections WHERE name IN (%s, %s) FOR UPDATE", (live, shadow)
            ).fetchall()
            positions: dict[str, int] = dict(rows)
            if shadow not in positions or positions[shadow] < positions.get(live, 0):
                return False
            for live_collection, shadow_collection in collections:
                execute(f"DROP TABLE IF EXISTS {table_name(live_collection)}")
                shadow_table, live_table = table_name(shadow_collection), table_name(live_collection)
                execute(f"ALTER TABLE {shadow_table} RENAME TO {live_table}")
            execute("DELETE FROM projections WHERE name = %s", (live,))
            execute("UPDATE projections SET name = %s, version = %s WHERE name = %s", (live, version, shadow))
            execute("DELETE FROM parked_streams WHERE projection = %s", (live,))
            execute("UPDATE parked_streams SET projection = %s WHERE projection = %s", (live, shadow))
        return True

    def _require_leadership(self, connection: Connection) -> None:
        """A session the server dropped lost the lock with it: take it again or refuse to write.

        A session lock is released only by its session's end, and a connection that lost its
        session is replaced by a new one (`Session.connection`), so the lock is ours exactly while
        the connection that took it is the one in use: no query needed per transaction.
        """
        if connection is self._locked and not connection.closed:
            return
        if not _try_lock(self._session, self._lock):
            raise Unavailable(f"{WHAT} {redact(self._session.url)}: another projector is active now")
        self._locked = self._session.connection
        log.info("regained leadership of %s after a lost session", redact(self._session.url))

    def reader(self) -> PostgresReadStoreReader:
        return PostgresReadStoreReader.open(self._session.url)

    def close(self) -> None:
        self._session.close()  # ends the session, and with it the leadership


def _try_lock(session: Session, lock: int) -> bool:
    with translated(session.url, WHAT):
        row = session.connection.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()
    return bool(row and row[0])
