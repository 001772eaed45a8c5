"""The command bus with group commit, on the in-memory event store.

Concurrent dispatches are queued and decided in order against the state their predecessors left,
then appended in one batch; each caller gets its own result or refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from eventcore.command_bus import CommandBus, CommandResult
from eventcore.errors import (
    AlreadyExists,
    CommandIdReused,
    ConcurrencyConflict,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from eventcore.event_store import AppendOutcome, StorageFailure
from eventcore.events import PendingAppend
from eventcore.memory.event_store import InMemoryEventStore
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderShipped, order_codec
from orders.order import OrderState

from .conftest import order_bus
from .support import cancel, confirm, create, item, ship


class RecordingStore(InMemoryEventStore):
    """Counts the batches it is given, and fails them on demand as a broken disk would."""

    def __init__(self) -> None:
        super().__init__(order_codec())
        self.batch_sizes: list[int] = []
        self.failing = False

    def append_batch(self, appends: Sequence[PendingAppend]) -> list[AppendOutcome]:
        self.batch_sizes.append(len(appends))
        if self.failing:
            raise StorageFailure("disk I/O error")
        return super().append_batch(appends)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture(params=[pytest.param({}, id="cached"), pytest.param({"stream_cache_size": 0}, id="uncached")])
async def bus(store: RecordingStore, request: pytest.FixtureRequest) -> AsyncIterator[CommandBus]:
    bus = order_bus(store, **request.param)
    yield bus
    await bus.close()


async def gather(bus: CommandBus, commands: Sequence[Any]) -> list[Any]:
    return await asyncio.gather(*(bus.dispatch(c) for c in commands), return_exceptions=True)


def successes(results: list[Any]) -> list[CommandResult]:
    return [r for r in results if isinstance(r, CommandResult)]


# -- group commit ---------------------------------------------------------------------------------


async def test_concurrent_dispatches_get_gap_free_positions_and_their_own_results(
    bus: CommandBus, store: RecordingStore
) -> None:
    commands = [create(f"o-{i}", f"cust-{i % 7}", (item("p", 1, i + 1),)) for i in range(200)]
    results = await gather(bus, commands)
    assert all(isinstance(r, CommandResult) for r in results), results
    assert sorted(r.position for r in results) == list(range(1, 201))
    for command, result in zip(commands, results, strict=True):
        (event,) = result.events
        assert event.data == OrderCreated(command.order_id, command.customer_id, command.items, command.total)
        assert event.stream_id == f"order-{command.order_id}"
        assert result.position == event.position
        assert result.stream_version == event.stream_version == 1
        assert result.deduplicated is False
    assert [e.position for e in store.read_all(0, 1000)] == list(range(1, 201))
    assert store.head_position() == 200
    # group commit: the commands queued together were appended in fewer transactions than commands
    assert sum(store.batch_sizes) == 200
    assert max(store.batch_sizes) > 1


async def test_commands_on_one_order_in_one_batch_build_on_each_other(
    bus: CommandBus, store: RecordingStore
) -> None:
    commands: list[Any] = []
    for i in range(20):
        commands += [create(f"o-{i}"), confirm(f"o-{i}", expected_version=1), ship(f"o-{i}", f"T-{i}")]
    results = await gather(bus, commands)
    assert all(isinstance(r, CommandResult) for r in results), results
    assert [r.stream_version for r in results] == [1, 2, 3] * 20
    assert sorted(r.position for r in results) == list(range(1, 61))
    for i in range(20):
        history = [e.data for e in store.read_stream(f"order-o-{i}")]
        assert [type(d) for d in history] == [OrderCreated, OrderConfirmed, OrderShipped]
        assert history[2] == OrderShipped(f"o-{i}", f"T-{i}")


async def test_refusals_in_a_batch_do_not_disturb_the_others(bus: CommandBus, store: RecordingStore) -> None:
    await bus.dispatch(create("o-1"))
    results = await gather(
        bus, [create("o-2"), ship("o-1"), create("o-1"), confirm("o-1"), confirm("nope"), cancel("o-2")]
    )
    assert isinstance(results[0], CommandResult)
    assert isinstance(results[1], FailedPrecondition)
    assert isinstance(results[2], AlreadyExists)
    assert isinstance(results[3], CommandResult)
    assert isinstance(results[4], NotFound)
    assert isinstance(results[5], CommandResult)
    assert sorted(r.position for r in successes(results)) == [2, 3, 4]
    assert store.head_position() == 4


@pytest.mark.parametrize("max_batch", [1, 1000])
async def test_concurrent_commands_on_one_order_never_both_succeed_against_one_version(
    store: RecordingStore, max_batch: int
) -> None:
    bus = order_bus(store, max_batch=max_batch)
    try:
        await bus.dispatch(create("o-1"))
        results = await gather(
            bus,
            [
                confirm("o-1", expected_version=1),
                cancel("o-1", expected_version=1),
                confirm("o-1", expected_version=1),
                cancel("o-1", "again", expected_version=1),
            ],
        )
    finally:
        await bus.close()
    won = successes(results)
    assert len(won) == 1
    assert won[0].stream_version == 2
    conflicts = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(conflicts) == 3
    assert all((c.expected, c.actual) == (1, 2) for c in conflicts)
    assert len(store.read_stream("order-o-1")) == 2


async def test_concurrent_transitions_without_expected_version_are_decided_in_order(
    bus: CommandBus, store: RecordingStore
) -> None:
    await bus.dispatch(create("o-1"))
    results = await gather(bus, [confirm("o-1")] * 5)
    assert len(successes(results)) == 1
    assert sum(isinstance(r, FailedPrecondition) for r in results) == 4
    assert store.head_position() == 2


async def test_one_create_wins_when_the_same_order_is_created_concurrently(
    bus: CommandBus, store: RecordingStore
) -> None:
    results = await gather(bus, [create("o-1", "a"), create("o-1", "b"), create("o-1", "c")])
    assert len(successes(results)) == 1
    assert sum(isinstance(r, AlreadyExists) for r in results) == 2
    assert store.read_stream("order-o-1")[0].data.customer_id == "a"


async def test_a_fresh_bus_sees_orders_appended_by_an_earlier_one(store: RecordingStore) -> None:
    """The write side decides from the event store, not from memory: a restart keeps every rule."""
    first = order_bus(store)
    await first.dispatch(create("o-1"))
    await first.dispatch(confirm("o-1"))
    await first.close()
    second = order_bus(store)
    try:
        with pytest.raises(AlreadyExists):
            await second.dispatch(create("o-1"))
        with pytest.raises(FailedPrecondition):
            await second.dispatch(confirm("o-1"))
        with pytest.raises(ConcurrencyConflict):
            await second.dispatch(ship("o-1", expected_version=1))
        result = await second.dispatch(ship("o-1", expected_version=2))
        assert (result.position, result.stream_version) == (3, 3)
    finally:
        await second.close()


async def test_a_refused_create_does_not_mislead_later_commands_in_its_batch(store: RecordingStore) -> None:
    """A CreateOrder for an order that exists (unknown to this process) shares a batch with a valid
    ShipOrder for it: the create is refused, the ship must be decided on the order's real state."""
    first = order_bus(store)
    await first.dispatch(create("o-1"))
    await first.dispatch(confirm("o-1"))
    await first.close()
    bus = order_bus(store)
    try:
        results = await gather(bus, [create("o-1"), ship("o-1"), cancel("o-1")])
        assert isinstance(results[0], AlreadyExists)
        assert isinstance(results[1], CommandResult), results[1]
        assert (results[1].position, results[1].stream_version) == (3, 3)
        assert isinstance(results[2], FailedPrecondition)
        assert [type(e.data) for e in store.read_stream("order-o-1")] == [
            OrderCreated,
            OrderConfirmed,
            OrderShipped,
        ]
    finally:
        await bus.close()


