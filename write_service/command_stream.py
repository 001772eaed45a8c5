"""ExecuteCommands: many commands over one stream, each answered as its unary RPC would answer it.

A bulk producer keeps hundreds of commands in flight without a call per command. Each envelope is
turned into the same domain command as its unary RPC and submitted to the same command bus, so it
is validated, decided and made durable the same way; its outcome (the reply, or the google.rpc.Status
the unary RPC would have failed with) is written as soon as its command is durable, tagged with
the envelope's correlation_id, in whatever order commands finish.

Flow control: at most `window` commands of one stream are between "read" and "outcome written". At
the limit the stream stops reading; gRPC's own flow control then holds the producer back, and
outcomes the client does not read hold the stream back in turn (writing blocks), so memory stays
bounded by the window, whatever the producer does.

Stopping: `end()` makes the stream stop reading; the outcomes of commands already read are still
written, then the call ends with OK.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from eventcore import errors
from eventcore.command_bus import CommandBus, CommandResult
from orders_api.v1 import orders_pb2 as pb
from servicekit.status import rich_status, status_code_of

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 256

_NO_COMMAND = errors.InvalidArgument(
    [errors.FieldViolation("command", "must be set: one of create, confirm, ship, cancel")]
)


def error_status(error: BaseException) -> status_pb2.Status:
    """The google.rpc.Status a unary call that raised `error` answers (code, message, details)."""
    if isinstance(error, errors.ApplicationError):
        code = status_code_of(error)
        if code is grpc.StatusCode.INTERNAL:
            log.error("ExecuteCommands: %s", error)
        status = rich_status(code, str(error), error)
    else:
        log.error("ExecuteCommands: a command failed unexpectedly", exc_info=error)
        status = rich_status(
            grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"
        )
    return status_pb2.Status.FromString(dict(status.trailing_metadata)[rpc_status.GRPC_DETAILS_METADATA_KEY])


class CommandStream:
    """One ExecuteCommands call: reads envelopes within the window, writes outcomes as they come."""

    def __init__(
        self,
        bus: CommandBus,
        context: grpc.aio.ServicerContext,
        to_command: Callable[[pb.CommandEnvelope], Any | None],
        fill_reply: Callable[[pb.CommandReply, CommandResult], None],
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._bus = bus
        self._context = context
        self._to_command = to_command
        self._fill_reply = fill_reply
        self._window = window
        self.in_flight = 0  # envelopes read whose outcome is not written yet
        self.peak_in_flight = 0
        self._ready: deque[pb.CommandOutcome] = deque()
        self._wake = asyncio.Event()  # an outcome is ready, reading ended, or the stream must end
        self._room = asyncio.Event()  # the window has room again
        self._ending = False

    def end(self) -> None:
        """Stop reading; outcomes of commands already read are still written."""
        self._ending = True
        self._wake.set()
        self._room.set()

    async def run(self, requests: AsyncIterator[pb.CommandEnvelope]) -> None:
        reader = asyncio.ensure_future(self._read(requests))
        try:
            while True:
                while self._ready:
                    await self._context.write(self._ready.popleft())
                    self.in_flight -= 1
                    if self.in_flight < self._window:
                        self._room.set()
                if self.in_flight == 0 and (reader.done() or self._ending):
                    break
                self._wake.clear()
                if self._ready:
                    continue
                await self._wake.wait()
            if reader.done():
                reader.result()  # a failed read (not a clean end of input) fails the call
        finally:
            if not reader.done():
                reader.cancel()

    async def _read(self, requests: AsyncIterator[pb.CommandEnvelope]) -> None:
        iterator = requests.__aiter__()
        try:
            while not self._ending:
                if self.in_flight >= self._window:
                    self._room.clear()
                    await self._room.wait()
                    continue
                try:
                    envelope = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                if self._ending:  # read after the stop began: not accepted, so never answered
                    return
                self.in_flight += 1
                if self.in_flight > self.peak_in_flight:
                    self.peak_in_flight = self.in_flight
                self._submit(envelope)
        finally:
            self._wake.set()

    def _submit(self, envelope: pb.CommandEnvelope) -> None:
        correlation_id = envelope.correlation_id
        try:
            command = self._to_command(envelope)
            if command is None:
                raise _NO_COMMAND
            future = self._bus.submit(command)
        except Exception as error:
            self._error(correlation_id, error)
            return
        future.add_done_callback(lambda done: self._finished(correlation_id, done))

    def _finished(self, correlation_id: int, future: asyncio.Future[CommandResult]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._error(correlation_id, error)
            return
        outcome = pb.CommandOutcome(correlation_id=correlation_id)
        self._fill_reply(outcome.reply, future.result())
        self._ready.append(outcome)
        self._wake.set()

    def _error(self, correlation_id: int, error: BaseException) -> None:
        self._ready.append(pb.CommandOutcome(correlation_id=correlation_id, error=error_status(error)))
        self._wake.set()
