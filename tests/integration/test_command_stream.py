"""ExecuteCommands over real gRPC: each outcome as its unary RPC answers, order within a stream,
flow control against a reader that does not read, and a clean end when the server stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from eventcore.sqlite.event_store import SQLiteEventLogReader
from orders.events import order_codec
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from write_service import app as write_app

from .conftest import GRACE, Files
from .support import create_request

Stub = orders_pb2_grpc.OrderCommandServiceStub
MAX = 2**63 - 1


async def started(events: Path, **settings: Any) -> write_app.WriteService:
    service = write_app.WriteService(
        write_app.Settings(**{"listen": "127.0.0.1:0", "event_store": events, "grace": GRACE, **settings})
    )
    await service.start()
    return service


def confirm(order_id: str, **kw: Any) -> pb.CommandEnvelope:
    return pb.CommandEnvelope(confirm=pb.ConfirmOrderRequest(order_id=order_id, **kw))


def ship(order_id: str, tracking_number: str = "T-1", **kw: Any) -> pb.CommandEnvelope:
    return pb.CommandEnvelope(
        ship=pb.ShipOrderRequest(order_id=order_id, tracking_number=tracking_number, **kw)
    )


def cancel(order_id: str, reason: str = "", **kw: Any) -> pb.CommandEnvelope:
    return pb.CommandEnvelope(cancel=pb.CancelOrderRequest(order_id=order_id, reason=reason, **kw))


def create(order_id: str, **kw: Any) -> pb.CommandEnvelope:
    return pb.CommandEnvelope(create=create_request(order_id, **kw))


# Every answer a command can get: replies, replays, and each refusal of the status table.
SCENARIO: list[pb.CommandEnvelope] = [
    create("o-1", command_id="c-1"),
    create("o-1", command_id="c-1"),  # the same request again: the original reply, deduplicated
    create("o-1"),  # ALREADY_EXISTS
    create("o-9", command_id="c-1"),  # command_id reused by a different request: INVALID_ARGUMENT
    create("", customer_id="", items=[]),  # INVALID_ARGUMENT naming three fields
    create("o-2", items=[("sku", 0, 1)]),  # quantity 0
    create("o-2", items=[("a", 1, MAX), ("b", 1, 1)]),  # a total over 2^63-1
    create("o-2", items=[("sku", 1, 1)] * 101),  # over 100 items
    create("o-2", command_id="x" * 129),  # an over-long command_id
    confirm("nobody"),  # NOT_FOUND
    confirm("o-1", expected_version=5),  # ABORTED naming both versions
    ship("o-1"),  # FAILED_PRECONDITION: still pending
    ship("o-1", tracking_number=""),  # INVALID_ARGUMENT
    confirm("o-1", expected_version=1, command_id="c-2"),
    confirm("o-1", expected_version=1, command_id="c-2"),  # replay of a command of another batch
    ship("o-1", tracking_number="T-9"),
    cancel("o-1"),  # FAILED_PRECONDITION: shipped
    create("o-2"),
    cancel("o-2", reason="r" * 501),  # INVALID_ARGUMENT
    cancel("o-2", reason="changed my mind"),
    confirm("o-2"),  # FAILED_PRECONDITION: cancelled
    pb.CommandEnvelope(),  # no command at all: INVALID_ARGUMENT
]


def unary_method(stub: Stub, envelope: pb.CommandEnvelope) -> tuple[Callable[..., Any], Any]:
    kind = envelope.WhichOneof("command")
    method = {
        "create": stub.CreateOrder,
        "confirm": stub.ConfirmOrder,
        "ship": stub.ShipOrder,
        "cancel": stub.CancelOrder,
    }[kind]
    return method, getattr(envelope, kind)


async def unary_outcome(stub: Stub, envelope: pb.CommandEnvelope) -> pb.CommandOutcome:
    """What the unary RPC answers for the envelope's command, as an outcome."""
    method, request = unary_method(stub, envelope)
    try:
        return pb.CommandOutcome(reply=await method(request))
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)
        assert status is not None, f"{error.code()} without a google.rpc.Status"
        return pb.CommandOutcome(error=status)


def comparable(outcome: pb.CommandOutcome) -> pb.CommandOutcome:
    """The outcome without what differs between two stores by nature (event ids and times)."""
    copy = pb.CommandOutcome()
    copy.CopyFrom(outcome)
    copy.correlation_id = 0
    for event in copy.reply.events:
        event.ClearField("event_id")
        event.ClearField("recorded_at")
    return copy


async def stream_all(stub: Stub, envelopes: list[pb.CommandEnvelope]) -> dict[int, pb.CommandOutcome]:
    """Send every envelope (correlation ids 1..n) in one stream, then gather the outcomes by id."""

    async def requests() -> AsyncIterator[pb.CommandEnvelope]:
        for number, envelope in enumerate(envelopes, start=1):
            tagged = pb.CommandEnvelope()
            tagged.CopyFrom(envelope)
            tagged.correlation_id = number
            yield tagged

    outcomes: dict[int, pb.CommandOutcome] = {}
    async for outcome in stub.ExecuteCommands(requests(), timeout=60):
        assert outcome.correlation_id not in outcomes, f"two outcomes for {outcome.correlation_id}"
        outcomes[outcome.correlation_id] = outcome
    return outcomes


