"""The life cycle of a gRPC server process: bind, announce, serve, stop gracefully.

Health (grpc.health.v1) and server reflection are always on. On SIGINT or SIGTERM the server
reports NOT_SERVING, stops taking new calls, lets in-flight calls finish (up to `grace` seconds),
then runs the process's own shutdown (closing storage) and returns. The stop signals are handled
from before `listening on` is printed, so a signal at any moment after it is a graceful stop;
SIGHUP rereads the token file. TLS, tokens and limits come from servicekit.edge.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from eventcore.errors import StorageRefused, Unavailable
from servicekit import edge as edges
from servicekit.status import CallTracker
from servicekit.tls import TlsConfigError
from servicekit.tokens import TokenFileError

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# Once no call has run for this long, calls queued before the stop have all been refused.
_QUIET_BEFORE_STOP = 0.2


class BindError(Exception):
    """The listen address could not be bound (in use, or not an address of this machine)."""


class ServerHost:
    """A grpc.aio server with health and reflection, for the services named at construction."""

    def __init__(
        self,
        service_names: Sequence[str],
        edge: edges.EdgeSettings | None = None,
        scopes: Mapping[str, str] | None = None,
    ) -> None:
        """`scopes`: the token scope each service needs (only used with a token file)."""
        edge = edge or edges.EdgeSettings()
        self._credentials = edges.credentials(edge)
        self.server, self.tokens = edges.build_server(edge, scopes or {})
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
            if self._credentials is None:
                port = self.server.add_insecure_port(listen)
            else:
                port = self.server.add_secure_port(listen, self._credentials)
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

    def reload_tokens(self) -> None:
        """Reread the token file (SIGHUP); a bad file keeps the tokens loaded before."""
        if self.tokens is None:
            log.info("SIGHUP: no --auth-token-file to reload")
        else:
            self.tokens.reload()

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

    def reload(self) -> None:
        """SIGHUP: reread what can be reread (the token file of `self.host`, if it has one)."""
        host = getattr(self, "host", None)
        if isinstance(host, ServerHost):
            host.reload_tokens()

    async def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully.

        The handlers are installed before start(), so even a signal right after `listening on`
        is a graceful stop."""
        signals = StopSignals(self.reload)
        try:
            await self.start()
            # What start-up built (modules, descriptors, storage) lives as long as the process: moved
            # out of the collector's generations, full collections stop tracing it on every pass.
            gc.freeze()
            await signals.wait()
        finally:
            signals.remove()
            await self.stop()


def run_server_process(serve: Callable[[], Awaitable[None]]) -> int:
    """Run a server process's main coroutine; the exit status for a clean stop or a failed start.

    `serve` is called inside the event loop, because grpc.aio objects bind to the loop that exists
    when they are created.
    """
    try:
        asyncio.run(_call(serve))
    except START_FAILURES as error:
        log.error("%s", error)
        return 1
    return 0


# What a process reports in one line (exit 1) when it cannot start: no traceback for a user's mistake
# (Unavailable: a database server that cannot be reached).
START_FAILURES = (BindError, StorageRefused, Unavailable, TlsConfigError, TokenFileError)


async def _call(serve: Callable[[], Awaitable[None]]) -> None:
    await serve()


class StopSignals:
    """SIGINT and SIGTERM set a stop event, SIGHUP calls `on_hangup`, from the moment this exists."""

    STOP = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_hangup: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in self.STOP:
            self._loop.add_signal_handler(signum, self._stop.set)
        self._loop.add_signal_handler(signal.SIGHUP, on_hangup)

    async def wait(self) -> None:
        """Return on the first SIGINT or SIGTERM (at once if one came already)."""
        await self._stop.wait()
        log.info("stop requested: finishing in-flight calls")

    def remove(self) -> None:
        for signum in (*self.STOP, signal.SIGHUP):
            self._loop.remove_signal_handler(signum)
