"""The order lifecycle: PENDING -> CONFIRMED -> SHIPPED; PENDING or CONFIRMED -> CANCELLED.

Every transition is tried from every status, on the pure decision functions and through the command
bus (where a refusal must also leave the event store untouched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from eventcore.command_bus import CommandBus
from eventcore.errors import AlreadyExists, FailedPrecondition, NotFound
from eventcore.memory.event_store import InMemoryEventStore
from orders import order
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderItem, OrderShipped
from orders.order import OrderState, OrderStatus
from servicekit.status import status_code_of

from .support import cancel, confirm, create, item, ship

P, C, S, X = OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.CANCELLED

# How to bring an order into each status through commands.
PATH_TO: dict[OrderStatus, list[Callable[[str], Any]]] = {
    P: [create],
    C: [create, confirm],
    S: [create, confirm, ship],
    X: [create, cancel],
}

ACTIONS: dict[str, Callable[[str], Any]] = {"confirm": confirm, "ship": ship, "cancel": cancel}
DECIDE = {"confirm": order.decide_confirm, "ship": order.decide_ship, "cancel": order.decide_cancel}
ALLOWED: dict[tuple[OrderStatus, str], tuple[type[Any], OrderStatus]] = {
    (P, "confirm"): (OrderConfirmed, C),
    (P, "cancel"): (OrderCancelled, X),
    (C, "ship"): (OrderShipped, S),
    (C, "cancel"): (OrderCancelled, X),
}
ALL = [(status, action) for status in OrderStatus for action in ACTIONS]
REFUSED = [pair for pair in ALL if pair not in ALLOWED]


def test_the_table_covers_every_status_and_action() -> None:
    assert len(ALLOWED) == 4
    assert len(REFUSED) == 8
    assert set(REFUSED) == {
        (P, "ship"),
        (C, "confirm"),
        (S, "confirm"),
        (S, "ship"),
        (S, "cancel"),
        (X, "confirm"),
        (X, "ship"),
        (X, "cancel"),
    }


@pytest.mark.parametrize(("status", "action"), list(ALLOWED))
def test_allowed_transition_decides_one_event(status: OrderStatus, action: str) -> None:
    event_type, after = ALLOWED[(status, action)]
    events = DECIDE[action](OrderState(status), ACTIONS[action]("o-1"))
    assert [type(e) for e in events] == [event_type]
    assert events[0].order_id == "o-1"
    assert order.evolve(OrderState(status), events[0]) == OrderState(after)


@pytest.mark.parametrize(("status", "action"), REFUSED)
def test_refused_transition_raises_failed_precondition(status: OrderStatus, action: str) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        DECIDE[action](OrderState(status), ACTIONS[action]("o-1"))
    message = str(refused.value)
    assert "'o-1'" in message and status.value in message
    assert status_code_of(refused.value) is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("action", list(ACTIONS))
def test_deciding_on_a_missing_order_is_refused(action: str) -> None:
    with pytest.raises(FailedPrecondition, match="missing"):
        DECIDE[action](OrderState(), ACTIONS[action]("o-1"))


def test_create_decides_order_created_with_the_total() -> None:
    command = create("o-1", "cust-9", (item("a", 2, 150), item("b", 3, 1000)))
    events = order.decide_create(OrderState(), command)
    assert events == [OrderCreated("o-1", "cust-9", (OrderItem("a", 2, 150), OrderItem("b", 3, 1000)), 3300)]
    assert order.evolve(OrderState(), events[0]) == OrderState(P)


def test_fold_follows_the_lifecycle() -> None:
    history = [OrderCreated("o", "c", (item(),), 100), OrderConfirmed("o"), OrderShipped("o", "T")]
    assert order.ORDER.fold(order.ORDER.initial, history) == OrderState(S)
    assert order.ORDER.fold(order.ORDER.initial, [*history[:1], OrderCancelled("o", "")]) == OrderState(X)


async def _bring_to(bus: CommandBus, order_id: str, status: OrderStatus) -> None:
    for step in PATH_TO[status]:
        await bus.dispatch(step(order_id))


@pytest.mark.parametrize(("status", "action"), list(ALLOWED))
async def test_bus_applies_allowed_transition(
    bus: CommandBus, store: InMemoryEventStore, status: OrderStatus, action: str
) -> None:
    await _bring_to(bus, "o-1", status)
    before = store.head_position()
    result = await bus.dispatch(ACTIONS[action]("o-1"))
    event_type, _ = ALLOWED[(status, action)]
    assert [type(e.data) for e in result.events] == [event_type]
    assert result.position == before + 1 == store.head_position()
    assert result.stream_version == len(PATH_TO[status]) + 1
    assert result.deduplicated is False


@pytest.mark.parametrize(("status", "action"), REFUSED)
async def test_bus_refuses_transition_and_appends_nothing(
    bus: CommandBus, store: InMemoryEventStore, status: OrderStatus, action: str
) -> None:
    await _bring_to(bus, "o-1", status)
    before = store.head_position()
    with pytest.raises(FailedPrecondition):
        await bus.dispatch(ACTIONS[action]("o-1"))
    assert store.head_position() == before
    assert len(store.read_stream("order-o-1")) == len(PATH_TO[status])


def test_cancelled_from_confirmed_is_cancelled_for_good() -> None:
    state = OrderState(C)
    state = order.evolve(state, order.decide_cancel(state, cancel("o"))[0])
    for action in ACTIONS:
        with pytest.raises(FailedPrecondition):
            DECIDE[action](state, ACTIONS[action]("o"))


@pytest.mark.parametrize("action", list(ACTIONS))
async def test_bus_reports_unknown_order_as_not_found(
    bus: CommandBus, store: InMemoryEventStore, action: str
) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        await bus.dispatch(ACTIONS[action]("nope"))
    assert store.head_position() == 0
    assert status_code_of(NotFound("x")) is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("status", list(OrderStatus))
async def test_creating_an_existing_order_is_already_exists(
    bus: CommandBus, store: InMemoryEventStore, status: OrderStatus
) -> None:
    await _bring_to(bus, "o-1", status)
    before = store.head_position()
    with pytest.raises(AlreadyExists, match="'o-1'"):
        await bus.dispatch(create("o-1"))
    assert store.head_position() == before
    assert status_code_of(AlreadyExists("x")) is grpc.StatusCode.ALREADY_EXISTS
