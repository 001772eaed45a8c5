"""The ceiling: a `grpc.aio` server with the real services' shape and none of their work.

It implements OrderCommandService (ExecuteCommands too) and OrderQueryService with canned replies of
realistic size (a CommandReply carrying one OrderCreated event, an OrderView with items and timestamps,
a page of ten summaries), so the difference between it and the real services is exactly what the services do.
Run as `python -m bench.noop_server --listen 127.0.0.1:0`; prints `listening on HOST:PORT` first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import grpc

from bench import workload
from bench.api import grpc_api
from orders_api.v1 import orders_pb2, orders_pb2_grpc

log = logging.getLogger(__name__)


def _timestamp() -> dict[str, int]:
    # A dict initializes a message field: no import of google.protobuf (it has no type stubs here).
    return {"seconds": 1_795_681_000, "nanos": 123_456_000}


def _items() -> list[Any]:
    return [
        orders_pb2.OrderItem(product_id=p, quantity=q, unit_price=u) for p, q, u in workload.ITEM_VARIANTS[0]
    ]


def _consistency() -> Any:
    return orders_pb2.Consistency(read_model_version=10_000, event_store_version=10_000, is_consistent=True)


def canned_command_reply() -> Any:
    items = _items()
    created = orders_pb2.OrderCreated(
        order_id="o0000001",
        customer_id="c000001",
        items=items,
        total=workload.total_of(workload.ITEM_VARIANTS[0]),
    )
    event = orders_pb2.Event(
        position=10_001,
        event_id="0b7e4a52-1a7e-4f5c-9a57-3f0d8e0c2a11",
        stream_id="order-o0000001",
        stream_version=1,
        type="OrderCreated",
        recorded_at=_timestamp(),
        command_id="cmd-o0000001",
        order_created=created,
    )
    return orders_pb2.CommandReply(events=[event], position=10_001, stream_version=1)


def canned_order() -> Any:
    view = orders_pb2.OrderView(
        order_id="o0000001",
        customer_id="c000001",
        items=_items(),
        status=orders_pb2.ORDER_STATUS_PENDING,
        total=workload.total_of(workload.ITEM_VARIANTS[0]),
        version=1,
        created_at=_timestamp(),
    )
    return orders_pb2.GetOrderResponse(order=view, consistency=_consistency())


def canned_page() -> Any:
    summaries = [
        orders_pb2.OrderSummary(
            order_id=workload.order_id(i),
            customer_id="c000001",
            status=orders_pb2.ORDER_STATUS_PENDING,
            total=2899,
            created_at=_timestamp(),
        )
        for i in range(workload.ORDERS_PER_CUSTOMER)
    ]
    return orders_pb2.ListOrdersResponse(orders=summaries, consistency=_consistency())


class NoopCommands(orders_pb2_grpc.OrderCommandServiceServicer):
    """Answers every command with the same reply, without reading the request."""

    def __init__(self) -> None:
        self._reply = canned_command_reply()

    async def CreateOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._reply

    async def ConfirmOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._reply

    async def ShipOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._reply

    async def CancelOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._reply

    async def ExecuteCommands(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        """One outcome per envelope, at once: the ceiling of a command stream."""
        outcome = orders_pb2.CommandOutcome(reply=self._reply)
        async for envelope in request_iterator:
            outcome.correlation_id = envelope.correlation_id
            await context.write(outcome)


class NoopQueries(orders_pb2_grpc.OrderQueryServiceServicer):
    """Answers every query with the same reply."""

    def __init__(self) -> None:
        self._order = canned_order()
        self._page = canned_page()

    async def GetOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._order

    async def ListOrdersByCustomer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._page

    async def ListOrdersByStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._page


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    grpc_api.add_OrderCommandServiceServicer_to_server(NoopCommands(), server)
    grpc_api.add_OrderQueryServiceServicer_to_server(NoopQueries(), server)
    host = listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(listen)
    if port == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    print(f"listening on {host}:{port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noop_server", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 picks a free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
