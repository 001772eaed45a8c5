"""Command-line conventions shared by the three processes.

Flags come first; an environment variable may supply a flag's default (named in --help). A bad or
missing flag exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from eventcore.sqlite.files import set_file_mode
from eventcore.storage import parse_location
from servicekit.admission import DEFAULT_MAX_CONCURRENT_CALLS
from servicekit.edge import DEFAULT_MAX_MESSAGE_BYTES, EdgeSettings

_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as scripts calling us expect."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def listen_address(text: str) -> str:
    """HOST:PORT, PORT 0..65535 (0 picks a free port)."""
    match = _ADDRESS.match(text)
    if not match or int(match["port"]) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:50051), got {text!r}")
    return text


def positive_float(text: str) -> float:
    return _number(text, float, "a number", lambda v: v > 0, "greater than 0")


def positive_int(text: str) -> int:
    return _number(text, int, "a whole number", lambda v: v >= 1, "at least 1")


N = TypeVar("N", int, float)


def _number(text: str, kind: Callable[[str], N], noun: str, ok: Callable[[N], bool], rule: str) -> N:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, env: str, help: str, **kwargs: Any
) -> None:
    """A flag whose default may come from the environment variable `env`; required if neither."""
    default = os.environ.get(env, kwargs.pop("default", None))
    required = default is None and kwargs.pop("required", True)
    shown = f" (env {env}" + (f", default {default})" if default not in (None, "") else ")")
    parser.add_argument(flag, default=default, required=required, help=help + shown, **kwargs)


def add_listen(parser: argparse.ArgumentParser, env: str) -> None:
    add_flag(
        parser,
        "--listen",
        env,
        "gRPC address HOST:PORT (port 0 picks one)",
        type=listen_address,
        metavar="HOST:PORT",
    )


def add_file(parser: argparse.ArgumentParser, flag: str, env: str, help: str) -> None:
    add_flag(parser, flag, env, help, type=Path, metavar="FILE")


def add_location(parser: argparse.ArgumentParser, flag: str, env: str, help: str) -> None:
    """A store's place: a SQLite file path, or a postgresql:// URL."""
    add_flag(parser, flag, env, help, type=parse_location, metavar="FILE|URL")


def add_grace(parser: argparse.ArgumentParser) -> None:
    add_flag(
        parser,
        "--grace",
        "ORDERS_GRACE",
        "seconds in-flight calls get to finish on stop",
        default="10",
        type=positive_float,
        metavar="SECONDS",
    )


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Add --log-level, parse (exit 2 on a bad flag) and configure logging for the process
    (and the mode of the files it creates, where it takes --file-mode)."""
    add_log_level(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, parser.prog)
    if getattr(args, "file_mode", None) is not None:
        set_file_mode(args.file_mode)
    return args


def add_log_level(parser: argparse.ArgumentParser) -> None:
    add_flag(
        parser,
        "--log-level",
        "ORDERS_LOG_LEVEL",
        "logging threshold",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )


def configure_logging(level: str, process: str) -> None:
    """stdlib logging to stderr, one line per event."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
    )


def file_mode(text: str) -> int:
    """An octal permission mode such as 0600 or 640; the owner must keep read and write."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an octal mode such as 0600, got {text!r}") from None
    if not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
        raise argparse.ArgumentTypeError(f"must be 0600..0777 with owner read and write, got {text!r}")
    return mode


def add_file_mode(parser: argparse.ArgumentParser) -> None:
    """--file-mode: permissions of the files the process creates (databases, -wal/-shm, locks)."""
    add_flag(
        parser,
        "--file-mode",
        "ORDERS_FILE_MODE",
        "octal permissions of the files this process creates (databases, their -wal/-shm, lock files)",
        default="0600",
        type=file_mode,
        metavar="MODE",
    )


def add_edge_flags(parser: argparse.ArgumentParser) -> None:
    """A server's network edge: TLS, bearer tokens, message and concurrency limits."""
    group = parser.add_argument_group("security and limits")
    add_flag(
        group,
        "--tls-cert",
        "ORDERS_TLS_CERT",
        "serve TLS with this PEM certificate (chain)",
        default="",
        type=_optional_path,
        metavar="PEM",
    )
    add_flag(
        group,
        "--tls-key",
        "ORDERS_TLS_KEY",
        "PEM private key of --tls-cert (unencrypted)",
        default="",
        type=_optional_path,
        metavar="PEM",
    )
    add_flag(
        group,
        "--tls-client-ca",
        "ORDERS_TLS_CLIENT_CA",
        "require client certificates signed by this PEM CA (mutual TLS)",
        default="",
        type=_optional_path,
        metavar="PEM",
    )
    add_flag(
        group,
        "--auth-token-file",
        "ORDERS_AUTH_TOKEN_FILE",
        "require bearer tokens: lines 'NAME SCOPES SHA256_HEX' (see python -m servicekit.tokens);"
        " SIGHUP rereads it",
        default="",
        type=_optional_path,
        metavar="FILE",
    )
    add_flag(
        group,
        "--max-message-bytes",
        "ORDERS_MAX_MESSAGE_BYTES",
        "largest request accepted; bigger ones get RESOURCE_EXHAUSTED",
        default=str(DEFAULT_MAX_MESSAGE_BYTES),
        type=positive_int,
        metavar="BYTES",
    )
    add_flag(
        group,
        "--max-concurrent-calls",
        "ORDERS_MAX_CONCURRENT_CALLS",
        "calls served at once; beyond it a call gets RESOURCE_EXHAUSTED at once",
        default=str(DEFAULT_MAX_CONCURRENT_CALLS),
        type=positive_int,
        metavar="N",
    )


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def edge_settings(args: argparse.Namespace) -> EdgeSettings:
    """The EdgeSettings of flags added by add_edge_flags."""
    return EdgeSettings(
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_token_file=args.auth_token_file,
        max_message_bytes=args.max_message_bytes,
        max_concurrent_calls=args.max_concurrent_calls,
    )
