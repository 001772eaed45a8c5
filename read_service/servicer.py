"""OrderQueryService: translates protobuf queries to domain queries and read-model documents back,
attaching the read-model and event-store versions to every answer, errors included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from eventcore.projection_status import ProjectionStatus, projection_statuses
from eventcore.read_path import Answer, ReadPath
from orders import queries
from orders.order import OrderStatus
from orders.projections import OrderDocument
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from read_service.storage import StorageSlot
from servicekit.protobuf import optional_timestamp
from servicekit.status import CallTracker, TrackedServicer, grpc_method
from servicekit.streams import grpc_stream

_STATUS_TO_PB = {
    OrderStatus.PENDING.value: pb.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED.value: pb.ORDER_STATUS_CONFIRMED,
    OrderStatus.SHIPPED.value: pb.ORDER_STATUS_SHIPPED,
    OrderStatus.CANCELLED.value: pb.ORDER_STATUS_CANCELLED,
}
_STATUS_FROM_PB = {number: OrderStatus(name) for name, number in _STATUS_TO_PB.items()}


def _fill_time(message: Any, micros: int) -> None:
    """Set a Timestamp field in place; 0 ("not yet") leaves it unset."""
    if micros:
        seconds, remainder = divmod(micros, 1_000_000)
        message.seconds = seconds
        message.nanos = remainder * 1000


# Reply messages are filled in place (fields of a message the parent or add() created): keyword
# sub-messages are built and then copied, which made a page of summaries cost three times as much.
def fill_order_view(view: pb.OrderView, doc: OrderDocument) -> None:
    view.order_id = doc["order_id"]
    view.customer_id = doc["customer_id"]
    add = view.items.add
    for product_id, quantity, unit_price in doc["items"]:
        add(product_id=product_id, quantity=quantity, unit_price=unit_price)
    view.status = _STATUS_TO_PB[doc["status"]]
    view.total = doc["total"]
    view.version = doc["version"]
    _fill_time(view.created_at, doc["created_at"])
    _fill_time(view.confirmed_at, doc["confirmed_at"])
    _fill_time(view.shipped_at, doc["shipped_at"])
    _fill_time(view.cancelled_at, doc["cancelled_at"])
    view.tracking_number = doc["tracking_number"]
    view.cancel_reason = doc["cancel_reason"]


def order_view(doc: OrderDocument) -> pb.OrderView:
    view = pb.OrderView()
    fill_order_view(view, doc)
    return view


def fill_order_summary(summary: pb.OrderSummary, doc: OrderDocument) -> None:
    summary.order_id = doc["order_id"]
    summary.customer_id = doc["customer_id"]
    summary.status = _STATUS_TO_PB[doc["status"]]
    summary.total = doc["total"]
    _fill_time(summary.created_at, doc["created_at"])


def order_summary(doc: OrderDocument) -> pb.OrderSummary:
    summary = pb.OrderSummary()
    fill_order_summary(summary, doc)
    return summary


def customer_summary(doc: queries.CustomerAnswer) -> pb.CustomerSummary:
    return pb.CustomerSummary(
        customer_id=doc["customer_id"],
        order_count=doc["order_count"],
        pending_count=doc["pending_count"],
        confirmed_count=doc["confirmed_count"],
        shipped_count=doc["shipped_count"],
        cancelled_count=doc["cancelled_count"],
        total_value=doc["total_value"],
        last_order_at=optional_timestamp(doc["last_order_at"]),
        total_value_saturated=doc["total_value_saturated"],
    )


def projection_state(status: ProjectionStatus) -> pb.ProjectionState:
    return pb.ProjectionState(
        name=status.name,
        position=status.position,
        updated_at=optional_timestamp(status.updated_at_us),
        state=status.state,
        lag=status.lag,
        version=status.version,
        parked_streams=status.parked_streams,
        last_error=status.last_error,
    )


def consistency(answer: Answer[Any]) -> pb.Consistency:
    return pb.Consistency(
        read_model_version=answer.read_model_version,
        event_store_version=answer.event_store_version,
        is_consistent=answer.is_consistent,
    )


def product_sales(sales: queries.ProductSales) -> pb.ProductSales:
    return pb.ProductSales(
        product_id=sales["product_id"],
        units_sold=sales["units_sold"],
        revenue=sales["revenue"],
        order_count=sales["order_count"],
        saturated=sales["saturated"],
    )


def list_response(page: queries.OrderPage, consistency: pb.Consistency) -> pb.ListOrdersResponse:
    response = pb.ListOrdersResponse(next_page_token=page.next_page_token, consistency=consistency)
    add = response.orders.add
    for doc in page.orders:
        fill_order_summary(add(), doc)
    return response


class OrderQueryServicer(TrackedServicer, orders_pb2_grpc.OrderQueryServiceServicer):
    def __init__(self, path: ReadPath, storage: StorageSlot, calls: CallTracker) -> None:
        super().__init__(calls)
        self._path = path
        self._storage = storage

    async def _answer(
        self, query: object, min_position: int, context: grpc.aio.ServicerContext
    ) -> tuple[Any, pb.Consistency]:
        """The read path's answer and its versions, which also go out as trailing metadata."""

        def versions(read_model: int, event_store: int) -> None:
            context.set_trailing_metadata(
                (("x-read-model-version", str(read_model)), ("x-event-store-version", str(event_store)))
            )

        answer = await self._path.ask(query, min_position, context.time_remaining(), versions)
        return answer.value, consistency(answer)

    @grpc_method
    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        document, consistency = await self._answer(
            queries.GetOrder(request.order_id), request.min_position, context
        )
        response = pb.GetOrderResponse(consistency=consistency)
        fill_order_view(response.order, document)
        return response

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
    async def GetProductSales(
        self, request: pb.GetProductSalesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProductSalesResponse:
        sales, consistency = await self._answer(
            queries.GetProductSales(request.product_id), request.min_position, context
        )
        return pb.GetProductSalesResponse(sales=product_sales(sales), consistency=consistency)

    @grpc_method
    async def ListTopProducts(
        self, request: pb.ListTopProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTopProductsResponse:
        top, consistency = await self._answer(
            queries.ListTopProducts(request.limit), request.min_position, context
        )
        return pb.ListTopProductsResponse(products=[product_sales(s) for s in top], consistency=consistency)

    @grpc_method
    async def GetProjectionStatus(
        self, request: pb.GetProjectionStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProjectionStatusResponse:
        storage = self._storage.get()
        head = storage.events.head_position()
        return pb.GetProjectionStatusResponse(
            projections=[projection_state(s) for s in projection_statuses(storage.read_model, head)],
            event_store_version=head,
        )

    @grpc_stream
    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetOrderResponse]:
        query = queries.GetOrder(request.order_id)
        async for answer in self._path.watch(query, request.min_position, context.time_remaining()):
            yield pb.GetOrderResponse(order=order_view(answer.value), consistency=consistency(answer))

    @grpc_stream
    async def WatchCustomerOrders(
        self, request: pb.WatchCustomerOrdersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchCustomerOrdersResponse]:
        """The newest orders first, then each order as the events of the following answers change it."""
        current = queries.ListOrdersByCustomer(request.customer_id, queries.MAX_PAGE_SIZE)
        answer = await self._path.ask(current, request.min_position, context.time_remaining())
        documents = answer.value.orders
        while True:
            versions = consistency(answer)
            for document in documents:
                yield pb.WatchCustomerOrdersResponse(order=order_summary(document), consistency=versions)
            changed = queries.CustomerOrdersChanged(request.customer_id, answer.read_model_version)
            answer = await self._path.after(changed, answer.read_model_version)
            documents = answer.value
