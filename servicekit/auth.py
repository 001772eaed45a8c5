"""Bearer-token checks for every call, in one interceptor, so no servicer ever looks at a token.

Health is open; server reflection, and any service without a declared scope, needs any valid token;
a service with a declared scope needs a token having it. Clients send `authorization: Bearer TOKEN`.
No, a malformed or an unknown token: UNAUTHENTICATED; a valid token without the scope:
PERMISSION_DENIED. Neither the token nor its hash ever appears in a reply or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from servicekit.tokens import Principal, TokenStore

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")

_OPEN = ""  # the rule of a service anyone may call
_ANY_TOKEN = "*"  # the rule of a service any valid token may call

_METADATA_KEY = "authorization"
_NO_TOKEN = "no bearer token: send metadata 'authorization: Bearer TOKEN'"
_UNKNOWN_TOKEN = "unknown bearer token"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def bearer_token(metadata: Any) -> str | None:
    """The token of the first `authorization` metadata entry, if it says `Bearer TOKEN`."""
    for key, value in metadata or ():
        if key == _METADATA_KEY:  # gRPC metadata keys arrive lower-case
            if not isinstance(value, str):
                return None
            parts = value.split(None, 1)
            if len(parts) != 2 or parts[0].lower() != "bearer":
                return None
            return parts[1].strip()
    return None


def rejecting_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same kind as `handler` (unary or streaming either way) that aborts the call.

    It has no request deserializer: an unauthenticated peer's bytes are never parsed, and a
    malformed request still gets `code`, not UNKNOWN.
    """

    async def abort(_request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, None, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, None, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, None, serializer)
    return grpc.unary_unary_rpc_method_handler(abort, None, serializer)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks the bearer token of each call against the service's scope.

    `scopes` maps a full service name (e.g. "orders.v1.OrderCommandService") to the scope it needs
    ("write" or "read"). A service not in it needs any valid token; health needs none.
    """

    def __init__(self, tokens: TokenStore, scopes: Mapping[str, str]) -> None:
        self._tokens = tokens
        self._rules: dict[str, str] = {name: _ANY_TOKEN for name in REFLECTION_SERVICES}
        for service, scope in scopes.items():
            if not scope or scope == _ANY_TOKEN:
                raise ValueError(f"service {service!r}: a scope must be named, e.g. 'write' or 'read'")
            self._rules[service] = scope
        self._rules[HEALTH_SERVICE] = _OPEN
        self._rule_of_method: dict[str, str] = {}  # decided once per method, looked up per call

    def _rule(self, method: str) -> str:
        try:
            return self._rule_of_method[method]
        except KeyError:
            rule = self._rules.get(method[1:].partition("/")[0], _ANY_TOKEN)
            if len(self._rule_of_method) < 10_000:  # unknown methods must not grow it without bound
                self._rule_of_method[method] = rule
            return rule

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # "/package.Service/Method"
        rule = self._rule(method)
        if rule == _OPEN:
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        principal: Principal | None = None if token is None else self._tokens.authenticate(token)
        if principal is not None and (rule == _ANY_TOKEN or rule in principal.scopes):
            return await continuation(handler_call_details)

        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED
            return None
        if principal is None:
            reason = _NO_TOKEN if token is None else _UNKNOWN_TOKEN
            log.debug("%s refused: %s", method, reason)
            return rejecting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, reason)
        log.info("%s refused: token %r lacks scope %r", method, principal.name, rule)
        return rejecting_handler(
            handler,
            grpc.StatusCode.PERMISSION_DENIED,
            f"token {principal.name!r} lacks the {rule!r} scope this method needs",
        )
