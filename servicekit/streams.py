"""@grpc_stream: what @grpc_method does for unary calls, for server-streaming ones (async generators).

A stream (a watch, a subscription) runs until its client cancels it, so it is not an in-flight call
a stopping server waits for: the stop ends it at once with UNAVAILABLE ("the server is shutting
down"), which clients retry elsewhere or later, and its generator's clean-up runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from eventcore import errors
from servicekit.status import TrackedServicer, _abort, rich_status, status_code_of

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Callable[..., AsyncIterator[Any]])


def grpc_stream(method: S) -> S:
    """Map what a streaming servicer method raises to a status, and end the stream on stop."""

    @functools.wraps(method)
    async def wrapper(
        self: TrackedServicer, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        calls = self.calls
        shutting_down = rich_status(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if calls.draining:
            calls.last_refused = time.monotonic()
            await _abort(context, shutting_down)
        task = asyncio.current_task()
        assert task is not None
        calls.streams.add(task)
        try:
            async for message in method(self, request, context):
                yield message
        except asyncio.CancelledError:
            if not calls.draining:
                raise  # the client went away
            task.uncancel()
            await _abort(context, shutting_down)
        except errors.ApplicationError as error:
            code = status_code_of(error)
            if code is grpc.StatusCode.INTERNAL:
                log.error("%s failed: %s", method.__name__, error)
            await _abort(context, rich_status(code, str(error), error))
        except Exception as error:
            log.exception("%s failed unexpectedly", method.__name__)
            await _abort(
                context,
                rich_status(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"),
            )
        finally:
            calls.streams.discard(task)

    return wrapper  # type: ignore[return-value]
