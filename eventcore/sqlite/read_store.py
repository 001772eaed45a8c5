"""The read store as one SQLite file: a table per collection, an index per declared index.

The checkpoint table comes from numbered migrations (migrations/read_store/). Collection tables are
derived from their declarations and belong to a projection: when the projection's version changes
they are dropped and rebuilt by replaying the log, which is how read models change shape.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventcore.errors import Unavailable
from eventcore.json_text import json_dumps, json_loads
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
from eventcore.sqlite.files import Synchronous, WriterSession, open_locked_writer, open_migrated_reader
from eventcore.timestamps import format_timestamp, parse_timestamp

SCHEMA = "read_store"


class _Statements:
    """The SQL of one collection, built once from its declaration."""

    def __init__(self, collection: Collection) -> None:
        table = table_name(collection)
        fields = collection.indexed_fields
        columns = ", ".join(["key", *(column_name(f) for f in fields), "doc"])
        marks = ", ".join("?" * (len(fields) + 2))
        self.fields = fields
        self.upsert = f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})"
        self.delete = f"DELETE FROM {table} WHERE key = ?"
        self.get = f"SELECT doc FROM {table} WHERE key = ?"
        self.get_many = f"SELECT key, doc FROM {table} WHERE key IN (SELECT value FROM json_each(?))"
        self.create = [
            f"CREATE TABLE {table} (key TEXT PRIMARY KEY, "
            + "".join(f"{column_name(f)}, " for f in fields)
            + "doc TEXT NOT NULL) WITHOUT ROWID"
        ]
        self.pages: dict[str, tuple[str, str]] = {}
        for index in collection.indexes:
            equals = [column_name(f) for f in index.equals]
            order = column_name(index.order_by)
            self.create.append(
                f"CREATE INDEX ix_{collection.name}_{index.name} ON {table} "
                f"({', '.join([*equals, order + ' DESC', 'key DESC'])})"
            )
            where = " AND ".join(f"{c} = ?" for c in equals) or "1"
            select = f"SELECT {order}, key, doc FROM {table} WHERE {where}"
            tail = f" ORDER BY {order} DESC, key DESC LIMIT ?"
            self.pages[index.name] = (
                select + tail,
                select + f" AND ({order}, key) < (?, ?)" + tail,
            )
        self.drop = f"DROP TABLE IF EXISTS {table}"


_statement_cache: dict[Collection, _Statements] = {}


def statements(collection: Collection) -> _Statements:
    found = _statement_cache.get(collection)
    if found is None:
        found = _statement_cache[collection] = _Statements(collection)
    return found


_PARKED = "SELECT projection, stream_id, position, event_type, error, parked_at FROM parked_streams"
_SKIPPED = "SELECT projection, stream_id, position, event_type, error, skipped_at FROM skipped_events"


def _parked(connection: sqlite3.Connection) -> list[ParkedStream]:
    rows = connection.execute(_PARKED + " ORDER BY projection, stream_id").fetchall()
    return [ParkedStream(p, st, pos, t, e, parse_timestamp(at)) for p, st, pos, t, e, at in rows]


class _SQLiteView(ReadView):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._loads = json_loads

    def get(self, collection: Collection, key: str) -> Document | None:
        row = self._connection.execute(statements(collection).get, (key,)).fetchone()
        return self._loads(row[0]) if row else None

    def page(
        self,
        collection: Collection,
        index: str,
        equals: Sequence[Any],
        after: Cursor | None,
        limit: int,
    ) -> Page:
        first, following = statements(collection).pages[index]
        if after is None:
            rows = self._connection.execute(first, (*equals, limit + 1)).fetchall()
        else:
            rows = self._connection.execute(following, (*equals, *after, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = (rows[-1][0], rows[-1][1]) if more else None
        loads = self._loads
        return Page([loads(row[2]) for row in rows], cursor)

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._connection.execute(
            "SELECT name, version, position, updated_at FROM projections ORDER BY name"
        ).fetchall()
        return [Checkpoint(name, v, p, parse_timestamp(at)) for name, v, p, at in rows]

    def parked_streams(self) -> list[ParkedStream]:
        return _parked(self._connection)

    def skipped_events(self) -> list[SkippedEvent]:
        rows = self._connection.execute(_SKIPPED + " ORDER BY projection, position").fetchall()
        return [SkippedEvent(p, st, pos, t, e, parse_timestamp(at)) for p, st, pos, t, e, at in rows]

    def scan(self, collection: Collection) -> Iterator[tuple[str, Document]]:
        table = table_name(collection)
        for key, doc in self._connection.execute(f"SELECT key, doc FROM {table} ORDER BY key"):
            yield key, self._loads(doc)

    def position(self, projection: str) -> int:
        row = self._connection.execute(
            "SELECT position FROM projections WHERE name = ?", (projection,)
        ).fetchone()
        return int(row[0]) if row else 0

    def explain_page(self, collection: Collection, index: str, equals: Sequence[Any], paged: bool) -> str:
        """SQLite's query plan for a page query (tests use it to prove an index serves it)."""
        first, following = statements(collection).pages[index]
        sql, args = (following, (*equals, 0, "", 1)) if paged else (first, (*equals, 1))
        rows = self._connection.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
        return "\n".join(str(row[-1]) for row in rows)


class SQLiteReadStoreReader(ReadStoreReader):
    """Read-only access; fails to open until the projector has created the file's schema."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._view = _SQLiteView(connection)

    @classmethod
    def open(cls, path: str | Path) -> SQLiteReadStoreReader:
        """Open read-only; FileNotFoundError until the projector has created the file's schema."""
        return cls(open_migrated_reader(path, SCHEMA, "read database"))

    @contextmanager
    def snapshot(self) -> Iterator[_SQLiteView]:
        try:
            self._connection.execute("BEGIN")
            try:
                yield self._view
            finally:
                self._connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise Unavailable(f"read database unavailable: {error}") from error

    def close(self) -> None:
        self._connection.close()


