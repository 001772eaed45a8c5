"""Start the write service, the projector and the read service together; Ctrl-C stops all three.

Used by `make run`. Each process logs to this terminal's stderr; if one of them exits, the others
are stopped too, and the exit status says which failed.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from eventcore.storage import display, parse_location
from tools import launch


def shown(location: str) -> str:
    """A path, or a URL without its password."""
    return display(parse_location(location))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--write-addr", default="127.0.0.1:50051")
    parser.add_argument("--read-addr", default="127.0.0.1:50052")
    parser.add_argument("--event-store", help="path or postgresql:// URL (default: DATA_DIR/events.db)")
    parser.add_argument("--read-db", help="path or postgresql:// URL (default: DATA_DIR/read.db)")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    settings = launch.Settings(
        event_store=args.event_store or str(args.data_dir / "events.db"),
        read_db=args.read_db or str(args.data_dir / "read.db"),
        write_listen=args.write_addr,
        read_listen=args.read_addr,
    )

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, command in launch.commands(settings).items():
        # Own process group: Ctrl-C reaches us only, and we stop the children in order.
        processes[name] = subprocess.Popen(command, start_new_session=True)
    print(
        f"write service on {args.write_addr}, read service on {args.read_addr}, event store"
        f" {shown(settings.event_store)}, read database {shown(settings.read_db)}; Ctrl-C stops all three",
        file=sys.stderr,
        flush=True,
    )
    failed = ""
    while not stopping and not failed:
        time.sleep(0.2)
        failed = next((name for name, p in processes.items() if p.poll() is not None), "")
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = {name: process.wait() for name, process in processes.items()}
    if failed:
        print(f"{failed} exited with status {codes[failed]}; stopped the others", file=sys.stderr)
        return 1
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
