"""Four write services on one PostgreSQL event store, on overlapping orders, while a reader tails the log.

Every position must arrive at the tailing reader exactly once and in order, with no gap, whatever
the writers do; every acknowledged command is in the log exactly once (one of the writers is killed
mid-run, and none of its acknowledged commands may be lost); refused commands appended nothing;
retries on another writer are answered from the first; and the read models built afterwards agree
with the log.

ORDERS_PG_COMMANDS_PER_WRITER sets the load (default 600, about 20 s here; `make soak-postgres` runs
the 2,000 per writer of the release's acceptance test).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e_support import ServiceProcess, Trio, create_request, unique, wait_for
from postgres_support import database_url, fresh_database_name, require_server

from eventcore.postgres.event_store import PostgresEventLogReader
from orders.events import order_codec
from orders_api.v1 import orders_pb2, orders_pb2_grpc

pytestmark = [pytest.mark.postgres, pytest.mark.own_databases]  # whatever ORDERS_E2E_BACKEND says

WRITERS = 4
COMMANDS_PER_WRITER = int(os.environ.get("ORDERS_PG_COMMANDS_PER_WRITER", "600"))
CLIENTS_PER_WRITER = 6
SEED_ORDERS = 40
REFUSALS = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS}
FINAL_STATUS = {
    "OrderCreated": orders_pb2.ORDER_STATUS_PENDING,
    "OrderConfirmed": orders_pb2.ORDER_STATUS_CONFIRMED,
    "OrderShipped": orders_pb2.ORDER_STATUS_SHIPPED,
    "OrderCancelled": orders_pb2.ORDER_STATUS_CANCELLED,
}


@dataclass
class Ledger:
    """What the clients were told, shared by all client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    orders: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # command_id -> (position, version)
    refused: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)  # no answer: the writer was killed
    retried: list[tuple[str, int, int]] = field(default_factory=list)  # (command_id, first, retry position)
    problems: list[str] = field(default_factory=list)
    lost_writers: set[int] = field(default_factory=set)


class Tail(threading.Thread):
    """Follows the log as a consumer would and insists on positions 1, 2, 3, ... as they commit."""

    def __init__(self, url: str) -> None:
        super().__init__(name="tail", daemon=True)
        self.url = url
        self.seen: list[int] = []
        self.problem = ""
        self.done = threading.Event()

    def run(self) -> None:
        reader = PostgresEventLogReader.open(self.url, order_codec())
        try:
            while True:
                finishing = self.done.is_set()
                last = self.seen[-1] if self.seen else 0
                events = reader.read_all(last, 1000)
                for offset, event in enumerate(events, start=1):
                    if event.position != last + offset:
                        self.problem = f"after position {last + offset - 1} the reader saw {event.position}"
                        return
                self.seen += [e.position for e in events]
                if finishing and not events:
                    return
                if not events:
                    time.sleep(0.002)
        finally:
            reader.close()


def command_for(rng: random.Random, ledger: Ledger, order_id: str) -> tuple[str, Any, Any]:
    """(rpc name, request) of a transition on an existing order, sometimes with an expected version."""
    with ledger.lock:
        version = ledger.versions.get(order_id, 1)
    expected = {"expected_version": version} if rng.random() < 0.3 else {}
    command_id = unique("cmd")
    choice = rng.random()
    if choice < 0.45:
        return (
            "ConfirmOrder",
            orders_pb2.ConfirmOrderRequest(order_id=order_id, command_id=command_id, **expected),
            command_id,
        )
    if choice < 0.8:
        return (
            "ShipOrder",
            orders_pb2.ShipOrderRequest(
                order_id=order_id, tracking_number="T-1", command_id=command_id, **expected
            ),
            command_id,
        )
    return (
        "CancelOrder",
        orders_pb2.CancelOrderRequest(order_id=order_id, reason="r", command_id=command_id, **expected),
        command_id,
    )


def client(
    seed: int, stubs: list[orders_pb2_grpc.OrderCommandServiceStub], home: int, count: int, ledger: Ledger
) -> None:
    rng = random.Random(seed)
    stub = stubs[home]
    for _ in range(count):
        with ledger.lock:
            pool = list(ledger.orders)
        if rng.random() < 0.25 or not pool:
            order_id = unique("co")
            command_id = f"{order_id}-create"
            name, request = (
                "CreateOrder",
                create_request(order_id, f"cust-{rng.randrange(5)}", command_id=command_id),
            )
        else:
            order_id = rng.choice(pool)
            name, request, command_id = command_for(rng, ledger, order_id)
        try:
            reply = getattr(stub, name)(request, timeout=30)
        except grpc.RpcError as error:
            with ledger.lock:
                if error.code() in REFUSALS:
                    ledger.refused.add(command_id)
                elif error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    ledger.unknown.add(command_id)
                    ledger.lost_writers.add(home)
                    if home != len(stubs) - 1:
                        ledger.problems.append(
                            f"{name} {command_id} on writer {home}: {error.code().name} {error.details()}"
                        )
                    return  # this client's writer is gone
                else:
                    ledger.problems.append(f"{name} {command_id}: {error.code().name} {error.details()}")
            continue
        with ledger.lock:
            ledger.acked[command_id] = (reply.position, reply.stream_version)
            ledger.versions[order_id] = max(ledger.versions.get(order_id, 0), reply.stream_version)
            if name == "CreateOrder":
                ledger.orders.append(order_id)
        if reply.deduplicated:
            with ledger.lock:
                ledger.problems.append(f"{command_id} was new but answered as deduplicated")
        if rng.random() < 0.1:  # the client retries on another writer: answered from the first
            other = stubs[(home + 1 + rng.randrange(len(stubs) - 1)) % len(stubs)]
            try:
                again = getattr(other, name)(request, timeout=30)
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    with ledger.lock:
                        ledger.problems.append(
                            f"retry of {command_id}: {error.code().name} {error.details()}"
                        )
                continue
            with ledger.lock:
                ledger.retried.append((command_id, reply.position, again.position))
                if not again.deduplicated:
                    ledger.problems.append(f"retry of {command_id} on another writer was not deduplicated")


