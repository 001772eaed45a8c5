"""The trio run securely, as the README's "Running it securely" shows: both servers on TLS (the write
service with mutual TLS), bearer tokens from a file made with `python -m servicekit.tokens new`,
SIGHUP to take a new token in, and no token or hash in any log line (CONTRACT.md, "Security")."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import ServiceProcess, create_request, rpc_error, run_cli, unique, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from orders_api.v1 import orders_pb2, orders_pb2_grpc
from tests.tls_support import Pki, make_pki

pytestmark = pytest.mark.e2e

C = grpc.StatusCode
TIMEOUT = 10
WRONG_TOKEN = "wrong-but-secret-7f3a9c"


def new_token(name: str, scopes: str) -> tuple[str, str]:
    """(token, token-file line) from the real command line."""
    result = run_cli("servicekit.tokens", ["new", "--name", name, "--scopes", scopes])
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    return lines["token"].strip(), lines["line"].strip()


@dataclass
class Secured:
    pki: Pki
    token_file: Path
    tokens: dict[str, str]  # name -> token
    lines: dict[str, str]  # name -> token-file line
    write: ServiceProcess
    projector: ServiceProcess
    read: ServiceProcess

    def channel(self, proc: ServiceProcess, client_cert: bool = True) -> grpc.Channel:
        assert proc.address
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.read("ca_cert"),
            private_key=self.pki.read("client_key") if client_cert else None,
            certificate_chain=self.pki.read("client_cert") if client_cert else None,
        )
        return grpc.secure_channel(proc.address, credentials)

    def processes(self) -> list[ServiceProcess]:
        return [self.write, self.projector, self.read]


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    data = tmp_path_factory.mktemp("secured")
    pki = make_pki(data / "pki")
    tokens, lines = {}, {}
    for name, scopes in [("back-office", "write,read"), ("dashboard", "read"), ("late", "write")]:
        tokens[name], lines[name] = new_token(name, scopes)
    token_file = data / "tokens.txt"
    token_file.write_text(f"# who may call\n{lines['back-office']}\n{lines['dashboard']}\n")
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    auth = ["--auth-token-file", str(token_file)]
    events, read_db = data / "events.db", data / "read.db"
    write = ServiceProcess(
        "write_service",
        [
            "--listen",
            "127.0.0.1:0",
            "--event-store",
            str(events),
            *tls,
            "--tls-client-ca",
            str(pki.ca_cert),
            *auth,
        ],
        data,
    )
    projector = ServiceProcess("projector", ["--event-store", str(events), "--read-db", str(read_db)], data)
    read = ServiceProcess(
        "read_service",
        ["--listen", "127.0.0.1:0", "--read-db", str(read_db), "--event-store", str(events), *tls, *auth],
        data,
    )
    secured = Secured(pki, token_file, tokens, lines, write, projector, read)
    try:
        write.start().wait_listening()
        projector.start()
        read.start().wait_listening()
        yield secured
    finally:
        for proc in secured.processes():
            proc.cleanup()


def commands(secured: Secured, client_cert: bool = True) -> Any:
    return orders_pb2_grpc.OrderCommandServiceStub(secured.channel(secured.write, client_cert))


def queries(secured: Secured) -> Any:
    return orders_pb2_grpc.OrderQueryServiceStub(secured.channel(secured.read))


def test_plaintext_and_a_client_without_a_certificate_are_refused(secured: Secured) -> None:
    for proc in (secured.write, secured.read):
        assert proc.address
        with grpc.insecure_channel(proc.address) as plaintext:
            stub = health_pb2_grpc.HealthStub(plaintext)
            error = rpc_error(stub.Check, health_pb2.HealthCheckRequest())
            assert error.code() == C.UNAVAILABLE
    error = rpc_error(
        lambda r, timeout: commands(secured, client_cert=False).CreateOrder(
            r, metadata=bearer(secured.tokens["back-office"]), timeout=timeout
        ),
        create_request(unique("o")),
    )
    assert error.code() == C.UNAVAILABLE, error


def test_health_is_open_over_tls(secured: Secured) -> None:
    for proc in (secured.write, secured.read):
        stub = health_pb2_grpc.HealthStub(secured.channel(proc))
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )


def test_commands_need_the_write_scope_and_queries_the_read_scope(secured: Secured) -> None:
    order_id = unique("o")
    request = create_request(order_id)
    stub = commands(secured)
    assert rpc_error(stub.CreateOrder, request).code() == C.UNAUTHENTICATED
    denied = rpc_error(
        lambda r, timeout: stub.CreateOrder(r, metadata=bearer(secured.tokens["dashboard"]), timeout=timeout),
        request,
    )
    assert denied.code() == C.PERMISSION_DENIED
    assert secured.tokens["dashboard"] not in (denied.details() or "")
    reply = stub.CreateOrder(request, metadata=bearer(secured.tokens["back-office"]), timeout=TIMEOUT)

    query = queries(secured)
    get = orders_pb2.GetOrderRequest(order_id=order_id, min_position=reply.position)
    assert rpc_error(query.GetOrder, get).code() == C.UNAUTHENTICATED
    wrong = rpc_error(
        lambda r, timeout: query.GetOrder(r, metadata=bearer(WRONG_TOKEN), timeout=timeout), get
    )
    assert wrong.code() == C.UNAUTHENTICATED
    answer = wait_for(
        lambda: query.GetOrder(get, metadata=bearer(secured.tokens["dashboard"]), timeout=TIMEOUT),
        30,
        "the order through the read service",
        interval=0.2,
    )
    assert answer.order.order_id == order_id


def test_reflection_needs_a_valid_token(secured: Secured) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(secured.channel(secured.read))
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    def listed(metadata: Any) -> list[str]:
        replies = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=TIMEOUT)
        return [s.name for reply in replies for s in reply.list_services_response.service]

    with pytest.raises(grpc.RpcError) as raised:
        listed(None)
    assert raised.value.code() == C.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "orders.v1.OrderQueryService" in listed(bearer(secured.tokens["dashboard"]))


def test_sighup_takes_a_new_token_in(secured: Secured) -> None:
    stub = commands(secured)
    late = bearer(secured.tokens["late"])
    request = create_request(unique("o"))
    assert rpc_error(
        lambda r, timeout: stub.CreateOrder(r, metadata=late, timeout=timeout), request
    ).code() == (C.UNAUTHENTICATED)
    with secured.token_file.open("a") as file:
        file.write(f"{secured.lines['late']}\n")
    secured.write.send(signal.SIGHUP)
    wait_for(
        lambda: stub.CreateOrder(request, metadata=late, timeout=TIMEOUT),
        10,
        "the new token to be accepted after SIGHUP",
        interval=0.1,
    )
    assert secured.write.alive()


def test_no_token_or_hash_in_any_log_line(secured: Secured) -> None:
    """Runs last in this module: every call above has been logged by now."""
    secrets = list(secured.tokens.values())
    secrets += [hashlib.sha256(t.encode()).hexdigest() for t in secured.tokens.values()]
    secrets += [WRONG_TOKEN]
    for proc in secured.processes():
        text = proc.stderr_text()
        assert text, f"{proc.module} logged nothing"
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert not leaked, f"{proc.module} logged a token or its hash: {leaked}"
    assert "reloaded 3 tokens" in secured.write.stderr_text()
