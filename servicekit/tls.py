"""TLS for the servers: PEM files checked at start-up, so a bad file is a clear one-line error
instead of a crash when the port is bound.

`client_ca` turns on mutual TLS: a client must show a certificate signed by that CA.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

_PEM_BEGIN = b"-----BEGIN "


class TlsConfigError(Exception):
    """A certificate or key file is missing, unreadable or not PEM; one line naming the file."""


def read_pem(path: Path, what: str, marker: bytes = b"") -> bytes:
    """A PEM file's bytes; TlsConfigError unless it exists, is readable and holds a PEM block.

    `marker` further requires that text in a BEGIN line (e.g. b"CERTIFICATE", b"PRIVATE KEY").
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise TlsConfigError(f"{what} {path}: is a directory") from None
    except OSError as error:
        raise TlsConfigError(f"{what} {path}: cannot read: {error.strerror or error}") from None
    begins = [line for line in data.splitlines() if line.startswith(_PEM_BEGIN)]
    if not begins:
        raise TlsConfigError(f"{what} {path}: not PEM (no '-----BEGIN' line)")
    if marker and not any(marker in line for line in begins):
        raise TlsConfigError(f"{what} {path}: no PEM block with {marker.decode()!r} in it")
    return data


def check_key_pair(cert: Path, key: Path) -> None:
    """TlsConfigError unless the key is an unencrypted private key matching the certificate.

    grpc would accept a mismatched pair here and fail every handshake later; OpenSSL (through the
    standard library) tells at once.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback that gives none: an encrypted key fails instead of prompting.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as error:
        reason = error.reason or error.strerror or "unusable"
        if reason == "KEY_VALUES_MISMATCH":
            raise TlsConfigError(f"TLS key {key} does not match the certificate {cert}") from None
        raise TlsConfigError(f"TLS certificate {cert} with key {key}: cannot load: {reason}") from None
    except OSError as error:
        raise TlsConfigError(f"TLS certificate {cert} with key {key}: cannot read: {error}") from None


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """Credentials for `server.add_secure_port`; with `client_ca`, clients must present a certificate."""
    cert_bytes = read_pem(cert, "TLS certificate", b"CERTIFICATE")
    key_bytes = read_pem(key, "TLS key", b"PRIVATE KEY")
    if any(b"ENCRYPTED" in line for line in key_bytes.splitlines() if line.startswith(_PEM_BEGIN)):
        raise TlsConfigError(f"TLS key {key}: encrypted keys are not supported")
    ca_bytes = read_pem(client_ca, "TLS client CA", b"CERTIFICATE") if client_ca is not None else None
    check_key_pair(cert, key)
    credentials = grpc.ssl_server_credentials(
        [(key_bytes, cert_bytes)],
        root_certificates=ca_bytes,
        require_client_auth=client_ca is not None,
    )
    if client_ca is None:
        log.debug("TLS with certificate %s", cert)
    else:
        log.debug("mutual TLS with certificate %s, client certificates signed by %s", cert, client_ca)
    return credentials
