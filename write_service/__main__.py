"""python -m write_service --listen HOST:PORT --event-store FILE"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from eventcore.sqlite_support import StorageLocked, Synchronous
from servicekit import cli
from servicekit.server import BindError
from write_service.app import Settings, WriteService

log = logging.getLogger("write_service")


def parse_args(argv: list[str] | None) -> Settings:
    parser = cli.ArgumentParser(
        prog="write_service",
        description="Order command service: validates commands against each order's history and"
        " appends the resulting events durably to a SQLite event store.",
    )
    cli.add_flag(
        parser,
        "--listen",
        "ORDERS_WRITE_LISTEN",
        "gRPC address HOST:PORT (port 0 picks one)",
        type=cli.listen_address,
        metavar="HOST:PORT",
    )
    cli.add_flag(
        parser,
        "--event-store",
        "ORDERS_EVENT_STORE",
        "event store SQLite file (created if missing)",
        type=Path,
        metavar="FILE",
    )
    cli.add_flag(
        parser,
        "--synchronous",
        "ORDERS_SYNCHRONOUS",
        "FULL: a reply means the events are on disk; NORMAL: faster, a power failure may lose"
        " the last acknowledged commands (a process crash never does)",
        default="FULL",
        choices=["FULL", "NORMAL"],
    )
    cli.add_flag(
        parser,
        "--stream-cache-size",
        "ORDERS_STREAM_CACHE_SIZE",
        "order states kept in memory between commands",
        default="10000",
        type=cli.positive_int,
    )
    cli.add_flag(
        parser,
        "--grace",
        "ORDERS_GRACE",
        "seconds in-flight calls get to finish on stop",
        default="10",
        type=cli.positive_float,
        metavar="SECONDS",
    )
    cli.add_log_level(parser)
    args = parser.parse_args(argv)
    cli.configure_logging(args.log_level, "write_service")
    return Settings(
        listen=args.listen,
        event_store=args.event_store,
        synchronous=Synchronous(args.synchronous),
        stream_cache_size=args.stream_cache_size,
        grace=args.grace,
    )


async def serve(settings: Settings) -> None:
    await WriteService(settings).run()


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        asyncio.run(serve(settings))
    except (BindError, StorageLocked) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
