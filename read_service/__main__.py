"""python -m read_service --listen HOST:PORT --read-db FILE --event-store FILE"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from read_service.app import ReadService, Settings
from servicekit import cli
from servicekit.server import BindError

log = logging.getLogger("read_service")


def parse_args(argv: list[str] | None) -> Settings:
    parser = cli.ArgumentParser(
        prog="read_service",
        description="Order query service: answers from the read database (opened read-only) and"
        " attaches the read-model and event-store versions to every answer.",
    )
    cli.add_flag(
        parser,
        "--listen",
        "ORDERS_READ_LISTEN",
        "gRPC address HOST:PORT (port 0 picks one)",
        type=cli.listen_address,
        metavar="HOST:PORT",
    )
    cli.add_flag(
        parser,
        "--read-db",
        "ORDERS_READ_DB",
        "read database written by the projector (read-only)",
        type=Path,
        metavar="FILE",
    )
    cli.add_flag(
        parser,
        "--event-store",
        "ORDERS_EVENT_STORE",
        "event store SQLite file (read-only)",
        type=Path,
        metavar="FILE",
    )
    cli.add_flag(
        parser,
        "--max-wait",
        "ORDERS_MAX_WAIT",
        "longest a query with min_position waits for the read model before UNAVAILABLE",
        default="10",
        type=cli.positive_float,
        metavar="SECONDS",
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
    cli.configure_logging(args.log_level, "read_service")
    return Settings(args.listen, args.read_db, args.event_store, args.max_wait, args.grace)


async def serve(settings: Settings) -> None:
    await ReadService(settings).run()  # built inside the loop: grpc.aio binds to it


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        asyncio.run(serve(settings))
    except BindError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