# -- command ids ----------------------------------------------------------------------------------


async def test_retry_in_the_same_batch_is_deduplicated(bus: CommandBus, store: RecordingStore) -> None:
    results = await gather(bus, [create("o-1", command_id="cmd-1")] * 3)
    assert all(isinstance(r, CommandResult) for r in results), results
    assert [r.deduplicated for r in results] == [False, True, True]
    assert {r.position for r in results} == {1}
    assert {r.events[0].event_id for r in results} == {results[0].events[0].event_id}
    assert store.head_position() == 1


async def test_retry_in_a_later_batch_returns_the_original_reply(
    bus: CommandBus, store: RecordingStore
) -> None:
    original = await bus.dispatch(create("o-1", command_id="cmd-1"))
    confirmed = await bus.dispatch(confirm("o-1", command_id="cmd-2"))
    await bus.dispatch(ship("o-1"))
    again = await bus.dispatch(create("o-1", command_id="cmd-1"))
    assert again.deduplicated is True
    assert (again.position, again.stream_version) == (original.position, original.stream_version) == (1, 1)
    assert again.events == original.events
    confirmed_again = await bus.dispatch(confirm("o-1", command_id="cmd-2"))
    assert confirmed_again.deduplicated is True
    assert (confirmed_again.position, confirmed_again.stream_version) == (2, 2)
    assert confirmed_again.events == confirmed.events
    assert store.head_position() == 3


async def test_retry_reaching_a_restarted_bus_is_deduplicated(store: RecordingStore) -> None:
    first = order_bus(store)
    command = create("o-1", command_id="cmd-1")
    original = await first.dispatch(command)
    await first.close()
    second = order_bus(store)
    try:
        again = await second.dispatch(command)
    finally:
        await second.close()
    assert again.deduplicated is True
    assert again.position == original.position
    assert [e.event_id for e in again.events] == [e.event_id for e in original.events]
    assert store.head_position() == 1


