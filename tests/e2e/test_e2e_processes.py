"""Processes as a user runs them: any start order, graceful stop on SIGTERM/SIGINT with calls in flight,
and the bounds of a read-your-writes wait (call deadline, --max-wait) while the projector is stopped."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import (
    ServiceProcess,
    Trio,
    create_request,
    event_rows,
    health,
    rpc_error,
    trailing,
    unique,
    wait_for,
)
from grpc_health.v1 import health_pb2

from orders_api.v1 import orders_pb2, orders_pb2_grpc

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
QUERY_SERVICE = "orders.v1.OrderQueryService"
SIGNALS = [signal.SIGTERM, signal.SIGINT]
SIGNAL_IDS = ["SIGTERM", "SIGINT"]


def _query_health(trio: Trio) -> tuple[int, int | None]:
    """(overall status, status of orders.v1.OrderQueryService or None when that name is not registered)."""
    overall = health(trio.read_channel())
    try:
        specific: int | None = health(trio.read_channel(), QUERY_SERVICE)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        specific = None
    return overall, specific


def _assert_not_serving_yet(trio: Trio) -> None:
    overall, specific = _query_health(trio)
    assert overall == NOT_SERVING, f"health says {overall} before the read database exists"
    assert specific in (None, NOT_SERVING), f"{QUERY_SERVICE} health says {specific}"
    for rpc, request in [
        ("GetOrder", orders_pb2.GetOrderRequest(order_id="o-1")),
        ("ListOrdersByStatus", orders_pb2.ListOrdersByStatusRequest(status=orders_pb2.ORDER_STATUS_PENDING)),
        ("GetCustomerSummary", orders_pb2.GetCustomerSummaryRequest(customer_id="c-1")),
        ("GetProjectionStatus", orders_pb2.GetProjectionStatusRequest()),
    ]:
        error = rpc_error(getattr(trio.queries, rpc), request, timeout=5)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{rpc}: {error.code()}: {error.details()}"


START_ORDERS = [
    ("read", "projector", "write"),
    ("projector", "read", "write"),
    ("read", "write", "projector"),
]


@pytest.mark.parametrize("order", START_ORDERS, ids=["-".join(o) for o in START_ORDERS])
def test_any_start_order_works(make_trio: Callable[..., Trio], order: tuple[str, ...]) -> None:
    trio = make_trio()
    started: list[str] = []
    for name in order:
        {"write": trio.start_write, "projector": trio.start_projector, "read": trio.start_read}[name]()
        started.append(name)
        if "read" in started and "projector" not in started:
            _assert_not_serving_yet(trio)
        time.sleep(0.3)  # let it try to open files that may not exist yet
        for proc in trio.processes():
            if proc.proc is not None:
                assert proc.alive(), (
                    f"{proc.module} died when started before the others:\n{proc.stderr_tail()}"
                )

    created = trio.commands.CreateOrder(create_request(unique("o"), "c-start"), timeout=10)
    wait_for(lambda: _query_health(trio)[0] == SERVING, 20, "read service health SERVING")
    assert _query_health(trio)[1] in (None, SERVING)
    reply = trio.queries.GetOrder(
        orders_pb2.GetOrderRequest(
            order_id=created.events[0].order_created.order_id, min_position=created.position
        ),
        timeout=15,
    )
    assert reply.order.status == orders_pb2.ORDER_STATUS_PENDING
    assert trio.wait_projected(created.position).event_store_version == created.position == 1


def test_stdout_carries_only_the_listening_line_and_logs_go_to_stderr(trio: Trio) -> None:
    trio.commands.CreateOrder(create_request(unique("o")), timeout=10)  # something worth logging
    for proc in (trio.write, trio.read):
        assert proc.stdout_text() == f"listening on {proc.address}\n", proc.stdout_text()
    assert trio.projector.stdout_text() == "", "the projector serves nothing and logs to stderr"


def _open_modes(proc: ServiceProcess, paths: list[Path]) -> dict[str, str]:
    """How the process holds each of these files open right now: "ro" or "rw" (from /proc)."""
    modes: dict[str, str] = {}
    wanted = {str(p.resolve()): p.name for p in paths}
    for fd in os.listdir(f"/proc/{proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
            with open(f"/proc/{proc.pid}/fdinfo/{fd}") as info:
                flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags"))
        except (OSError, StopIteration):
            continue
        if target in wanted:
            mode = "ro" if flags & os.O_ACCMODE == os.O_RDONLY else "rw"
            if modes.get(wanted[target]) != "rw":
                modes[wanted[target]] = mode
    return modes


@pytest.mark.sqlite_files
def test_readers_open_the_database_files_read_only(trio: Trio) -> None:
    """Reads /proc/<pid>/fdinfo: the services run on Linux only (their writer lock is fcntl)."""
    created = trio.commands.CreateOrder(create_request(unique("o")), timeout=10)
    trio.queries.GetOrder(
        orders_pb2.GetOrderRequest(
            order_id=created.events[0].order_created.order_id, min_position=created.position
        ),
        timeout=10,
    )
    databases = [trio.events_db, trio.read_db]
    assert _open_modes(trio.read, databases) == {"events.db": "ro", "read.db": "ro"}
    assert _open_modes(trio.projector, databases) == {"events.db": "ro", "read.db": "rw"}
    assert _open_modes(trio.write, databases) == {"events.db": "rw"}


# ------------------------------------------------------------------------------------------------
# Graceful stop
# ------------------------------------------------------------------------------------------------


def _submit_timed(
    fn: Any, requests: list[Any], timeout: float = 30
) -> tuple[list[Future[Any]], dict[int, float]]:
    """Start all calls at once; record when each finished."""
    done_at: dict[int, float] = {}
    lock = threading.Lock()
    futures: list[Future[Any]] = []
    for n, request in enumerate(requests):
        future = fn.future(request, timeout=timeout)

        def record(_: Any, n: int = n) -> None:
            with lock:
                done_at[n] = time.monotonic()

        future.add_done_callback(record)
        futures.append(future)
    return futures, done_at


def _outcomes(futures: list[Future[Any]]) -> list[Any]:
    """Each call's reply, or its RpcError."""
    results: list[Any] = []
    for future in futures:
        try:
            results.append(future.result(timeout=40))
        except grpc.RpcError as error:
            results.append(error)
    return results


