"""The five failure modes of the seed exercise, each caught by a guard that these tests exercise:

1. a query handler that writes: the read side has no way to write;
2. events appended but never projected: the runner catches up to the head, and every projection
   handles every order event type;
3. a command handler that decides no events: the bus refuses it and appends nothing;
4. a projection that is not idempotent: delivering an event again leaves the same rows;
5. dispatch to an unregistered handler: both buses raise Unregistered.

(The SQLite side of 1 and 4, the read-only connection and a replay into SQLite, is in
tests/contract/test_sqlite_specifics.py.)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from eventcore.command_bus import Aggregate, CommandBus, CommandHandler, Expects
from eventcore.errors import HandlerContractViolated, Unregistered
from eventcore.event_store import EventLogReader
from eventcore.events import CommandRecord, RecordedEvent
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import ProjectionRunner
from eventcore.query_bus import QueryBus, QueryHandler
from eventcore.read_store import ReadStoreReader, ReadView
from orders import queries
from orders.events import EVENT_TYPES, OrderCancelled, OrderCreated, order_codec
from orders.projections import (
    CUSTOMER_ORDERS,
    CUSTOMER_SUMMARY,
    CUSTOMERS,
    ORDER_VIEW,
    ORDERS,
    PRODUCT_SALES,
    PROJECTIONS,
)
from servicekit.status import status_code_of

from .conftest import order_bus
from .support import cancel, confirm, create, item, ship


async def workload(bus: CommandBus) -> dict[str, tuple[str, str]]:
    """Orders in every status for three customers; returns order_id -> (customer, final status)."""
    final: dict[str, tuple[str, str]] = {}
    for i in range(24):
        order_id, customer = f"o-{i:02}", f"cust-{i % 3}"
        await bus.dispatch(create(order_id, customer, (item("p", i % 4 + 1, 100 + i),)))
        status = "PENDING"
        if i % 4 in (1, 2):
            await bus.dispatch(confirm(order_id))
            status = "CONFIRMED"
        if i % 4 == 2:
            await bus.dispatch(ship(order_id, f"T-{i}"))
            status = "SHIPPED"
        if i % 4 == 3 or i % 8 == 1:
            await bus.dispatch(cancel(order_id, f"reason {i}"))
            status = "CANCELLED"
        final[order_id] = (customer, status)
    return final


def dump(store: InMemoryReadStoreWriter) -> dict[str, dict[str, Any]]:
    """Every row of every collection, decoded (the in-memory store's tables are the ground truth;
    the read interface has no "list everything", on purpose)."""
    return {
        name: {key: json.loads(text) for key, text in table.items()}
        for name, table in store._state.tables.items()
    }


# -- 1. a query handler that writes ---------------------------------------------------------------


@dataclass(frozen=True)
class SneakyQuery:
    order_id: str


def test_the_in_memory_read_view_has_no_write_methods(read_store: InMemoryReadStoreWriter) -> None:
    read_store.reset("order_view", 1, [ORDERS])
    reader = read_store.reader()
    with reader.snapshot() as view:
        for name in ("put", "delete", "set_checkpoint", "transaction", "reset", "execute"):
            assert not hasattr(view, name), name
    for name in ("put", "delete", "transaction", "reset"):
        assert not hasattr(reader, name), name


def test_a_query_handler_that_tries_to_write_fails_and_changes_nothing(
    read_store: InMemoryReadStoreWriter,
) -> None:
    read_store.reset("order_view", 1, [ORDERS])
    with read_store.transaction() as work:
        document = {"order_id": "o-1", "customer_id": "c", "status": "PENDING", "created_position": 1}
        work.put(ORDERS, "o-1", document)
        work.set_checkpoint("order_view", 1, 1)
    before = dump(read_store)

    def sneaky(view: ReadView, query: SneakyQuery) -> Any:
        document = view.get(ORDERS, query.order_id)
        assert document is not None
        document["status"] = "SHIPPED"  # mutating a returned document must not reach the store
        view.put(ORDERS, query.order_id, document)  # type: ignore[attr-defined]

    bus = QueryBus()
    bus.register(SneakyQuery, QueryHandler(("order_view",), sneaky))
    with pytest.raises(AttributeError, match="put"):
        bus.ask(read_store.reader(), SneakyQuery("o-1"))
    assert dump(read_store) == before
    with read_store.reader().snapshot() as view:
        assert view.get(ORDERS, "o-1")["status"] == "PENDING"  # type: ignore[index]


def test_query_results_are_copies(read_store: InMemoryReadStoreWriter) -> None:
    read_store.reset("customer_summary", 1, [CUSTOMERS, CUSTOMER_ORDERS])
    bus = queries.query_bus()
    reader: ReadStoreReader = read_store.reader()
    summary = bus.ask(reader, queries.GetCustomerSummary("cust-1")).value
    summary["order_count"] = 99
    assert bus.ask(reader, queries.GetCustomerSummary("cust-1")).value["order_count"] == 0


# -- 2. events appended but never projected -------------------------------------------------------


@pytest.mark.parametrize("projection", [ORDER_VIEW, CUSTOMER_SUMMARY], ids=lambda p: p.name)
@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_order_event_type_is_handled_by_the_status_keeping_projections(
    projection: Any, event_type: type
) -> None:
    assert projection.handles(event_type)


def test_every_event_type_the_codec_knows_is_projected() -> None:
    known = set(order_codec().known_types())
    assert known == set(EVENT_TYPES)
    for projection in PROJECTIONS:
        assert set(projection.handlers) <= known, projection.name
    # product sales change only when an order comes or goes
    assert set(PRODUCT_SALES.handlers) == {OrderCreated, OrderCancelled}


async def test_after_running_to_idle_every_appended_event_is_reflected(
    store: InMemoryEventStore, read_store: InMemoryReadStoreWriter, runner: ProjectionRunner
) -> None:
    bus = order_bus(store)
    try:
        final = await workload(bus)
    finally:
        await bus.close()
    head = store.head_position()
    assert head > 50

    read = runner.run_until_idle()
    assert read == head  # every event read exactly once, over several batches of 7
    assert runner.run_once() == 0
    assert runner.positions == {p.name: head for p in PROJECTIONS}
    checkpoints = read_store.checkpoints()
    assert {name: c.position for name, c in checkpoints.items()} == {p.name: head for p in PROJECTIONS}
    assert {name: c.version for name, c in checkpoints.items()} == {p.name: p.version for p in PROJECTIONS}

    reader = read_store.reader()
    bus_q = queries.query_bus()
    for order_id, (customer, status) in final.items():
        history = store.read_stream(f"order-{order_id}")
        result = bus_q.ask(reader, queries.GetOrder(order_id))
        assert result.read_model_version == head
        document = result.value
        assert (document["customer_id"], document["status"]) == (customer, status)
        assert document["version"] == len(history)
        assert document["total"] == history[0].data.total
        assert document["created_position"] == history[0].position
        assert document["created_at"] == history[0].recorded_at_us
        was_confirmed = any(type(e.data).__name__ == "OrderConfirmed" for e in history)
        assert bool(document["confirmed_at"]) == was_confirmed
        assert document["tracking_number"] == (f"T-{int(order_id[2:])}" if status == "SHIPPED" else "")
        assert document["cancel_reason"] == (f"reason {int(order_id[2:])}" if status == "CANCELLED" else "")
    for customer in {c for c, _ in final.values()}:
        mine = {o: s for o, (c, s) in final.items() if c == customer}
        summary = bus_q.ask(reader, queries.GetCustomerSummary(customer)).value
        assert summary["order_count"] == len(mine)
        for status in ("PENDING", "CONFIRMED", "SHIPPED", "CANCELLED"):
            assert summary[f"{status.lower()}_count"] == sum(s == status for s in mine.values())
        totals = {o: store.read_stream(f"order-{o}")[0].data.total for o in mine}
        assert summary["total_value"] == sum(t for o, t in totals.items() if mine[o] != "CANCELLED")

    # more events later: the checkpoint is behind until the runner runs again
    bus = order_bus(store)
    try:
        await bus.dispatch(confirm("o-00"))
    finally:
        await bus.close()
    assert read_store.checkpoints()["order_view"].position == head
    assert runner.run_until_idle() == 1
    assert all(c.position == head + 1 for c in read_store.checkpoints().values())
    assert bus_q.ask(reader, queries.GetOrder("o-00")).value["status"] == "CONFIRMED"


async def test_a_new_runner_resumes_from_the_stored_checkpoints(
    store: InMemoryEventStore, read_store: InMemoryReadStoreWriter, runner: ProjectionRunner
) -> None:
    bus = order_bus(store)
    try:
        await workload(bus)
        runner.run_until_idle()
        rows = dump(read_store)
        await bus.dispatch(create("late-1", "cust-0"))
    finally:
        await bus.close()
    again = ProjectionRunner(store, read_store, PROJECTIONS)
    assert again.run_until_idle() == 1  # only the new event is read
    after = dump(read_store)
    assert after["orders"] == {**rows["orders"], "late-1": after["orders"]["late-1"]}


# -- 3. a command handler that decides no events --------------------------------------------------


@dataclass(frozen=True)
class Touch:
    thing_id: str
    command_id: str = ""
    expected_version: int | None = None


def silent_bus(store: InMemoryEventStore) -> CommandBus:
    bus = order_bus(store)
    aggregate: Aggregate[int] = Aggregate(0, lambda state, event: state + 1)
    bus.register(
        Touch,
        CommandHandler(
            aggregate,
            Expects.NEW_STREAM,
            lambda c: f"thing-{c.thing_id}",
            lambda s, c: [],
            lambda c: f"thing {c.thing_id!r}",
        ),
    )
    return bus


async def test_a_command_handler_that_decides_no_events_is_refused(store: InMemoryEventStore) -> None:
    bus = silent_bus(store)
    try:
        with pytest.raises(HandlerContractViolated, match="Touch") as refused:
            await bus.dispatch(Touch("t-1", command_id="cmd-1"))
        assert status_code_of(refused.value) is grpc.StatusCode.INTERNAL
        assert store.head_position() == 0
        assert store.find_command("cmd-1") is None
        # the bus keeps working, and a batch mixing it with good commands keeps the good ones
        results = await asyncio.gather(
            bus.dispatch(create("o-1")),
            bus.dispatch(Touch("t-2")),
            bus.dispatch(create("o-2")),
            return_exceptions=True,
        )
        assert isinstance(results[1], HandlerContractViolated)
        assert [r.position for r in (results[0], results[2])] == [1, 2]  # type: ignore[union-attr]
        assert store.read_stream("thing-t-2") == []
    finally:
        await bus.close()


# -- 4. a projection that is not idempotent -------------------------------------------------------


class OverlappingReader(EventLogReader):
    """A log reader that redelivers the last `overlap` events before every batch it is asked for."""

    def __init__(self, inner: EventLogReader, overlap: int) -> None:
        self._inner = inner
        self._overlap = overlap

    def head_position(self) -> int:
        return self._inner.head_position()

    def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        start = max(after_position - self._overlap, 0)
        return self._inner.read_all(start, limit + after_position - start)

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        return self._inner.read_stream(stream_id)

    def find_command(self, command_id: str) -> CommandRecord | None:
        return self._inner.find_command(command_id)


class DuplicatingReader(OverlappingReader):
    """A log reader that hands every event over twice in a row within its batch."""

    def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        return [e for event in self._inner.read_all(after_position, limit) for e in (event, event)]


def projected_reference(store: InMemoryEventStore) -> dict[str, dict[str, Any]]:
    reference = InMemoryReadStoreWriter()
    ProjectionRunner(store, reference, PROJECTIONS).run_until_idle()
    return dump(reference)


@pytest.fixture
async def history(store: InMemoryEventStore) -> InMemoryEventStore:
    bus = order_bus(store)
    try:
        await workload(bus)
    finally:
        await bus.close()
    return store


def drive_to_idle(runner: ProjectionRunner, rounds: int = 1000) -> None:
    """run_until_idle, bounded: a reader that redelivers must still let the runner become idle."""
    for _ in range(rounds):
        if runner.run_once() == 0:
            return
    raise AssertionError(f"the runner was not idle after {rounds} batches")


async def test_overlapping_batches_leave_the_same_rows(history: InMemoryEventStore) -> None:
    expected = projected_reference(history)
    read_store = InMemoryReadStoreWriter()
    runner = ProjectionRunner(OverlappingReader(history, overlap=4), read_store, PROJECTIONS, batch_size=5)
    drive_to_idle(runner)
    assert dump(read_store) == expected
    assert all(c.position == history.head_position() for c in read_store.checkpoints().values())


async def test_an_event_delivered_twice_in_one_batch_is_applied_once(history: InMemoryEventStore) -> None:
    expected = projected_reference(history)
    read_store = InMemoryReadStoreWriter()
    runner = ProjectionRunner(DuplicatingReader(history, 0), read_store, PROJECTIONS, batch_size=9)
    drive_to_idle(runner)
    assert dump(read_store) == expected


@pytest.mark.parametrize("rewind_to", [0, 1, 17])
async def test_a_runner_that_lost_its_position_leaves_the_same_rows(
    history: InMemoryEventStore, rewind_to: int
) -> None:
    """The runner's in-memory position is reset (as after an ambiguous commit): the events it
    delivers again are at or below the stored checkpoints and must change nothing."""
    expected = projected_reference(history)
    read_store = InMemoryReadStoreWriter()
    runner = ProjectionRunner(history, read_store, PROJECTIONS, batch_size=10)
    runner.run_until_idle()
    assert dump(read_store) == expected
    runner._positions = {p.name: rewind_to for p in PROJECTIONS}  # lose track of the position
    runner.run_until_idle()
    assert dump(read_store) == expected
    assert all(c.position == history.head_position() for c in read_store.checkpoints().values())


# -- 5. dispatch to an unregistered handler -------------------------------------------------------


@dataclass(frozen=True)
class NobodysCommand:
    command_id: str = ""
    expected_version: int | None = None


@dataclass(frozen=True)
class NobodysQuery:
    key: str = ""


async def test_command_bus_refuses_an_unregistered_command(store: InMemoryEventStore) -> None:
    bus = order_bus(store)
    try:
        with pytest.raises(Unregistered, match="NobodysCommand") as refused:
            await bus.dispatch(NobodysCommand())
        assert status_code_of(refused.value) is grpc.StatusCode.INTERNAL
        assert store.head_position() == 0
        empty = CommandBus(store)
        with pytest.raises(Unregistered, match="CreateOrder"):
            await empty.dispatch(create("o-1"))
        await empty.close()
        assert store.head_position() == 0
    finally:
        await bus.close()


def test_query_bus_refuses_an_unregistered_query(read_store: InMemoryReadStoreWriter) -> None:
    bus = queries.query_bus()
    reader = read_store.reader()
    for attempt in (bus.ask, bus.read_model_version):
        with pytest.raises(Unregistered, match="NobodysQuery"):
            attempt(reader, NobodysQuery())
    with pytest.raises(Unregistered):
        bus.validate(NobodysQuery())
    with pytest.raises(Unregistered, match="GetOrder"):
        QueryBus().ask(reader, queries.GetOrder("o-1"))


def test_query_bus_refuses_registering_twice() -> None:
    bus = queries.query_bus()
    with pytest.raises(ValueError, match="GetOrder"):
        bus.register(queries.GetOrder, QueryHandler(("order_view",), queries.get_order))
