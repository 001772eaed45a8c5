"""python -m projector --event-store FILE --read-db FILE"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from eventcore.errors import StorageRefused, Unavailable
from eventcore.sqlite.files import StorageLocked
from projector.app import Settings, run
from servicekit import cli, metrics
from servicekit.server import BindError

log = logging.getLogger("projector")


def parse_args(argv: list[str] | None) -> Settings:
    parser = cli.ArgumentParser(
        prog="projector",
        description="Follows the event store and applies every event to the read models (order"
        " view, customer summaries) in the read database, checkpoints in the same transaction.",
    )
    cli.add_location(
        parser,
        "--event-store",
        "ORDERS_EVENT_STORE",
        "event store: SQLite file or postgresql:// URL (read-only)",
    )
    cli.add_location(
        parser,
        "--read-db",
        "ORDERS_READ_DB",
        "read database: SQLite file or postgresql:// URL (created if missing; on PostgreSQL several"
        " projectors may run, one active, the others standing by)",
    )
    cli.add_flag(
        parser,
        "--batch-size",
        "ORDERS_BATCH_SIZE",
        "events applied per transaction",
        default="5000",
        type=cli.positive_int,
    )
    metrics.add_listen_flag(parser, "ORDERS_PROJECTOR_METRICS_LISTEN")
    args = cli.parse(parser, argv)
    return Settings(args.event_store, args.read_db, args.batch_size, metrics_listen=args.metrics_listen)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stop requested (%s): finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        run(settings, stop)
    except (
        StorageLocked,
        StorageRefused,
        Unavailable,
        BindError,
    ) as error:  # e.g. the server is not reachable
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
