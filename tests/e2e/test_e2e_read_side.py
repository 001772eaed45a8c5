"""Operating the read side with the real processes: a read model added to an existing read database,
events no projection knows, streams a handler fails on (parked, retried, skipped), lag health."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest
from e2e_support import Trio, create_request, item, unique

from orders_api.v1 import orders_pb2 as pb

pytestmark = pytest.mark.e2e


def projection(trio: Trio, name: str) -> pb.ProjectionState | None:
    status = trio.queries.GetProjectionStatus(pb.GetProjectionStatusRequest(), timeout=5)
    return next((p for p in status.projections if p.name == name), None)


def test_product_sales_catch_up_on_a_read_database_that_holds_only_the_first_two_models(
    make_trio: Callable[..., Trio],
) -> None:
    trio = make_trio()
    trio.start_all()
    product = unique("sku")
    last = None
    for _ in range(30):
        last = trio.commands.CreateOrder(
            create_request(unique("o"), items=[item(product, 2, 25), item("other", 1, 1)]), timeout=10
        )
    assert last is not None
    trio.commands.CancelOrder(
        pb.CancelOrderRequest(order_id=last.events[0].stream_id[len("order-") :]), timeout=10
    )
    head = trio.head()
    trio.wait_projected(head)
    trio.projector.stop()
    # What the first release left behind: its two read models and their checkpoints, nothing else.
    connection = sqlite3.connect(trio.read_db)
    with connection:
        connection.execute("DROP TABLE rm_products")
        connection.execute("DROP TABLE rm_product_orders")
        connection.execute("DELETE FROM projections WHERE name = 'product_sales'")
    connection.close()
    before = {
        p.name: p.position
        for p in trio.queries.GetProjectionStatus(pb.GetProjectionStatusRequest()).projections
    }
    assert before == {"order_view": head, "customer_summary": head}

    trio.start_projector()
    trio.wait_projected(head)
    sales = trio.queries.GetProductSales(
        pb.GetProductSalesRequest(product_id=product, min_position=head), timeout=10
    )
    assert (sales.sales.units_sold, sales.sales.revenue, sales.sales.order_count) == (58, 29 * 50, 29)
    assert sales.consistency.is_consistent
    top = trio.queries.ListTopProducts(pb.ListTopProductsRequest(limit=1), timeout=10)
    assert [p.product_id for p in top.products] == [product]
    log = trio.projector.stderr_text()
    assert "rebuilding" not in log, log  # the two existing read models carried on from their checkpoints
    order_view = projection(trio, "order_view")
    assert order_view is not None and order_view.position == head
