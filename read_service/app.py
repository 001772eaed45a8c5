"""Wiring of the read service: read-only storage, the order queries, freshness, gRPC server."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from eventcore.event_store import EventLogReader
from eventcore.live import LiveFeed
from eventcore.read_path import PositionWatch, ReadPath
from eventcore.storage import Location, open_changes
from eventcore.subscriptions import Subscriptions
from orders.events import order_codec
from orders.queries import query_bus
from orders_api.v1 import orders_pb2, orders_pb2_grpc
from read_service.event_store_servicer import EventStoreServicer
from read_service.servicer import OrderQueryServicer
from read_service.storage import StorageSlot
from servicekit.metrics import Metrics, read_side_state, unary_methods
from servicekit.server import ServerHost, ServerProcess

log = logging.getLogger(__name__)

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderQueryService"].full_name
EVENT_STORE_SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["EventStoreService"].full_name


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


class ReadService(ServerProcess):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = StorageSlot(settings.read_db, settings.event_store)
        self.host = ServerHost([SERVICE_NAME, EVENT_STORE_SERVICE_NAME])
        self.read_changes = open_changes(settings.read_db)
        self.watch = PositionWatch(self.storage.positions, self.read_changes.signal())
        self.read_path = ReadPath(query_bus(), self.storage.get, self.watch, settings.max_wait)
        orders_pb2_grpc.add_OrderQueryServiceServicer_to_server(
            OrderQueryServicer(self.read_path, self.storage, self.host.calls), self.host.server
        )
        self.metrics = Metrics()
        if settings.metrics_listen:
            service = orders_pb2.DESCRIPTOR.services_by_name["OrderQueryService"]
            self.host.calls.metrics = self.metrics.queries(unary_methods(service))
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

    async def start(self) -> str:
        if self.settings.metrics_listen:
            self.metrics.start(self.settings.metrics_listen)
        address = await self.host.start(self.settings.listen)
        await self.host.set_serving(False)
        self._readiness = asyncio.get_running_loop().create_task(self._become_ready())
        return address

    async def _become_ready(self) -> None:
        while not self.storage.try_open():
            await asyncio.sleep(self.settings.ready_poll)
        await self.host.set_serving(True)

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
