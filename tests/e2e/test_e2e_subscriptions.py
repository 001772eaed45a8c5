"""A subscriber that stops reading, against the real read service process: its memory stays flat
while tens of thousands of events are written, and the subscriber, once it reads again, gets what
the transport held, then fell_behind, then the next event from the store (that every event then
comes once, in order, is tests/integration/test_event_store_service.py's part).

The test itself is the event store's single writer (batched appends, no write service), so the
log grows much faster than any consumer could read it."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from e2e_support import RPC_TIMEOUT, ServiceProcess

from eventcore.events import PendingAppend
from eventcore.sqlite.event_store import SQLiteEventStore
from eventcore.sqlite.files import Synchronous
from eventcore.sqlite.read_store import SQLiteReadStoreWriter
from orders.events import OrderCreated, OrderItem, order_codec
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc

BATCH = 1_000
ROUND = 10_000  # events written while the subscriber reads nothing, per round


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


def write_round(store: SQLiteEventStore, first: int) -> None:
    for start in range(first, first + ROUND, BATCH):
        store.append_batch(
            [
                PendingAppend(
                    f"order-m{n}", 0, [OrderCreated(f"m{n}", "cust-m", (OrderItem("sku", 1, 5),), 5)]
                )
                for n in range(start, start + BATCH)
            ]
        )


def test_a_stalled_subscriber_costs_the_read_service_no_memory_then_falls_behind(
    tmp_path: Path,
) -> None:
    events_db, read_db = tmp_path / "events.db", tmp_path / "read.db"
    store = SQLiteEventStore.open(events_db, order_codec(), Synchronous.OFF)
    SQLiteReadStoreWriter.open(read_db).close()  # the read database exists: the service serves
    read = ServiceProcess(
        "read_service",
        ["--listen", "127.0.0.1:0", "--read-db", str(read_db), "--event-store", str(events_db)],
        tmp_path,
    )
    try:
        read.start()
        address = read.wait_listening()
        # The client's transport must not buffer the stream for it: no BDP window growth.
        options = [("grpc.http2.bdp_probe", 0)]
        with grpc.insecure_channel(address, options=options) as channel:
            stub = orders_pb2_grpc.EventStoreServiceStub(channel)
            grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT)
            call = stub.SubscribeEvents(pb.SubscribeEventsRequest(), timeout=120)
            first = next(call)
            assert first.WhichOneof("message") == "caught_up"
            write_round(store, 0)  # the live window fills up once
            time.sleep(1.0)
            after_first = rss_kib(read.pid)
            for round_number in range(1, 4):
                write_round(store, round_number * ROUND)
            time.sleep(1.0)
            after_more = rss_kib(read.pid)
            positions: list[int] = []
            for message in call:  # what the transport held, then the news that it fell behind
                kind = message.WhichOneof("message")
                if kind == "fell_behind":
                    assert message.fell_behind.position == len(positions)
                    break
                assert kind == "event", kind
                positions.append(message.event.position)
            assert positions == list(range(1, len(positions) + 1))
            assert len(positions) < 4 * ROUND
            resumed = next(call)  # served from the store again, from where it was
            assert (resumed.WhichOneof("message"), resumed.event.position) == ("event", len(positions) + 1)
            call.cancel()
        growth = after_more - after_first
        assert growth < 8 * 1024, f"RSS {after_first} -> {after_more} KiB over 30,000 more unread events"
        assert read.stop() == 0
    finally:
        read.cleanup()
        store.close()
