"""Bulk-producer client, run as its own process: `python -m bench.stream_load ...`.

One `grpc.aio` channel, one `ExecuteCommands` stream, and at most N commands in flight: the producer
writes a new `CreateOrder` envelope whenever fewer than N outcomes are outstanding, the consumer reads
outcomes as they come. After a warm-up, the outcomes of a fixed window are counted (their latency is
envelope written -> outcome read). One JSON line per level goes to stdout, with the CPU time of given
server pids over the window, as `bench.load` reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from collections import Counter
from typing import Any

import grpc

from bench import processes, stats
from bench.api import grpc_api
from bench.messages import RequestFactory
from orders_api.v1 import orders_pb2

log = logging.getLogger(__name__)

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_load", description=__doc__.splitlines()[0])
    parser.add_argument("--write", required=True, help="OrderCommandService address")
    parser.add_argument("--levels", required=True, help="commands in flight, comma-separated, e.g. 64")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each measuring window")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each measuring window")
    parser.add_argument("--watch-pids", default="", help="comma-separated pids whose CPU time to sample")
    parser.add_argument(
        "--baseline", default="", help="a server to measure first at each level (the no-op server)"
    )
    parser.add_argument("--baseline-pid", type=int, default=0, help="the baseline server's pid")
    return parser.parse_args(argv)


async def measure(
    stub: Any, factory: RequestFactory, in_flight: int, warmup: float, duration: float, pids: list[int]
) -> dict[str, Any]:
    """One stream with `in_flight` commands outstanding; the window's outcomes summarized."""
    call = stub.ExecuteCommands()
    room = asyncio.Semaphore(in_flight)
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    begin = time.perf_counter()
    window_start, window_end = begin + warmup, begin + warmup + duration
    cpu_start: list[processes.CpuSample] = []

    async def produce() -> None:
        number = 0
        while time.perf_counter() < window_end:
            await room.acquire()
            number += 1
            envelope = orders_pb2.CommandEnvelope(
                correlation_id=number, create=factory.create_order(f"s{in_flight}-{number}")
            )
            sent_at[number] = time.perf_counter()
            await call.write(envelope)
        await call.done_writing()

    async def consume() -> None:
        async for outcome in call:
            finished = time.perf_counter()
            room.release()
            started = sent_at.pop(outcome.correlation_id)
            if window_start <= finished <= window_end:
                if outcome.WhichOneof("outcome") == "reply":
                    latencies.append(finished - started)
                else:
                    errors[_CODE_NAMES.get(outcome.error.code, str(outcome.error.code))] += 1

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        cpu_start.append(processes.CpuSample.take(pids))

    sampler = asyncio.create_task(sample_cpu())
    producer = asyncio.create_task(produce())
    consumer = asyncio.create_task(consume())
    await producer
    await sampler
    cpu = processes.CpuSample.take(pids).since(cpu_start[0])
    await consumer
    calls = len(latencies)
    result: dict[str, Any] = {
        "concurrency": in_flight,
        "calls": calls,
        "errors": dict(errors),
        "seconds": duration,
        "rate": round(calls / duration, 1),
        **stats.summarize_ms(latencies),
        "client_cores": round(cpu["client_cores"], 3),
        "foreign_cores": round(cpu["foreign_cores"], 3),
    }
    if pids and calls:
        result["server_cpu_us_per_call"] = {
            str(p): round(c / calls * 1e6, 1) for p, c in cpu["watched_seconds"].items()
        }
    return result


async def run(args: argparse.Namespace) -> int:
    levels = [int(level) for level in args.levels.split(",") if level]
    pids = [int(p) for p in args.watch_pids.split(",") if p]
    factory = RequestFactory(uuid.uuid4().hex[:8], 1)
    targets = [("real", args.write, pids)]
    if args.baseline:  # measured seconds before the real one, so both see the same machine
        targets.insert(0, ("baseline", args.baseline, [*pids, args.baseline_pid]))
    for level in levels:
        for target, address, watched in targets:
            async with grpc.aio.insecure_channel(address) as channel:
                await asyncio.wait_for(channel.channel_ready(), 15)
                stub = grpc_api.OrderCommandServiceStub(channel)
                result = await measure(stub, factory, level, args.warmup, args.duration, watched)
            result.update(rpc="ExecuteCommands", target=target)
            print(json.dumps(result), flush=True)
            log.info(
                "%s ExecuteCommands x%d: %.0f commands/s p50 %.2f ms p99 %.2f ms",
                target,
                level,
                result["rate"],
                result["p50_ms"],
                result["p99_ms"],
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(run(_parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
