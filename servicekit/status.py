"""The one table from application errors to gRPC status codes, and the decorator that applies it.

Servicer methods raise eventcore errors and never touch `context` for errors; `@grpc_method`
turns a raised error into its status, with a google.rpc.BadRequest detail naming each bad field,
and keeps whatever trailing metadata the method had set (the read side's versions).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from eventcore import errors

if TYPE_CHECKING:
    from servicekit.metrics import CallMetrics

log = logging.getLogger(__name__)

STATUS_OF: dict[type[errors.ApplicationError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.CommandIdReused: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ConcurrencyConflict: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.WaitTimedOut: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unregistered: grpc.StatusCode.INTERNAL,
    errors.HandlerContractViolated: grpc.StatusCode.INTERNAL,
}


def status_code_of(error: errors.ApplicationError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(code: grpc.StatusCode, message: str, error: Exception | None = None) -> grpc.Status:
    """A status whose trailing metadata carries google.rpc.Status, with BadRequest when it applies."""
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(error, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    elif isinstance(error, errors.CommandIdReused):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="command_id", description="was already used by a different request"
                )
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return rpc_status.to_status(status)


M = TypeVar("M", bound=Callable[..., Awaitable[Any]])


class CallTracker:
    """Counts the calls a server is running, and refuses new ones once it is draining."""

    __slots__ = ("draining", "in_flight", "last_refused", "metrics", "streams")

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self.last_refused = 0.0  # time.monotonic() of the last call refused while draining
        self.metrics: CallMetrics | None = None  # counts each finished call when metrics are on
        self.streams: set[asyncio.Task[Any]] = set()  # streaming calls (servicekit.streams)

    def end_streams(self) -> None:
        """Streams (watches, subscriptions) never finish on their own: a stop ends them."""
        for task in list(self.streams):
            task.cancel()


class TrackedServicer:
    """Base of servicers whose methods use @grpc_method: they share their server's CallTracker."""

    def __init__(self, calls: CallTracker) -> None:
        self.calls = calls


def grpc_method(method: M) -> M:
    """Map what a servicer method raises to a status; the process keeps serving either way.

    While the server drains for a stop, a call that has not started yet is refused with
    UNAVAILABLE, which clients may retry elsewhere or later.
    """

    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: TrackedServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        calls = self.calls
        if calls.draining:
            calls.last_refused = time.monotonic()
            await _abort(context, rich_status(grpc.StatusCode.UNAVAILABLE, "the server is shutting down"))
        calls.in_flight += 1
        started, code = time.perf_counter(), grpc.StatusCode.CANCELLED  # unless it ends otherwise
        try:
            reply = await method(self, request, context)
            code = grpc.StatusCode.OK
            return reply
        except errors.ApplicationError as error:
            code = status_code_of(error)
            if code is grpc.StatusCode.INTERNAL:
                log.error("%s failed: %s", method.__name__, error)
            await _abort(context, rich_status(code, str(error), error))
        except Exception as error:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed unexpectedly", method.__name__)
            await _abort(
                context,
                rich_status(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"),
            )
        finally:
            calls.in_flight -= 1
            if calls.metrics is not None:
                calls.metrics.record(name, code, started, time.perf_counter())

    return wrapper  # type: ignore[return-value]


async def _abort(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    already_set = tuple(context.trailing_metadata() or ())
    await context.abort(status.code, status.details, trailing_metadata=already_set + status.trailing_metadata)
