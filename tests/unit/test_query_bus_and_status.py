"""The query bus's versions and refusals, and the one table from errors to gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from eventcore import errors
from eventcore.memory.read_store import InMemoryReadStoreWriter
from orders import queries
from orders.projections import CUSTOMER_ORDERS, CUSTOMERS, ORDERS
from servicekit.status import STATUS_OF, status_code_of


@pytest.fixture
def views(read_store: InMemoryReadStoreWriter) -> InMemoryReadStoreWriter:
    read_store.reset("order_view", 1, [ORDERS])
    read_store.reset("customer_summary", 1, [CUSTOMERS, CUSTOMER_ORDERS])
    with read_store.transaction() as work:
        work.put(ORDERS, "o-1", {"order_id": "o-1", "customer_id": "c-1", "created_position": 3})
        work.set_checkpoint("order_view", 1, 7)
        work.set_checkpoint("customer_summary", 1, 5)
    return read_store


def test_an_answer_carries_the_version_of_the_projection_it_read(views: InMemoryReadStoreWriter) -> None:
    bus = queries.query_bus()
    reader = views.reader()
    found = bus.ask(reader, queries.GetOrder("o-1"))
    assert (found.value["order_id"], found.read_model_version, found.refusal) == ("o-1", 7, None)
    summary = bus.ask(reader, queries.GetCustomerSummary("c-1"))
    assert summary.read_model_version == 5
    assert summary.value == {
        "customer_id": "c-1",
        "order_count": 0,
        "pending_count": 0,
        "confirmed_count": 0,
        "shipped_count": 0,
        "cancelled_count": 0,
        "total_value": 0,
        "last_order_at": 0,
        "total_value_saturated": False,
    }
    assert bus.read_model_version(reader, queries.GetOrder("x")) == 7


def test_a_refusal_comes_back_with_its_version(views: InMemoryReadStoreWriter) -> None:
    result = queries.query_bus().ask(views.reader(), queries.GetOrder("nope"))
    assert result.value is None
    assert isinstance(result.refusal, errors.NotFound)
    assert result.read_model_version == 7


def test_before_any_projection_ran_the_version_is_zero(read_store: InMemoryReadStoreWriter) -> None:
    read_store.reset("order_view", 1, [ORDERS])
    assert queries.query_bus().ask(read_store.reader(), queries.GetOrder("o")).read_model_version == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument([errors.FieldViolation("f", "bad")]), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.CommandIdReused("c"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ConcurrencyConflict("s", 1, 2), grpc.StatusCode.ABORTED),
        (errors.OutOfRange("x"), grpc.StatusCode.OUT_OF_RANGE),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.WaitTimedOut("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Unregistered("x"), grpc.StatusCode.INTERNAL),
        (errors.HandlerContractViolated("x"), grpc.StatusCode.INTERNAL),
        (errors.ApplicationError("x"), grpc.StatusCode.INTERNAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name,
)
def test_each_error_maps_to_its_status_code(error: errors.ApplicationError, code: grpc.StatusCode) -> None:
    assert status_code_of(error) is code


def test_every_application_error_class_is_in_the_table() -> None:
    def subclasses(cls: type) -> set[type]:
        return {s for c in cls.__subclasses__() for s in {c, *subclasses(c)}}

    assert subclasses(errors.ApplicationError) <= set(STATUS_OF)


def test_a_concurrency_conflict_names_both_versions() -> None:
    message = str(errors.ConcurrencyConflict("order 'o-1'", 3, 5))
    assert "3" in message and "5" in message and "order 'o-1'" in message
