"""OrderQueryService: translates protobuf queries to domain queries and read-model documents back,
attaching the read-model and event-store versions to every answer, errors included.
"""

from __future__ import annotations

from typing import Any

import grpc

from eventcore.errors import DeadlineExceeded, OutOfRange, WaitTimedOut
from eventcore.query_bus import QueryBus
from orders import queries
from orders.order import OrderStatus
from orders.projections import CustomerDocument, OrderDocument
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from read_service.position_watch import PositionWatch
from read_service.storage import StorageSlot
from servicekit.protobuf import optional_timestamp
from servicekit.status import CallTracker, TrackedServicer, grpc_method

_STATUS_TO_PB = {
    OrderStatus.PENDING.value: pb.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED.value: pb.ORDER_STATUS_CONFIRMED,
    OrderStatus.SHIPPED.value: pb.ORDER_STATUS_SHIPPED,
    OrderStatus.CANCELLED.value: pb.ORDER_STATUS_CANCELLED,
}
_STATUS_FROM_PB = {number: OrderStatus(name) for name, number in _STATUS_TO_PB.items()}

# Answer a little before the caller's deadline, so it gets our status rather than its own timeout.
_DEADLINE_MARGIN = 0.005


def order_view(doc: OrderDocument) -> pb.OrderView:
    return pb.OrderView(
        order_id=doc["order_id"],
        customer_id=doc["customer_id"],
        items=[pb.OrderItem(product_id=p, quantity=q, unit_price=u) for p, q, u in doc["items"]],
        status=_STATUS_TO_PB[doc["status"]],
        total=doc["total"],
        version=doc["version"],
        created_at=optional_timestamp(doc["created_at"]),
        confirmed_at=optional_timestamp(doc["confirmed_at"]),
        shipped_at=optional_timestamp(doc["shipped_at"]),
        cancelled_at=optional_timestamp(doc["cancelled_at"]),
        tracking_number=doc["tracking_number"],
        cancel_reason=doc["cancel_reason"],
    )


def order_summary(doc: OrderDocument) -> pb.OrderSummary:
    return pb.OrderSummary(
        order_id=doc["order_id"],
        customer_id=doc["customer_id"],
        status=_STATUS_TO_PB[doc["status"]],
        total=doc["total"],
        created_at=optional_timestamp(doc["created_at"]),
    )


def customer_summary(doc: CustomerDocument) -> pb.CustomerSummary:
    return pb.CustomerSummary(
        customer_id=doc["customer_id"],
        order_count=doc["order_count"],
        pending_count=doc["pending_count"],
        confirmed_count=doc["confirmed_count"],
        shipped_count=doc["shipped_count"],
        cancelled_count=doc["cancelled_count"],
        total_value=doc["total_value"],
        last_order_at=optional_timestamp(doc["last_order_at"]),
    )


def list_response(page: queries.OrderPage, consistency: pb.Consistency) -> pb.ListOrdersResponse:
    return pb.ListOrdersResponse(
        orders=[order_summary(doc) for doc in page.orders],
        next_page_token=page.next_page_token,
        consistency=consistency,
    )


class OrderQueryServicer(TrackedServicer, orders_pb2_grpc.OrderQueryServiceServicer):
    def __init__(
        self, bus: QueryBus, storage: StorageSlot, watch: PositionWatch, max_wait: float, calls: CallTracker
    ) -> None:
        super().__init__(calls)
        self._bus = bus
        self._storage = storage
        self._watch = watch
        self._max_wait = max_wait

    async def _answer(
        self, query: object, min_position: int, context: grpc.aio.ServicerContext
    ) -> tuple[Any, pb.Consistency]:
        """Validate, wait for min_position if asked, answer from one snapshot; versions attached."""
        storage = self._storage.get()
        try:
            self._bus.validate(query)
            if min_position:
                await self._wait_for(query, min_position, context)
            head = storage.events.head_position()
            result = self._bus.ask(storage.read_model, query)
        except Exception:
            head = storage.events.head_position()
            self._set_versions(context, self._bus.read_model_version(storage.read_model, query), head)
            raise
        self._set_versions(context, result.read_model_version, head)
        if result.refusal is not None:
            raise result.refusal
        version = result.read_model_version
        return result.value, pb.Consistency(
            read_model_version=version, event_store_version=head, is_consistent=version >= head
        )

    async def _wait_for(self, query: object, min_position: int, context: grpc.aio.ServicerContext) -> None:
        head = self._storage.get().events.head_position()
        if min_position > head:
            raise OutOfRange(f"min_position {min_position} is beyond the event store's head position {head}")
        remaining = context.time_remaining()
        deadline_first = remaining is not None and remaining - _DEADLINE_MARGIN < self._max_wait
        timeout = max(remaining - _DEADLINE_MARGIN, 0.0) if deadline_first and remaining else self._max_wait
        projections = self._bus.handler_for(query).reads
        try:
            await self._watch.wait_for(min_position, projections, timeout)
        except TimeoutError:
            if deadline_first:
                raise DeadlineExceeded(
                    f"the read model did not reach position {min_position} before the call's deadline"
                ) from None
            raise WaitTimedOut(
                f"the read model did not reach position {min_position} within {self._max_wait:g} s"
            ) from None

    @staticmethod
    def _set_versions(context: grpc.aio.ServicerContext, read_model: int, event_store: int) -> None:
        context.set_trailing_metadata(
            (("x-read-model-version", str(read_model)), ("x-event-store-version", str(event_store)))
        )

    @grpc_method
    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        document, consistency = await self._answer(
            queries.GetOrder(request.order_id), request.min_position, context
        )
        return pb.GetOrderResponse(order=order_view(document), consistency=consistency)

    @grpc_method
    async def ListOrdersByCustomer(
        self, request: pb.ListOrdersByCustomerRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        query = queries.ListOrdersByCustomer(request.customer_id, request.page_size, request.page_token)
        return list_response(*await self._answer(query, request.min_position, context))

    @grpc_method
    async def ListOrdersByStatus(
        self, request: pb.ListOrdersByStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        query = queries.ListOrdersByStatus(
            _STATUS_FROM_PB.get(request.status), request.page_size, request.page_token
        )
        return list_response(*await self._answer(query, request.min_position, context))

    @grpc_method
    async def GetCustomerSummary(
        self, request: pb.GetCustomerSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCustomerSummaryResponse:
        document, consistency = await self._answer(
            queries.GetCustomerSummary(request.customer_id), request.min_position, context
        )
        return pb.GetCustomerSummaryResponse(summary=customer_summary(document), consistency=consistency)

    @grpc_method
    async def GetProjectionStatus(
        self, request: pb.GetProjectionStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProjectionStatusResponse:
        storage = self._storage.get()
        head = storage.events.head_position()
        with storage.read_model.snapshot() as view:
            checkpoints = view.checkpoints()
        return pb.GetProjectionStatusResponse(
            projections=[
                pb.ProjectionState(
                    name=c.name, position=c.position, updated_at=optional_timestamp(c.updated_at_us)
                )
                for c in checkpoints
            ],
            event_store_version=head,
        )
