"""EventStoreService over gRPC: ReadStream, and catch-up subscriptions with filters, checkpoints,
caught_up, fell_behind, exactly-once resumption while writers run, and a stop that ends them."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventcore.events import PendingAppend
from eventcore.sqlite.event_store import SQLiteEventStore
from eventcore.sqlite.files import Synchronous
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderItem, order_codec
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from read_service import app as read_app
from tests.integration.conftest import Files, Projector, read_settings
from tests.integration.support import bad_request_fields

WAIT = 10.0  # generous bound of every wait for a message that must come
SERVING = health_pb2.HealthCheckResponse.SERVING


def created(order_id: str) -> OrderCreated:
    return OrderCreated(order_id, "cust-1", (OrderItem("sku", 1, 10),), 10)


class Writer:
    """The event store's single writer, in the test (no write service): fast, batched appends."""

    def __init__(self, path: Path) -> None:
        self.store = SQLiteEventStore.open(path, order_codec(), Synchronous.OFF)
        self.orders = 0

    def orders_created(self, count: int, prefix: str = "o") -> int:
        """`count` new orders in one transaction; the head position after it."""
        appends = []
        for _ in range(count):
            self.orders += 1
            appends.append(
                PendingAppend(f"order-{prefix}{self.orders}", 0, [created(f"{prefix}{self.orders}")])
            )
        self.store.append_batch(appends)
        return self.store.head_position()

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def writer(files: Files) -> AsyncIterator[Writer]:
    writer = Writer(files.events)
    yield writer  # type: ignore[misc]
    writer.close()


async def started(files: Files, projector: Projector, **settings: object) -> read_app.ReadService:
    projector.catch_up()  # the read database exists: the service serves
    service = read_app.ReadService(dataclasses.replace(read_settings(files), **settings))  # type: ignore[arg-type]
    await service.start()
    return service


@pytest.fixture
async def service(files: Files, projector: Projector, writer: Writer) -> AsyncIterator[read_app.ReadService]:
    service = await started(files, projector)
    yield service
    await service.stop()


@pytest.fixture
async def stub(service: read_app.ReadService) -> AsyncIterator[orders_pb2_grpc.EventStoreServiceStub]:
    async with grpc.aio.insecure_channel(service.host.address) as channel:
        yield orders_pb2_grpc.EventStoreServiceStub(channel)


def kind(message: pb.SubscribeEventsResponse) -> str:
    return str(message.WhichOneof("message"))


def position_of(message: pb.SubscribeEventsResponse) -> int:
    return int(getattr(message, kind(message)).position)


async def read_until(call: object, done: str, limit: int = 100_000) -> list[pb.SubscribeEventsResponse]:
    """Messages up to and including the first of kind `done`."""
    seen: list[pb.SubscribeEventsResponse] = []
    async with asyncio.timeout(WAIT):
        async for message in call:  # type: ignore[attr-defined]
            seen.append(message)
            if kind(message) == done or len(seen) >= limit:
                return seen
    raise AssertionError(f"the stream ended before {done}: {[kind(m) for m in seen]}")


def event_positions(messages: Sequence[pb.SubscribeEventsResponse]) -> list[int]:
    return [m.event.position for m in messages if kind(m) == "event"]


# -- ReadStream ------------------------------------------------------------------------------------


async def test_read_stream_pages_one_stream(
    writer: Writer, stub: orders_pb2_grpc.EventStoreServiceStub
) -> None:
    writer.orders_created(3)
    writer.store.append(PendingAppend("order-o2", 1, [OrderConfirmed("o2")]))
    writer.store.append(PendingAppend("order-o2", 2, [OrderCancelled("o2", "no")]))
    whole = await stub.ReadStream(pb.ReadStreamRequest(stream_id="order-o2"))
    assert [(e.stream_version, e.type) for e in whole.events] == [
        (1, "OrderCreated"),
        (2, "OrderConfirmed"),
        (3, "OrderCancelled"),
    ]
    assert whole.stream_version == 3 and whole.events[2].order_cancelled.reason == "no"
    tail = await stub.ReadStream(pb.ReadStreamRequest(stream_id="order-o2", from_version=2, limit=1))
    assert [e.stream_version for e in tail.events] == [2] and tail.stream_version == 3
    beyond = await stub.ReadStream(pb.ReadStreamRequest(stream_id="order-o2", from_version=9))
    assert list(beyond.events) == [] and beyond.stream_version == 3


