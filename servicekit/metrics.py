"""Prometheus metrics of the three processes, served at /metrics when `--metrics-listen` is given.

Each process has its own registry (in-process tests start several servers in one interpreter):
- calls, counted by `@grpc_method` through `CallMetrics.record`: `orders_commands_total{type,code}` and
  `orders_command_duration_seconds{type}` (write service; the commands of an ExecuteCommands stream
  count one by one, as their unary RPCs would), `orders_queries_total{method,code}` and
  `orders_query_duration_seconds{method}` (read service). The label children of each method's OK outcome
  are bound when the server is built and the others on first use, so a call costs two dict lookups, one
  counter increment and one histogram observation.
- gauges read at scrape time rather than updated per event: `orders_event_store_head`, and per projection
  `orders_projection_position`, `orders_projection_lag_events` and `orders_parked_streams`, from the same
  `projection_statuses` that GetProjectionStatus answers with.
- the client library's process and platform collectors (CPU, memory, open files).

prometheus-client's HTTP server runs in a daemon thread; the gauges it reads are computed in that thread
(an int read from another thread, or read-only storage opened for the scrape), never on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, cast
from wsgiref.simple_server import WSGIServer

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventcore.codec import EventCodec
from eventcore.command_bus import Command, CommandBus, CommandResult
from eventcore.errors import ApplicationError, StorageRefused, Unavailable
from eventcore.projection_status import ProjectionStatus, projection_statuses
from eventcore.storage import Location, open_event_log_reader, open_read_store_reader
from servicekit import cli
from servicekit.server import BindError
from servicekit.status import status_code_of

log = logging.getLogger(__name__)

OK = grpc.StatusCode.OK

# Commands are milliseconds (one durable commit); the tail reaches into seconds under load.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsBindError(BindError):
    """The metrics address could not be bound (in use, or not an address of this machine)."""


def listen_address(text: str) -> str:
    """`--metrics-listen`: HOST:PORT, or empty for no metrics."""
    return cli.listen_address(text) if text else ""


def add_listen_flag(parser: argparse.ArgumentParser, env: str) -> None:
    cli.add_flag(
        parser,
        "--metrics-listen",
        env,
        "serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one; empty: off)",
        default="",
        type=listen_address,
        metavar="HOST:PORT",
    )


class _Method:
    """The bound children of one method: its OK counter and duration, other codes bound on first use."""

    __slots__ = ("codes", "duration", "ok")

    def __init__(self, count: Counter, duration: Histogram, name: str) -> None:
        self.ok = count.labels(name, OK.name)
        self.duration = duration.labels(name)
        self.codes: dict[grpc.StatusCode, Counter] = {}


class CallMetrics:
    """One server's calls by method and status code, and their durations.

    `uncounted` methods are not counted as calls: a command stream's commands count one by one
    (`CountedSubmits`), each under its own type.
    """

    def __init__(
        self, count: Counter, duration: Histogram, methods: Iterable[str], uncounted: Iterable[str] = ()
    ) -> None:
        self._count = count
        self._duration = duration
        self._methods = {name: _Method(count, duration, name) for name in methods}
        self._uncounted = frozenset(uncounted)

    def record(self, method: str, code: grpc.StatusCode, started: float, now: float) -> None:
        """Count one finished call (`started` and `now` from time.perf_counter())."""
        bound = self._methods.get(method)
        if bound is None:
            if method in self._uncounted:
                return
            bound = self._methods[method] = _Method(self._count, self._duration, method)
        if code is OK:
            bound.ok.inc()
        else:
            child = bound.codes.get(code)
            if child is None:
                child = bound.codes[code] = self._count.labels(method, code.name)
            child.inc()
        bound.duration.observe(now - started)


def counted_submits(bus: CommandBus, metrics: CallMetrics | None) -> CommandBus:
    """`bus`, or with metrics on, a stand-in whose submitted commands are counted by type as they resolve."""
    return bus if metrics is None else cast(CommandBus, CountedSubmits(bus, metrics))


class CountedSubmits:
    """A command bus whose submitted commands are counted, by their type's name, once each resolves;
    everything else goes to the bus itself."""

    def __init__(self, bus: CommandBus, metrics: CallMetrics) -> None:
        self._bus = bus
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    def submit(self, command: Command) -> asyncio.Future[CommandResult]:
        name, started = type(command).__name__, time.perf_counter()
        try:
            future = self._bus.submit(command)
        except Exception as error:  # refused before it was queued; the caller reports it
            self._metrics.record(name, _code_of(error), started, time.perf_counter())
            raise
        future.add_done_callback(lambda done: self._done(name, started, done))
        return future

    def _done(self, name: str, started: float, future: asyncio.Future[CommandResult]) -> None:
        if future.cancelled():
            code = grpc.StatusCode.CANCELLED
        else:
            error = future.exception()
            code = OK if error is None else _code_of(error)
        self._metrics.record(name, code, started, time.perf_counter())


def _code_of(error: BaseException) -> grpc.StatusCode:
    return status_code_of(error) if isinstance(error, ApplicationError) else grpc.StatusCode.INTERNAL


class StoreState(NamedTuple):
    """What the gauges show: the event store's head, and every projection's status (None: no read side)."""

    head: int
    projections: list[ProjectionStatus] | None = None


def read_side_state(read_db: Location, event_store: Location, codec: EventCodec) -> StoreState:
    """Head and projection statuses from the two stores, opened read-only for this one scrape."""
    events = open_event_log_reader(event_store, codec)
    try:
        reader = open_read_store_reader(read_db)
        try:
            head = events.head_position()
            return StoreState(head, projection_statuses(reader, head))
        finally:
            reader.close()
    finally:
        events.close()


class StoreCollector(Collector):
    """The gauges, from `read_state` at each scrape; none while the storage cannot be read yet."""

    def __init__(self, read_state: Callable[[], StoreState]) -> None:
        self._read_state = read_state

    def collect(self) -> Iterator[Metric]:
        try:
            state = self._read_state()
        except (FileNotFoundError, Unavailable, StorageRefused) as error:
            # The process answers UNAVAILABLE meanwhile; its call counters are still worth a scrape.
            log.debug("no storage gauges in this scrape: %s", error)
            return
        yield GaugeMetricFamily(
            "orders_event_store_head", "position of the last event in the event store", value=state.head
        )
        if state.projections is None:
            return
        families = (
            ("orders_projection_position", "position up to which the projection has applied events"),
            ("orders_projection_lag_events", "events the projection is behind the event store's head"),
            ("orders_parked_streams", "streams parked after a handler failed on one of their events"),
        )
        position, lag, parked = (
            GaugeMetricFamily(name, text, labels=["projection"]) for name, text in families
        )
        for status in state.projections:
            position.add_metric([status.name], status.position)
            lag.add_metric([status.name], status.lag)
            parked.add_metric([status.name], status.parked_streams)
        yield position
        yield lag
        yield parked


class Metrics:
    """A process's registry, and its HTTP endpoint once `start` has bound it."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` twin of each series
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.address = ""

    def commands(self, service: ServiceDescriptor) -> CallMetrics:
        """Counters of a command service: its unary methods are the command types; its streams are
        not counted as calls, their commands are (through `CountedSubmits`)."""
        count, duration = self._families(
            "orders_commands", "orders_command_duration_seconds", "type", "commands"
        )
        streams = [m.name for m in service.methods if m.client_streaming or m.server_streaming]
        return CallMetrics(count, duration, unary_methods(service), streams)

    def queries(self, service: ServiceDescriptor) -> CallMetrics:
        """Counters of a query service; its unary methods bound up front, any other on first use."""
        count, duration = self._families(
            "orders_queries", "orders_query_duration_seconds", "method", "queries"
        )
        return CallMetrics(count, duration, unary_methods(service))

    def _families(self, total: str, seconds: str, label: str, what: str) -> tuple[Counter, Histogram]:
        count = Counter(
            total, f"{what} answered, by {label} and status code", [label, "code"], registry=self.registry
        )
        duration = Histogram(
            seconds,
            f"time to answer {what}, by {label}",
            [label],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        return count, duration

    def store_gauges(self, read_state: Callable[[], StoreState]) -> None:
        """Gauges from `read_state`, called in the scrape's thread."""
        self.registry.register(StoreCollector(read_state))

    def start(self, listen: str) -> str:
        """Serve /metrics on `listen` (HOST:PORT) in a daemon thread; returns the bound HOST:PORT."""
        host, port = listen.rsplit(":", 1)
        bare_host = host.strip("[]")
        try:
            self._server, self._thread = start_http_server(int(port), bare_host, self.registry)
        except OSError as error:
            raise MetricsBindError(f"cannot serve metrics on {listen}: {error}") from None
        self.address = f"{host}:{self._server.server_port}"
        log.info("metrics on http://%s/metrics", self.address)
        return self.address

    def stop(self) -> None:
        """Stop serving. Idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def unary_methods(service: ServiceDescriptor) -> list[str]:
    """The names of a service's unary methods (bound up front; streaming ones count on first use)."""
    return [m.name for m in service.methods if not (m.client_streaming or m.server_streaming)]
