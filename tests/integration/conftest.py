"""Fixtures of the integration layer: the in-process gRPC servers on port 0 over real SQLite files,
and the projector driven in-process (its real loop in a thread, or one catch-up on demand)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from eventcore.projection import ProjectionRunner
from eventcore.sqlite.event_store import SQLiteEventLogReader
from eventcore.sqlite.read_store import SQLiteReadStoreWriter
from orders.events import order_codec
from orders.projections import PROJECTIONS
from orders_api.v1 import orders_pb2_grpc
from projector import app as projector_app
from read_service import app as read_app
from write_service import app as write_app

GRACE = 0.1  # seconds a stopping server gives in-flight calls; tests stop with none in flight


@dataclass(frozen=True)
class Files:
    events: Path
    read: Path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path / "events.db", tmp_path / "read.db")


class Projector:
    """The projector of these files: caught up on demand, or running its real loop in a thread."""

    def __init__(self, files: Files) -> None:
        self._files = files
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def catch_up(self) -> int:
        """Apply every event committed so far, then release the read database; the head reached."""
        writer = SQLiteReadStoreWriter.open(self._files.read)
        reader = SQLiteEventLogReader.open(self._files.events, order_codec())
        try:
            ProjectionRunner(reader, writer, PROJECTIONS).run_until_idle()
            return reader.head_position()
        finally:
            reader.close()
            writer.close()

    def start(self) -> None:
        settings = projector_app.Settings(self._files.events, self._files.read)
        self._thread = threading.Thread(target=projector_app.run, args=(settings, self._stop), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            assert not self._thread.is_alive(), "the projector did not stop"
            self._thread = None


@pytest.fixture
def projector(files: Files) -> Iterator[Projector]:
    projector = Projector(files)
    yield projector
    projector.stop()


@pytest.fixture
async def write_service(files: Files) -> AsyncIterator[write_app.WriteService]:
    service = write_app.WriteService(
        write_app.Settings(listen="127.0.0.1:0", event_store=files.events, grace=GRACE)
    )
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def commands(
    write_service: write_app.WriteService,
) -> AsyncIterator[orders_pb2_grpc.OrderCommandServiceStub]:
    async with grpc.aio.insecure_channel(write_service.host.address) as channel:
        yield orders_pb2_grpc.OrderCommandServiceStub(channel)


def read_settings(files: Files, max_wait: float = 5.0) -> read_app.Settings:
    return read_app.Settings(
        listen="127.0.0.1:0",
        read_db=files.read,
        event_store=files.events,
        max_wait=max_wait,
        grace=GRACE,
        ready_poll=0.02,
    )


@pytest.fixture
async def read_service(files: Files) -> AsyncIterator[read_app.ReadService]:
    service = read_app.ReadService(read_settings(files))
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def read_channel(read_service: read_app.ReadService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(read_service.host.address) as channel:
        yield channel


@pytest.fixture
def queries(read_channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderQueryServiceStub:
    return orders_pb2_grpc.OrderQueryServiceStub(read_channel)