async def test_read_stream_limits(writer: Writer, stub: orders_pb2_grpc.EventStoreServiceStub) -> None:
    for version in range(1200):
        event = created("big") if version == 0 else OrderConfirmed("big")
        writer.store.append(PendingAppend("order-big", version, [event]))
    assert len((await stub.ReadStream(pb.ReadStreamRequest(stream_id="order-big"))).events) == 100
    most = await stub.ReadStream(pb.ReadStreamRequest(stream_id="order-big", limit=5000))
    assert len(most.events) == 1000 and most.stream_version == 1200


async def test_read_stream_refusals(stub: orders_pb2_grpc.EventStoreServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.ReadStream(pb.ReadStreamRequest(stream_id="order-nobody"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for bad in ["", "x" * 300, "order-\n"]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ReadStream(pb.ReadStreamRequest(stream_id=bad))
        assert bad_request_fields(refused.value) == ["stream_id"]


# -- subscriptions ---------------------------------------------------------------------------------


async def test_a_subscription_catches_up_then_follows_live(
    writer: Writer, stub: orders_pb2_grpc.EventStoreServiceStub
) -> None:
    head = writer.orders_created(1200)  # more than a page
    call = stub.SubscribeEvents(pb.SubscribeEventsRequest(from_position=0))
    first = await read_until(call, "caught_up")
    assert event_positions(first) == list(range(1, head + 1))
    assert position_of(first[-1]) == head
    writer.orders_created(3)
    live = (
        await read_until(call, "event", limit=1)
        + await read_until(call, "event")
        + await read_until(call, "event")
    )
    assert event_positions(live) == [head + 1, head + 2, head + 3]
    assert live[0].event.order_created.order_id == f"o{1201}" and live[0].event.type == "OrderCreated"
    call.cancel()


async def test_from_position_beyond_the_head_is_out_of_range(
    writer: Writer, stub: orders_pb2_grpc.EventStoreServiceStub
) -> None:
    head = writer.orders_created(2)
    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        await read_until(stub.SubscribeEvents(pb.SubscribeEventsRequest(from_position=head + 1)), "caught_up")
    assert beyond.value.code() == grpc.StatusCode.OUT_OF_RANGE
    at_head = await read_until(
        stub.SubscribeEvents(pb.SubscribeEventsRequest(from_position=head)), "caught_up"
    )
    assert [(kind(m), position_of(m)) for m in at_head] == [("caught_up", head)]


async def test_filters_by_type_and_stream_prefix(
    writer: Writer, stub: orders_pb2_grpc.EventStoreServiceStub
) -> None:
    writer.orders_created(3, prefix="a")  # order-a1..a3: positions 1..3
    writer.orders_created(2, prefix="b")  # order-b4, b5: positions 4, 5
    writer.store.append(PendingAppend("order-a1", 1, [OrderConfirmed("a1")]))  # 6
    writer.store.append(PendingAppend("order-b4", 1, [OrderConfirmed("b4")]))  # 7

    async def passed(**request: object) -> list[int]:
        call = stub.SubscribeEvents(pb.SubscribeEventsRequest(**request))  # type: ignore[arg-type]
        messages = await read_until(call, "caught_up")
        call.cancel()
        assert position_of(messages[-1]) == 7
        return event_positions(messages)

    assert await passed(event_types=["OrderConfirmed"]) == [6, 7]
    assert await passed(stream_prefix="order-b") == [4, 5, 7]
    assert await passed(event_types=["OrderConfirmed"], stream_prefix="order-a") == [6]
    assert await passed(event_types=["OrderCreated", "OrderConfirmed"], from_position=5) == [6, 7]
    live = stub.SubscribeEvents(pb.SubscribeEventsRequest(from_position=7, stream_prefix="order-b"))
    await read_until(live, "caught_up")
    writer.orders_created(1, prefix="a")  # 8, hidden
    writer.orders_created(1, prefix="b")  # 9
    assert event_positions(await read_until(live, "event")) == [9]
    live.cancel()


async def test_a_malformed_filter_is_refused(stub: orders_pb2_grpc.EventStoreServiceStub) -> None:
    request = pb.SubscribeEventsRequest(event_types=["OrderCreated", ""], stream_prefix="x" * 300)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await read_until(stub.SubscribeEvents(request), "caught_up")
    assert bad_request_fields(refused.value) == ["event_types[1]", "stream_prefix"]


async def test_a_filter_hiding_everything_checkpoints_every_second(
    writer: Writer, stub: orders_pb2_grpc.EventStoreServiceStub
) -> None:
    writer.orders_created(100)
    call = stub.SubscribeEvents(pb.SubscribeEventsRequest(event_types=["OrderShipped"]))
    caught_up = await read_until(call, "caught_up")
    assert event_positions(caught_up) == []

    async def write_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            writer.orders_created(5)
            await asyncio.sleep(0.05)

    writing = asyncio.create_task(write_for(3.5))
    arrivals: list[tuple[float, int]] = []
    async with asyncio.timeout(WAIT):
        async for message in call:
            assert kind(message) == "checkpoint"
            arrivals.append((time.monotonic(), position_of(message)))
            if len(arrivals) == 3:
                break
    await writing
    call.cancel()
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap <= 1.5 for gap in gaps), gaps  # at least once a second, with scheduling slack
    positions = [p for _, p in arrivals]
    assert positions == sorted(positions) and positions[0] > 100


async def test_resuming_at_random_positions_while_writers_run_gives_each_event_once_in_order(
    writer: Writer, stub: orders_pb2_grpc.EventStoreServiceStub
) -> None:
    writer.orders_created(500)
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            writer.orders_created(random.randint(1, 40))
            await asyncio.sleep(0.003)

    writing = asyncio.create_task(write())
    seen: list[int] = []
    resume_from = 0
    rng = random.Random(8)
    for _ in range(12):  # disconnect after a random number of messages, resume from the last seen
        call = stub.SubscribeEvents(
            pb.SubscribeEventsRequest(from_position=resume_from, event_types=["OrderCreated"])
        )
        budget = rng.randint(1, 400)
        async with asyncio.timeout(WAIT):
            async for message in call:
                if kind(message) == "event":
                    seen.append(message.event.position)
                resume_from = position_of(message)
                budget -= 1
                if budget == 0:
                    break
        call.cancel()
    stop.set()
    await writing
    head = writer.store.head_position()
    final = stub.SubscribeEvents(pb.SubscribeEventsRequest(from_position=resume_from))
    rest = await read_until(final, "caught_up")
    final.cancel()
    seen += event_positions(rest)
    assert seen == list(range(1, head + 1))


async def test_a_consumer_that_stops_reading_falls_behind_and_still_gets_every_event_once(
    files: Files, projector: Projector, writer: Writer
) -> None:
    service = await started(files, projector, live_window=500)
    # No BDP probing and small windows: the client's transport buffers little on its own.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    try:
        async with grpc.aio.insecure_channel(service.host.address, options=options) as channel:
            stub = orders_pb2_grpc.EventStoreServiceStub(channel)
            call = stub.SubscribeEvents(pb.SubscribeEventsRequest())
            await read_until(call, "caught_up")
            for _ in range(10):  # 10,000 events while the consumer reads nothing
                writer.orders_created(1000)
                await asyncio.sleep(0.05)
            head = writer.store.head_position()
            messages: list[pb.SubscribeEventsResponse] = []
            async with asyncio.timeout(WAIT * 3):
                async for message in call:
                    messages.append(message)
                    if kind(message) == "caught_up" and position_of(message) == head:
                        break
            call.cancel()
    finally:
        await service.stop()
    kinds = [kind(m) for m in messages]
    assert "fell_behind" in kinds
    assert kinds.index("fell_behind") < len(kinds) - 1
    assert event_positions(messages) == list(range(1, head + 1))


async def test_stopping_the_server_ends_open_subscriptions(
    files: Files, projector: Projector, writer: Writer
) -> None:
    writer.orders_created(5)
    service = await started(files, projector, grace=5.0)
    async with grpc.aio.insecure_channel(service.host.address) as channel:
        stub = orders_pb2_grpc.EventStoreServiceStub(channel)
        calls = [stub.SubscribeEvents(pb.SubscribeEventsRequest()) for _ in range(5)]
        for call in calls:
            await read_until(call, "caught_up")
        started_at = time.monotonic()
        await asyncio.wait_for(service.stop(), WAIT)
        assert time.monotonic() - started_at < 2.5, "the stop waited for the streams' grace"
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await read_until(call, "event")
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_and_reflection_name_the_event_store_service(service: read_app.ReadService) -> None:
    name = "orders.v1.EventStoreService"
    async with grpc.aio.insecure_channel(service.host.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(WAIT):
            while (await health.Check(health_pb2.HealthCheckRequest(service=name))).status != SERVING:
                await asyncio.sleep(0.02)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for answer in listing:
            assert name in [s.name for s in answer.list_services_response.service]
            break
