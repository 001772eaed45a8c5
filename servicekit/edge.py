"""What a server shows the network, assembled in one place: TLS, bearer tokens, message and
concurrency limits (CONTRACT.md, "Security" and "Limits and hostile input").

Without TLS files and a token file a server is plaintext and open, as on loopback (`make run`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from servicekit.admission import DEFAULT_MAX_CONCURRENT_CALLS, Admission, AdmittingServer
from servicekit.auth import AuthInterceptor
from servicekit.tls import TlsConfigError, server_credentials
from servicekit.tokens import TokenStore

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# SO_REUSEPORT off: a second server on a taken port must fail, not share it silently.
_BASE_OPTIONS: list[tuple[str, int]] = [("grpc.so_reuseport", 0)]


@dataclass(frozen=True)
class EdgeSettings:
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # with it, clients must show a certificate this CA signed
    auth_token_file: Path | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS


def server_options(edge: EdgeSettings) -> list[tuple[str, int]]:
    """grpc core options: the receive limit (RESOURCE_EXHAUSTED beyond it), and a pending queue
    deep enough that core never CANCELs a call the admission limit would answer itself."""
    pending = max(100_000, 10 * edge.max_concurrent_calls)
    return [
        *_BASE_OPTIONS,
        ("grpc.max_receive_message_length", edge.max_message_bytes),
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
    ]


def credentials(edge: EdgeSettings) -> grpc.ServerCredentials | None:
    """TLS credentials, or None for plaintext; TlsConfigError (one line) for a bad setting or file."""
    if edge.tls_cert is None and edge.tls_key is None:
        if edge.tls_client_ca is not None:
            raise TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if edge.tls_cert is None or edge.tls_key is None:
        raise TlsConfigError("--tls-cert and --tls-key go together")
    return server_credentials(edge.tls_cert, edge.tls_key, edge.tls_client_ca)


def build_server(edge: EdgeSettings, scopes: Mapping[str, str]) -> tuple[AdmittingServer, TokenStore | None]:
    """The server (every handler through the admission front door) and its token store, if any.

    `scopes` maps a service's full name to the token scope its methods need.
    """
    tokens = TokenStore.open(edge.auth_token_file) if edge.auth_token_file is not None else None
    interceptors = [AuthInterceptor(tokens, scopes)] if tokens is not None else []
    server = grpc.aio.server(options=server_options(edge), interceptors=interceptors)
    return AdmittingServer(server, Admission(edge.max_concurrent_calls)), tokens