def _signal_while_in_flight(
    proc: ServiceProcess, futures: list[Future[Any]], sig: int, require_pending: bool = True
) -> float:
    wait_for(lambda: any(f.done() for f in futures), 20, "the first reply", interval=0.001)
    if require_pending:
        assert not all(f.done() for f in futures), "every call finished before the signal: none in flight"
    signalled = time.monotonic()
    proc.send(sig)
    return signalled


@dataclass
class Stopped:
    """What 300 concurrent calls saw when the server was signalled right after the first reply."""

    trio: Trio
    sig: int
    keys: list[str]  # order id of each call
    results: list[Any]  # reply or RpcError, per call
    finished_after_signal: list[bool]
    exit_code: int

    @property
    def ok(self) -> dict[str, Any]:
        return {
            k: r for k, r in zip(self.keys, self.results, strict=True) if not isinstance(r, grpc.RpcError)
        }

    @property
    def failed(self) -> list[grpc.RpcError]:
        return [r for r in self.results if isinstance(r, grpc.RpcError)]

    def failure_codes(self) -> list[tuple[str, str]]:
        return sorted({(e.code().name, e.details() or "") for e in self.failed})


def _stop_with_calls_in_flight(
    trio: Trio, proc: ServiceProcess, fn: Any, keys: list[str], requests: list[Any], sig: int
) -> Stopped:
    futures, done_at = _submit_timed(fn, requests)
    signalled = _signal_while_in_flight(proc, futures, sig)
    results = _outcomes(futures)
    code = proc.wait()
    return Stopped(trio, sig, keys, results, [done_at[n] > signalled for n in range(len(results))], code)


@pytest.fixture(scope="module", params=SIGNALS, ids=SIGNAL_IDS)
def stopped_write(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stopped]:
    """A write service signalled while 300 creates are in flight."""
    trio = Trio(tmp_path_factory.mktemp("stopped-write"))
    try:
        trio.start_write()
        assert trio.commands.CreateOrder(create_request(unique("o")), timeout=10).position == 1
        ids = [unique("o") for _ in range(300)]
        yield _stop_with_calls_in_flight(
            trio,
            trio.write,
            trio.commands.CreateOrder,
            ids,
            [create_request(i, "c-sig") for i in ids],
            request.param,
        )
    finally:
        trio.close()


def test_write_service_exits_0_on_a_stop_signal(stopped_write: Stopped) -> None:
    assert stopped_write.exit_code == 0, (
        f"write service exited {stopped_write.exit_code} on {signal.Signals(stopped_write.sig).name}:\n"
        f"{stopped_write.trio.write.stderr_tail()}"
    )


