"""OrderCommandService: translates protobuf requests to domain commands and results back.

No rules live here: validation and decisions are the domain's, errors map to status codes in
servicekit.status.
"""

from __future__ import annotations

from typing import Any

import grpc

from eventcore.command_bus import CommandBus, CommandResult
from orders import commands, events
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from servicekit.event_messages import event_message
from servicekit.status import CallTracker, TrackedServicer, grpc_method


def _items(request_items: Any) -> tuple[events.OrderItem, ...]:
    return tuple(events.OrderItem(i.product_id, i.quantity, i.unit_price) for i in request_items)


def _expected(request: Any) -> int | None:
    return request.expected_version if request.HasField("expected_version") else None


def reply(result: CommandResult) -> pb.CommandReply:
    return pb.CommandReply(
        events=[event_message(e) for e in result.events],
        position=result.position,
        stream_version=result.stream_version,
        deduplicated=result.deduplicated,
    )


class OrderCommandServicer(TrackedServicer, orders_pb2_grpc.OrderCommandServiceServicer):
    def __init__(self, bus: CommandBus, calls: CallTracker) -> None:
        super().__init__(calls)
        self._bus = bus

    @grpc_method
    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.CreateOrder(
            request.order_id, request.customer_id, _items(request.items), request.command_id
        )
        return reply(await self._bus.dispatch(command))

    @grpc_method
    async def ConfirmOrder(
        self, request: pb.ConfirmOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.ConfirmOrder(request.order_id, _expected(request), request.command_id)
        return reply(await self._bus.dispatch(command))

    @grpc_method
    async def ShipOrder(
        self, request: pb.ShipOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.ShipOrder(
            request.order_id, request.tracking_number, _expected(request), request.command_id
        )
        return reply(await self._bus.dispatch(command))

    @grpc_method
    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.CancelOrder(
            request.order_id, request.reason, _expected(request), request.command_id
        )
        return reply(await self._bus.dispatch(command))
