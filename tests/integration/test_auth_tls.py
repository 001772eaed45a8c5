"""Bearer tokens and TLS on a real in-process grpc.aio server: health open, reflection behind any token,
a service behind its scope, for all four method kinds; TLS and mutual TLS handshakes; bad PEM files."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from servicekit.auth import AuthInterceptor
from servicekit.tls import TlsConfigError, server_credentials
from servicekit.tokens import TokenStore
from tests.tls_support import Pki, make_pki

WRITER = "writer-token-0123456789"
READER = "reader-token-0123456789"
SCOPES = {"test.Echo": "write", "test.Registered": "write"}
TIMEOUT = 5


def _hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- the test service: one method of each kind; messages are UTF-8 bytes ---------------------------
# (bytes, not str: grpc.aio's server turns a str response into bytes before the serializer sees it)


def _checked(data: bytes) -> bytes:
    data.decode("utf-8")  # strict: a malformed request fails to deserialize
    return data


async def _say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"echo " + request


async def _count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for number in range(3):
        yield b"%s %d" % (request, number)


async def _join(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b"+".join([request async for request in requests])


async def _chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request.upper()


def _handlers() -> dict[str, grpc.RpcMethodHandler]:
    kinds: dict[str, tuple[Callable[..., grpc.RpcMethodHandler], Any]] = {
        "Say": (grpc.unary_unary_rpc_method_handler, _say),
        "Count": (grpc.unary_stream_rpc_method_handler, _count),
        "Join": (grpc.stream_unary_rpc_method_handler, _join),
        "Chat": (grpc.stream_stream_rpc_method_handler, _chat),
    }
    return {
        name: make(behaviour, request_deserializer=_checked, response_serializer=bytes)
        for name, (make, behaviour) in kinds.items()
    }


@dataclass
class Server:
    server: grpc.aio.Server
    port: int

    def channel(self, credentials: grpc.ChannelCredentials | None = None, host: str = "127.0.0.1") -> Any:
        target = f"{host}:{self.port}"
        if credentials is None:
            return grpc.aio.insecure_channel(target)
        return grpc.aio.secure_channel(target, credentials)


async def start_server(
    tokens: TokenStore | None, credentials: grpc.ServerCredentials | None = None
) -> Server:
    interceptors = [AuthInterceptor(tokens, SCOPES)] if tokens is not None else []
    server = grpc.aio.server(interceptors=interceptors)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", _handlers())])
    # The path generated stubs take since grpcio 1.62: registered methods, looked up before generic ones.
    server.add_registered_method_handlers("test.Registered", _handlers())
    reflection.enable_server_reflection(["test.Echo", reflection.SERVICE_NAME], server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return Server(server, port)


@pytest.fixture
def token_store(tmp_path: Path) -> TokenStore:
    path = tmp_path / "tokens.txt"
    path.write_text(f"writer write,read {_hex(WRITER)}\nreader read {_hex(READER)}\n")
    return TokenStore.open(path)


@pytest.fixture
async def served(token_store: TokenStore) -> AsyncIterator[Server]:
    server = await start_server(token_store)
    yield server
    await server.server.stop(None)


def bearer(token: str, scheme: str = "Bearer") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"{scheme} {token}"),)


async def call(channel: Any, method: str, metadata: Any = None, service: str = "test.Echo") -> Any:
    """Call one method of the test service; its answer as bytes or a list of them."""
    path = f"/{service}/{method}"
    if method == "Say":
        return await channel.unary_unary(path)(b"hi", metadata=metadata, timeout=TIMEOUT)
    if method == "Count":
        return [
            answer async for answer in channel.unary_stream(path)(b"hi", metadata=metadata, timeout=TIMEOUT)
        ]
    requests = iter([b"a", b"b"])
    if method == "Join":
        return await channel.stream_unary(path)(requests, metadata=metadata, timeout=TIMEOUT)
    return [
        answer async for answer in channel.stream_stream(path)(requests, metadata=metadata, timeout=TIMEOUT)
    ]


async def refused(channel: Any, method: str, metadata: Any = None, service: str = "test.Echo") -> Any:
    """Like `call`, but a request stream is opened and never written.

    grpc.aio's client may report INTERNAL ("Failed execute_batch") instead of the server's status
    when it is still writing as the server ends the call (grpc/grpc#36066), so a refusal of a
    request-streaming method is checked with nothing in flight.
    """
    path = f"/{service}/{method}"
    if method == "Join":
        return await channel.stream_unary(path)(metadata=metadata, timeout=TIMEOUT)
    if method == "Chat":
        return await channel.stream_stream(path)(metadata=metadata, timeout=TIMEOUT).read()
    return await call(channel, method, metadata, service)


ANSWERS = {"Say": b"echo hi", "Count": [b"hi 0", b"hi 1", b"hi 2"], "Join": b"a+b", "Chat": [b"A", b"B"]}
METHODS = list(ANSWERS)


async def expect_code(code: grpc.StatusCode, call_: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_
    assert raised.value.code() == code, raised.value.details()
    details: str = raised.value.details() or ""
    return details


async def health_check(channel: Any, metadata: Any = None) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), metadata=metadata, timeout=TIMEOUT)
    status: int = reply.status
    return status


async def list_services(channel: Any, metadata: Any = None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=TIMEOUT)
    return [service.name async for reply in replies for service in reply.list_services_response.service]


async def reflection_refused(channel: Any, metadata: Any = None) -> None:
    """Open a reflection stream and read, writing nothing (see `refused`)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    await stub.ServerReflectionInfo(metadata=metadata, timeout=TIMEOUT).read()


# -- bearer tokens ---------------------------------------------------------------------------------


async def test_health_is_open(served: Server) -> None:
    async with served.channel() as channel:
        assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await health_check(channel, bearer("not-a-token")) == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_needs_any_valid_token(served: Server) -> None:
    async with served.channel() as channel:
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, reflection_refused(channel))
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, reflection_refused(channel, bearer("wrong")))
        assert "test.Echo" in await list_services(channel, bearer(READER))
        assert "test.Echo" in await list_services(channel, bearer(WRITER))