def test_write_service_finishes_commands_in_flight_and_half_writes_nothing(stopped_write: Stopped) -> None:
    s = stopped_write
    assert any(
        ok and after
        for ok, after in zip(
            [not isinstance(r, grpc.RpcError) for r in s.results], s.finished_after_signal, strict=True
        )
    ), "no command in flight at the signal finished: in-flight calls were dropped"
    unexpected = [c for c in s.failure_codes() if c[0] not in ("UNAVAILABLE", "CANCELLED")]
    assert not unexpected, f"commands failed at shutdown with {unexpected}"

    rows = event_rows(s.trio.events_db)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)), "positions are not gap-free"
    committed = {r[1]: r[0] for r in rows[1:]}
    replied = {f"order-{i}": reply.position for i, reply in s.ok.items()}
    assert committed == replied, (
        f"events without an OK reply: {sorted(set(committed) - set(replied))[:5]}, "
        f"OK replies without events: {sorted(set(replied) - set(committed))[:5]}"
    )

    s.trio.start_write()  # same event store: nothing half-written, the next position follows on
    after = s.trio.commands.CreateOrder(create_request(unique("o")), timeout=10)
    assert after.position == len(rows) + 1
    if s.ok:
        error = rpc_error(s.trio.commands.CreateOrder, create_request(next(iter(s.ok)), "c-sig"))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert s.trio.write.stop() == 0


def test_commands_refused_at_shutdown_answer_unavailable(stopped_write: Stopped) -> None:
    """A command the server will not run must say so in a retryable way (UNAVAILABLE), not CANCELLED,
    which a client reads as "cancelled by the caller" and cannot tell from a dropped in-flight call."""
    codes = stopped_write.failure_codes()
    assert all(c[0] == "UNAVAILABLE" for c in codes), (
        f"{len(stopped_write.failed)} of 300 commands sent before the signal failed with {codes}"
    )


@pytest.fixture(scope="module", params=SIGNALS, ids=SIGNAL_IDS)
def stopped_read(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stopped]:
    """A read service signalled while queries are in flight: 5 surely so (waiting on min_position for a
    stopped projector, which is restarted after the signal) and 300 quick ones sent just before."""
    trio = Trio(tmp_path_factory.mktemp("stopped-read"))
    try:
        trio.start_all()
        seen = unique("o")
        projected = trio.commands.CreateOrder(create_request(seen), timeout=10)
        trio.wait_projected(projected.position)
        assert trio.projector.stop() == 0
        waited = unique("o")
        created = trio.commands.CreateOrder(create_request(waited), timeout=10)

        waiting = [
            trio.queries.GetOrder.future(
                orders_pb2.GetOrderRequest(order_id=waited, min_position=created.position), timeout=20
            )
            for _ in range(5)
        ]
        time.sleep(0.5)
        assert not any(f.done() for f in waiting), "GetOrder with min_position did not wait"
        quick = orders_pb2.GetOrderRequest(order_id=seen)
        futures, done_at = _submit_timed(trio.queries.GetOrder, [quick] * 300)
        signalled = _signal_while_in_flight(trio.read, futures, request.param, require_pending=False)
        trio.start_projector()
        results = _outcomes(waiting + futures)
        code = trio.read.wait()
        after = [True] * len(waiting) + [done_at[n] > signalled for n in range(len(futures))]
        trio.projector.cleanup()  # the tests only look at the outcome: free the cores
        trio.write.cleanup()
        yield Stopped(trio, request.param, [waited] * 5 + [seen] * 300, results, after, code)
    finally:
        trio.close()


def test_read_service_exits_0_on_a_stop_signal(stopped_read: Stopped) -> None:
    assert stopped_read.exit_code == 0, (
        f"read service exited {stopped_read.exit_code} on {signal.Signals(stopped_read.sig).name}:\n"
        f"{stopped_read.trio.read.stderr_tail()}"
    )


def test_read_service_finishes_queries_in_flight(stopped_read: Stopped) -> None:
    s = stopped_read
    waiting = s.results[:5]
    assert all(not isinstance(r, grpc.RpcError) for r in waiting), (
        "queries waiting on min_position when the signal came did not finish: "
        f"{[(r.code().name, r.details()) for r in waiting if isinstance(r, grpc.RpcError)]}"
    )
    assert all(r.order.order_id == s.keys[0] for r in waiting)
    assert all(r.order.order_id == s.keys[-1] for r in s.results[5:] if not isinstance(r, grpc.RpcError))
    unexpected = [c for c in s.failure_codes() if c[0] not in ("UNAVAILABLE", "CANCELLED")]
    assert not unexpected, f"queries failed at shutdown with {unexpected}"


