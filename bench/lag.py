"""Open-loop live-lag client, run as its own process: `python -m bench.lag ...`.

Commands are sent on a fixed schedule (not as fast as replies come back), as real traffic arrives. For
each reply, a `GetOrder` with `min_position` = the reply's position asks the read service for the new
order; the lag is the time from the command's reply to that answer: the projector's delay plus the read
service's wake-up plus one query, which is what a read-your-writes client actually waits. With
`--watch`, the lag is from a command's reply to a `WatchOrder` stream delivering the change instead.
One JSON line goes to stdout.
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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    parser.add_argument(
        "--watch", action="store_true", help="confirm and ship orders followed by WatchOrder streams instead"
    )
    parser.add_argument("--watch-pids", default="", help="comma-separated pids of the processes under test")
    return parser.parse_args(argv)


@asynccontextmanager
async def _connected(args: argparse.Namespace) -> AsyncIterator[tuple[Any, Any]]:
    """The command and query stubs, on channels to --write and --read that are ready."""
    async with (
        grpc.aio.insecure_channel(args.write) as write_channel,
        grpc.aio.insecure_channel(args.read) as read_channel,
    ):
        await asyncio.wait_for(write_channel.channel_ready(), 15)
        await asyncio.wait_for(read_channel.channel_ready(), 15)
        yield grpc_api.OrderCommandServiceStub(write_channel), grpc_api.OrderQueryServiceStub(read_channel)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.watch:
        return await run_watch(args)
    factory = RequestFactory(args.tag or uuid.uuid4().hex[:8], 1)
    lags: list[float] = []
    command_latencies: list[float] = []
    errors: Counter[str] = Counter()
    stale = 0
    async with _connected(args) as (commands, queries):

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
    return _result(args.rate, total_calls, warmup_calls, sent_in, lags, command_latencies, errors,
                   behind, stale, cpu)  # fmt: skip


def _result(
    rate: float,
    total_calls: int,
    warmup_calls: int,
    sent_in: float,
    lags: list[float],
    command_latencies: list[float],
    errors: Counter[str],
    behind: int,
    stale: int,
    cpu: dict[str, Any],
) -> dict[str, Any]:
    """The JSON line of either mode."""
    return {
        "target_rate": rate,
        "achieved_rate": round(total_calls / sent_in, 1),
        "calls": total_calls - warmup_calls,
        "answered": len(lags),
        "errors": dict(errors),
        "late_sends": behind,
        "stale_answers": stale,
        "lag": stats.summarize_ms(lags),
        "command": stats.summarize_ms(command_latencies),
        "client_cores": round(cpu["client_cores"], 3),
        "foreign_cores": round(cpu["foreign_cores"], 3),
    }


WATCH_LEAD_S = 0.2  # a watch opens this long before its order's first command is due


async def run_watch(args: argparse.Namespace) -> dict[str, Any]:
    """From a command's reply to a `WatchOrder` watcher receiving the change, at `rate` commands/s.

    Orders are created first (not measured); then each order is confirmed and shipped on the fixed
    schedule while a watch opened just before follows it, so about `rate * WATCH_LEAD_S` watches are
    open at any time. The lag is from the command's reply to the watch's message with the new status.
    """
    tag = args.tag or uuid.uuid4().hex[:8]
    factory = RequestFactory(tag, 1)
    interval = 1.0 / args.rate
    warmup_calls = int(args.warmup * args.rate)
    total_calls = warmup_calls + int(args.duration * args.rate)
    orders = (total_calls + 1) // 2
    lags: list[float] = []
    command_latencies: list[float] = []
    errors: Counter[str] = Counter()
    stale = behind = 0
    async with _connected(args) as (commands, queries):
        gate = asyncio.Semaphore(32)

        async def create(index: int) -> tuple[str, int]:
            async with gate:
                request = factory.create_order(f"watch-{index}")
                reply = await commands.CreateOrder(request, timeout=CALL_TIMEOUT_S)
                return request.order_id, int(reply.position)

        created = await asyncio.gather(*(create(index) for index in range(orders)))

        async def follow(index: int, start: float) -> None:
            nonlocal stale, behind
            order_id, position = created[index]
            watch = queries.WatchOrder(
                orders_pb2.WatchOrderRequest(order_id=order_id, min_position=position),
                timeout=CALL_TIMEOUT_S + WATCH_LEAD_S + 2 * interval,
            )
            rpc = "WatchOrder"
            try:
                await watch.read()  # the current view
                steps = (
                    ("ConfirmOrder", orders_pb2.ORDER_STATUS_CONFIRMED),
                    ("ShipOrder", orders_pb2.ORDER_STATUS_SHIPPED),
                )
                for step, (rpc, wanted) in enumerate(steps):
                    sequence = 2 * index + step
                    delay = start + sequence * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -0.005:
                        behind += 1
                    sent = time.perf_counter()
                    if step == 0:
                        reply = await commands.ConfirmOrder(
                            orders_pb2.ConfirmOrderRequest(order_id=order_id), timeout=CALL_TIMEOUT_S
                        )
                    else:
                        reply = await commands.ShipOrder(
                            orders_pb2.ShipOrderRequest(order_id=order_id, tracking_number=f"T-{index}"),
                            timeout=CALL_TIMEOUT_S,
                        )
                    replied = time.perf_counter()
                    rpc = "WatchOrder"
                    message = await watch.read()
                    while message is not grpc.aio.EOF and message.order.status != wanted:
                        message = await watch.read()
                    seen = time.perf_counter()
                    if message is grpc.aio.EOF:
                        errors["WatchOrder ended before the change"] += 1
                        return
                    if sequence < warmup_calls:
                        continue
                    if message.consistency.read_model_version < reply.position:
                        stale += 1
                    command_latencies.append(replied - sent)
                    lags.append(seen - replied)
            except grpc.aio.AioRpcError as error:
                errors[f"{rpc} {error.code().name}: {error.details()}"[:200]] += 1
            finally:
                watch.cancel()

        pids = [int(p) for p in args.watch_pids.split(",") if p]
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + WATCH_LEAD_S
        window_cpu = processes.CpuSample.take(pids)
        for index in range(orders):
            delay = start + 2 * index * interval - WATCH_LEAD_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if 2 * index >= warmup_calls and 2 * index - 2 < warmup_calls:
                window_cpu = processes.CpuSample.take(pids)
            tasks.append(asyncio.create_task(follow(index, start)))
        await asyncio.gather(*tasks)
        sent_in = time.perf_counter() - start
        cpu = processes.CpuSample.take(pids).since(window_cpu)
    return _result(args.rate, total_calls, warmup_calls, sent_in, lags, command_latencies, errors,
                   behind, stale, cpu)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    result = asyncio.run(run(_parse_args(argv)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