@pytest.mark.parametrize("service", ["test.Echo", "test.Registered"])
async def test_a_scoped_service_for_every_method_kind(served: Server, service: str) -> None:
    async with served.channel() as channel:
        for method in METHODS:
            for metadata in [
                None,
                bearer(WRITER, "Basic"),
                bearer("unknown"),
                (("authorization", "Bearer"),),
            ]:
                await expect_code(
                    grpc.StatusCode.UNAUTHENTICATED, refused(channel, method, metadata, service)
                )
            details = await expect_code(
                grpc.StatusCode.PERMISSION_DENIED, refused(channel, method, bearer(READER), service)
            )
            assert details == "token 'reader' lacks the 'write' scope this method needs"
            assert READER not in details
            assert await call(channel, method, bearer(WRITER), service) == ANSWERS[method]
            assert await call(channel, method, bearer(WRITER, "bEaReR"), service) == ANSWERS[method]


async def test_messages_say_why_without_the_token(served: Server) -> None:
    async with served.channel() as channel:
        assert "Bearer TOKEN" in await expect_code(grpc.StatusCode.UNAUTHENTICATED, call(channel, "Say"))
        secret = "a-wrong-but-secret-token"
        details = await expect_code(grpc.StatusCode.UNAUTHENTICATED, call(channel, "Say", bearer(secret)))
        assert details == "unknown bearer token"


async def test_an_unauthenticated_request_is_never_deserialized(served: Server) -> None:
    async with served.channel() as channel:
        raw = channel.unary_unary("/test.Echo/Say")  # no serializers: bytes as they are
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, raw(b"\xff\xfe", timeout=TIMEOUT))
        await expect_code(
            grpc.StatusCode.PERMISSION_DENIED, raw(b"\xff", metadata=bearer(READER), timeout=TIMEOUT)
        )


async def test_unknown_methods_stay_unimplemented(served: Server) -> None:
    async with served.channel() as channel:
        await expect_code(grpc.StatusCode.UNIMPLEMENTED, call(channel, "Say", service="test.Nope"))
        await expect_code(grpc.StatusCode.UNIMPLEMENTED, call(channel, "Say", bearer(WRITER), "test.Nope"))


async def test_a_reload_takes_effect_on_the_next_call(served: Server, token_store: TokenStore) -> None:
    async with served.channel() as channel:
        assert await call(channel, "Say", bearer(WRITER)) == b"echo hi"
        token_store.path.write_text(f"reader write {_hex(READER)}\n")
        assert token_store.reload()
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, call(channel, "Say", bearer(WRITER)))
        assert await call(channel, "Say", bearer(READER)) == b"echo hi"


