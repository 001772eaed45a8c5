"""`python -m bench`: run the benchmark, print one table, write it as JSON and Markdown.

Exit status: 0 when every stage ran (targets may still MISS: they are results, not failures), 1 when a
stage failed, 2 for bad flags or when --peer is asked for without its extra installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import sys
from pathlib import Path

from bench import postgres, report, settings
from bench.run import run

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PEER_INSTALL = "pip install -r bench/requirements.txt (or: make bench-peer)"


def _stages(text: str) -> frozenset[str]:
    chosen = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = chosen - set(settings.STAGES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown stage(s) {', '.join(sorted(unknown)) or '(none)'}; "
            f"choose from {', '.join(settings.STAGES)}"
        )
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Start the write service, projector and read service on temporary files, drive them "
        "from separate client processes next to a no-op gRPC server and raw SQLite appends, and print every "
        "figure with its ratio to its ceiling and the targets with PASS/MISS.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 0.8 s windows (CI smoke, < 1 min)"
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also run the same append and projection workload through the eventsourcing library, "
        "and UmaDB's conditional appends beside our command streams",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where <mode>.json and <mode>.md go (default: {RESULTS_DIR})",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="directory for data files and process logs (default: a new temporary directory)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each stage, wait up to SECONDS for other programs to stop using the CPU (default 0)",
    )
    parser.add_argument(
        "--only",
        type=_stages,
        default=frozenset(),
        metavar="STAGE[,STAGE]",
        help=f"run only these stages, from {', '.join(settings.STAGES)} (small holds the throughput "
        "levels, command streams and live lag; peer (eventsourcing) and umadb need --peer)",
    )
    parser.add_argument(
        "--retry-busy",
        type=int,
        default=None,
        metavar="N",
        help="measure a figure again up to N times while other programs use the CPU (full default 2, "
        "quick 0)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ORDERS_BENCH_POSTGRES", postgres.DEFAULT_SERVER),
        metavar="URL",
        help="PostgreSQL server for the postgres stage's databases, created and dropped per run "
        f"(default $ORDERS_BENCH_POSTGRES or {postgres.DEFAULT_SERVER}; '' leaves the stage out; "
        "an unreachable server is noted, not an error)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr logging level (default INFO)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for library in ("eventsourcing", "umadb"):
        if args.peer and importlib.util.find_spec(library) is None:
            print(f"bench: --peer needs the {library} library: {PEER_INSTALL}", file=sys.stderr)
            return 2
    if args.work_dir is not None and args.work_dir.exists() and any(args.work_dir.iterdir()):
        print(f"bench: --work-dir {args.work_dir} must be empty or absent", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    build = settings.quick if args.quick else settings.full
    chosen = build(
        args.results_dir, args.work_dir, args.keep, args.peer, args.wait_quiet, args.only, args.postgres
    )
    if args.retry_busy is not None:
        chosen = dataclasses.replace(chosen, retry_busy=max(0, args.retry_busy))
    results = run(chosen)
    report.summarize(results)
    json_path, markdown_path = report.write(results, chosen.results_dir)
    sys.stdout.write(report.render(results, markdown=False))
    logging.getLogger("bench").info("results written to %s and %s", json_path, markdown_path)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
