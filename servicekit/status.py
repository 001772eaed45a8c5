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
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from eventcore import errors

if TYPE_CHECKING:
    from servicekit.metrics import CallMetrics

log = logging.getLogger(__name__)


class UndecodableRequest(errors.InvalidArgument):
    """A request body that is not a valid message of the method's request type (servicekit.admission)."""

    def __init__(self, type_name: str, error: Exception) -> None:
        reason = str(error)[:200] or type(error).__name__
        super().__init__([errors.FieldViolation("(request body)", f"is not a valid {type_name}: {reason}")])
        self.type_name = type_name


STATUS_OF: dict[type[errors.ApplicationError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.CommandIdReused: grpc.StatusCode.INVALID_ARGUMENT,
    UndecodableRequest: grpc.StatusCode.INVALID_ARGUMENT,
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


# An error's details stay small whatever the input, so a client with gRPC's default 8 KiB metadata
# limit receives the real status: at most this many violations, then one saying how many more.
MAX_VIOLATIONS = 20
MAX_MESSAGE_CHARS = 1000
_MAX_TEXT = 200  # characters of one violation's field or description


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded_violations(violations: Sequence[errors.FieldViolation]) -> list[errors.FieldViolation]:
    """The first MAX_VIOLATIONS violations (clipped), then one counting the rest, if any."""
    shown = [
        errors.FieldViolation(_clip(v.field, _MAX_TEXT), _clip(v.description, _MAX_TEXT))
        for v in violations[:MAX_VIOLATIONS]
    ]
    rest = len(violations) - len(shown)
    if rest > 0:
        shown.append(errors.FieldViolation("(more)", f"and {rest} more field violations"))
    return shown


def _violations_of(error: Exception | None) -> list[errors.FieldViolation]:
    if isinstance(error, errors.InvalidArgument):
        return bounded_violations(error.violations)
    if isinstance(error, errors.CommandIdReused):
        return [errors.FieldViolation("command_id", "was already used by a different request")]
    return []


def _message_of(message: str, error: Exception | None) -> str:
    if isinstance(error, errors.InvalidArgument) and len(error.violations) > MAX_VIOLATIONS:
        message = "; ".join(f"{v.field}: {v.description}" for v in bounded_violations(error.violations))
    return _clip(message, MAX_MESSAGE_CHARS)


def rich_status(code: grpc.StatusCode, message: str, error: Exception | None = None) -> grpc.Status:
    """A status whose trailing metadata carries google.rpc.Status, with BadRequest when it applies.

    Message and details are bounded (MAX_VIOLATIONS, MAX_MESSAGE_CHARS) whatever the request.
    """
    message = _message_of(message, error)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    violations = _violations_of(error)
    if violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return rpc_status.to_status(status)


async def abort_with(context: grpc.aio.ServicerContext, error: errors.ApplicationError) -> None:
    """End the call with the status the table gives `error` (raises grpc's AbortError)."""
    await _abort(context, rich_status(status_code_of(error), str(error), error))


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
