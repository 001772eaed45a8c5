"""Metrics: each real process serves /metrics with `--metrics-listen`, and the numbers move with the work.

Commands by type and status code (a refusal included, and those of a command stream, each counted as
its unary RPC), queries by method and code, the command duration histogram, the event store's head, and
each projection's position, lag and parked streams (a stream parked by an event its handlers fail on),
as a scrape of each process shows them; and a bad `--metrics-listen` exits 2 (syntax) or 1 (cannot bind).
"""

from __future__ import annotations

import signal
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from e2e_support import ServiceProcess, Trio, create_request, rpc_error, run_cli, unique
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_read_side import insert_event

from orders_api.v1 import orders_pb2

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(process: ServiceProcess) -> Samples:
    with urllib.request.urlopen(f"http://{process.metrics_address()}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def projections(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["projection"]: v for (n, labels), v in samples.items() if n == name}


@pytest.mark.sqlite_files
def test_each_process_serves_metrics_that_move_with_the_work(make_trio: Callable[..., Trio]) -> None:
    trio = make_trio(metrics_listen="127.0.0.1:0", name="metrics")
    trio.start_all()
    before = {p.module: scrape(p) for p in trio.processes()}

    order_id = unique("order")
    trio.commands.CreateOrder(create_request(order_id), timeout=10)
    trio.commands.CreateOrder(create_request(unique("order")), timeout=10)
    trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=order_id), timeout=10)
    refused = rpc_error(trio.commands.CreateOrder, create_request(order_id))
    assert refused.code() == grpc.StatusCode.ALREADY_EXISTS
    malformed = rpc_error(trio.commands.ConfirmOrder, orders_pb2.ConfirmOrderRequest(order_id=""))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    streamed = unique("order")
    envelopes = [
        orders_pb2.CommandEnvelope(correlation_id=1, create=create_request(streamed)),
        orders_pb2.CommandEnvelope(correlation_id=2, create=create_request(streamed)),
    ]
    outcomes = list(trio.commands.ExecuteCommands(iter(envelopes), timeout=10))
    assert sorted(o.WhichOneof("outcome") for o in outcomes) == ["error", "reply"]
    head = trio.head()
    trio.queries.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, min_position=head), timeout=10)
    missing = rpc_error(trio.queries.GetOrder, orders_pb2.GetOrderRequest(order_id=unique("none")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    trio.wait_projected(head)

    write = scrape(trio.write)
    old = before["write_service"]

    def moved(name: str, **labels: str) -> float:
        return value(write, name, **labels) - value(old, name, **labels)

    # The stream's two commands count as CreateOrder commands, the stream itself not at all.
    assert moved("orders_commands_total", type="CreateOrder", code="OK") == 3
    assert moved("orders_commands_total", type="CreateOrder", code="ALREADY_EXISTS") == 2
    assert moved("orders_commands_total", type="ConfirmOrder", code="OK") == 1
    assert moved("orders_commands_total", type="ConfirmOrder", code="INVALID_ARGUMENT") == 1
    assert moved("orders_commands_total", type="ShipOrder", code="OK") == 0
    assert moved("orders_command_duration_seconds_count", type="CreateOrder") == 5
    assert moved("orders_command_duration_seconds_bucket", type="CreateOrder", le="+Inf") == 5
    assert moved("orders_command_duration_seconds_sum", type="CreateOrder") > 0
    assert not [key for key in write if ("type", "ExecuteCommands") in key[1]]
    assert value(write, "orders_event_store_head") == head == 4

    read = scrape(trio.read)
    old = before["read_service"]
    assert (
        value(read, "orders_queries_total", method="GetOrder", code="OK")
        - value(old, "orders_queries_total", method="GetOrder", code="OK")
        == 1
    )
    assert value(read, "orders_queries_total", method="GetOrder", code="NOT_FOUND") == 1
    assert value(read, "orders_queries_total", method="GetProjectionStatus", code="OK") >= 1  # the waits
    assert value(read, "orders_event_store_head") == head

    for samples in (read, scrape(trio.projector)):
        positions = projections(samples, "orders_projection_position")
        assert set(positions) >= {"order_view", "customer_summary"}
        assert set(positions.values()) == {head}
        assert set(projections(samples, "orders_projection_lag_events").values()) == {0}
        assert set(projections(samples, "orders_parked_streams").values()) == {0}

    # With the projector stopped, the read service sees the projections fall behind the head.
    assert trio.projector.stop() == 0
    trio.commands.CreateOrder(create_request(unique("order")), timeout=10)
    behind = scrape(trio.read)
    assert value(behind, "orders_event_store_head") == head + 1
    assert set(projections(behind, "orders_projection_position").values()) == {head}
    assert set(projections(behind, "orders_projection_lag_events").values()) == {1}

    # An event its handlers fail on parks its stream in the two projections that handle it.
    assert trio.write.stop(signal.SIGTERM) == 0
    ghost = insert_event(trio.events_db, "order-ghost", 1, "OrderConfirmed", {"order_id": "ghost"})
    trio.start_projector()
    trio.wait_projected(ghost)
    for samples in (scrape(trio.read), scrape(trio.projector)):
        assert projections(samples, "orders_parked_streams") == {
            "order_view": 1,
            "customer_summary": 1,
            "product_sales": 0,
        }
        assert set(projections(samples, "orders_projection_lag_events").values()) == {0}


def test_a_bad_metrics_address_exits_2_and_one_that_cannot_be_bound_exits_1(tmp_path: Path) -> None:
    files = ["--event-store", f"{tmp_path}/events.db", "--read-db", f"{tmp_path}/read.db"]
    commands = {
        "write_service": ["--listen", "127.0.0.1:0", "--event-store", f"{tmp_path}/events.db"],
        "projector": files,
        "read_service": ["--listen", "127.0.0.1:0", *files],
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for module, args in commands.items():
            syntax = run_cli(module, [*args, "--metrics-listen", "no-port"])
            assert syntax.returncode == 2, syntax.stderr
            assert len(syntax.stderr.strip().splitlines()) == 1, syntax.stderr
            assert "--metrics-listen" in syntax.stderr
            in_use = run_cli(module, [*args, "--metrics-listen", f"127.0.0.1:{port}"])
            assert in_use.returncode == 1, in_use.stderr
            errors = [line for line in in_use.stderr.splitlines() if " ERROR " in line]
            assert len(errors) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in errors[0], (
                in_use.stderr
            )
            assert "Traceback" not in in_use.stderr
