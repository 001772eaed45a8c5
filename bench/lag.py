"""Open-loop live-lag client, run as its own process: `python -m bench.lag ...`.

Commands are sent on a fixed schedule (not as fast as replies come back), as real traffic arrives. For
each reply, a `GetOrder` with `min_position` = the reply's position asks the read service for the new
order; the lag is the time from the command's reply to that answer: the projector's delay plus the read
service's wake-up plus one query, which is what a read-your-writes client actually waits. One JSON
line goes to stdout.
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

CALL_TIMEOUT_S = 15.0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lag", description=__doc__.splitlines()[0])
    parser.add_argument("--write", required=True, help="OrderCommandService address")
    parser.add_argument("--read", required=True, help="OrderQueryService address")
    parser.add_argument("--rate", type=float, default=500.0, help="commands per second")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not measured")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--tag", default="", help="prefix of new order ids (default: random)")
    parser.add_argument("--watch-pids", default="", help="comma-separated pids of the processes under test")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    factory = RequestFactory(args.tag or uuid.uuid4().hex[:8], 1)
    lags: list[float] = []
    command_latencies: list[float] = []
    errors: Counter[str] = Counter()
    stale = 0
    async with (
        grpc.aio.insecure_channel(args.write) as write_channel,
        grpc.aio.insecure_channel(args.read) as read_channel,
    ):
        await asyncio.wait_for(write_channel.channel_ready(), 15)
        await asyncio.wait_for(read_channel.channel_ready(), 15)
        commands = grpc_api.OrderCommandServiceStub(write_channel)
        queries = grpc_api.OrderQueryServiceStub(read_channel)

        async def one(sequence: int, measured: bool) -> None:
            nonlocal stale
            request = factory.create_order(f"lag-{sequence}")
            sent = time.perf_counter()
            rpc = "CreateOrder"
            try:
                reply = await commands.CreateOrder(request, timeout=CALL_TIMEOUT_S)
                replied = time.perf_counter()
                rpc = "GetOrder"
                answer = await queries.GetOrder(
                    orders_pb2.GetOrderRequest(order_id=request.order_id, min_position=reply.position),
                    timeout=CALL_TIMEOUT_S,
                )
                answered = time.perf_counter()
            except grpc.aio.AioRpcError as error:
                if measured:
                    errors[f"{rpc} {error.code().name}: {error.details()}"[:200]] += 1
                return
            if not measured:
                return
            if answer.consistency.read_model_version < reply.position:
                stale += 1  # the read model answered before applying the write: a contract bug
            command_latencies.append(replied - sent)
            lags.append(answered - replied)

        interval = 1.0 / args.rate
        warmup_calls = int(args.warmup * args.rate)
        total_calls = warmup_calls + int(args.duration * args.rate)
        tasks: list[asyncio.Task[None]] = []
        pids = [int(p) for p in args.watch_pids.split(",") if p]
        window_cpu = processes.CpuSample.take(pids)
        start = time.perf_counter()
        behind = 0
        for sequence in range(total_calls):
            due = start + sequence * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                behind += 1  # the client itself could not keep the schedule
            if sequence == warmup_calls:
                window_cpu = processes.CpuSample.take(pids)
            tasks.append(asyncio.create_task(one(sequence, sequence >= warmup_calls)))
        sent_in = time.perf_counter() - start
        await asyncio.gather(*tasks)
        cpu = processes.CpuSample.take(pids).since(window_cpu)
    measured_calls = total_calls - warmup_calls
    return {
        "target_rate": args.rate,
        "achieved_rate": round(total_calls / sent_in, 1),
        "calls": measured_calls,
        "answered": len(lags),
        "errors": dict(errors),
        "late_sends": behind,
        "stale_answers": stale,
        "lag": stats.summarize_ms(lags),
        "command": stats.summarize_ms(command_latencies),
        "client_cores": round(cpu["client_cores"], 3),
        "foreign_cores": round(cpu["foreign_cores"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    result = asyncio.run(run(_parse_args(argv)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
