"""python -m projector --event-store FILE --read-db FILE [COMMAND]

No command follows the log. Commands: parked, retry, skip, verify, rebuild (exit 0 on success, 1 on
a finding or failure, 2 on a usage error).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

# A stop signal is a graceful stop from the first moment: the handlers go in before the imports,
# which take longer than a quick `kill` after start.
STOP = threading.Event()
_signalled: list[int] = []


def request_stop(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    STOP.set()


signal.signal(signal.SIGINT, request_stop)
signal.signal(signal.SIGTERM, request_stop)

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from eventcore import parking  # noqa: E402
from eventcore.errors import StorageRefused, Unavailable  # noqa: E402
from eventcore.projection import DEFAULT_MAX_PARKED  # noqa: E402
from orders.projections import PROJECTIONS  # noqa: E402
from projector import commands  # noqa: E402
from projector.app import Settings, run  # noqa: E402
from servicekit import cli, metrics  # noqa: E402
from servicekit.server import BindError  # noqa: E402

log = logging.getLogger("projector")


def parse_args(argv: list[str] | None) -> Settings:
    return settings_of(parse(argv))


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(
        args.event_store,
        args.read_db,
        args.batch_size,
        metrics_listen=args.metrics_listen,
        max_parked=args.max_parked,
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="projector",
        description="Without a command: follows the event store and applies every event to the read"
        " models (order view, customer summaries, product sales) in the read database, checkpoints"
        " in the same transaction. A COMMAND (after the flags) operates on the read models instead.",
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
    cli.add_flag(
        parser,
        "--max-parked",
        "ORDERS_MAX_PARKED",
        "parked streams beyond which a projection stops as failed",
        default=str(DEFAULT_MAX_PARKED),
        type=cli.positive_int,
    )
    metrics.add_listen_flag(parser, "ORDERS_PROJECTOR_METRICS_LISTEN")
    cli.add_file_mode(parser)
    add_commands(parser)
    return cli.parse(parser, argv)


def add_commands(parser: argparse.ArgumentParser) -> None:
    """The operator commands; the flags above come before the command."""
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=cli.ArgumentParser)
    for name, text in [
        (
            "parked",
            "list parked streams: projection, stream, position, event type, since, error (exit 1 if any)",
        ),
        ("verify", "replay the log into scratch storage and compare row by row (exit 1 on any difference)"),
        ("rebuild", "rebuild read models from position 0 beside the live ones, then swap them in at once"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--projection", metavar="NAME", help="only this projection (default: all)")
    retry = commands.add_parser("retry", help="apply parked events again (after a fix)")
    retry.add_argument("--projection", metavar="NAME", required=True)
    retry.add_argument("--stream", metavar="ID", help="only this stream (default: every parked stream)")
    skip = commands.add_parser("skip", help="drop a parked stream's failing event on purpose (recorded)")
    skip.add_argument("--projection", metavar="NAME", required=True)
    skip.add_argument("--stream", metavar="ID", required=True)


def run_command(args: argparse.Namespace) -> int:
    """One operator command; its exit code."""
    if args.command == "parked":
        return commands.parked(args.read_db, PROJECTIONS, args.projection)
    if args.command == "retry":
        return commands.retry(args.event_store, args.read_db, PROJECTIONS, args.projection, args.stream)
    if args.command == "skip":
        return commands.skip(args.event_store, args.read_db, PROJECTIONS, args.projection, args.stream)
    if args.command == "verify":
        return commands.verify_command(
            args.event_store, args.read_db, PROJECTIONS, args.projection, args.batch_size
        )
    if args.command == "rebuild":
        stop = threading.Event()
        _stop_on_signals(stop)
        return commands.rebuild(
            args.event_store,
            args.read_db,
            PROJECTIONS,
            args.projection,
            args.batch_size,
            args.max_parked,
            stop.is_set,
        )
    raise AssertionError(f"unknown command {args.command}")


def _stop_on_signals(stop: threading.Event) -> None:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stop requested (%s): finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.command is not None:
        _default_signals()  # an operator command stops on Ctrl-C as any command does
        try:
            return run_command(args)
        except commands.UnknownProjection as error:
            log.error("%s", error)
            return 2
        except (parking.NotParked, FileNotFoundError, StorageRefused, Unavailable) as error:
            log.error("%s", error)
            return 1
    settings = settings_of(args)
    try:
        run(settings, STOP)
    except (StorageRefused, Unavailable, BindError) as error:  # e.g. the server is not reachable
        log.error("%s", error)
        return 1
    if _signalled:
        log.info("stopped on %s", signal.Signals(_signalled[0]).name)
    return 0


def _default_signals() -> None:
    """Back to the default handlers; a signal that came during start-up is delivered now."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _signalled:
        signal.raise_signal(_signalled[0])


if __name__ == "__main__":
    sys.exit(main())
