"""OrderQueryService over real gRPC: answers, consistency, read-your-writes, paging, health."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from read_service import app as read_app

from .conftest import Files, Projector, read_settings
from .support import bad_request_fields, create, versions

Commands = orders_pb2_grpc.OrderCommandServiceStub
Queries = orders_pb2_grpc.OrderQueryServiceStub


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


async def with_metadata(call: grpc.aio.UnaryUnaryCall) -> tuple[object, tuple[int, int]]:  # type: ignore[type-arg]
    response = await call
    return response, versions(await call.trailing_metadata())


# -- answers --------------------------------------------------------------------------------------


async def test_get_order_follows_the_order_through_its_lifecycle(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    created = await create(commands, "o-1", customer_id="cust-1", items=[("a", 2, 150), ("b", 1, 1000)])
    projector.catch_up()
    order = (await queries.GetOrder(pb.GetOrderRequest(order_id="o-1"))).order
    assert (order.order_id, order.customer_id, order.status) == ("o-1", "cust-1", pb.ORDER_STATUS_PENDING)
    assert [(i.product_id, i.quantity, i.unit_price) for i in order.items] == [("a", 2, 150), ("b", 1, 1000)]
    assert (order.total, order.version) == (1300, 1)
    assert order.created_at == created.events[0].recorded_at
    assert not order.HasField("confirmed_at") and not order.HasField("shipped_at")
    assert not order.HasField("cancelled_at")

    await commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-1"))
    shipped = await commands.ShipOrder(pb.ShipOrderRequest(order_id="o-1", tracking_number="T-42"))
    projector.catch_up()
    order = (await queries.GetOrder(pb.GetOrderRequest(order_id="o-1"))).order
    assert (order.status, order.version, order.tracking_number) == (pb.ORDER_STATUS_SHIPPED, 3, "T-42")
    assert order.HasField("confirmed_at") and order.shipped_at == shipped.events[0].recorded_at

    await create(commands, "o-2", customer_id="cust-1")
    cancelled = await commands.CancelOrder(pb.CancelOrderRequest(order_id="o-2", reason="changed my mind"))
    projector.catch_up()
    order = (await queries.GetOrder(pb.GetOrderRequest(order_id="o-2"))).order
    assert (order.status, order.cancel_reason) == (pb.ORDER_STATUS_CANCELLED, "changed my mind")
    assert order.cancelled_at == cancelled.events[0].recorded_at


async def test_customer_summary_counts_each_status(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    for i, total in enumerate((100, 200, 300, 400)):
        await create(commands, f"o-{i}", customer_id="cust-1", items=[("p", 1, total)])
    await create(commands, "other", customer_id="cust-2")
    await commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-1"))
    await commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-2"))
    last = await commands.ShipOrder(pb.ShipOrderRequest(order_id="o-2", tracking_number="T"))
    await commands.CancelOrder(pb.CancelOrderRequest(order_id="o-3"))
    projector.catch_up()
    answer = await queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id="cust-1"))
    s = answer.summary
    assert (s.customer_id, s.order_count) == ("cust-1", 4)
    assert (s.pending_count, s.confirmed_count, s.shipped_count, s.cancelled_count) == (1, 1, 1, 1)
    assert s.total_value == 600  # the cancelled order's 400 is not counted
    assert s.last_order_at.ToMicroseconds() <= last.events[0].recorded_at.ToMicroseconds()
    assert s.last_order_at.ToMicroseconds() > 0
    nobody = (await queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id="nobody"))).summary
    assert (nobody.customer_id, nobody.order_count, nobody.total_value) == ("nobody", 0, 0)
    assert not nobody.HasField("last_order_at")


async def test_get_projection_status(commands: Commands, queries: Queries, projector: Projector) -> None:
    for i in range(3):
        await create(commands, f"o-{i}")
    before = time.time()
    projector.catch_up()
    await create(commands, "late")
    answer = await queries.GetProjectionStatus(pb.GetProjectionStatusRequest())
    assert answer.event_store_version == 4
    assert {p.name: p.position for p in answer.projections} == {
        "order_view": 3,
        "customer_summary": 3,
        "product_sales": 3,
    }
    assert {(p.name, p.state, p.lag, p.version) for p in answer.projections} == {
        ("order_view", "catching_up", 1, 2),
        ("customer_summary", "catching_up", 1, 1),
        ("product_sales", "catching_up", 1, 1),
    }
    for p in answer.projections:
        assert before - 1 <= p.updated_at.ToMicroseconds() / 1e6 <= time.time() + 1


# -- consistency ----------------------------------------------------------------------------------


async def test_consistency_is_in_the_body_and_the_trailing_metadata(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    await create(commands, "o-1")
    await create(commands, "o-2", customer_id="cust-2")
    projector.catch_up()
    answer, meta = await with_metadata(queries.GetOrder(pb.GetOrderRequest(order_id="o-1")))
    c = answer.consistency  # type: ignore[attr-defined]
    assert (c.read_model_version, c.event_store_version, c.is_consistent) == (2, 2, True)
    assert meta == (2, 2)

    await commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-1"))  # not projected yet
    for call in (
        queries.GetOrder(pb.GetOrderRequest(order_id="o-1")),
        queries.ListOrdersByCustomer(pb.ListOrdersByCustomerRequest(customer_id="cust-1")),
        queries.ListOrdersByStatus(pb.ListOrdersByStatusRequest(status=pb.ORDER_STATUS_PENDING)),
        queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id="cust-1")),
    ):
        answer, meta = await with_metadata(call)
        c = answer.consistency  # type: ignore[attr-defined]
        assert (c.read_model_version, c.event_store_version, c.is_consistent) == (2, 3, False)
        assert meta == (2, 3)
    assert answer.summary.pending_count == 1  # type: ignore[attr-defined]  # stale, as it says


async def test_versions_are_sent_with_errors_too(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    await create(commands, "o-1")
    projector.catch_up()
    await create(commands, "o-2")
    error = await refused(queries.GetOrder(pb.GetOrderRequest(order_id="ghost")))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert versions(error.trailing_metadata()) == (1, 2)
    error = await refused(queries.GetOrder(pb.GetOrderRequest(order_id="")))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["order_id"]
    assert versions(error.trailing_metadata()) == (1, 2)


# -- read-your-writes -----------------------------------------------------------------------------


async def test_min_position_waits_until_the_write_is_projected(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    await create(commands, "o-1")
    projector.catch_up()
    reply = await create(commands, "o-2", customer_id="cust-2")
    call = queries.GetOrder(pb.GetOrderRequest(order_id="o-2", min_position=reply.position), timeout=10)
    await asyncio.sleep(0.2)
    assert not call.done()  # waiting: the projector has not seen position 2
    projector.start()  # the projector's real loop, in a thread
    answer = await call
    assert answer.order.order_id == "o-2"
    assert answer.consistency.read_model_version >= reply.position
    assert answer.consistency.is_consistent


async def until_serving(channel: grpc.aio.Channel) -> None:
    """Poll health until the read service serves (it does once the projector created its file)."""
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=read_app.SERVICE_NAME)
    deadline = time.monotonic() + 5
    while (await health.Check(request)).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "the read service never became SERVING"
        await asyncio.sleep(0.02)


async def test_read_your_writes_with_the_projector_running(
    commands: Commands, queries: Queries, projector: Projector, read_channel: grpc.aio.Channel
) -> None:
    projector.start()
    await until_serving(read_channel)  # before that, queries answer UNAVAILABLE
    for i in range(20):
        reply = await create(commands, f"o-{i}", customer_id="cust-1")
        confirmed = await commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id=f"o-{i}"))
        answer = await queries.GetOrder(
            pb.GetOrderRequest(order_id=f"o-{i}", min_position=confirmed.position)
        )
        assert answer.order.status == pb.ORDER_STATUS_CONFIRMED
        assert answer.consistency.read_model_version >= confirmed.position > reply.position
    listed = await queries.ListOrdersByCustomer(
        pb.ListOrdersByCustomerRequest(customer_id="cust-1", min_position=confirmed.position)
    )
    assert [o.order_id for o in listed.orders] == [f"o-{i}" for i in reversed(range(20))]


async def test_min_position_beyond_the_head_is_out_of_range_at_once(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    await create(commands, "o-1")
    projector.catch_up()
    started = time.monotonic()
    error = await refused(queries.GetOrder(pb.GetOrderRequest(order_id="o-1", min_position=2), timeout=5))
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert time.monotonic() - started < 1
    assert versions(error.trailing_metadata()) == (1, 1)


async def test_min_position_not_reached_within_max_wait_is_unavailable(
    commands: Commands, projector: Projector, files: Files
) -> None:
    await create(commands, "o-1")
    projector.catch_up()
    reply = await create(commands, "o-2")
    service = read_app.ReadService(read_settings(files, max_wait=0.3))
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.host.address) as channel:
            queries = orders_pb2_grpc.OrderQueryServiceStub(channel)
            started = time.monotonic()
            error = await refused(
                queries.GetOrder(pb.GetOrderRequest(order_id="o-2", min_position=reply.position))
            )
            waited = time.monotonic() - started
    finally:
        await service.stop()
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert 0.25 <= waited < 3
    assert versions(error.trailing_metadata()) == (1, 2)


async def test_min_position_not_reached_before_the_deadline_is_deadline_exceeded(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    await create(commands, "o-1")
    projector.catch_up()
    reply = await create(commands, "o-2")
    started = time.monotonic()
    error = await refused(
        queries.GetOrder(pb.GetOrderRequest(order_id="o-2", min_position=reply.position), timeout=0.3)
    )
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    answer = await queries.GetOrder(pb.GetOrderRequest(order_id="o-1"))  # still serving
    assert answer.order.order_id == "o-1"


# -- readiness ------------------------------------------------------------------------------------


async def test_not_serving_and_unavailable_until_the_read_database_exists(
    files: Files, projector: Projector, read_channel: grpc.aio.Channel, queries: Queries
) -> None:
    from write_service import app as write_app

    health = health_pb2_grpc.HealthStub(read_channel)

    async def status() -> int:
        return (await health.Check(health_pb2.HealthCheckRequest(service=read_app.SERVICE_NAME))).status

    assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING
    for call in (
        queries.GetOrder(pb.GetOrderRequest(order_id="o-1")),
        queries.GetProjectionStatus(pb.GetProjectionStatusRequest()),
    ):
        assert (await refused(call)).code() is grpc.StatusCode.UNAVAILABLE

    write = write_app.WriteService(
        write_app.Settings(listen="127.0.0.1:0", event_store=files.events, grace=0.1)
    )
    await write.start()  # the event store appears; the read database does not yet
    try:
        async with grpc.aio.insecure_channel(write.host.address) as channel:
            await create(orders_pb2_grpc.OrderCommandServiceStub(channel), "o-1")
        await asyncio.sleep(0.1)
        assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (await refused(queries.GetOrder(pb.GetOrderRequest(order_id="o-1")))).code() is (
            grpc.StatusCode.UNAVAILABLE
        )
        projector.start()  # creates the read database
        await until_serving(read_channel)
        answer = await queries.GetOrder(pb.GetOrderRequest(order_id="o-1", min_position=1), timeout=5)
        assert answer.order.order_id == "o-1"
    finally:
        await write.stop()


# -- lists and page tokens ------------------------------------------------------------------------


async def list_all(queries: Queries, make: object, between: object = None) -> list[str]:
    seen: list[str] = []
    token = ""
    while True:
        page = await make(token)  # type: ignore[operator]
        seen += [o.order_id for o in page.orders]
        if not page.next_page_token:
            return seen
        token = page.next_page_token
        if between is not None:
            await between()  # type: ignore[operator]


async def test_pages_stay_stable_while_new_orders_arrive(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    for i in range(11):
        await create(commands, f"o-{i:02}", customer_id="cust-1")
        await create(commands, f"x-{i:02}", customer_id="cust-2")
    projector.catch_up()
    arrived = 0

    async def new_orders() -> None:
        nonlocal arrived
        for _ in range(2):
            arrived += 1
            await create(commands, f"new-{arrived}", customer_id="cust-1")
        projector.catch_up()

    def by_customer(token: str) -> object:
        return queries.ListOrdersByCustomer(
            pb.ListOrdersByCustomerRequest(customer_id="cust-1", page_size=3, page_token=token)
        )

    seen = await list_all(queries, by_customer, new_orders)
    assert seen == [f"o-{i:02}" for i in reversed(range(11))]
    assert arrived == 6

    def by_status(token: str) -> object:
        return queries.ListOrdersByStatus(
            pb.ListOrdersByStatusRequest(status=pb.ORDER_STATUS_PENDING, page_size=4, page_token=token)
        )

    before = (
        {f"o-{i:02}" for i in range(11)}
        | {f"x-{i:02}" for i in range(11)}
        | {f"new-{k}" for k in range(1, 7)}
    )
    everything = await list_all(queries, by_status, new_orders)
    assert arrived > 6
    assert len(everything) == len(set(everything))  # nothing repeated
    assert set(everything) == before  # nothing skipped, and nothing that arrived while paging
    first = await queries.ListOrdersByStatus(pb.ListOrdersByStatusRequest(status=pb.ORDER_STATUS_PENDING))
    summary = first.orders[0]
    assert (summary.customer_id, summary.status, summary.total) == ("cust-1", pb.ORDER_STATUS_PENDING, 300)
    assert summary.HasField("created_at")


async def test_page_size_zero_means_fifty(commands: Commands, queries: Queries, projector: Projector) -> None:
    await asyncio.gather(*(create(commands, f"o-{i}", customer_id="cust-1") for i in range(51)))
    projector.catch_up()
    page = await queries.ListOrdersByCustomer(pb.ListOrdersByCustomerRequest(customer_id="cust-1"))
    assert len(page.orders) == 50 and page.next_page_token
    rest = await queries.ListOrdersByCustomer(
        pb.ListOrdersByCustomerRequest(customer_id="cust-1", page_token=page.next_page_token)
    )
    assert len(rest.orders) == 1 and rest.next_page_token == ""
    assert {o.order_id for o in page.orders} | {rest.orders[0].order_id} == {f"o-{i}" for i in range(51)}


async def test_bad_page_tokens_are_invalid_argument(
    commands: Commands, queries: Queries, projector: Projector
) -> None:
    for i in range(3):
        await create(commands, f"o-{i}", customer_id="cust-1")
        await create(commands, f"x-{i}", customer_id="cust-2")
    projector.catch_up()
    by_customer = (
        await queries.ListOrdersByCustomer(pb.ListOrdersByCustomerRequest(customer_id="cust-1", page_size=1))
    ).next_page_token
    by_status = (
        await queries.ListOrdersByStatus(
            pb.ListOrdersByStatusRequest(status=pb.ORDER_STATUS_PENDING, page_size=1)
        )
    ).next_page_token
    assert by_customer and by_status
    forged = base64.urlsafe_b64encode(json.dumps(["by_customer", "cust-1", 2**63, "o-1"]).encode()).decode()
    calls = [
        queries.ListOrdersByCustomer(
            pb.ListOrdersByCustomerRequest(customer_id="cust-1", page_token="garbage!")
        ),
        queries.ListOrdersByCustomer(
            pb.ListOrdersByCustomerRequest(customer_id="cust-1", page_token=by_status)
        ),
        queries.ListOrdersByCustomer(
            pb.ListOrdersByCustomerRequest(customer_id="cust-2", page_token=by_customer)
        ),
        queries.ListOrdersByCustomer(pb.ListOrdersByCustomerRequest(customer_id="cust-1", page_token=forged)),
        queries.ListOrdersByStatus(
            pb.ListOrdersByStatusRequest(status=pb.ORDER_STATUS_PENDING, page_token=by_customer)
        ),
        queries.ListOrdersByStatus(
            pb.ListOrdersByStatusRequest(status=pb.ORDER_STATUS_SHIPPED, page_token=by_status)
        ),
    ]
    for call in calls:
        error = await refused(call)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
        assert bad_request_fields(error) == ["page_token"]
        assert versions(error.trailing_metadata()) == (6, 6)


async def test_malformed_list_queries_are_invalid_argument(
    queries: Queries, commands: Commands, projector: Projector
) -> None:
    await create(commands, "o-1")
    projector.catch_up()
    error = await refused(queries.ListOrdersByStatus(pb.ListOrdersByStatusRequest()))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["status"]
    error = await refused(queries.ListOrdersByCustomer(pb.ListOrdersByCustomerRequest(customer_id="")))
    assert bad_request_fields(error) == ["customer_id"]
    error = await refused(queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id="c" * 129)))
    assert bad_request_fields(error) == ["customer_id"]
    error = await refused(queries.ListOrdersByStatus(pb.ListOrdersByStatusRequest(status=99)))
    assert bad_request_fields(error) == ["status"]
