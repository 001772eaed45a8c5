"""The three processes on PostgreSQL URLs: the same service, with several of each process.

Each test gets database names nobody uses; the services create the databases themselves, and they
are dropped after the test. Skipped (failed under CI) when no PostgreSQL server is reachable.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e_support import STOP_TIMEOUT, ServiceProcess, Trio, create_request, rpc_error, unique, wait_for
from postgres_support import database_url, fresh_database_name, require_server

from orders_api.v1 import orders_pb2, orders_pb2_grpc

pytestmark = [pytest.mark.postgres, pytest.mark.own_databases]  # whatever ORDERS_E2E_BACKEND says


@pytest.fixture
def urls() -> Iterator[tuple[str, str]]:
    """(event store URL, read database URL) of two databases that do not exist yet."""
    require_server()
    with fresh_database_name() as events, fresh_database_name() as read:
        yield database_url(events), database_url(read)


@pytest.fixture
def pg_trio(tmp_path: Path, urls: tuple[str, str]) -> Iterator[Trio]:
    trio = Trio(tmp_path / "trio", event_store=urls[0], read_database=urls[1])
    try:
        yield trio
    finally:
        trio.close()


def own_dir(parent: Path, name: str) -> Path:
    """A log directory of its own (ServiceProcess names its files after the module)."""
    path = parent / name
    path.mkdir()
    return path


def pg_head(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
        return int(row[0]) if row else 0


def test_the_trio_on_postgresql(pg_trio: Trio) -> None:
    pg_trio.start_all()
    order_id = unique("pg")
    created = pg_trio.commands.CreateOrder(create_request(order_id, "c-pg", command_id=f"{order_id}-c"))
    assert (created.position, created.stream_version, created.deduplicated) == (1, 1, False)
    retried = pg_trio.commands.CreateOrder(create_request(order_id, "c-pg", command_id=f"{order_id}-c"))
    assert (retried.position, retried.deduplicated) == (1, True)
    confirmed = pg_trio.commands.ConfirmOrder(
        orders_pb2.ConfirmOrderRequest(order_id=order_id, expected_version=1)
    )
    stale = rpc_error(
        pg_trio.commands.ConfirmOrder, orders_pb2.ConfirmOrderRequest(order_id=order_id, expected_version=1)
    )
    assert stale.code() == grpc.StatusCode.ABORTED

    answer = pg_trio.queries.GetOrder(
        orders_pb2.GetOrderRequest(order_id=order_id, min_position=confirmed.position), timeout=10
    )
    assert answer.order.status == orders_pb2.ORDER_STATUS_CONFIRMED and answer.order.version == 2
    assert answer.consistency.read_model_version >= confirmed.position
    assert answer.consistency.event_store_version == 2
    beyond = rpc_error(
        pg_trio.queries.GetOrder, orders_pb2.GetOrderRequest(order_id=order_id, min_position=99)
    )
    assert beyond.code() == grpc.StatusCode.OUT_OF_RANGE

    status = pg_trio.wait_projected(2)
    assert status.event_store_version == 2
    assert {p.name for p in status.projections} >= {"order_view", "customer_summary"}
    summary = pg_trio.queries.GetCustomerSummary(orders_pb2.GetCustomerSummaryRequest(customer_id="c-pg"))
    assert (summary.summary.order_count, summary.summary.confirmed_count) == (1, 1)
    assert pg_head(str(pg_trio.events_db)) == 2
    for proc in pg_trio.processes():
        assert proc.stop(signal.SIGTERM) == 0, proc.stderr_tail()


def test_two_read_services_answer_from_one_read_database_and_cannot_write(pg_trio: Trio) -> None:
    pg_trio.start_all()
    second = ServiceProcess("read_service", pg_trio.read.args, own_dir(pg_trio.data_dir, "second-read"))
    second.start()
    try:
        address = second.wait_listening()
        order_id = unique("pg2")
        reply = pg_trio.commands.CreateOrder(create_request(order_id, "c-two"))
        with grpc.insecure_channel(address) as channel:
            other = orders_pb2_grpc.OrderQueryServiceStub(channel)
            for stub in (pg_trio.queries, other):
                answer = stub.GetOrder(
                    orders_pb2.GetOrderRequest(order_id=order_id, min_position=reply.position), timeout=10
                )
                assert answer.order.customer_id == "c-two"
        with psycopg.connect(str(pg_trio.read_db)) as connection:
            sessions = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'eventcore'"
            ).fetchone()
            assert sessions and sessions[0] >= 3  # the projector and both read services
        assert second.stop(signal.SIGTERM) == 0
    finally:
        second.cleanup()


def test_a_read_only_session_of_the_read_service_refuses_writes(
    urls: tuple[str, str], tmp_path: Path
) -> None:
    from eventcore.errors import Unavailable
    from eventcore.postgres.read_store import PostgresReadStoreReader, PostgresReadStoreWriter

    writer = PostgresReadStoreWriter.open(urls[1])
    assert writer is not None
    reader = PostgresReadStoreReader.open(urls[1])
    try:
        with pytest.raises(Unavailable, match="read-only transaction"), reader.snapshot() as view:
            view._connection.execute("DELETE FROM projections")  # type: ignore[attr-defined]
    finally:
        reader.close()
        writer.close()


@pytest.mark.parametrize(
    ("module", "flag", "table"),
    [("write_service", "--event-store", "events"), ("projector", "--read-db", "projections")],
)
def test_a_database_that_is_not_ours_is_refused_and_left_alone(
    urls: tuple[str, str], tmp_path: Path, module: str, flag: str, table: str
) -> None:
    url = urls[0] if flag == "--event-store" else urls[1]
    with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {url.rsplit('/', 1)[1]}")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (id integer, note text)")
        connection.execute(f"INSERT INTO {table} VALUES (1, 'theirs')")
    args = {
        "write_service": ["--listen", "127.0.0.1:0", "--event-store", url],
        "projector": ["--event-store", urls[0], "--read-db", url],
    }[module]
    proc = ServiceProcess(module, args, tmp_path)
    proc.start()
    assert proc.wait(STOP_TIMEOUT) == 1
    lines = [line for line in proc.stderr_text().splitlines() if line.strip()]
    assert len(lines) == 1 and "not created by this program" in lines[0] and url in lines[0], lines
    with psycopg.connect(url) as connection:
        assert connection.execute(f"SELECT * FROM {table}").fetchall() == [(1, "theirs")]
        assert connection.execute("SELECT to_regclass('commands')").fetchone() == (None,)


def test_a_password_never_appears_in_a_message(tmp_path: Path) -> None:
    require_server()
    url = "postgresql://nobody:s3cret-pw@127.0.0.1:1/orders"
    proc = ServiceProcess("write_service", ["--listen", "127.0.0.1:0", "--event-store", url], tmp_path)
    proc.start()
    assert proc.wait(STOP_TIMEOUT) == 1
    text = proc.stderr_text()
    assert "s3cret-pw" not in text and "nobody:***@127.0.0.1:1" in text, text
    assert len([line for line in text.splitlines() if line.strip()]) == 1, text


def test_a_standby_projector_takes_over_within_5_s_of_the_leaders_kill_applying_nothing_twice(
    pg_trio: Trio,
) -> None:
    pg_trio.start_all()
    standby = ServiceProcess("projector", pg_trio.projector.args, own_dir(pg_trio.data_dir, "standby"))
    standby.start()
    try:
        wait_for(lambda: "standing by" in standby.stderr_text(), 20, "the second projector to stand by")
        customer = unique("cust")
        orders = [unique("fo") for _ in range(120)]
        for order_id in orders[:60]:
            pg_trio.commands.CreateOrder(create_request(order_id, customer))
        pg_trio.wait_projected(60)

        def load() -> None:  # keeps committing while the leader dies and the standby takes over
            for order_id in orders[60:]:
                pg_trio.commands.CreateOrder(create_request(order_id, customer))
                pg_trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=order_id))

        writer = threading.Thread(target=load)
        writer.start()
        wait_for(lambda: pg_head(str(pg_trio.events_db)) >= 80, 20, "commands under way")
        pg_trio.projector.kill9()
        killed_at = time.monotonic()
        wait_for(lambda: "took over" in standby.stderr_text(), 10, "the standby to take over")
        took_over = time.monotonic() - killed_at
        writer.join(timeout=60)
        assert not writer.is_alive()
        pg_trio.wait_projected(pg_head(str(pg_trio.events_db)))
        summary = pg_trio.queries.GetCustomerSummary(
            orders_pb2.GetCustomerSummaryRequest(customer_id=customer)
        )
        assert summary.summary.order_count == 120  # an event applied twice would count an order twice
        assert (summary.summary.pending_count, summary.summary.confirmed_count) == (60, 60)
        assert took_over < 5.0, f"the standby took {took_over:.1f} s"
        assert standby.stop(signal.SIGTERM) == 0
    finally:
        standby.cleanup()