async def test_command_id_reused_by_a_different_request_is_refused(
    bus: CommandBus, store: RecordingStore
) -> None:
    await bus.dispatch(create("o-1", command_id="cmd-1"))
    for different in (
        create("o-2", command_id="cmd-1"),
        create("o-1", "someone-else", command_id="cmd-1"),
        confirm("o-1", command_id="cmd-1"),
    ):
        with pytest.raises(CommandIdReused, match="cmd-1"):
            await bus.dispatch(different)
    assert store.head_position() == 1
    assert store.read_stream("order-o-2") == []


async def test_command_id_reused_within_one_batch_is_refused(bus: CommandBus, store: RecordingStore) -> None:
    results = await gather(bus, [create("o-1", command_id="cmd-1"), create("o-2", command_id="cmd-1")])
    assert isinstance(results[0], CommandResult)
    assert isinstance(results[1], CommandIdReused)
    assert store.head_position() == 1
    assert store.read_stream("order-o-2") == []


async def test_expected_version_is_part_of_the_request(bus: CommandBus) -> None:
    await bus.dispatch(create("o-1"))
    await bus.dispatch(confirm("o-1", expected_version=1, command_id="cmd-1"))
    with pytest.raises(CommandIdReused):
        await bus.dispatch(confirm("o-1", expected_version=None, command_id="cmd-1"))


async def test_a_refused_command_does_not_consume_its_command_id(
    bus: CommandBus, store: RecordingStore
) -> None:
    with pytest.raises(NotFound):
        await bus.dispatch(confirm("o-1", command_id="cmd-1"))
    await bus.dispatch(create("o-1"))
    result = await bus.dispatch(confirm("o-1", command_id="cmd-1"))
    assert result.deduplicated is False
    assert store.head_position() == 2


# -- storage failure ------------------------------------------------------------------------------


async def test_storage_failure_fails_the_whole_batch_and_caches_nothing(
    bus: CommandBus, store: RecordingStore
) -> None:
    await bus.dispatch(create("o-1"))
    store.failing = True
    results = await gather(
        bus, [confirm("o-1", command_id="cmd-1"), create("o-2", command_id="cmd-2"), cancel("o-1")]
    )
    assert all(isinstance(r, Unavailable) for r in results), results
    assert "disk I/O error" in str(results[0])
    assert store.head_position() == 1
    assert store.find_command("cmd-1") is None

    store.failing = False
    confirmed = await bus.dispatch(confirm("o-1", command_id="cmd-1"))  # the order is still PENDING
    assert (confirmed.position, confirmed.stream_version, confirmed.deduplicated) == (2, 2, False)
    created = await bus.dispatch(create("o-2", command_id="cmd-2"))
    assert (created.position, created.deduplicated) == (3, False)
    assert [type(e.data) for e in store.read_all(0, 10)] == [OrderCreated, OrderConfirmed, OrderCreated]


async def test_storage_failure_then_retry_of_a_cancel(bus: CommandBus, store: RecordingStore) -> None:
    await bus.dispatch(create("o-1"))
    store.failing = True
    with pytest.raises(Unavailable):
        await bus.dispatch(cancel("o-1", expected_version=1))
    store.failing = False
    result = await bus.dispatch(cancel("o-1", expected_version=1))
    assert result.events[0].data == OrderCancelled("o-1", "changed my mind")


# -- handler bugs and shutdown --------------------------------------------------------------------


async def test_a_crashing_handler_fails_only_its_command(store: RecordingStore) -> None:
    from orders import commands as c
    from orders.order import command_handlers

    handlers = command_handlers()
    bus = CommandBus(store)

    def broken(state: OrderState, command: Any) -> list[Any]:
        raise RuntimeError("bug in decide")

    for command_type, handler in handlers.items():
        if command_type is c.ConfirmOrder:
            handler = type(handler)(
                handler.aggregate,
                handler.expects,
                handler.stream_id,
                broken,
                handler.describe,
                handler.validate,
            )
        bus.register(command_type, handler)
    try:
        await bus.dispatch(create("o-1"))
        results = await gather(bus, [confirm("o-1"), create("o-2"), cancel("o-1")])
        assert isinstance(results[0], RuntimeError)
        assert isinstance(results[1], CommandResult) and isinstance(results[2], CommandResult)
        assert store.head_position() == 3
        assert (await bus.dispatch(create("o-3"))).position == 4
    finally:
        await bus.close()


async def test_close_finishes_queued_commands_then_refuses_new_ones(store: RecordingStore) -> None:
    bus = order_bus(store)
    tasks = [asyncio.ensure_future(bus.dispatch(create(f"o-{i}"))) for i in range(10)]
    await asyncio.sleep(0)
    await bus.close()
    results = await asyncio.gather(*tasks)
    assert sorted(r.position for r in results) == list(range(1, 11))
    with pytest.raises(Unavailable):
        await bus.dispatch(create("late"))
    await bus.close()  # idempotent
    assert store.head_position() == 10


def test_register_twice_is_refused(store: RecordingStore) -> None:
    from orders import commands as c
    from orders.order import command_handlers

    bus = order_bus(store)
    with pytest.raises(ValueError, match="CreateOrder"):
        bus.register(c.CreateOrder, command_handlers()[c.CreateOrder])
