"""python -m write_service --listen HOST:PORT --event-store FILE"""

from __future__ import annotations

import sys

from eventcore.sqlite.files import Synchronous
from servicekit import cli, metrics
from servicekit.server import run_server_process
from write_service.app import Settings, WriteService


def parse_args(argv: list[str] | None) -> Settings:
    parser = cli.ArgumentParser(
        prog="write_service",
        description="Order command service: validates commands against each order's history and"
        " appends the resulting events durably to a SQLite event store.",
    )
    cli.add_listen(parser, "ORDERS_WRITE_LISTEN")
    cli.add_location(
        parser,
        "--event-store",
        "ORDERS_EVENT_STORE",
        "event store: SQLite file or postgresql:// URL (created if missing)",
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
    cli.add_grace(parser)
    metrics.add_listen_flag(parser, "ORDERS_WRITE_METRICS_LISTEN")
    cli.add_file_mode(parser)
    cli.add_edge_flags(parser)
    args = cli.parse(parser, argv)
    return Settings(
        listen=args.listen,
        event_store=args.event_store,
        synchronous=Synchronous(args.synchronous),
        stream_cache_size=args.stream_cache_size,
        grace=args.grace,
        metrics_listen=args.metrics_listen,
        edge=cli.edge_settings(args),
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    return run_server_process(lambda: WriteService(settings).run())


if __name__ == "__main__":
    sys.exit(main())
