"""Wiring of the write service: event store, command bus with the order handlers, gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from eventcore.command_bus import CommandBus
from eventcore.event_store import EventStore
from eventcore.sqlite.files import Synchronous
from eventcore.storage import Location, display, open_event_store
from orders.events import order_codec
from orders.order import command_handlers
from orders_api.v1 import orders_pb2, orders_pb2_grpc
from servicekit.edge import EdgeSettings
from servicekit.metrics import Metrics, StoreState
from servicekit.server import ServerHost, ServerProcess
from servicekit.tokens import WRITE
from write_service.command_stream import DEFAULT_WINDOW
from write_service.servicer import OrderCommandServicer

log = logging.getLogger(__name__)

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderCommandService"].full_name


@dataclass(frozen=True)
class Settings:
    listen: str
    event_store: Location
    synchronous: Synchronous = Synchronous.FULL
    stream_cache_size: int = 10_000
    grace: float = 10.0
    metrics_listen: str = ""  # HOST:PORT of /metrics; empty: no metrics
    stream_window: int = DEFAULT_WINDOW  # commands of one ExecuteCommands stream in flight at most
    edge: EdgeSettings = field(default_factory=EdgeSettings)


def build_bus(store: EventStore, stream_cache_size: int) -> CommandBus:
    bus = CommandBus(store, stream_cache_size=stream_cache_size)
    for command_type, handler in command_handlers().items():
        bus.register(command_type, handler)
    return bus


class WriteService(ServerProcess):
    """The write service's parts, startable in-process (tests) or from __main__."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_event_store(settings.event_store, order_codec(), settings.synchronous)
        log.info(
            "event store %s at position %d (synchronous=%s)",
            display(settings.event_store),
            self.store.head_position(),
            settings.synchronous.value,
        )
        self.bus = build_bus(self.store, settings.stream_cache_size)
        self.host = ServerHost([SERVICE_NAME], settings.edge, {SERVICE_NAME: WRITE})
        self.servicer = OrderCommandServicer(self.bus, self.host.calls, settings.stream_window)
        orders_pb2_grpc.add_OrderCommandServiceServicer_to_server(self.servicer, self.host.server)
        self.metrics = Metrics()
        if settings.metrics_listen:
            service = orders_pb2.DESCRIPTOR.services_by_name["OrderCommandService"]
            self.host.calls.metrics = self.metrics.commands(service)
            self.metrics.store_gauges(lambda: StoreState(self.store.head_position()))
        self._closed = False

    async def start(self) -> str:
        if self.settings.metrics_listen:
            self.metrics.start(self.settings.metrics_listen)
        address = await self.host.start(self.settings.listen)
        await self.host.set_serving(True)
        return address

    async def stop(self) -> None:
        """Finish in-flight commands, then close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.servicer.end_streams()
        await self.host.stop(self.settings.grace)
        await self.bus.close()
        self.store.close()
        self.metrics.stop()
