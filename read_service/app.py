"""Wiring of the read service: read-only storage, the order queries, freshness, gRPC server."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from eventcore.errors import Unavailable
from eventcore.event_store import EventLogReader
from eventcore.lag_health import LagHealth
from eventcore.live import LiveFeed
from eventcore.projection_status import projection_statuses
from eventcore.read_path import PositionWatch, ReadPath
from eventcore.storage import Location, open_changes
from eventcore.subscriptions import Subscriptions
from orders.events import order_codec
from orders.queries import query_bus
from orders_api.v1 import orders_pb2, orders_pb2_grpc
from read_service.event_store_servicer import EventStoreServicer
from read_service.servicer import OrderQueryServicer
from read_service.storage import StorageSlot
from servicekit.edge import EdgeSettings
from servicekit.metrics import Metrics, read_side_state
from servicekit.server import ServerHost, ServerProcess
from servicekit.tokens import READ

log = logging.getLogger(__name__)

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderQueryService"].full_name
EVENT_STORE_SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["EventStoreService"].full_name
# Queries, watches and subscriptions all need the read scope.
SCOPES = {SERVICE_NAME: READ, EVENT_STORE_SERVICE_NAME: READ}


@dataclass(frozen=True)
class Settings:
    listen: str
    read_db: Location
    event_store: Location
    max_wait: float = 10.0  # longest a min_position query waits before UNAVAILABLE
    grace: float = 10.0
    ready_poll: float = 0.1  # seconds between looks for the files before they exist
    metrics_listen: str = ""  # HOST:PORT of /metrics; empty: no metrics
    live_window: int = 10_000  # newest events kept for live subscribers; slower ones fall behind
    max_lag: int = 10_000  # events a projection may lag ...
    max_lag_seconds: float = 30.0  # ... for this long before health says NOT_SERVING
    health_interval: float = 0.5  # seconds between looks at the projections' lag
    edge: EdgeSettings = field(default_factory=EdgeSettings)


class ReadService(ServerProcess):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = StorageSlot(settings.read_db, settings.event_store)
        self.host = ServerHost([SERVICE_NAME, EVENT_STORE_SERVICE_NAME], settings.edge, SCOPES)
        self.read_changes = open_changes(settings.read_db)
        self.watch = PositionWatch(self.storage.positions, self.read_changes.signal())
        self.read_path = ReadPath(query_bus(), self.storage.get, self.watch, settings.max_wait)
        orders_pb2_grpc.add_OrderQueryServiceServicer_to_server(
            OrderQueryServicer(self.read_path, self.storage, self.host.calls), self.host.server
        )
        self.metrics = Metrics()
        if settings.metrics_listen:
            service = orders_pb2.DESCRIPTOR.services_by_name["OrderQueryService"]
            self.host.calls.metrics = self.metrics.queries(service)
            self.metrics.store_gauges(
                lambda: read_side_state(settings.read_db, settings.event_store, order_codec())
            )
        self.event_changes = open_changes(settings.event_store)
        feed = LiveFeed(self._events, self.event_changes.signal(), settings.live_window)
        self.subscriptions = Subscriptions(self._events, feed)
        orders_pb2_grpc.add_EventStoreServiceServicer_to_server(
            EventStoreServicer(self.subscriptions, self.storage, self.host.calls), self.host.server
        )
        self._readiness: asyncio.Task[None] | None = None
        self._closed = False
        self.lag_health = LagHealth(settings.max_lag, settings.max_lag_seconds)

    async def start(self) -> str:
        if self.settings.metrics_listen:
            self.metrics.start(self.settings.metrics_listen)
        address = await self.host.start(self.settings.listen)
        await self.host.set_serving(False)
        self._readiness = asyncio.get_running_loop().create_task(self._follow_health())
        return address

    async def _follow_health(self) -> None:
        """SERVING while both files can be used and no projection failed or lags too long;
        NOT_SERVING (queries UNAVAILABLE) while the files cannot be used, until they are fixed."""
        serving = False
        while True:
            usable = self.storage.check()
            reason = self._lag_reason() if usable else "the files cannot be used"
            if (not reason) != serving:
                serving = not reason
                if serving:
                    log.info("health SERVING")
                elif usable:
                    log.warning("health NOT_SERVING: %s", reason)
                await self.host.set_serving(serving)
            await asyncio.sleep(self.settings.health_interval if usable else self.settings.ready_poll)

    def _lag_reason(self) -> str:
        """Why the projections make the service unhealthy (failed, lagging too long), or ""."""
        try:
            storage = self.storage.get()
            statuses = projection_statuses(storage.read_model, storage.events.head_position())
        except Unavailable as error:  # the files' own trouble: the next look at them tells
            log.debug("lag health not checked: %s", error)
            return ""
        return self.lag_health.verdict(statuses, time.monotonic())

    async def stop(self) -> None:
        """Finish in-flight queries, then close the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._readiness is not None:
            self._readiness.cancel()
        await self.host.stop(self.settings.grace)
        self.read_changes.close()
        self.event_changes.close()
        self.storage.close()
        self.metrics.stop()

    def _events(self) -> EventLogReader:
        return self.storage.get().events
