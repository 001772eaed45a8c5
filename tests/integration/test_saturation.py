"""Sums over stored values never fail an answer: past 2^64-1 they saturate and say so."""

from __future__ import annotations

from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc

from .conftest import Projector
from .support import create

MAX_TOTAL = 2**63 - 1
U64_MAX = 2**64 - 1


async def test_a_customer_total_past_u64_saturates_and_says_so(
    commands: orders_pb2_grpc.OrderCommandServiceStub,
    queries: orders_pb2_grpc.OrderQueryServiceStub,
    projector: Projector,
) -> None:
    for n in range(3):
        await create(commands, f"big-{n}", customer_id="whale", items=[("gold", 1, MAX_TOTAL)])
    projector.catch_up()
    summary = (await queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id="whale"))).summary
    assert (summary.order_count, summary.total_value, summary.total_value_saturated) == (3, U64_MAX, True)

    await commands.CancelOrder(pb.CancelOrderRequest(order_id="big-0"))
    projector.catch_up()
    summary = (await queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id="whale"))).summary
    assert (summary.total_value, summary.total_value_saturated) == (2 * MAX_TOTAL, False)
