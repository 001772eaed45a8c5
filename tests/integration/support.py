"""Helpers of the integration tests: building requests, reading rich errors and version metadata."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc


def create_request(
    order_id: str,
    customer_id: str = "cust-1",
    items: list[tuple[str, int, int]] | None = None,
    command_id: str = "",
) -> pb.CreateOrderRequest:
    items = items if items is not None else [("sku-1", 2, 150)]
    return pb.CreateOrderRequest(
        order_id=order_id,
        customer_id=customer_id,
        items=[pb.OrderItem(product_id=p, quantity=q, unit_price=u) for p, q, u in items],
        command_id=command_id,
    )


async def create(
    stub: orders_pb2_grpc.OrderCommandServiceStub, order_id: str, **kwargs: Any
) -> pb.CommandReply:
    reply: pb.CommandReply = await stub.CreateOrder(create_request(order_id, **kwargs))
    return reply


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a google.rpc.BadRequest detail of the error names."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    return fields


def versions(metadata: Any) -> tuple[int, int]:
    """(x-read-model-version, x-event-store-version) from trailing metadata."""
    found = {key: value for key, value in metadata}
    return int(found["x-read-model-version"]), int(found["x-event-store-version"])