async def test_each_outcome_is_what_its_unary_rpc_answers(commands: Stub, tmp_path: Path) -> None:
    unary = [await unary_outcome(commands, e) for e in SCENARIO[:-1]]
    streamed_service = await started(tmp_path / "streamed.db")
    try:
        async with grpc.aio.insecure_channel(streamed_service.host.address) as channel:
            streamed = await stream_all(Stub(channel), SCENARIO)
    finally:
        await streamed_service.stop()

    assert sorted(streamed) == list(range(1, len(SCENARIO) + 1))
    for number, expected in enumerate(unary, start=1):
        assert comparable(streamed[number]) == comparable(expected), f"envelope {number}"
    # Every refusal of the status table is in the scenario, with its details.
    codes = {o.error.code for o in unary if o.WhichOneof("outcome") == "error"}
    assert codes == {
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.ALREADY_EXISTS.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        grpc.StatusCode.ABORTED.value[0],
    }
    assert streamed[2].reply.deduplicated and streamed[15].reply.deduplicated
    assert "nobody" in streamed[10].error.message
    assert "5" in streamed[11].error.message and "1" in streamed[11].error.message
    assert bad_request_fields(streamed[5].error) == ["order_id", "customer_id", "items"]
    assert bad_request_fields(streamed[4].error) == ["command_id"]
    no_command = streamed[len(SCENARIO)]
    assert no_command.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert bad_request_fields(no_command.error) == ["command"]


def bad_request_fields(status: status_pb2.Status) -> list[str]:
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    return fields


async def test_commands_for_one_order_are_decided_in_stream_order(commands: Stub) -> None:
    orders = [f"o-{n}" for n in range(60)]
    envelopes = []
    for order_id in orders:
        envelopes += [create(order_id), confirm(order_id), ship(order_id, expected_version=2)]
    outcomes = await stream_all(commands, envelopes)
    assert len(outcomes) == len(envelopes)
    for number, envelope in enumerate(envelopes, start=1):
        outcome = outcomes[number]
        assert outcome.WhichOneof("outcome") == "reply", f"{envelope}: {outcome.error}"
        kind = envelope.WhichOneof("command")
        assert outcome.reply.stream_version == {"create": 1, "confirm": 2, "ship": 3}[kind]
        assert outcome.reply.events[0].stream_id == f"order-{getattr(envelope, kind).order_id}"
    assert sorted(o.reply.position for o in outcomes.values()) == list(range(1, len(envelopes) + 1))


async def test_a_reader_that_does_not_read_holds_the_stream_back(files: Files) -> None:
    window = 8
    total = 1_500
    service = await started(files.events, stream_window=window)
    big_items = [(f"product-{n:03}-" + "p" * 110, 1, 1) for n in range(100)]  # replies of about 13 kB
    try:
        async with grpc.aio.insecure_channel(service.host.address) as channel:
            call = Stub(channel).ExecuteCommands(timeout=120)
            sent = 0

            async def produce() -> None:
                nonlocal sent
                for number in range(1, total + 1):
                    envelope = create(f"o-{number}", items=big_items)
                    envelope.correlation_id = number
                    await call.write(envelope)
                    sent = number
                await call.done_writing()

            producer = asyncio.ensure_future(produce())
            # Nobody reads outcomes: the server's window fills, it stops reading, and the producer stalls.
            (stream,) = await wait_for_streams(service)
            previous = -1
            for _ in range(60):  # a stall: the window full and no append for a second
                await asyncio.sleep(1.0)
                head = service.store.head_position()
                if head == previous and stream.in_flight == window:
                    break
                previous = head
            assert not producer.done(), "all commands went through with nobody reading outcomes"
            assert head < total
            assert sent < total
            assert stream.peak_in_flight <= window
            assert stream.in_flight == window

            received = set()
            async for outcome in call:
                assert outcome.WhichOneof("outcome") == "reply", outcome.error
                received.add(outcome.correlation_id)
            await producer
            assert received == set(range(1, total + 1))
            assert stream.peak_in_flight <= window
    finally:
        await service.stop()


async def wait_for_streams(service: write_app.WriteService, count: int = 1) -> list[Any]:
    for _ in range(500):
        if len(service.servicer.streams) == count:
            return list(service.servicer.streams)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} command streams did not start")


async def test_a_server_stop_ends_an_open_stream_cleanly_after_its_outcomes(files: Files) -> None:
    service = await started(files.events, grace=10.0)
    async with grpc.aio.insecure_channel(service.host.address) as channel:
        call = Stub(channel).ExecuteCommands(timeout=60)
        for number in range(1, 21):
            envelope = create(f"o-{number}")
            envelope.correlation_id = number
            await call.write(envelope)
        received = [await call.read() for _ in range(20)]
        assert {o.correlation_id for o in received} == set(range(1, 21))
        # The client keeps its side open; the stop ends the call with OK, not at the grace's end.
        stopping = asyncio.ensure_future(service.stop())
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        await stopping
    assert head(files) == 20


def head(files: Files) -> int:
    reader = SQLiteEventLogReader.open(files.events, order_codec())
    try:
        return reader.head_position()
    finally:
        reader.close()