def test_a_mapping_must_name_a_scope(token_store: TokenStore) -> None:
    with pytest.raises(ValueError, match="a scope must be named"):
        AuthInterceptor(token_store, {"test.Echo": ""})


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def trusting(pki: Pki, with_client_cert: bool = False) -> grpc.ChannelCredentials:
    if with_client_cert:
        return grpc.ssl_channel_credentials(
            root_certificates=pki.read("ca_cert"),
            private_key=pki.read("client_key"),
            certificate_chain=pki.read("client_cert"),
        )
    return grpc.ssl_channel_credentials(root_certificates=pki.read("ca_cert"))


async def test_tls_serves_a_client_trusting_the_ca_and_refuses_plaintext(pki: Pki, tmp_path: Path) -> None:
    server = await start_server(None, server_credentials(pki.server_cert, pki.server_key, None))
    try:
        for host in ["127.0.0.1", "localhost"]:  # the certificate names both (SAN IP and DNS)
            async with server.channel(trusting(pki), host) as channel:
                assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING
        async with server.channel() as plaintext:
            await expect_code(grpc.StatusCode.UNAVAILABLE, health_check(plaintext))
        other = make_pki(tmp_path / "other")
        async with server.channel(trusting(other)) as untrusting:
            await expect_code(grpc.StatusCode.UNAVAILABLE, health_check(untrusting))
    finally:
        await server.server.stop(None)


async def test_mutual_tls_needs_a_client_certificate_signed_by_the_ca(
    pki: Pki, tmp_path: Path, token_store: TokenStore
) -> None:
    credentials = server_credentials(pki.server_cert, pki.server_key, pki.ca_cert)
    server = await start_server(token_store, credentials)
    try:
        async with server.channel(trusting(pki)) as no_certificate:
            await expect_code(grpc.StatusCode.UNAVAILABLE, health_check(no_certificate))
        other = make_pki(tmp_path / "other")
        foreign = grpc.ssl_channel_credentials(
            root_certificates=pki.read("ca_cert"),
            private_key=other.read("client_key"),
            certificate_chain=other.read("client_cert"),
        )
        async with server.channel(foreign) as foreign_certificate:
            await expect_code(grpc.StatusCode.UNAVAILABLE, health_check(foreign_certificate))
        async with server.channel(trusting(pki, with_client_cert=True)) as channel:
            assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING
            # TLS and tokens together: the certificate lets the client in, the token decides the scope.
            await expect_code(grpc.StatusCode.UNAUTHENTICATED, call(channel, "Say"))
            assert await call(channel, "Count", bearer(WRITER)) == ANSWERS["Count"]
    finally:
        await server.server.stop(None)


def test_bad_pem_files_are_one_line_errors(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    other = make_pki(tmp_path / "other")
    cases: list[tuple[tuple[Path, Path, Path | None], str]] = [
        ((missing, pki.server_key, None), f"TLS certificate {missing}: no such file"),
        ((pki.server_cert, missing, None), f"TLS key {missing}: no such file"),
        ((pki.server_cert, pki.server_key, missing), f"TLS client CA {missing}: no such file"),
        ((tmp_path, pki.server_key, None), f"TLS certificate {tmp_path}: is a directory"),
        ((not_pem, pki.server_key, None), f"TLS certificate {not_pem}: not PEM (no '-----BEGIN' line)"),
        ((pki.server_cert, not_pem, None), f"TLS key {not_pem}: not PEM"),
        ((pki.server_cert, pki.server_cert, None), "no PEM block with 'PRIVATE KEY' in it"),
        ((pki.server_key, pki.server_key, None), "no PEM block with 'CERTIFICATE' in it"),
        ((pki.server_cert, pki.server_key, pki.server_key), "TLS client CA"),
        ((pki.server_cert, other.server_key, None), "does not match the certificate"),
    ]
    for arguments, says in cases:
        with pytest.raises(TlsConfigError) as raised:
            server_credentials(*arguments)
        assert says in str(raised.value)
        assert "\n" not in str(raised.value)


def test_an_encrypted_key_is_refused(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.read("server_key"), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsConfigError, match="encrypted keys are not supported"):
        server_credentials(pki.server_cert, encrypted, None)