class _SQLiteUnitOfWork(TrackingUnitOfWork):
    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__()
        self._connection = connection

    def _load(self, collection: Collection, key: str) -> Document | None:
        row = self._connection.execute(statements(collection).get, (key,)).fetchone()
        return json_loads(row[0]) if row else None

    def _load_many(self, collection: Collection, keys: list[str]) -> dict[str, Document]:
        rows = self._connection.execute(statements(collection).get_many, (json_dumps(keys),))
        return {key: json_loads(doc) for key, doc in rows}

    def flush(self) -> None:
        for collection, changes in self.dirty.items():
            sql = statements(collection)
            fields = sql.fields
            upserts = [
                (key, *(doc[f] for f in fields), json_dumps(doc))
                for key, doc in changes.items()
                if doc is not None
            ]
            deletes = [(key,) for key, doc in changes.items() if doc is None]
            if upserts:
                self._connection.executemany(sql.upsert, upserts)
            if deletes:
                self._connection.executemany(sql.delete, deletes)
        now = format_timestamp(time.time_ns() // 1000)
        self._connection.executemany(
            "INSERT INTO projections (name, version, position, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET version = excluded.version,"
            " position = excluded.position, updated_at = excluded.updated_at",
            [(name, v, p, now) for name, (v, p) in self.checkpoints.items()],
        )
        if self.parking:
            parks = [(*p[:5], now) for p in self.parking.values() if p is not None]
            self._connection.executemany(
                "DELETE FROM parked_streams WHERE projection = ? AND stream_id = ?", list(self.parking)
            )
            self._connection.executemany(
                "INSERT INTO parked_streams (projection, stream_id, position, event_type, error, parked_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                parks,
            )
        if self.skips:
            self._connection.executemany(
                "INSERT OR REPLACE INTO skipped_events"
                " (projection, stream_id, position, event_type, error, skipped_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(*k[:5], now) for k in self.skips],
            )


class SQLiteReadStoreWriter(ReadStoreWriter):
    def __init__(self, connection: sqlite3.Connection, path: Path, session: WriterSession | None) -> None:
        self._connection = connection
        self._path = path
        self._session = session

    @classmethod
    def open(
        cls, path: str | Path, synchronous: Synchronous = Synchronous.NORMAL, maintenance: bool = False
    ) -> SQLiteReadStoreWriter:
        """Create or upgrade the file and take the writer lock (`maintenance`: the operator
        commands' lock, held beside a running projector's).

        NORMAL is safe here: the checkpoint commits with the rows, so a commit lost to a power
        failure is simply projected again from the event store.
        """
        connection, session = open_locked_writer(
            path, SCHEMA, synchronous, "maintenance" if maintenance else "writer"
        )
        return cls(connection, Path(path), session)

    def checkpoints(self) -> dict[str, Checkpoint]:
        rows = self._connection.execute(
            "SELECT name, version, position, updated_at FROM projections"
        ).fetchall()
        return {name: Checkpoint(name, v, p, parse_timestamp(at)) for name, v, p, at in rows}

    def parked_streams(self) -> dict[tuple[str, str], ParkedStream]:
        return {(p.projection, p.stream_id): p for p in _parked(self._connection)}

    def reset(self, projection: str, version: int, collections: Sequence[Collection]) -> None:
        with self.transaction() as work:
            for collection in collections:
                sql = statements(collection)
                self._connection.execute(sql.drop)
                for statement in sql.create:
                    self._connection.execute(statement)
            self._connection.execute("DELETE FROM parked_streams WHERE projection = ?", (projection,))
            work.set_checkpoint(projection, version, 0)

    def discard(self, projection: str, collections: Sequence[Collection]) -> None:
        with self.transaction():
            for collection in collections:
                self._connection.execute(statements(collection).drop)
            self._connection.execute("DELETE FROM projections WHERE name = ?", (projection,))
            self._connection.execute("DELETE FROM parked_streams WHERE projection = ?", (projection,))

    def replace(
        self, live: str, shadow: str, version: int, collections: Sequence[tuple[Collection, Collection]]
    ) -> bool:
        with self.transaction():
            execute = self._connection.execute
            positions = dict(
                execute("SELECT name, position FROM projections WHERE name IN (?, ?)", (live, shadow))
            )
            if shadow not in positions or positions[shadow] < positions.get(live, 0):
                return False
            for live_collection, shadow_collection in collections:
                execute(f"DROP TABLE IF EXISTS {table_name(live_collection)}")
                shadow_table, live_table = table_name(shadow_collection), table_name(live_collection)
                execute(f"ALTER TABLE {shadow_table} RENAME TO {live_table}")
            execute("DELETE FROM projections WHERE name = ?", (live,))
            execute("UPDATE projections SET name = ?, version = ? WHERE name = ?", (live, version, shadow))
            execute("DELETE FROM parked_streams WHERE projection = ?", (live,))
            execute("UPDATE parked_streams SET projection = ? WHERE projection = ?", (live, shadow))
        return True

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            work = _SQLiteUnitOfWork(connection)
            yield work
            work.flush()
            connection.execute("COMMIT")
            if self._session is not None:
                self._session.announce()
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(error, sqlite3.Error):
                raise Unavailable(f"read database unavailable: {error}") from error
            raise

    def reader(self) -> SQLiteReadStoreReader:
        return SQLiteReadStoreReader.open(self._path)

    def close(self) -> None:
        self._connection.close()
        if self._session is not None:
            self._session.release()
