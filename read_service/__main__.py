"""python -m read_service --listen HOST:PORT --read-db FILE --event-store FILE"""

from __future__ import annotations

import sys

from read_service.app import ReadService, Settings
from servicekit import cli, metrics
from servicekit.server import run_server_process


def parse_args(argv: list[str] | None) -> Settings:
    parser = cli.ArgumentParser(
        prog="read_service",
        description="Order query service: answers from the read database (opened read-only) and"
        " attaches the read-model and event-store versions to every answer.",
    )
    cli.add_listen(parser, "ORDERS_READ_LISTEN")
    cli.add_location(
        parser,
        "--read-db",
        "ORDERS_READ_DB",
        "read database written by the projector: file or URL (read-only)",
    )
    cli.add_location(
        parser,
        "--event-store",
        "ORDERS_EVENT_STORE",
        "event store: SQLite file or postgresql:// URL (read-only)",
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
        "--max-lag",
        "ORDERS_MAX_LAG",
        "events a projection may lag behind the head for --max-lag-seconds before health says NOT_SERVING",
        default="10000",
        type=cli.positive_int,
        metavar="EVENTS",
    )
    cli.add_flag(
        parser,
        "--max-lag-seconds",
        "ORDERS_MAX_LAG_SECONDS",
        "how long a lag above --max-lag is tolerated before health says NOT_SERVING",
        default="30",
        type=cli.positive_float,
        metavar="SECONDS",
    )
    cli.add_grace(parser)
    metrics.add_listen_flag(parser, "ORDERS_READ_METRICS_LISTEN")
    cli.add_edge_flags(parser)
    args = cli.parse(parser, argv)
    return Settings(
        args.listen,
        args.read_db,
        args.event_store,
        args.max_wait,
        args.grace,
        metrics_listen=args.metrics_listen,
        max_lag=args.max_lag,
        max_lag_seconds=args.max_lag_seconds,
        edge=cli.edge_settings(args),
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    return run_server_process(lambda: ReadService(settings).run())


if __name__ == "__main__":
    sys.exit(main())
