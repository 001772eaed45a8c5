"""Every method's front door: a body that does not decode, or a call beyond the server's limit.

grpc answers UNKNOWN (and logs a traceback) when a request deserializer raises, and its own pending
queue CANCELs calls under overload, which clients do not retry. So every method handler a server
gets is rewritten once, at registration, by `AdmittingServer`:

- a request that is not a valid message is INVALID_ARGUMENT, naming the message type;
- beyond `limit` calls in flight (health excepted) a call is RESOURCE_EXHAUSTED at once.

Unary requests are decoded by the wrapper itself, so it can abort cleanly. Request streams keep a
deserializer (a servicer may read them with `context.read()`) that raises `UndecodableRequest`, an
InvalidArgument the servicer's error table maps, and the wrapper maps too if the servicer does not.
The rewriting costs nothing per call beyond one small coroutine frame.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from servicekit.status import UndecodableRequest, abort_with

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
DEFAULT_MAX_CONCURRENT_CALLS = 1000


class Admission:
    """Counts the calls in flight on one server and refuses those beyond `limit`."""

    __slots__ = ("active", "limit", "logged_at", "refused")

    def __init__(self, limit: int = DEFAULT_MAX_CONCURRENT_CALLS) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.limit = limit
        self.active = 0
        self.refused = 0
        self.logged_at = 0.0  # time.monotonic() of the last log line about refusals


def _type_name(deserializer: Any) -> str:
    owner = getattr(deserializer, "__self__", None)  # Message.FromString is bound to its class
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "") or "request message")


def _decoder(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """The deserializer raising UndecodableRequest instead of whatever the parser raises."""
    type_name = _type_name(deserializer)

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, ValueError, RuntimeError) as error:
            raise UndecodableRequest(type_name, error) from None

    return decode


async def _refuse_invalid(context: grpc.aio.ServicerContext, error: UndecodableRequest) -> None:
    await abort_with(context, error)


async def _refuse_overload(context: grpc.aio.ServicerContext, admission: Admission) -> None:
    admission.refused += 1
    now = time.monotonic()
    if now - admission.logged_at >= 1.0:  # one line a second at most, however hard the flood
        admission.logged_at = now
        log.warning(
            "at the limit of %d concurrent calls: %d refused with RESOURCE_EXHAUSTED so far",
            admission.limit,
            admission.refused,
        )
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the server is at its limit of {admission.limit} concurrent calls; retry shortly",
    )


def wrap_handler(handler: grpc.RpcMethodHandler, admission: Admission | None) -> grpc.RpcMethodHandler:
    """The same method, decoding its requests cleanly and counting it against `admission`.

    `admission` None: the method is never refused for load (health).
    """
    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    decode = _decoder(deserializer) if deserializer is not None else None
    if handler.request_streaming:
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.stream_stream, None, admission), decode, serializer
            )
        return grpc.stream_unary_rpc_method_handler(
            _single(handler.stream_unary, None, admission), decode, serializer
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, decode, admission), None, serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        _single(handler.unary_unary, decode, admission), None, serializer
    )


def _single(
    behaviour: Callable[..., Any], decode: Callable[[bytes], Any] | None, admission: Admission | None
) -> Callable[..., Any]:
    """A method answering once; `decode` is applied to the (unary) request first, if given."""
    if admission is None:

        async def open_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if decode is not None:
                request = await _decoded(decode, request, context)
            try:
                return await behaviour(request, context)
            except UndecodableRequest as error:
                await _refuse_invalid(context, error)

        return open_call

    async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if admission.active >= admission.limit:
            await _refuse_overload(context, admission)
        if decode is not None:
            request = await _decoded(decode, request, context)
        admission.active += 1
        try:
            return await behaviour(request, context)
        except UndecodableRequest as error:
            await _refuse_invalid(context, error)
        finally:
            admission.active -= 1

    return admitted


async def _decoded(decode: Callable[[bytes], Any], request: Any, context: grpc.aio.ServicerContext) -> Any:
    """The decoded request; an undecodable one ends the call with INVALID_ARGUMENT."""
    try:
        return decode(request)
    except UndecodableRequest as error:
        await _refuse_invalid(context, error)


def _streaming(
    behaviour: Callable[..., Any], decode: Callable[[bytes], Any] | None, admission: Admission | None
) -> Callable[..., Any]:
    """A method answering with a stream, written as an async generator or through context.write."""
    if not inspect.isasyncgenfunction(behaviour):
        return _single(behaviour, decode, admission)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if admission is not None and admission.active >= admission.limit:
            await _refuse_overload(context, admission)
        if decode is not None:
            request = await _decoded(decode, request, context)
        if admission is not None:
            admission.active += 1
        try:
            async for response in behaviour(request, context):
                yield response
        except UndecodableRequest as error:
            await _refuse_invalid(context, error)
        finally:
            if admission is not None:
                admission.active -= 1

    return stream


class _AdmittingGenericHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose methods are wrapped, once per method."""

    def __init__(self, inner: grpc.GenericRpcHandler, admission: Admission) -> None:
        self._inner = inner
        self._admission = admission
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = self._inner.service(handler_call_details)
        if handler is not None:
            service = method[1:].partition("/")[0]
            handler = wrap_handler(handler, None if service == HEALTH_SERVICE else self._admission)
        self._wrapped[method] = handler
        return handler


class AdmittingServer(grpc.aio.Server):  # type: ignore[misc]
    """A grpc.aio server (for generated `add_..._to_server` code, reflection included) whose every
    method handler goes through the front door; everything else is the wrapped server's."""

    def __init__(self, server: grpc.aio.Server, admission: Admission) -> None:
        self.inner = server
        self.admission = admission

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.inner.add_generic_rpc_handlers(
            [_AdmittingGenericHandler(handler, self.admission) for handler in generic_rpc_handlers]
        )

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        admission = None if service_name == HEALTH_SERVICE else self.admission
        self.inner.add_registered_method_handlers(
            service_name, {name: wrap_handler(h, admission) for name, h in method_handlers.items()}
        )

    def add_insecure_port(self, address: str) -> int:
        return int(self.inner.add_insecure_port(address))

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return int(self.inner.add_secure_port(address, server_credentials))

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self, grace: float | None) -> None:
        await self.inner.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(await self.inner.wait_for_termination(timeout))
