"""Two command buses on one store, as two write services on one PostgreSQL event store are.

Each bus caches the streams it wrote; the other's appends make those entries stale. A bus must never
decide on the stale entry: a refusal on cached state is decided again on the stored history, and an
append the store refuses for a version conflict is decided again on fresh state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventcore.command_bus import CommandBus
from eventcore.errors import ConcurrencyConflict
from eventcore.memory.event_store import InMemoryEventStore
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderShipped

from .conftest import order_bus
from .support import cancel, confirm, create, ship


@pytest.fixture
async def buses(store: InMemoryEventStore) -> AsyncIterator[tuple[CommandBus, CommandBus]]:
    first, second = order_bus(store), order_bus(store)
    await first.dispatch(create("o-1"))  # cached by the first bus at version 1, PENDING
    await second.dispatch(confirm("o-1"))  # the second moves it to version 2, CONFIRMED
    yield first, second
    await first.close()
    await second.close()


def history(store: InMemoryEventStore) -> list[type]:
    return [type(e.data) for e in store.read_stream("order-o-1")]


async def test_a_refusal_on_a_stale_cache_is_decided_again_on_the_store(
    buses: tuple[CommandBus, CommandBus], store: InMemoryEventStore
) -> None:
    first, _ = buses
    result = await first.dispatch(ship("o-1", "T-1"))  # PENDING in the cache: not shippable there
    assert (result.position, result.stream_version) == (3, 3)
    assert history(store) == [OrderCreated, OrderConfirmed, OrderShipped]


async def test_an_expected_version_is_checked_against_the_store_not_the_cache(
    buses: tuple[CommandBus, CommandBus], store: InMemoryEventStore
) -> None:
    first, _ = buses
    result = await first.dispatch(cancel("o-1", expected_version=2))
    assert result.stream_version == 3
    assert history(store) == [OrderCreated, OrderConfirmed, OrderCancelled]


async def test_a_lost_race_is_decided_again_without_expected_version(
    buses: tuple[CommandBus, CommandBus], store: InMemoryEventStore
) -> None:
    first, _ = buses
    result = await first.dispatch(cancel("o-1"))  # allowed on the cached state, conflicts in the store
    assert (result.position, result.stream_version) == (3, 3)
    assert history(store) == [OrderCreated, OrderConfirmed, OrderCancelled]


async def test_a_lost_race_with_expected_version_is_aborted_naming_both_versions(
    buses: tuple[CommandBus, CommandBus], store: InMemoryEventStore
) -> None:
    first, _ = buses
    with pytest.raises(ConcurrencyConflict) as conflict:
        await first.dispatch(cancel("o-1", expected_version=1))
    assert (conflict.value.expected, conflict.value.actual) == (1, 2)
    assert history(store) == [OrderCreated, OrderConfirmed]
