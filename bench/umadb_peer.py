"""The second peer: UmaDB, a Rust gRPC event store (durable, gapless), driven by its own Python client.

Run as its own process, `python -m bench.umadb_peer --address HOST:PORT --levels 1,64 ...`, against
a `umadb --listen HOST:PORT --db-path DIR` server the harness started; prints one JSON line per level.
The workload is what a new order costs there: one conditional append of one `OrderCreated` event,
refused if any event already carries the order's tag (UmaDB's "dynamic consistency boundary"
condition, the equivalent of our "expects a new stream"). Its client is synchronous, so N in flight
is N threads, each with its own client, each keeping one append in flight.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
import threading
import time
import uuid
from typing import Any

import umadb  # type: ignore[import-not-found, unused-ignore]

from bench import processes, stats, workload

log = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.umadb_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the UmaDB server, HOST:PORT")
    parser.add_argument("--levels", required=True, help="appends in flight, comma-separated, e.g. 1,64")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each measuring window")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each measuring window")
    parser.add_argument("--watch-pids", default="", help="comma-separated pids whose CPU time to sample")
    return parser.parse_args(argv)


def _payload(order_id: str) -> bytes:
    items = [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in workload.ITEM_VARIANTS[0]]
    body = {"order_id": order_id, "customer_id": "c000001", "items": items, "total": 2899}
    return json.dumps(body, separators=(",", ":")).encode()


def measure(address: str, in_flight: int, warmup: float, duration: float, pids: list[int]) -> dict[str, Any]:
    """`in_flight` threads appending conditionally; the appends that finished inside the window."""
    tag = uuid.uuid4().hex[:8]
    clients = [umadb.Client(f"http://{address}") for _ in range(in_flight)]
    latencies: list[list[float]] = [[] for _ in range(in_flight)]
    failures = [0] * in_flight
    begin = time.perf_counter()
    window_start, window_end = begin + warmup, begin + warmup + duration

    def worker(index: int) -> None:
        client, mine = clients[index], latencies[index]
        sequence = 0
        while (started := time.perf_counter()) < window_end:
            sequence += 1
            order_id = f"{tag}-{index}-{sequence}"
            stream_tag = f"order:{order_id}"
            event = umadb.Event("OrderCreated", _payload(order_id), [stream_tag])
            condition = umadb.AppendCondition(umadb.Query([umadb.QueryItem(tags=[stream_tag])]))
            try:
                client.append([event], condition)
            except Exception:  # counted: a peer figure built on failures is flagged in the report
                failures[index] += 1
                continue
            finished = time.perf_counter()
            if window_start <= finished <= window_end:
                mine.append(finished - started)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(in_flight)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, window_start - time.perf_counter()))
    cpu_start = processes.CpuSample.take(pids)
    time.sleep(max(0.0, window_end - time.perf_counter()))
    cpu = processes.CpuSample.take(pids).since(cpu_start)
    for thread in threads:
        thread.join(30)
    for client in clients:
        client.close()
    merged = [x for per_thread in latencies for x in per_thread]
    result: dict[str, Any] = {
        "concurrency": in_flight,
        "calls": len(merged),
        "errors": sum(failures),
        "seconds": duration,
        "rate": round(len(merged) / duration, 1),
        **stats.summarize_ms(merged),
        "client_cores": round(cpu["client_cores"], 3),
        "foreign_cores": round(cpu["foreign_cores"], 3),
    }
    if pids and merged:
        result["server_cpu_us_per_call"] = {
            str(p): round(c / len(merged) * 1e6, 1) for p, c in cpu["watched_seconds"].items()
        }
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    args = _parse_args(argv)
    pids = [int(p) for p in args.watch_pids.split(",") if p]
    for level in (int(level) for level in args.levels.split(",") if level):
        result = measure(args.address, level, args.warmup, args.duration, pids)
        result["library"] = f"umadb {importlib.metadata.version('umadb')}"
        print(json.dumps(result), flush=True)
        log.info("UmaDB x%d: %.0f appends/s p50 %.2f ms", level, result["rate"], result["p50_ms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
