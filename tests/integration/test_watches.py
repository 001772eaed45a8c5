"""WatchOrder and WatchCustomerOrders over gRPC, with the write service and the projector running:
each change arrives in order with rising versions; a cancelled watch frees what it held; a stop
ends every watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from read_service import app as read_app
from tests.integration.conftest import Projector
from tests.integration.support import bad_request_fields, create

WAIT = 10.0  # generous bound of every wait for a message that must come


@pytest.fixture
async def live(
    write_service: object, projector: Projector, read_service: read_app.ReadService
) -> AsyncIterator[read_app.ReadService]:
    projector.catch_up()  # the read database exists before the first watch
    projector.start()
    yield read_service


async def next_message(call: object) -> object:
    async with asyncio.timeout(WAIT):
        return await call.read()  # type: ignore[attr-defined]


async def test_an_order_watch_sees_confirm_and_ship_in_order(
    live: read_app.ReadService,
    commands: orders_pb2_grpc.OrderCommandServiceStub,
    queries: orders_pb2_grpc.OrderQueryServiceStub,
) -> None:
    created = await create(commands, "w-1", customer_id="cust-w")
    call = queries.WatchOrder(pb.WatchOrderRequest(order_id="w-1", min_position=created.position))
    first: pb.GetOrderResponse = await next_message(call)  # type: ignore[assignment]
    assert (first.order.status, first.order.version) == (pb.ORDER_STATUS_PENDING, 1)
    assert first.consistency.read_model_version >= created.position
    await commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="w-1", expected_version=1))
    # A watch sends the state it finds each time the read model moves; a confirm and a ship the
    # projector applies in one batch would come as one message, so the ship waits for the confirm's.
    seen = [first, await next_message(call)]
    await commands.ShipOrder(pb.ShipOrderRequest(order_id="w-1", tracking_number="TRK-1"))
    while seen[-1].order.status != pb.ORDER_STATUS_SHIPPED:
        seen.append(await next_message(call))  # type: ignore[arg-type]
    call.cancel()
    assert [m.order.status for m in seen] == [
        pb.ORDER_STATUS_PENDING,
        pb.ORDER_STATUS_CONFIRMED,
        pb.ORDER_STATUS_SHIPPED,
    ]
    assert [m.order.version for m in seen] == [1, 2, 3]
    versions = [m.consistency.read_model_version for m in seen]
    assert versions == sorted(set(versions))
    assert seen[-1].order.tracking_number == "TRK-1"


async def test_an_order_watch_sees_a_cancel(
    live: read_app.ReadService,
    commands: orders_pb2_grpc.OrderCommandServiceStub,
    queries: orders_pb2_grpc.OrderQueryServiceStub,
) -> None:
    created = await create(commands, "w-2")
    call = queries.WatchOrder(pb.WatchOrderRequest(order_id="w-2", min_position=created.position))
    await next_message(call)
    await commands.CancelOrder(pb.CancelOrderRequest(order_id="w-2", reason="changed my mind"))
    cancelled: pb.GetOrderResponse = await next_message(call)  # type: ignore[assignment]
    call.cancel()
    assert (cancelled.order.status, cancelled.order.version) == (pb.ORDER_STATUS_CANCELLED, 2)
    assert cancelled.order.cancel_reason == "changed my mind" and cancelled.consistency.is_consistent


async def test_watch_refusals(
    live: read_app.ReadService, queries: orders_pb2_grpc.OrderQueryServiceStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await next_message(queries.WatchOrder(pb.WatchOrderRequest(order_id="nobody")))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await next_message(queries.WatchCustomerOrders(pb.WatchCustomerOrdersRequest(customer_id="")))
    assert bad_request_fields(bad.value) == ["customer_id"]
    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        await next_message(queries.WatchOrder(pb.WatchOrderRequest(order_id="x", min_position=10**6)))
    assert beyond.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_a_customer_watch_lists_then_follows_that_customers_orders(
    live: read_app.ReadService,
    commands: orders_pb2_grpc.OrderCommandServiceStub,
    queries: orders_pb2_grpc.OrderQueryServiceStub,
) -> None:
    await create(commands, "c-1", customer_id="cust-c")
    second = await create(commands, "c-2", customer_id="cust-c")
    call = queries.WatchCustomerOrders(
        pb.WatchCustomerOrdersRequest(customer_id="cust-c", min_position=second.position)
    )
    current = [await next_message(call), await next_message(call)]
    assert [m.order.order_id for m in current] == ["c-2", "c-1"]  # type: ignore[attr-defined]
    await create(commands, "other-1", customer_id="cust-other")  # another customer's: not seen
    steps = [  # one at a time: each change is seen before the next command goes out
        (lambda: create(commands, "c-3", customer_id="cust-c"), "c-3", pb.ORDER_STATUS_PENDING),
        (
            lambda: commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="c-1")),
            "c-1",
            pb.ORDER_STATUS_CONFIRMED,
        ),
        (
            lambda: commands.CancelOrder(pb.CancelOrderRequest(order_id="c-3")),
            "c-3",
            pb.ORDER_STATUS_CANCELLED,
        ),
    ]
    versions = [current[-1].consistency.read_model_version]  # type: ignore[attr-defined]
    for command, order_id, status in steps:
        await command()
        change: pb.WatchCustomerOrdersResponse = await next_message(call)  # type: ignore[assignment]
        assert (change.order.order_id, change.order.status) == (order_id, status)
        assert change.order.customer_id == "cust-c"
        versions.append(change.consistency.read_model_version)
    call.cancel()
    assert versions == sorted(set(versions))


async def test_many_watches_are_released_when_cancelled(
    live: read_app.ReadService,
    commands: orders_pb2_grpc.OrderCommandServiceStub,
    queries: orders_pb2_grpc.OrderQueryServiceStub,
) -> None:
    created = await create(commands, "m-1", customer_id="cust-m")
    baseline = len(asyncio.all_tasks())
    calls = [
        queries.WatchOrder(pb.WatchOrderRequest(order_id="m-1", min_position=created.position))
        for _ in range(100)
    ] + [
        queries.WatchCustomerOrders(
            pb.WatchCustomerOrdersRequest(customer_id="cust-m", min_position=created.position)
        )
        for _ in range(100)
    ]
    for call in calls:
        await next_message(call)
    assert len(live.host.calls.streams) == 200
    for call in calls:
        call.cancel()
    deadline = time.monotonic() + WAIT
    while (live.host.calls.streams or live.watch.waiting) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not live.host.calls.streams, "cancelled watches still run"
    assert live.watch.waiting == 0, "cancelled watches still wait for positions"
    while len(asyncio.all_tasks()) > baseline and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(asyncio.all_tasks()) <= baseline


async def test_stopping_the_server_ends_open_watches(
    live: read_app.ReadService,
    commands: orders_pb2_grpc.OrderCommandServiceStub,
    queries: orders_pb2_grpc.OrderQueryServiceStub,
) -> None:
    created = await create(commands, "s-1", customer_id="cust-s")
    calls = [
        queries.WatchOrder(pb.WatchOrderRequest(order_id="s-1", min_position=created.position)),
        queries.WatchCustomerOrders(
            pb.WatchCustomerOrdersRequest(customer_id="cust-s", min_position=created.position)
        ),
    ]
    for call in calls:
        await next_message(call)
    await asyncio.wait_for(live.stop(), WAIT)
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await next_message(call)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
