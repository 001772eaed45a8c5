"""OrderCommandService over real gRPC, on an in-process server with a SQLite event store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventcore.sqlite.event_store import SQLiteEventLogReader
from orders.events import order_codec
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from write_service import app as write_app
from write_service import servicer as write_servicer

from .conftest import Files
from .support import bad_request_fields, create, create_request

Stub = orders_pb2_grpc.OrderCommandServiceStub
LONG = "x" * 129
MAX = 2**63 - 1


def head(files: Files) -> int:
    reader = SQLiteEventLogReader.open(files.events, order_codec())
    try:
        return reader.head_position()
    finally:
        reader.close()


# -- replies --------------------------------------------------------------------------------------


async def test_create_order_replies_with_its_event(commands: Stub) -> None:
    before = time.time()
    reply = await create(
        commands, "o-1", customer_id="cust-9", items=[("a", 2, 150), ("b", 1, 1000)], command_id="cmd-1"
    )
    assert (reply.position, reply.stream_version, reply.deduplicated) == (1, 1, False)
    (event,) = reply.events
    assert (event.position, event.stream_id, event.stream_version, event.type) == (
        1,
        "order-o-1",
        1,
        "OrderCreated",
    )
    assert event.command_id == "cmd-1"
    assert uuid.UUID(event.event_id).version == 4
    assert before - 1 <= event.recorded_at.ToMicroseconds() / 1e6 <= time.time() + 1
    assert event.WhichOneof("payload") == "order_created"
    created = event.order_created
    assert (created.order_id, created.customer_id, created.total) == ("o-1", "cust-9", 1300)
    assert [(i.product_id, i.quantity, i.unit_price) for i in created.items] == [
        ("a", 2, 150),
        ("b", 1, 1000),
    ]


async def test_each_command_replies_with_position_and_stream_version(commands: Stub) -> None:
    await create(commands, "other")
    await create(commands, "o-1")
    confirmed = await commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-1", expected_version=1))
    assert (confirmed.position, confirmed.stream_version) == (3, 2)
    assert confirmed.events[0].type == "OrderConfirmed"
    assert confirmed.events[0].order_confirmed.order_id == "o-1"
    shipped = await commands.ShipOrder(pb.ShipOrderRequest(order_id="o-1", tracking_number="T-1"))
    assert (shipped.position, shipped.stream_version) == (4, 3)
    assert shipped.events[0].order_shipped.tracking_number == "T-1"
    await create(commands, "o-2")
    cancelled = await commands.CancelOrder(pb.CancelOrderRequest(order_id="o-2", reason="too slow"))
    assert (cancelled.position, cancelled.stream_version) == (6, 2)
    assert (cancelled.events[0].type, cancelled.events[0].order_cancelled.reason) == (
        "OrderCancelled",
        "too slow",
    )


async def test_a_retried_command_returns_the_original_reply_deduplicated(
    commands: Stub, files: Files
) -> None:
    original = await create(commands, "o-1", command_id="cmd-1")
    confirm = pb.ConfirmOrderRequest(order_id="o-1", command_id="cmd-2")
    confirmed = await commands.ConfirmOrder(confirm)
    await create(commands, "o-2")
    again = await create(commands, "o-1", command_id="cmd-1")
    assert again.deduplicated is True
    assert (again.position, again.stream_version) == (original.position, original.stream_version)
    assert list(again.events) == list(original.events)
    confirmed_again = await commands.ConfirmOrder(confirm)
    assert confirmed_again.deduplicated is True
    assert list(confirmed_again.events) == list(confirmed.events)
    assert head(files) == 3


async def test_concurrent_retries_append_once(commands: Stub, files: Files) -> None:
    replies = await asyncio.gather(*(create(commands, "o-1", command_id="cmd-1") for _ in range(8)))
    assert sorted(r.deduplicated for r in replies) == [False] + [True] * 7
    assert {r.position for r in replies} == {1}
    assert head(files) == 1


async def test_concurrent_commands_get_gap_free_positions(commands: Stub, files: Files) -> None:
    replies = await asyncio.gather(*(create(commands, f"o-{i}") for i in range(100)))
    assert sorted(r.position for r in replies) == list(range(1, 101))
    assert all(r.events[0].order_created.order_id == f"o-{i}" for i, r in enumerate(replies))
    assert head(files) == 100


# -- status codes ---------------------------------------------------------------------------------


async def code_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    return refused.value


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (create_request(""), ["order_id"]),
        (create_request(LONG), ["order_id"]),
        (create_request("o\x01"), ["order_id"]),
        (create_request("o-1", ""), ["customer_id"]),
        (create_request("o-1", LONG), ["customer_id"]),
        (create_request("o-1", items=[]), ["items"]),
        (create_request("o-1", items=[(f"p{i}", 1, 1) for i in range(101)]), ["items"]),
        (create_request("o-1", items=[("a", 1, 1), ("b", 0, 5)]), ["items[1].quantity"]),
        (create_request("o-1", items=[("a", 2, MAX // 2 + 1)]), ["items"]),
        (create_request("o-1", items=[("", 1, 1)]), ["items[0].product_id"]),
        (create_request("o-1", command_id=LONG), ["command_id"]),
        (create_request("", "", items=[]), ["order_id", "customer_id", "items"]),
        (pb.ConfirmOrderRequest(order_id=""), ["order_id"]),
        (pb.ShipOrderRequest(order_id="o-1", tracking_number=""), ["tracking_number"]),
        (pb.ShipOrderRequest(order_id="o-1", tracking_number="T" * 129), ["tracking_number"]),
        (pb.CancelOrderRequest(order_id="o-1", reason="r" * 501), ["reason"]),
        (pb.CancelOrderRequest(order_id="o-1", command_id=LONG), ["command_id"]),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else type(v).__name__,
)
async def test_a_malformed_field_is_invalid_argument_naming_it(
    commands: Stub, files: Files, request_: object, fields: list[str]
) -> None:
    await create(commands, "o-1")  # exists, so only the malformed field can be the reason
    method = {
        pb.CreateOrderRequest: commands.CreateOrder,
        pb.ConfirmOrderRequest: commands.ConfirmOrder,
        pb.ShipOrderRequest: commands.ShipOrder,
        pb.CancelOrderRequest: commands.CancelOrder,
    }[type(request_)]
    error = await code_of(method(request_))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == fields
    assert head(files) == 1  # nothing appended


async def test_a_command_id_reused_by_a_different_request_is_invalid_argument(
    commands: Stub, files: Files
) -> None:
    await create(commands, "o-1", command_id="cmd-1")
    error = await code_of(commands.CreateOrder(create_request("o-2", command_id="cmd-1")))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["command_id"]
    assert head(files) == 1


async def test_creating_an_existing_order_is_already_exists(commands: Stub) -> None:
    await create(commands, "o-1")
    error = await code_of(commands.CreateOrder(create_request("o-1", "someone-else")))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "o-1" in error.details()


@pytest.mark.parametrize(
    "request_",
    [
        pb.ConfirmOrderRequest(order_id="ghost"),
        pb.ShipOrderRequest(order_id="ghost", tracking_number="T"),
        pb.CancelOrderRequest(order_id="ghost"),
    ],
    ids=lambda r: type(r).__name__,
)
async def test_a_command_for_an_unknown_order_is_not_found(commands: Stub, request_: object) -> None:
    method = {
        pb.ConfirmOrderRequest: commands.ConfirmOrder,
        pb.ShipOrderRequest: commands.ShipOrder,
        pb.CancelOrderRequest: commands.CancelOrder,
    }[type(request_)]
    error = await code_of(method(request_))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "ghost" in error.details()


async def test_a_transition_the_status_does_not_allow_is_failed_precondition(
    commands: Stub, files: Files
) -> None:
    await create(commands, "o-1")
    error = await code_of(commands.ShipOrder(pb.ShipOrderRequest(order_id="o-1", tracking_number="T")))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    await commands.CancelOrder(pb.CancelOrderRequest(order_id="o-1"))
    for call in (
        commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-1")),
        commands.CancelOrder(pb.CancelOrderRequest(order_id="o-1")),
    ):
        assert (await code_of(call)).code() is grpc.StatusCode.FAILED_PRECONDITION
    assert head(files) == 2


async def test_a_wrong_expected_version_is_aborted_naming_both_versions(commands: Stub, files: Files) -> None:
    await create(commands, "o-1")
    error = await code_of(commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-1", expected_version=7)))
    assert error.code() is grpc.StatusCode.ABORTED
    assert "7" in error.details() and "1" in error.details()
    error = await code_of(commands.CancelOrder(pb.CancelOrderRequest(order_id="o-1", expected_version=0)))
    assert error.code() is grpc.StatusCode.ABORTED
    assert head(files) == 1


async def test_two_commands_expecting_the_same_version_never_both_succeed(
    commands: Stub, files: Files
) -> None:
    await create(commands, "o-1")
    results = await asyncio.gather(
        commands.ConfirmOrder(pb.ConfirmOrderRequest(order_id="o-1", expected_version=1)),
        commands.CancelOrder(pb.CancelOrderRequest(order_id="o-1", expected_version=1)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.CommandReply)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 1
    assert lost[0].code() is grpc.StatusCode.ABORTED
    assert head(files) == 2


async def test_an_unexpected_error_is_internal_and_the_server_keeps_serving(
    commands: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(result: object) -> pb.CommandReply:
        raise RuntimeError("reply builder exploded")

    monkeypatch.setattr(write_servicer, "reply", broken)
    error = await code_of(commands.CreateOrder(create_request("o-1")))
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "reply builder exploded" in error.details()
    monkeypatch.undo()
    assert (await create(commands, "o-2")).position == 2


async def test_storage_unavailable_is_unavailable(
    commands: Stub, write_service: write_app.WriteService, files: Files
) -> None:
    await create(commands, "o-1")
    saboteur = sqlite3.connect(files.events, isolation_level=None)
    try:
        saboteur.execute("ALTER TABLE events RENAME TO events_gone")
        error = await code_of(commands.CreateOrder(create_request("o-2")))
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        saboteur.execute("ALTER TABLE events_gone RENAME TO events")
    finally:
        saboteur.close()
    assert (await create(commands, "o-2")).position == 2


# -- health ---------------------------------------------------------------------------------------


async def test_health_is_serving(write_service: write_app.WriteService) -> None:
    async with grpc.aio.insecure_channel(write_service.host.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", write_app.SERVICE_NAME):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(write_service: write_app.WriteService) -> None:
    async with grpc.aio.insecure_channel(write_service.host.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"orders.v1.OrderCommandService", "grpc.health.v1.Health"} <= names
