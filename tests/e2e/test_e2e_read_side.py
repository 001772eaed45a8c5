"""Operating the read side with the real processes: a read model added to an existing read database,
events no projection knows, streams a handler fails on (parked, retried, skipped), lag health."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import Trio, create_request, health, item, run_cli, table_indexes, unique, wait_for
from grpc_health.v1 import health_pb2

from orders_api.v1 import orders_pb2 as pb

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def projection(trio: Trio, name: str) -> pb.ProjectionState | None:
    status = trio.queries.GetProjectionStatus(pb.GetProjectionStatusRequest(), timeout=5)
    return next((p for p in status.projections if p.name == name), None)


@pytest.mark.sqlite_files
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


def insert_event(
    events_db: Path, stream: str, version: int, type_name: str, payload: dict[str, object]
) -> int:
    """Append a row to the log by hand, as a newer writer (or a damaged one) would have; its position."""
    connection = sqlite3.connect(events_db, timeout=10)
    try:
        with connection:
            (head,) = connection.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
            metadata = {
                "event_id": unique("ev"),
                "command_id": "",
                "recorded_at": "2026-01-01T00:00:00.000000Z",
            }
            connection.execute(
                "INSERT INTO events (position, stream_id, stream_version, type, schema_version, payload,"
                " metadata) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (head + 1, stream, version, type_name, json.dumps(payload), json.dumps(metadata)),
            )
        return int(head) + 1
    finally:
        connection.close()


def projector_cli(trio: Trio, *command: str) -> subprocess.CompletedProcess[str]:
    flags = ["--event-store", str(trio.events_db), "--read-db", str(trio.read_db)]
    return run_cli("projector", [*flags, *command], timeout=60)


@pytest.mark.sqlite_files
def test_unknown_types_pass_and_a_failing_stream_is_parked_retried_and_skipped(
    make_trio: Callable[..., Trio],
) -> None:
    trio = make_trio()
    trio.start_all()
    customer = unique("cust")
    before = trio.commands.CreateOrder(create_request(unique("o"), customer_id=customer), timeout=10)
    trio.write.stop()
    unknown = insert_event(trio.events_db, "gift-1", 1, "OrderGiftWrapped", {"order_id": "x", "paper": "red"})
    ghost = insert_event(trio.events_db, "order-ghost", 1, "OrderConfirmed", {"order_id": "ghost"})
    trio.start_write()
    after_id = unique("o")
    after = trio.commands.CreateOrder(create_request(after_id, customer_id=customer), timeout=10)
    assert after.position == ghost + 1 == unknown + 2 == before.position + 3
    status = trio.wait_projected(after.position)

    # every other event is projected; the projector keeps running
    order = trio.queries.GetOrder(
        pb.GetOrderRequest(order_id=after_id, min_position=after.position), timeout=10
    )
    assert order.consistency.is_consistent  # this order's stream is not parked
    summary = trio.queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id=customer), timeout=10)
    assert summary.summary.order_count == 2
    assert not summary.consistency.is_consistent  # the summary may miss a parked stream's events
    states = {p.name: p for p in status.projections}
    assert states["order_view"].state == "degraded" and states["order_view"].parked_streams == 1
    assert f"position {ghost}, stream order-ghost" in states["order_view"].last_error
    assert states["product_sales"].state == "running"  # confirmations are not its business
    assert trio.projector.alive()
    log = trio.projector.stderr_text()
    assert log.count("OrderGiftWrapped") == 1, log  # logged once
    assert log.count("parked stream order-ghost") == 2, log  # once per projection it failed

    listed = projector_cli(trio, "parked")
    assert listed.returncode == 1, listed
    lines = listed.stdout.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["customer_summary", "order-ghost", str(ghost)],
        ["order_view", "order-ghost", str(ghost)],
    ]
    assert "ProjectionInconsistency" in lines[0]

    retried = projector_cli(trio, "retry", "--projection", "order_view", "--stream", "order-ghost")
    assert retried.returncode == 1 and "parked again" in retried.stdout, retried  # still no such order
    skipped = projector_cli(trio, "skip", "--projection", "order_view", "--stream", "order-ghost")
    assert skipped.returncode == 0, skipped
    only = projector_cli(trio, "parked", "--projection", "order_view")
    assert (only.returncode, only.stdout) == (0, "no parked streams\n")
    assert (
        projector_cli(trio, "skip", "--projection", "customer_summary", "--stream", "order-ghost").returncode
        == 0
    )
    assert projector_cli(trio, "parked").returncode == 0
    connection = sqlite3.connect(trio.read_db)
    try:
        recorded = connection.execute("SELECT projection, stream_id, position FROM skipped_events").fetchall()
    finally:
        connection.close()
    assert sorted(recorded) == [
        ("customer_summary", "order-ghost", ghost),
        ("order_view", "order-ghost", ghost),
    ]
    assert projector_cli(trio, "retry", "--projection", "nope").returncode == 2

    state = projection(trio, "order_view")
    assert state is not None and (state.state, state.parked_streams) == ("running", 0)
    summary = trio.queries.GetCustomerSummary(pb.GetCustomerSummaryRequest(customer_id=customer), timeout=10)
    assert summary.consistency.is_consistent

    # verify: equal after the skips; then a row edited and one deleted by hand are named
    verified = projector_cli(trio, "verify")
    assert verified.returncode == 0, verified
    connection = sqlite3.connect(trio.read_db, timeout=10)
    try:
        with connection:
            connection.execute(
                "UPDATE rm_customers SET doc = json_set(doc, '$.order_count', 99) WHERE key = ?", (customer,)
            )
            connection.execute("DELETE FROM rm_orders WHERE key = ?", (after_id,))
    finally:
        connection.close()
    verified = projector_cli(trio, "verify")
    assert verified.returncode == 1, verified
    assert f"customer_summary: customers '{customer}' differs" in verified.stdout, verified.stdout
    assert f"order_view: orders '{after_id}' is missing" in verified.stdout, verified.stdout
    assert "product_sales: compared at position" in verified.stdout and "OK" in verified.stdout


def serving(trio: Trio) -> int:
    return health(trio.read_channel(), "orders.v1.OrderQueryService")


@pytest.mark.sqlite_files
def test_health_follows_lag_and_failed_projections(
    make_trio: Callable[..., Trio], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERS_MAX_PARKED", "1")  # the projector's --max-parked
    trio = make_trio(read_args=["--max-lag", "5", "--max-lag-seconds", "1"])
    trio.start_all()
    trio.projector.stop()
    for _ in range(8):
        trio.commands.CreateOrder(create_request(unique("o")), timeout=10)
    time.sleep(0.5)
    assert serving(trio) == SERVING  # lagging, but not for long yet
    wait_for(lambda: serving(trio) == NOT_SERVING, 15, "NOT_SERVING after a long lag")
    trio.start_projector()
    wait_for(lambda: serving(trio) == SERVING, 30, "SERVING once caught up")

    trio.write.stop()
    first = insert_event(trio.events_db, "order-ghost-1", 1, "OrderConfirmed", {"order_id": "ghost-1"})
    insert_event(trio.events_db, "order-ghost-2", 1, "OrderConfirmed", {"order_id": "ghost-2"})
    wait_for(lambda: serving(trio) == NOT_SERVING, 30, "NOT_SERVING once a projection failed")
    state = projection(trio, "order_view")
    assert state is not None and state.state == "failed" and "more than 1 streams parked" in state.last_error
    product_sales = projection(trio, "product_sales")
    assert product_sales is not None and product_sales.state == "running"

    # one stream skipped, the projection resumed: the second ghost parks alone (degraded, serving)
    for projection_name in ("order_view", "customer_summary"):
        skipped = projector_cli(trio, "skip", "--projection", projection_name, "--stream", "order-ghost-1")
        assert skipped.returncode == 0, skipped
        resumed = projector_cli(trio, "retry", "--projection", projection_name)
        assert resumed.returncode == 0, resumed
    wait_for(lambda: serving(trio) == SERVING, 30, "SERVING once no projection failed")
    state = projection(trio, "order_view")
    assert state is not None and (state.state, state.parked_streams) == ("degraded", 1)
    assert state.position == first + 1


@pytest.mark.sqlite_files  # on PostgreSQL, rebuild needs the leadership of the running projector
def test_rebuild_under_query_load_fails_no_query_and_never_goes_back(make_trio: Callable[..., Trio]) -> None:
    trio = make_trio()
    trio.start_all()
    customer = unique("cust")
    first = unique("o")
    trio.commands.CreateOrder(
        create_request(first, customer_id=customer, items=[item("sku-r", 2, 10)]), timeout=10
    )
    for _ in range(400):
        trio.commands.CreateOrder(create_request(unique("o"), customer_id=customer), timeout=10)
    trio.wait_projected(trio.head())

    stop = threading.Event()
    failures: list[str] = []
    versions: dict[str, list[int]] = {"order": [], "summary": [], "top": []}

    def query_load() -> None:
        while not stop.is_set():
            try:
                o = trio.queries.GetOrder(pb.GetOrderRequest(order_id=first), timeout=10)
                versions["order"].append(o.consistency.read_model_version)
                s = trio.queries.GetCustomerSummary(
                    pb.GetCustomerSummaryRequest(customer_id=customer), timeout=10
                )
                versions["summary"].append(s.consistency.read_model_version)
                assert s.summary.order_count >= 401, s.summary
                t = trio.queries.ListTopProducts(pb.ListTopProductsRequest(limit=3), timeout=10)
                versions["top"].append(t.consistency.read_model_version)
            except Exception as error:  # every failure is one too many
                failures.append(repr(error))

    def write_load() -> None:
        while not stop.is_set():
            trio.commands.CreateOrder(create_request(unique("o"), customer_id=customer), timeout=10)
            time.sleep(0.005)

    threads = [threading.Thread(target=query_load), threading.Thread(target=write_load)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        rebuilt = projector_cli(trio, "rebuild")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert rebuilt.returncode == 0, rebuilt
    for name in ("order_view", "customer_summary", "product_sales"):
        assert f"{name}: rebuilt from position 0 to " in rebuilt.stdout, rebuilt.stdout
    assert failures == [], failures[:5]
    for method, seen in versions.items():
        assert len(seen) > 3, (method, seen)
        assert seen == sorted(seen), f"{method}: read_model_version went back: {seen}"
    indexes = table_indexes(trio.read_db, "rm_orders")
    assert any("__g" in name for name in indexes), indexes  # the rebuilt tables answer now
    trio.wait_projected(trio.head())
    verified = projector_cli(trio, "verify")
    assert verified.returncode == 0, verified
