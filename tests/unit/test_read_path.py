"""The read path: one call for validate, wait, answer and versions; and its watch sibling."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from eventcore import errors
from eventcore.events import PendingAppend
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreReader, InMemoryReadStoreWriter
from eventcore.projection import ProjectionRunner
from eventcore.read_path import PositionWatch, ReadPath
from orders import queries
from orders.events import OrderConfirmed, OrderCreated, OrderItem, stream_id


@dataclass
class Sources:
    read_model: InMemoryReadStoreReader
    events: InMemoryEventStore

    def positions(self) -> dict[str, int]:
        with self.read_model.snapshot() as view:
            return {c.name: c.position for c in view.checkpoints()}


def created(order_id: str) -> PendingAppend:
    event = OrderCreated(order_id, "c-1", (OrderItem("p", 1, 5),), 5)
    return PendingAppend(stream_id(order_id), 0, [event])


@pytest.fixture
def sources(
    store: InMemoryEventStore, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> Sources:
    return Sources(read_store.reader(), store)


def path_over(sources: Sources, max_wait: float = 5.0) -> ReadPath:
    return ReadPath(queries.query_bus(), lambda: sources, PositionWatch(sources.positions), max_wait)


async def test_ask_answers_with_versions_and_reports_them(
    sources: Sources, store: InMemoryEventStore, runner: ProjectionRunner
) -> None:
    store.append(created("o-1"))
    runner.run_until_idle()
    store.append(created("o-2"))  # not projected yet
    seen: list[tuple[int, int]] = []
    answer = await path_over(sources).ask(queries.GetOrder("o-1"), 0, None, lambda r, e: seen.append((r, e)))
    assert answer.value["order_id"] == "o-1"
    assert (answer.read_model_version, answer.event_store_version, answer.is_consistent) == (1, 2, False)
    assert seen == [(1, 2)]
    with pytest.raises(errors.NotFound):
        await path_over(sources).ask(queries.GetOrder("o-2"), 0, None, lambda r, e: seen.append((r, e)))
    assert seen[-1] == (1, 2)


async def test_ask_refuses_bad_input_and_positions_beyond_the_head(sources: Sources) -> None:
    with pytest.raises(errors.InvalidArgument):
        await path_over(sources).ask(queries.GetOrder(""), 0)
    with pytest.raises(errors.OutOfRange):
        await path_over(sources).ask(queries.GetOrder("o-1"), 5)


async def test_ask_waits_for_min_position_then_times_out(
    sources: Sources, store: InMemoryEventStore, runner: ProjectionRunner
) -> None:
    store.append(created("o-1"))
    with pytest.raises(errors.WaitTimedOut):
        await path_over(sources, max_wait=0.05).ask(queries.GetOrder("o-1"), 1)
    with pytest.raises(errors.DeadlineExceeded):
        await path_over(sources).ask(queries.GetOrder("o-1"), 1, time_remaining=0.05)
    asked = asyncio.ensure_future(path_over(sources).ask(queries.GetOrder("o-1"), 1))
    await asyncio.sleep(0.02)
    runner.run_until_idle()
    answer = await asyncio.wait_for(asked, 5)
    assert answer.is_consistent and answer.read_model_version == 1


async def test_watch_yields_each_change_and_passes_over_unrelated_moves(
    sources: Sources, store: InMemoryEventStore, runner: ProjectionRunner
) -> None:
    store.append(created("o-1"))
    runner.run_until_idle()
    answers = path_over(sources).watch(queries.GetOrder("o-1"))
    first = await asyncio.wait_for(anext(answers), 5)
    assert (first.value["status"], first.read_model_version) == ("PENDING", 1)
    store.append(created("o-2"))  # moves the read model, not this order
    runner.run_until_idle()
    store.append(PendingAppend(stream_id("o-1"), 1, [OrderConfirmed("o-1")]))
    runner.run_until_idle()
    second = await asyncio.wait_for(anext(answers), 5)
    assert (second.value["status"], second.read_model_version) == ("CONFIRMED", 3)
    await answers.aclose()


async def test_watch_of_an_unknown_order_refuses_at_once(sources: Sources) -> None:
    with pytest.raises(errors.NotFound):
        await anext(path_over(sources).watch(queries.GetOrder("nope")))
