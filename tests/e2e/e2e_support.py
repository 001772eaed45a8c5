"""Helpers for the end-to-end suite: real processes, started as a user would, and sync gRPC clients.

Everything here is bounded by a timeout; nothing waits forever. The sync gRPC API is used throughout
(no event loop to bind to), so channels and stubs can be shared by tests of one running trio.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from orders_api.v1 import orders_pb2, orders_pb2_grpc
from tools import launch

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0  # seconds for a process to print `listening on`
STOP_TIMEOUT = 20.0  # seconds for a process to exit after a signal
RPC_TIMEOUT = 10.0  # default deadline of every call
LISTENING = re.compile(r"^listening on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)\s*$")

METRICS_ON = re.compile(r"metrics on http://(?P<address>\S+)/metrics")

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A short id nobody else uses (every test works with its own orders and customers)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll until predicate returns a truthy value; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last error if we give up
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


class ServiceProcess:
    """One of the three processes, started with `python -m <module> <args>` from the repository root.

    stdout and stderr go to files in the test's data directory (no pipe can fill up and block it).
    """

    def __init__(self, module: str, args: Sequence[str], log_dir: Path) -> None:
        self.module = module
        self.args = list(args)
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: str | None = None
        self.starts = 0
        self._stdout_path: Path | None = None
        self._stderr_path: Path | None = None

    # -- starting --------------------------------------------------------------------------------

    def start(self) -> ServiceProcess:
        assert self.proc is None or self.proc.poll() is not None, f"{self.module} already running"
        self.starts += 1
        self.address = None
        stem = f"{self.module}.{self.starts}"
        self._stdout_path = self.log_dir / f"{stem}.stdout"
        self._stderr_path = self.log_dir / f"{stem}.stderr"
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                launch.argv(self.module, self.args),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=os.environ.copy(),
            )
        return self

    def wait_listening(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """Wait for the first stdout line, `listening on HOST:PORT`; return HOST:PORT."""
        assert self.proc is not None and self._stdout_path is not None
        deadline = time.monotonic() + timeout
        while True:
            text = self._stdout_path.read_bytes().decode(errors="replace")
            if "\n" in text:
                first = text.split("\n", 1)[0]
                match = LISTENING.match(first)
                assert match, (
                    f"{self.module}: first stdout line is {first!r}, expected 'listening on HOST:PORT'"
                )
                self.address = f"{match['host']}:{match['port']}"
                assert match["host"] == "127.0.0.1", f"{self.module} bound {self.address}"
                assert int(match["port"]) > 0, f"{self.module} printed port 0"
                return self.address
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.module} exited with {self.proc.returncode} before listening; "
                    f"stderr:\n{self.stderr_tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.module} printed no complete first line within {timeout}s "
                    f"(stdout so far {text!r}); stderr:\n{self.stderr_tail()}"
                )
            time.sleep(0.02)

    def metrics_address(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """HOST:PORT of its /metrics, from the `metrics on http://HOST:PORT/metrics` log line."""
        match = wait_for(
            lambda: METRICS_ON.search(self.stderr_text()), timeout, f"{self.module}'s metrics address"
        )
        return match["address"]

    # -- state -----------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stdout_text(self) -> str:
        if self._stdout_path is None or not self._stdout_path.exists():
            return ""
        return self._stdout_path.read_bytes().decode(errors="replace")

    def stderr_text(self) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        return self._stderr_path.read_bytes().decode(errors="replace")

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    # -- stopping --------------------------------------------------------------------------------

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(
                f"{self.module} did not exit within {timeout}s; killed. stderr:\n{self.stderr_tail()}"
            ) from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the process and wait for it; return its exit code."""
        if not self.alive():
            assert self.proc is not None
            return self.proc.returncode
        self.send(sig)
        return self.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        """Best effort at teardown: SIGTERM, then SIGKILL."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def run_cli(module: str, args: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a process to completion (for --help and bad flags)."""
    return subprocess.run(
        launch.argv(module, args),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------------------------
# The trio
# ------------------------------------------------------------------------------------------------


@dataclass
class Trio:
    """Write service, projector and read service sharing one data directory."""

    data_dir: Path
    read_args: list[str] = field(default_factory=list)
    event_store: str = ""  # a postgresql:// URL instead of data_dir/events.db
    read_database: str = ""  # a postgresql:// URL instead of data_dir/read.db
    metrics_listen: str = ""  # given to all three processes when set
    write: ServiceProcess = field(init=False)
    projector: ServiceProcess = field(init=False)
    read: ServiceProcess = field(init=False)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.events_db: Path | str = self.event_store or self.data_dir / "events.db"
        self.read_db: Path | str = self.read_database or self.data_dir / "read.db"
        extra = {launch.READ: self.read_args}
        settings = launch.Settings(
            str(self.events_db), str(self.read_db), metrics_listen=self.metrics_listen, extra=extra
        )
        self.write, self.projector, self.read = (
            ServiceProcess(name, launch.flags(settings, name), self.data_dir) for name in launch.SERVICES
        )

    # -- processes -------------------------------------------------------------------------------

    def start_write(self) -> None:
        self.write.start().wait_listening()
        self._channels.pop("write", None)

    def start_projector(self) -> None:
        self.projector.start()

    def start_read(self) -> None:
        self.read.start().wait_listening()
        self._channels.pop("read", None)

    def start_all(self) -> None:
        self.start_write()
        self.start_projector()
        self.start_read()
        wait_for(
            lambda: health(self.read_channel()) == health_pb2.HealthCheckResponse.SERVING,
            STARTUP_TIMEOUT,
            "read service health SERVING",
        )

    def processes(self) -> list[ServiceProcess]:
        return [self.write, self.projector, self.read]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        for proc in self.processes():
            proc.cleanup()

    # -- clients ---------------------------------------------------------------------------------

    def _channel(self, key: str, proc: ServiceProcess) -> grpc.Channel:
        channel = self._channels.get(key)
        if channel is None:
            assert proc.address, f"{proc.module} has no address"
            channel = grpc.insecure_channel(proc.address)
            self._channels[key] = channel
        return channel

    def write_channel(self) -> grpc.Channel:
        return self._channel("write", self.write)

    def read_channel(self) -> grpc.Channel:
        return self._channel("read", self.read)

    @property
    def commands(self) -> orders_pb2_grpc.OrderCommandServiceStub:
        return orders_pb2_grpc.OrderCommandServiceStub(self.write_channel())

    @property
    def queries(self) -> orders_pb2_grpc.OrderQueryServiceStub:
        return orders_pb2_grpc.OrderQueryServiceStub(self.read_channel())

    # -- observations ----------------------------------------------------------------------------

    def head(self) -> int:
        return event_store_head(self.events_db)

    def wait_projected(self, position: int, timeout: float = 30.0) -> orders_pb2.GetProjectionStatusResponse:
        """Wait until every projection has applied `position`; return the projection status."""

        def caught_up() -> orders_pb2.GetProjectionStatusResponse | None:
            status = self.queries.GetProjectionStatus(orders_pb2.GetProjectionStatusRequest(), timeout=5)
            if status.projections and all(p.position >= position for p in status.projections):
                return status
            return None

        return wait_for(caught_up, timeout, f"projections to reach position {position}", interval=0.05)


# ------------------------------------------------------------------------------------------------
# Event store, read-only
# ------------------------------------------------------------------------------------------------


def connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def event_store_head(path: Path | str) -> int:
    """The highest position in the `events` table (0 when there is none yet)."""
    if isinstance(path, str):
        rows = _postgres_rows(path, "SELECT COALESCE(MAX(position), 0) FROM events", ())
        return int(rows[0][0]) if rows else 0
    if not path.exists():
        return 0
    conn = connect_ro(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "events" not in tables:
            return 0
        (head,) = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
        return int(head)
    finally:
        conn.close()


def event_rows(path: Path | str, min_position: int = 0) -> list[tuple[int, str, int, str]]:
    """(position, stream_id, stream_version, type) for every event after min_position, in position order."""
    if isinstance(path, str):
        query = "SELECT position, stream_id, stream_version, type FROM events WHERE position > %s"
        query += " ORDER BY position"
        return [
            (int(p), str(s), int(v), str(t)) for p, s, v, t in _postgres_rows(path, query, (min_position,))
        ]
    conn = connect_ro(path)
    try:
        return [
            (int(p), str(s), int(v), str(t))
            for p, s, v, t in conn.execute(
                "SELECT position, stream_id, stream_version, type FROM events WHERE position > ? "
                "ORDER BY position",
                (min_position,),
            )
        ]
    finally:
        conn.close()


def table_indexes(location: Path | str, table: str) -> list[str]:
    """The names of a read database table's indexes (SQLite file or PostgreSQL URL)."""
    if isinstance(location, str):
        rows = _postgres_rows(location, "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))
        return [str(r[0]) for r in rows]
    connection = sqlite3.connect(location)
    try:
        query = "SELECT name FROM sqlite_master WHERE tbl_name = ?"
        return [str(r[0]) for r in connection.execute(query, (table,))]
    finally:
        connection.close()


def _postgres_rows(url: str, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows of a query on the event store database; none while it or its table does not exist yet."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as connection:
            return connection.execute(query, args).fetchall()
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return []


# ------------------------------------------------------------------------------------------------
# gRPC helpers
# ------------------------------------------------------------------------------------------------


def health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def item(product_id: str = "sku-1", quantity: int = 1, unit_price: int = 100) -> orders_pb2.OrderItem:
    return orders_pb2.OrderItem(product_id=product_id, quantity=quantity, unit_price=unit_price)


def total_of(items: Iterable[orders_pb2.OrderItem]) -> int:
    return sum(i.quantity * i.unit_price for i in items)


def create_request(
    order_id: str,
    customer_id: str = "cust",
    items: Sequence[orders_pb2.OrderItem] | None = None,
    command_id: str = "",
) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        order_id=order_id,
        customer_id=customer_id,
        items=list(items) if items is not None else [item()],
        command_id=command_id,
    )


def rpc_error(fn: Callable[..., Any], request: Any, timeout: float = RPC_TIMEOUT) -> grpc.RpcError:
    """Call and return the RpcError it raised; fail if it succeeded."""
    try:
        reply = fn(request, timeout=timeout)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"expected an error for {type(request).__name__} {request!r}, got reply {reply!r}")


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The field names of every google.rpc.BadRequest violation in the error's rich status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, (
        f"no google.rpc.Status in trailing metadata ({error.code()}: {error.details()})"  # type: ignore[attr-defined]
    )
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


def trailing(call_or_error: Any) -> dict[str, str]:
    """Trailing metadata as a dict (keys lower-case, values as str)."""
    metadata = call_or_error.trailing_metadata() or ()
    return {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in metadata}