def test_queries_refused_at_shutdown_answer_unavailable(stopped_read: Stopped) -> None:
    codes = stopped_read.failure_codes()
    assert all(c[0] == "UNAVAILABLE" for c in codes), (
        f"{len(stopped_read.failed)} of 300 queries sent before the signal failed with {codes}"
    )


@pytest.mark.parametrize("sig", SIGNALS, ids=SIGNAL_IDS)
def test_projector_stops_gracefully_while_events_arrive(make_trio: Callable[..., Trio], sig: int) -> None:
    trio = make_trio()
    trio.start_all()
    customer = unique("c")
    futures = [
        trio.commands.CreateOrder.future(create_request(unique("o"), customer), timeout=30)
        for _ in range(400)
    ]
    wait_for(lambda: sum(f.done() for f in futures) >= 100, 20, "100 creates")
    code = trio.projector.stop(sig)
    assert code == 0, (
        f"projector exited {code} on {signal.Signals(sig).name}:\n{trio.projector.stderr_tail()}"
    )
    positions = [f.result(timeout=40).position for f in futures]

    trio.start_projector()
    head = max(positions)
    status = trio.wait_projected(head)
    assert all(p.position == head for p in status.projections), status
    summary = trio.queries.GetCustomerSummary(
        orders_pb2.GetCustomerSummaryRequest(customer_id=customer, min_position=head), timeout=10
    ).summary
    assert (summary.order_count, summary.pending_count, summary.total_value) == (400, 400, 400 * 100)


# ------------------------------------------------------------------------------------------------
# Bounds of the read-your-writes wait
# ------------------------------------------------------------------------------------------------


def test_min_position_wait_ends_at_the_deadline_or_max_wait_and_succeeds_once_projected(
    make_trio: Callable[..., Trio],
) -> None:
    trio = make_trio()
    trio.start_all()
    short = ServiceProcess(
        "read_service",
        [
            "--listen",
            "127.0.0.1:0",
            "--read-db",
            str(trio.read_db),
            "--event-store",
            str(trio.events_db),
            "--max-wait",
            "1",
        ],
        trio.data_dir,
    )
    channel: grpc.Channel | None = None
    try:
        short.start()
        channel = grpc.insecure_channel(short.wait_listening())
        short_stub = orders_pb2_grpc.OrderQueryServiceStub(channel)

        first = unique("o")
        projected = trio.commands.CreateOrder(create_request(first), timeout=10)
        trio.wait_projected(projected.position)
        assert trio.projector.stop(signal.SIGTERM) == 0

        order_id = unique("o")
        created = trio.commands.CreateOrder(create_request(order_id), timeout=10)
        request = orders_pb2.GetOrderRequest(order_id=order_id, min_position=created.position)

        # The call's deadline ends the wait (default --max-wait is 10 s, longer than this deadline).
        started = time.monotonic()
        error = rpc_error(trio.queries.GetOrder, request, timeout=1.0)
        elapsed = time.monotonic() - started
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{error.code()}: {error.details()}"
        assert 0.9 <= elapsed < 2.5, elapsed

        # --max-wait ends it on a server with a short one, before a long deadline.
        started = time.monotonic()
        error = rpc_error(short_stub.GetOrder, request, timeout=8.0)
        elapsed = time.monotonic() - started
        assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{error.code()}: {error.details()}"
        assert 0.9 <= elapsed < 4.0, elapsed
        metadata = trailing(error)
        assert int(metadata["x-read-model-version"]) == projected.position, metadata
        assert int(metadata["x-event-store-version"]) >= created.position, metadata

        # Without min_position the stale read model still answers, and says it is stale.
        stale = trio.queries.GetOrder(orders_pb2.GetOrderRequest(order_id=first), timeout=5)
        assert stale.consistency.read_model_version == projected.position
        assert stale.consistency.event_store_version == created.position
        assert stale.consistency.is_consistent is False
        error = rpc_error(trio.queries.GetOrder, orders_pb2.GetOrderRequest(order_id=order_id), timeout=5)
        assert error.code() == grpc.StatusCode.NOT_FOUND

        # A waiting call completes as soon as the projector catches up.
        waiting = trio.queries.GetOrder.future(request, timeout=15)
        time.sleep(0.3)
        assert not waiting.done(), "GetOrder with min_position answered before the projector ran"
        trio.start_projector()
        reply = waiting.result(timeout=20)
        assert reply.order.order_id == order_id
        assert reply.consistency.read_model_version >= created.position
    finally:
        if channel is not None:
            channel.close()
        short.cleanup()