def own_dir(parent: Path, index: int) -> Path:
    """A log directory per process (ServiceProcess names its files after the module)."""
    path = parent / f"writer-{index}"
    path.mkdir()
    return path


@pytest.fixture
def urls() -> Iterator[tuple[str, str]]:
    require_server()
    with fresh_database_name() as events, fresh_database_name() as read:
        yield database_url(events), database_url(read)


def test_four_writers_keep_one_gap_free_commit_ordered_log(urls: tuple[str, str], tmp_path: Path) -> None:
    events_url, read_url = urls
    writers = [
        ServiceProcess(
            "write_service", ["--listen", "127.0.0.1:0", "--event-store", events_url], own_dir(tmp_path, i)
        )
        for i in range(WRITERS)
    ]
    channels: list[grpc.Channel] = []
    tail: Tail | None = None
    trio = Trio(tmp_path / "readers", event_store=events_url, read_database=read_url)
    try:
        for writer in writers:  # all at once: they race to create the database and migrate it
            writer.start()
        channels = [grpc.insecure_channel(w.wait_listening()) for w in writers]
        stubs = [orders_pb2_grpc.OrderCommandServiceStub(c) for c in channels]
        ledger = Ledger()
        for i in range(SEED_ORDERS):
            order_id = unique("seed")
            reply = stubs[i % WRITERS].CreateOrder(
                create_request(order_id, "cust-seed", command_id=f"{order_id}-c")
            )
            ledger.acked[f"{order_id}-c"] = (reply.position, 1)
            ledger.orders.append(order_id)
        tail = Tail(events_url)
        tail.start()

        per_client = COMMANDS_PER_WRITER // CLIENTS_PER_WRITER
        threads = [
            threading.Thread(target=client, args=(w * 100 + c, stubs, w, per_client, ledger))
            for w in range(WRITERS)
            for c in range(CLIENTS_PER_WRITER)
        ]
        for thread in threads:
            thread.start()
        wait_for(
            lambda: (
                len(ledger.acked) + len(ledger.refused) >= SEED_ORDERS + WRITERS * COMMANDS_PER_WRITER // 3
            ),
            120,
            "a third of the load",
        )
        writers[-1].kill9()  # mid-run, mid-batch: none of its acknowledged commands may be lost
        for thread in threads:
            thread.join(timeout=300)
        tail.done.set()
        tail.join(timeout=60)
        assert not tail.problem, tail.problem
        assert not ledger.problems, ledger.problems[:10]

        with psycopg.connect(events_url) as connection:
            rows = connection.execute(
                "SELECT position, stream_id, stream_version, type, command_id FROM events ORDER BY position"
            ).fetchall()
            commands = {
                row[0]: row[1:]
                for row in connection.execute(
                    "SELECT command_id, stream_id, first_position, last_position FROM commands"
                ).fetchall()
            }
        head = len(rows)
        assert [r[0] for r in rows] == list(range(1, head + 1))
        assert tail.seen == list(range(1, head + 1)), "the tailing reader saw a different sequence"
        versions: dict[str, list[int]] = defaultdict(list)
        for _, stream_id, version, _, _ in rows:
            versions[stream_id].append(version)
        assert all(v == list(range(1, len(v) + 1)) for v in versions.values())

        per_command = Counter(r[4] for r in rows if r[4])
        for command_id, (position, _) in ledger.acked.items():
            assert command_id in commands, f"acknowledged {command_id} is not in the log"
            _, first, last = commands[command_id]
            assert last == position and per_command[command_id] == last - first + 1
        assert not (ledger.refused & set(per_command)), "a refused command appended events"
        assert all(first == again for _, first, again in ledger.retried)
        assert set(per_command) <= set(ledger.acked) | ledger.unknown
        killed = {c for c in ledger.acked if c in ledger.unknown}
        assert not killed

        trio.start_projector()
        trio.start_read()
        trio.wait_projected(head, timeout=60)
        last_type = {stream_id: type_name for _, stream_id, _, type_name, _ in rows}
        for order_id in ledger.orders:
            answer = trio.queries.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=10)
            assert answer.order.status == FINAL_STATUS[last_type[f"order-{order_id}"]]
            assert answer.order.version == len(versions[f"order-{order_id}"])
        print(
            f"{head} events from {len(ledger.acked)} acknowledged commands, {len(ledger.refused)} refused,"
            f" {len(ledger.retried)} retried elsewhere, {len(ledger.unknown)} unanswered (killed writer)"
        )
        for writer in writers[:-1]:
            assert writer.stop(signal.SIGTERM) == 0, writer.stderr_tail()
    finally:
        if tail is not None:
            tail.done.set()
        for channel in channels:
            channel.close()
        trio.close()
        for writer in writers:
            writer.cleanup()
