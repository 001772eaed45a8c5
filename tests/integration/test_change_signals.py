"""Change signals: a commit of a SQLite writer wakes followers in threads and coroutines at once,
whichever started first, and across a restart of the writer; nothing wakes them otherwise."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from eventcore.changes import ChangeHub, ManualChanges
from eventcore.events import PendingAppend
from eventcore.sqlite.changes import FileChanges
from eventcore.sqlite.event_store import SQLiteEventStore
from eventcore.sqlite.read_store import SQLiteReadStoreWriter
from orders.events import OrderConfirmed, order_codec

WAIT = 5.0  # generous: a wake-up arrives within milliseconds, a missing one fails the test


def append(store: SQLiteEventStore, version: int) -> None:
    store.append(PendingAppend("order-1", version, [OrderConfirmed("1")]))


def test_a_commit_wakes_a_waiting_thread_and_nothing_else_does(tmp_path: Path) -> None:
    store = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
    source = FileChanges(tmp_path / "events.db")
    try:
        signal = source.signal()
        assert not signal.wait(0.2)
        woke = threading.Event()

        def follower() -> None:
            if signal.wait(WAIT):
                woke.set()

        thread = threading.Thread(target=follower)
        thread.start()
        time.sleep(0.05)
        append(store, 0)
        thread.join()
        assert woke.is_set()
        assert not signal.wait(0.2), "one commit woke the follower twice"
    finally:
        source.close()
        store.close()


def test_a_follower_started_before_the_writer_learns_when_the_file_appears(tmp_path: Path) -> None:
    source = FileChanges(tmp_path / "read.db")
    try:
        signal = source.signal()
        writer = SQLiteReadStoreWriter.open(tmp_path / "read.db")
        assert signal.wait(WAIT), "creating the file announced nothing"
        writer.close()
        signal.wait(0.05)  # closing may announce; drain it
        writer = SQLiteReadStoreWriter.open(tmp_path / "read.db")  # a restarted writer
        assert signal.wait(WAIT)
        with writer.transaction() as work:
            work.set_checkpoint("p", 1, 1)
        assert signal.wait(WAIT), "a commit of the restarted writer announced nothing"
        writer.close()
    finally:
        source.close()


async def test_a_commit_wakes_every_waiting_coroutine(tmp_path: Path) -> None:
    store = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
    source = FileChanges(tmp_path / "events.db")
    try:
        signals = [source.signal() for _ in range(20)]
        waiting = [asyncio.create_task(s.wait_async(WAIT)) for s in signals]
        await asyncio.sleep(0.05)
        append(store, 0)
        assert await asyncio.gather(*waiting) == [True] * 20
        assert not await signals[0].wait_async(0.1)
    finally:
        source.close()
        store.close()


def test_an_announcement_between_two_waits_is_not_lost() -> None:
    hub = ChangeHub()
    signal = hub.signal()
    hub.announce()
    assert signal.wait(0.0)
    assert not signal.wait(0.0)


def test_wake_ends_a_wait_at_once() -> None:
    source = ManualChanges()
    signal = source.signal()
    threading.Timer(0.05, signal.wake).start()
    started = time.monotonic()
    assert signal.wait(WAIT)
    assert time.monotonic() - started < WAIT
