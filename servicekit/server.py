"""The life cycle of a gRPC server process: bind, announce, serve, stop gracefully.

Health (grpc.health.v1) and server reflection are always on. On SIGINT or SIGTERM the server
reports NOT_SERVING, stops taking new calls, lets in-flight calls finish (up to `grace` seconds),
then runs the process's own shutdown (closing storage) and returns.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from eventcore.errors import StorageRefused, Unavailable
from eventcore.sqlite.files import StorageLocked
from servicekit.status import CallTracker

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# SO_REUSEPORT off: a second server on a taken port must fail, not share it silently.
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


# Once no call has run for this long, calls queued before the stop have all been refused.
_QUIET_BEFORE_STOP = 0.2


class BindError(Exception):
    """The listen address could not be bound (in use, or not an address of this machine)."""


class ServerHost:
    """A grpc.aio server with health and reflection, for the services named at construction."""

    def __init__(self, service_names: Sequence[str]) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.calls = CallTracker()
        self.health = HealthServicer()
        self.service_names = list(service_names)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *self.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.address = ""

    async def start(self, listen: str) -> str:
        """Bind, start, and print `listening on HOST:PORT` as the first line of stdout."""
        try:
            port = self.server.add_insecure_port(listen)
        except RuntimeError as error:
            raise BindError(f"cannot listen on {listen}: {error}") from None
        if port == 0:
            raise BindError(f"cannot listen on {listen}")
        await self.server.start()
        host = listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        print(f"listening on {self.address}", flush=True)
        log.info("listening on %s", self.address)
        return self.address

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Idempotent: refuse new calls, let in-flight ones finish, then stop.

        Draining happens here rather than in grpc's own stop, which cancels calls that arrived but
        had not started (CANCELLED, which clients do not retry); drained, they get UNAVAILABLE.
        """
        await self.health.enter_graceful_shutdown()
        self.calls.draining = True
        self.calls.end_streams()
        deadline = time.monotonic() + grace
        quiet_since = time.monotonic()
        while (now := time.monotonic()) < deadline:
            if self.calls.in_flight:
                quiet_since = now
            elif now - max(quiet_since, self.calls.last_refused) >= _QUIET_BEFORE_STOP:
                break
            await asyncio.sleep(0.005)
        await self.server.stop(max(deadline - time.monotonic(), 0.0))


class ServerProcess(ABC):
    """A server's parts, startable in-process (tests) or as a process until a stop signal."""

    @abstractmethod
    async def start(self) -> str:
        """Bind and serve; returns the bound address."""

    @abstractmethod
    async def stop(self) -> None:
        """Finish in-flight calls, then release storage. Idempotent."""

    async def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully."""
        await self.start()
        # What start-up built (modules, descriptors, storage) lives as long as the process: moved
        # out of the collector's generations, full collections stop tracing it on every pass.
        gc.freeze()
        try:
            await wait_for_stop_signal()
        finally:
            await self.stop()


def run_server_process(serve: Callable[[], Awaitable[None]]) -> int:
    """Run a server process's main coroutine; the exit status for a clean stop or a failed start.

    `serve` is called inside the event loop, because grpc.aio objects bind to the loop that exists
    when they are created.
    """
    try:
        asyncio.run(_call(serve))
    except (BindError, StorageLocked, StorageRefused, Unavailable) as error:  # at start-up
        log.error("%s", error)
        return 1
    return 0


async def _call(serve: Callable[[], Awaitable[None]]) -> None:
    await serve()


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stop requested: finishing in-flight calls")
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
