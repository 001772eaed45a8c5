"""What only the SQLite stores promise: one writer per file, read-only readers, the files' layout,
durability settings, schema versions, storage failures, and list queries served by indexes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import pytest

from eventcore.codec import EventCodec
from eventcore.command_bus import CommandBus
from eventcore.errors import Unavailable
from eventcore.event_store import StorageFailure
from eventcore.events import PendingAppend
from eventcore.projection import ProjectionRunner
from eventcore.query_bus import QueryBus, QueryHandler
from eventcore.read_store import ReadView
from eventcore.sqlite.event_store import SQLiteEventLogReader, SQLiteEventStore
from eventcore.sqlite.files import FileRefused, StorageLocked, latest_version, open_read_only
from eventcore.sqlite.read_store import SQLiteReadStoreReader, SQLiteReadStoreWriter
from orders.commands import CancelOrder, ConfirmOrder, CreateOrder
from orders.events import OrderConfirmed, OrderCreated, OrderItem, order_codec
from orders.order import command_handlers
from orders.projections import ORDERS, PROJECTIONS


def created(order_id: str) -> OrderCreated:
    return OrderCreated(order_id, "cust-1", (OrderItem("p", 2, 50),), 100)


@pytest.fixture
def events_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def writer(events_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore.open(events_path, order_codec())
    yield store
    store.close()


# -- event store: one writer, read-only readers ----------------------------------------------------


def test_a_read_only_reader_sees_committed_events(writer: SQLiteEventStore, events_path: Path) -> None:
    writer.append(PendingAppend("order-a", 0, [created("a")], "cmd-a", "fp"))
    reader = SQLiteEventLogReader.open(events_path, order_codec())
    try:
        assert reader.head_position() == 1
        assert reader.read_all(0, 10) == writer.read_all(0, 10)
        writer.append(PendingAppend("order-a", 1, [OrderConfirmed("a")]))  # committed after it opened
        assert reader.head_position() == 2
        assert [e.data for e in reader.read_stream("order-a")] == [created("a"), OrderConfirmed("a")]
        assert reader.find_command("cmd-a") == writer.find_command("cmd-a")
    finally:
        reader.close()


def test_a_reader_cannot_write(writer: SQLiteEventStore, events_path: Path) -> None:
    writer.append(PendingAppend("order-a", 0, [created("a")]))
    connection = open_read_only(events_path)
    try:
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only"):
            connection.execute("DELETE FROM events")
        connection.execute("PRAGMA query_only=0")  # mode=ro holds even without query_only
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only"):
            connection.execute(
                "INSERT INTO events (position, stream_id, stream_version, type, schema_version, payload,"
                " metadata) VALUES (2, 's', 1, 'OrderConfirmed', 1, '{}', '{}')"
            )
    finally:
        connection.close()
    assert writer.head_position() == 1


def test_a_second_writer_on_the_same_file_is_refused(writer: SQLiteEventStore, events_path: Path) -> None:
    writer.append(PendingAppend("order-a", 0, [created("a")]))
    with pytest.raises(StorageLocked):
        SQLiteEventStore.open(events_path, order_codec())
    assert writer.append(PendingAppend("order-b", 0, [created("b")]))[0].position == 2


def test_a_writer_reopening_the_file_continues_the_log(events_path: Path) -> None:
    first = SQLiteEventStore.open(events_path, order_codec())
    first.append(PendingAppend("order-a", 0, [created("a")], "cmd-a", "fp-a"))
    first.close()
    second = SQLiteEventStore.open(events_path, order_codec())
    try:
        assert second.head_position() == 1
        assert second.find_command("cmd-a") is not None
        recorded = second.append(PendingAppend("order-a", 1, [OrderConfirmed("a")]))
        assert (recorded[0].position, recorded[0].stream_version) == (2, 2)
    finally:
        second.close()


def test_a_reader_waits_for_the_writer_to_create_the_file(events_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SQLiteEventLogReader.open(events_path, order_codec())
    sqlite3.connect(events_path).close()  # an empty file: not initialised yet
    with pytest.raises(FileNotFoundError):
        SQLiteEventLogReader.open(events_path, order_codec())
    SQLiteEventStore.open(events_path, order_codec()).close()
    SQLiteEventLogReader.open(events_path, order_codec()).close()


def test_the_events_table_is_readable_with_plain_sql(writer: SQLiteEventStore, events_path: Path) -> None:
    writer.append(PendingAppend("order-a", 0, [created("a"), OrderConfirmed("a")], "cmd-1", "fp"))
    recorded = writer.append(PendingAppend("order-b", 0, [created("b")]))
    connection = sqlite3.connect(events_path)
    try:
        rows = connection.execute(
            "SELECT position, stream_id, stream_version, type, schema_version, payload, metadata"
            " FROM events ORDER BY position"
        ).fetchall()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()
    assert [r[:5] for r in rows] == [
        (1, "order-a", 1, "OrderCreated", 1),
        (2, "order-a", 2, "OrderConfirmed", 1),
        (3, "order-b", 1, "OrderCreated", 1),
    ]
    assert json.loads(rows[0][5]) == {
        "order_id": "a",
        "customer_id": "cust-1",
        "items": [{"product_id": "p", "quantity": 2, "unit_price": 50}],
        "total": 100,
    }
    meta = [json.loads(r[6]) for r in rows]
    assert [m["command_id"] for m in meta] == ["cmd-1", "cmd-1", ""]
    assert meta[2]["event_id"] == recorded[0].event_id
    assert meta[0]["recorded_at"].endswith("Z") and "T" in meta[0]["recorded_at"]


def test_commits_are_durable_by_default(writer: SQLiteEventStore) -> None:
    assert writer._connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_the_schema_refuses_a_gap_in_positions_or_versions(
    writer: SQLiteEventStore, events_path: Path
) -> None:
    writer.append(PendingAppend("order-a", 0, [created("a")]))
    connection = sqlite3.connect(events_path)
    try:
        for position, version in ((3, 2), (2, 3)):
            with pytest.raises(sqlite3.IntegrityError):
                connection.execute(
                    "INSERT INTO events (position, stream_id, stream_version, type, schema_version, payload,"
                    " metadata) VALUES (?, 'order-a', ?, 'OrderConfirmed', 1, '{}', '{}')",
                    (position, version),
                )
    finally:
        connection.close()


def test_a_newer_schema_than_the_code_knows_is_refused(events_path: Path) -> None:
    SQLiteEventStore.open(events_path, order_codec()).close()
    connection = sqlite3.connect(events_path)
    connection.execute(f"PRAGMA user_version={latest_version('event_store') + 1}")
    connection.close()
    with pytest.raises(FileRefused, match=f"{events_path}: schema version .* is newer"):
        SQLiteEventStore.open(events_path, order_codec())


def test_a_failed_commit_is_a_storage_failure_and_keeps_nothing(
    writer: SQLiteEventStore, events_path: Path
) -> None:
    writer.append(PendingAppend("order-a", 0, [created("a")]))
    saboteur = sqlite3.connect(events_path, isolation_level=None)
    try:
        saboteur.execute("ALTER TABLE commands RENAME TO commands_gone")
        with pytest.raises(StorageFailure):
            writer.append_batch(
                [
                    PendingAppend("order-b", 0, [created("b")], "cmd-b", "fp"),
                    PendingAppend("order-c", 0, [created("c")]),
                ]
            )
        assert writer.head_position() == 1
        assert saboteur.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        saboteur.execute("ALTER TABLE commands_gone RENAME TO commands")
    finally:
        saboteur.close()
    recorded = writer.append(PendingAppend("order-b", 0, [created("b")], "cmd-b", "fp"))
    assert recorded[0].position == 2


# -- upcasting through the file -------------------------------------------------------------------


@dataclass(frozen=True)
class NoteV1:
    text: str

    def to_payload(self) -> dict[str, Any]:
        return {"text": self.text}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        return cls(payload["text"])


@dataclass(frozen=True)
class Note:
    text: str
    words: int

    def to_payload(self) -> dict[str, Any]:
        return {"text": self.text, "words": self.words}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        return cls(payload["text"], payload["words"])


def count_words(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "words": len(payload["text"].split())}


def test_events_stored_at_v1_are_upcast_when_read_by_v2_code(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    old = EventCodec()
    old.register(NoteV1, name="NoteTaken")
    store = SQLiteEventStore.open(path, old)
    store.append(PendingAppend("note-1", 0, [NoteV1("three little words")]))
    store.close()

    new = EventCodec()
    new.register(Note, name="NoteTaken", version=2, upcasters={1: count_words})
    store = SQLiteEventStore.open(path, new)
    try:
        store.append(PendingAppend("note-1", 1, [Note("two words", 2)]))
        both = [Note("three little words", 3), Note("two words", 2)]
        assert [e.data for e in store.read_stream("note-1")] == both
        reader = SQLiteEventLogReader.open(path, new)
        assert [e.data for e in reader.read_all(0, 10)] == both
        reader.close()
    finally:
        store.close()
    connection = sqlite3.connect(path)
    stored = connection.execute("SELECT schema_version FROM events ORDER BY position").fetchall()
    assert stored == [(1,), (2,)]
    connection.close()


# -- read store -------------------------------------------------------------------------------------


def fill(events: SQLiteEventStore) -> None:
    """A few dozen orders in every status but SHIPPED, for four customers."""

    async def orders() -> None:
        bus = CommandBus(events)
        for command_type, handler in command_handlers().items():
            bus.register(command_type, handler)
        try:
            for i in range(40):
                await bus.dispatch(CreateOrder(f"o-{i}", f"cust-{i % 4}", (OrderItem("p", 1, 10),)))
                if i % 3 == 0:
                    await bus.dispatch(ConfirmOrder(f"o-{i}"))
                if i % 5 == 0:
                    await bus.dispatch(CancelOrder(f"o-{i}"))
        finally:
            await bus.close()

    asyncio.run(orders())


@pytest.fixture
def projected(tmp_path: Path) -> Iterator[tuple[SQLiteReadStoreWriter, Path]]:
    """A read database holding the real order projections of a few dozen orders."""
    events = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
    read_path = tmp_path / "read.db"
    read_store = SQLiteReadStoreWriter.open(read_path)
    fill(events)
    ProjectionRunner(events, read_store, PROJECTIONS).run_until_idle()
    events.close()
    yield read_store, read_path
    read_store.close()


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    connection = sqlite3.connect(path)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE name LIKE 'rm_%'")]
        return {t: connection.execute(f"SELECT * FROM {t} ORDER BY key").fetchall() for t in sorted(tables)}
    finally:
        connection.close()


def test_events_delivered_again_leave_the_same_rows_in_sqlite(tmp_path: Path) -> None:
    events = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
    read_store = SQLiteReadStoreWriter.open(tmp_path / "read.db")
    try:
        fill(events)
        runner = ProjectionRunner(events, read_store, PROJECTIONS, batch_size=7)
        runner.run_until_idle()
        before = rows(tmp_path / "read.db")
        assert sum(len(r) for r in before.values()) > 40
        runner._positions = {p.name: 0 for p in PROJECTIONS}  # the runner loses track of its position
        runner.run_until_idle()
        assert rows(tmp_path / "read.db") == before
        head = events.head_position()
        assert {n: c.position for n, c in read_store.checkpoints().items()} == {
            p.name: head for p in PROJECTIONS
        }
    finally:
        read_store.close()
        events.close()


def _confirm_all(events: SQLiteEventStore, count: int) -> None:
    async def confirm() -> None:
        bus = CommandBus(events)
        for command_type, handler in command_handlers().items():
            bus.register(command_type, handler)
        try:
            for i in range(count):
                if i % 3 and i % 5:  # the pending ones
                    await bus.dispatch(ConfirmOrder(f"o-{i}"))
        finally:
            await bus.close()

    asyncio.run(confirm())


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetched", "one-by-one"])
def test_a_batch_reads_its_documents_in_a_few_statements_with_the_same_rows(
    tmp_path: Path, prefetch: bool
) -> None:
    """The order projections announce what a batch will read (Projection.prefetch): a batch of
    updates to stored orders loads them in a few statements instead of one or two per event, and
    leaves exactly the rows that loading them one by one leaves."""
    projections = PROJECTIONS if prefetch else tuple(replace(p, prefetch=None) for p in PROJECTIONS)
    events = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
    read_store = SQLiteReadStoreWriter.open(tmp_path / f"read-{prefetch}.db")
    try:
        fill(events)
        runner = ProjectionRunner(events, read_store, projections, batch_size=1000)
        runner.run_until_idle()
        _confirm_all(events, 40)
        statements: list[str] = []
        read_store._connection.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        assert runner.run_once() == 21
        read_store._connection.set_trace_callback(None)  # type: ignore[attr-defined]
        single = [s for s in statements if s.startswith("SELECT doc FROM") and "WHERE key = " in s]
        many = [s for s in statements if "json_each" in s]
        if prefetch:
            assert single == [] and 1 <= len(many) <= 5, statements
        else:
            assert len(single) >= 21 and many == []
        batched_rows = rows(tmp_path / f"read-{prefetch}.db")
    finally:
        read_store.close()
        events.close()
    other = tmp_path / "other"
    other.mkdir()
    again = SQLiteReadStoreWriter.open(other / "read.db")
    try:
        log = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
        ProjectionRunner(log, again, PROJECTIONS, batch_size=1).run_until_idle()
        log.close()
    finally:
        again.close()
    assert batched_rows == rows(other / "read.db")


@pytest.mark.parametrize("analyzed", [False, True], ids=["as-built", "after-ANALYZE"])
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "following-page"])
@pytest.mark.parametrize(("index", "equals"), [("by_customer", ("cust-1",)), ("by_status", ("PENDING",))])
def test_every_list_query_is_served_by_its_index(
    projected: tuple[SQLiteReadStoreWriter, Path], index: str, equals: tuple[str], paged: bool, analyzed: bool
) -> None:
    _, path = projected
    if analyzed:
        connection = sqlite3.connect(path)
        connection.execute("ANALYZE")
        connection.close()
    reader = SQLiteReadStoreReader.open(path)
    try:
        with reader.snapshot() as view:
            plan = view.explain_page(ORDERS, index, equals, paged)  # type: ignore[attr-defined]
    finally:
        reader.close()
    assert f"ix_orders_{index}" in plan, plan
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    assert "SCAN rm_orders" not in plan and "SCAN TABLE" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_a_query_handler_cannot_write_through_the_read_only_connection(
    projected: tuple[SQLiteReadStoreWriter, Path],
) -> None:
    store, path = projected

    @dataclass(frozen=True)
    class Sneaky:
        order_id: str

    def sneaky(view: ReadView, query: Sneaky) -> None:
        connection: sqlite3.Connection = view._connection  # type: ignore[attr-defined]
        connection.execute("PRAGMA query_only=0")
        connection.execute("UPDATE rm_orders SET doc = '{}' WHERE key = ?", (query.order_id,))

    bus = QueryBus()
    bus.register(Sneaky, QueryHandler(("order_view",), sneaky))
    reader = SQLiteReadStoreReader.open(path)
    try:
        with pytest.raises(Unavailable) as refused:  # the snapshot translates storage errors
            bus.ask(reader, Sneaky("o-1"))
        assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
        assert "readonly" in str(refused.value.__cause__)
        with reader.snapshot() as view:
            assert view.get(ORDERS, "o-1")["order_id"] == "o-1"  # type: ignore[index]
    finally:
        reader.close()
    assert store.checkpoints()["order_view"].position > 0


def test_read_database_writer_is_exclusive_and_readers_wait_for_it(tmp_path: Path) -> None:
    path = tmp_path / "read.db"
    with pytest.raises(FileNotFoundError):
        SQLiteReadStoreReader.open(path)
    store = SQLiteReadStoreWriter.open(path)
    try:
        with pytest.raises(StorageLocked):
            SQLiteReadStoreWriter.open(path)
        connection = sqlite3.connect(path)
        assert connection.execute("PRAGMA user_version").fetchone()[0] == latest_version("read_store")
        connection.close()
        SQLiteReadStoreReader.open(path).close()
    finally:
        store.close()
    SQLiteReadStoreWriter.open(path).close()  # released on close
