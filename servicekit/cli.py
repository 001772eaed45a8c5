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

from eventcore.storage import parse_location

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


def add_flag(parser: argparse.ArgumentParser, flag: str, env: str, help: str, **kwargs: Any) -> None:
    """A flag whose default may come from the environment variable `env`; required if neither."""
    default = os.environ.get(env, kwargs.pop("default", None))
    required = default is None and kwargs.pop("required", True)
    shown = f" (env {env}" + (f", default {default})" if default is not None else ")")
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
    """Add --log-level, parse (exit 2 on a bad flag) and configure logging for the process."""
    add_log_level(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, parser.prog)
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
