"""The requests the load clients send, built the same way against the real and the no-op servers."""

from __future__ import annotations

import random
from typing import Any

from bench import workload
from orders_api.v1 import orders_pb2


class RequestFactory:
    """Builds requests for one client process; `tag` keeps its new order ids unique across runs."""

    def __init__(self, tag: str, orders: int, seed: int = 1) -> None:
        self._tag = tag
        self._orders = max(1, orders)
        self._customers = workload.customers_for(self._orders)
        self._random = random.Random(seed)
        self._items = [
            [orders_pb2.OrderItem(product_id=p, quantity=q, unit_price=u) for p, q, u in variant]
            for variant in workload.ITEM_VARIANTS
        ]

    def create_order(self, sequence: str) -> Any:
        """A CreateOrder for a new order, with an idempotency key as a careful client would send."""
        order = f"{self._tag}-{sequence}"
        index = self._random.randrange(len(self._items))
        return orders_pb2.CreateOrderRequest(
            order_id=order,
            customer_id=workload.customer_id(self._random.randrange(self._customers)),
            items=self._items[index],
            command_id=f"cmd-{order}",
        )

    def get_order(self) -> Any:
        """A GetOrder for a uniformly random existing order: the whole key space, not a hot set."""
        return orders_pb2.GetOrderRequest(order_id=workload.order_id(self._random.randrange(self._orders)))

    def list_by_customer(self) -> Any:
        """The first page (default size) of a random customer's orders: about ten rows."""
        return orders_pb2.ListOrdersByCustomerRequest(
            customer_id=workload.customer_id(self._random.randrange(self._customers))
        )
