"""OrderCommandService: translates protobuf requests to domain commands and results back.

No rules live here: validation and decisions are the domain's, errors map to status codes in
servicekit.status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from eventcore.command_bus import CommandBus, CommandResult
from eventcore.errors import Unavailable
from orders import commands, events
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from servicekit.event_messages import fill_event
from servicekit.metrics import counted_submits
from servicekit.status import CallTracker, TrackedServicer, grpc_method
from write_service.command_stream import DEFAULT_WINDOW, CommandStream


def _items(request_items: Any) -> tuple[events.OrderItem, ...]:
    return tuple(events.OrderItem(i.product_id, i.quantity, i.unit_price) for i in request_items)


def _expected(request: Any) -> int | None:
    return request.expected_version if request.HasField("expected_version") else None


def fill_reply(message: pb.CommandReply, result: CommandResult) -> None:
    """Set the fields of an empty CommandReply (a unary reply, or the one inside an outcome)."""
    message.position = result.position
    message.stream_version = result.stream_version
    message.deduplicated = result.deduplicated
    add = message.events.add
    for event in result.events:
        fill_event(add(), event)


def reply(result: CommandResult) -> pb.CommandReply:
    message = pb.CommandReply()
    fill_reply(message, result)
    return message


def create_command(request: pb.CreateOrderRequest) -> commands.CreateOrder:
    return commands.CreateOrder(
        request.order_id, request.customer_id, _items(request.items), request.command_id
    )


def confirm_command(request: pb.ConfirmOrderRequest) -> commands.ConfirmOrder:
    return commands.ConfirmOrder(request.order_id, _expected(request), request.command_id)


def ship_command(request: pb.ShipOrderRequest) -> commands.ShipOrder:
    return commands.ShipOrder(
        request.order_id, request.tracking_number, _expected(request), request.command_id
    )


def cancel_command(request: pb.CancelOrderRequest) -> commands.CancelOrder:
    return commands.CancelOrder(request.order_id, request.reason, _expected(request), request.command_id)


_ENVELOPE_COMMANDS: dict[str, Callable[[Any], commands.OrderCommand]] = {
    "create": create_command,
    "confirm": confirm_command,
    "ship": ship_command,
    "cancel": cancel_command,
}


def envelope_command(envelope: pb.CommandEnvelope) -> commands.OrderCommand | None:
    """The domain command an envelope carries, as its unary RPC builds it; None if none is set."""
    kind = envelope.WhichOneof("command")
    if kind is None:
        return None
    return _ENVELOPE_COMMANDS[kind](getattr(envelope, kind))


class OrderCommandServicer(TrackedServicer, orders_pb2_grpc.OrderCommandServiceServicer):
    def __init__(
        self, bus: CommandBus, calls: CallTracker, stream_window: int = DEFAULT_WINDOW
    ) -> None:
        super().__init__(calls)
        self._bus = bus
        self._stream_window = stream_window
        self._streams: set[CommandStream] = set()
        self._streams_ending = False

    def end_streams(self) -> None:
        """Make every command stream stop reading and end once its outcomes are written."""
        self._streams_ending = True
        for stream in self._streams:
            stream.end()

    @property
    def streams(self) -> frozenset[CommandStream]:
        return frozenset(self._streams)

    @grpc_method
    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return reply(await self._bus.submit(create_command(request)))

    @grpc_method
    async def ConfirmOrder(
        self, request: pb.ConfirmOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return reply(await self._bus.submit(confirm_command(request)))

    @grpc_method
    async def ShipOrder(
        self, request: pb.ShipOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return reply(await self._bus.submit(ship_command(request)))

    @grpc_method
    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return reply(await self._bus.submit(cancel_command(request)))

    @grpc_method
    async def ExecuteCommands(
        self, request_iterator: AsyncIterator[pb.CommandEnvelope], context: grpc.aio.ServicerContext
    ) -> None:
        if self._streams_ending:
            raise Unavailable("the write service is shutting down")
        bus = counted_submits(self._bus, self.calls.metrics)  # each command counts, not the stream
        stream = CommandStream(bus, context, envelope_command, fill_reply, self._stream_window)
        self._streams.add(stream)
        try:
            await stream.run(request_iterator)
        finally:
            self._streams.discard(stream)
