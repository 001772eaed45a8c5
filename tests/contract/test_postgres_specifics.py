"""What only the PostgreSQL backend has: migrations tracked in a table, foreign databases refused,
passwords kept out of messages, sessions opened again after the server dropped them, and the
projector's leadership."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postgres_support import fresh_database

from eventcore.errors import StorageRefused, Unavailable
from eventcore.event_store import StorageFailure
from eventcore.events import PendingAppend
from eventcore.postgres.changes import PostgresChanges
from eventcore.postgres.connection import DatabaseNotReady, redact
from eventcore.postgres.event_store import PostgresEventLogReader, PostgresEventStore
from eventcore.postgres.read_store import PostgresReadStoreReader, PostgresReadStoreWriter
from eventcore.read_store import Collection
from orders.events import OrderCreated, OrderItem, order_codec

pytestmark = pytest.mark.postgres


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_database() as database:
        yield database


def created(order_id: str) -> OrderCreated:
    return OrderCreated(order_id, "c", (OrderItem("p", 1, 5),), 5)


def drop_sessions(url: str) -> None:
    """What a server restart or a failover does to every session of the database."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_migrations_are_tracked_and_applied_once_by_concurrent_writers(url: str) -> None:
    stores: list[PostgresEventStore] = []
    threads = [
        threading.Thread(target=lambda: stores.append(PostgresEventStore.open(url, order_codec())))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stores) == 4
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT schema, version, name FROM eventcore_migrations").fetchall()
    assert rows == [("event_store", 1, "0001_create_events.sql")]
    for store in stores:
        store.close()


def test_the_database_is_created_when_missing() -> None:
    with fresh_database() as server_side:
        missing = server_side + "_new"
        try:
            store = PostgresEventStore.open(missing, order_codec())
            assert store.head_position() == 0
            store.close()
        finally:
            with psycopg.connect(server_side, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {missing.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.mark.parametrize("table", ["events", "projections"])
def test_a_database_whose_table_is_not_ours_is_refused_and_left_alone(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (id integer)")
    with pytest.raises(StorageRefused, match="not created by this program"):
        if table == "events":
            PostgresEventStore.open(url, order_codec())
        else:
            PostgresReadStoreWriter.open(url)
    with psycopg.connect(url) as connection:
        columns = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    assert columns == [("id",)]


def test_a_newer_schema_is_refused(url: str) -> None:
    PostgresEventStore.open(url, order_codec()).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO eventcore_migrations (schema, version, name) VALUES ('event_store', 9, 'x')"
        )
    with pytest.raises(StorageRefused, match="newer than this code"):
        PostgresEventStore.open(url, order_codec())


def test_readers_wait_for_their_writer(url: str) -> None:
    with pytest.raises(DatabaseNotReady):
        PostgresEventLogReader.open(url, order_codec())
    with pytest.raises(DatabaseNotReady):
        PostgresReadStoreReader.open(url)
    with pytest.raises(DatabaseNotReady):
        PostgresEventLogReader.open(url + "_nowhere", order_codec())


def test_a_password_is_redacted() -> None:
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://h/db") == "postgresql://h/db"
    with pytest.raises(Unavailable) as refused:
        PostgresEventStore.open("postgresql://u:secret-pw@127.0.0.1:1/db", order_codec())
    assert "secret-pw" not in str(refused.value) and "u:***@127.0.0.1:1" in str(refused.value)


def test_sessions_the_server_dropped_are_opened_again(url: str) -> None:
    store = PostgresEventStore.open(url, order_codec())
    reader = PostgresEventLogReader.open(url, order_codec())
    try:
        store.append(PendingAppend("s-1", 0, [created("1")]))
        drop_sessions(url)
        with pytest.raises(StorageFailure):  # the call that finds the session gone fails, retryable
            store.append(PendingAppend("s-2", 0, [created("2")]))
        assert store.append(PendingAppend("s-2", 0, [created("2")]))[0].position == 2
        with pytest.raises(Unavailable):
            reader.head_position()
        assert reader.head_position() == 2
    finally:
        store.close()
        reader.close()


def test_a_projector_whose_session_was_dropped_leads_again_before_it_writes(url: str) -> None:
    writer = PostgresReadStoreWriter.open(url)
    assert writer is not None
    try:
        drop_sessions(url)
        with pytest.raises(Unavailable):
            writer.checkpoints()
        with writer.transaction() as work:  # takes the leadership lock again on the new session
            work.set_checkpoint("p", 1, 3)
        with pytest.raises(Unavailable, match="active projector"):
            PostgresReadStoreWriter.open(url)
    finally:
        writer.close()


def test_a_failed_snapshot_leaves_the_read_session_usable_and_a_dropped_one_is_opened_again(
    url: str,
) -> None:
    """A snapshot starts its transaction in the same round trip as its checkpoint read; a query that
    fails inside it (here, on a table that does not exist) must still end that transaction."""
    writer = PostgresReadStoreWriter.open(url)
    assert writer is not None
    missing = Collection("never_created")
    try:
        with writer.transaction() as work:
            work.set_checkpoint("p", 1, 4)
        reader = writer.reader()
        try:
            with pytest.raises(Unavailable), reader.snapshot() as view:
                view.get(missing, "k")
            with reader.snapshot() as view:
                assert view.position("p") == 4 and view.parked_streams() == []
            assert reader.positions() == {"p": 4}
            drop_sessions(url)
            with pytest.raises(Unavailable), reader.snapshot():
                pass
            with reader.snapshot() as view:
                assert [c.position for c in view.checkpoints()] == [4]
        finally:
            reader.close()
    finally:
        writer.close()


def test_one_projector_leads_and_a_standby_takes_over_when_it_goes(url: str) -> None:
    leader = PostgresReadStoreWriter.open(url)
    assert leader is not None
    with pytest.raises(Unavailable, match="active projector"):
        PostgresReadStoreWriter.open(url)  # without a stop event: refused at once
    stop = threading.Event()
    timer = threading.Timer(0.3, leader.close)
    timer.start()
    standby = PostgresReadStoreWriter.open(url, stop)  # waits, then leads
    assert standby is not None
    with standby.transaction() as work:
        work.set_checkpoint("p", 1, 7)
    assert standby.checkpoints()["p"].position == 7
    standby.close()
    stop.set()


def test_commits_of_both_stores_are_announced_to_listeners(url: str) -> None:
    store = PostgresEventStore.open(url, order_codec())
    read_model = PostgresReadStoreWriter.open(url)
    assert read_model is not None
    changes = PostgresChanges(url)
    signal = changes.signal()
    try:
        time.sleep(0.5)  # the listener's session is up
        signal.wait(0)
        store.append(PendingAppend("s-1", 0, [created("1")]))
        assert signal.wait(5.0), "an append was not announced"
        with read_model.transaction() as work:
            work.set_checkpoint("p", 1, 1)
        assert signal.wait(5.0), "a projector commit was not announced"
        assert not signal.wait(0.3)  # nothing more was committed
    finally:
        changes.close()
        read_model.close()
        store.close()
