"""Subscription catch-up client, run as its own process: `python -m bench.subscribe ...`.

`SubscribeEvents` from position 0 over the whole log, until `caught_up`: the events per second a Python
client receives (and decodes) over gRPC, timed from the call to the `caught_up` message. One JSON line
goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

import grpc

from bench import processes
from bench.api import grpc_api
from orders_api.v1 import orders_pb2

log = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.subscribe", description=__doc__.splitlines()[0])
    parser.add_argument("--read", required=True, help="EventStoreService address (the read service)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    parser.add_argument("--watch-pids", default="", help="comma-separated pids of the processes under test")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pids = [int(p) for p in args.watch_pids.split(",") if p]
    events = checkpoints = fell_behind = 0
    last = 0
    out_of_order = 0
    async with grpc.aio.insecure_channel(
        args.read, options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        await asyncio.wait_for(channel.channel_ready(), 15)
        stub = grpc_api.EventStoreServiceStub(channel)
        cpu_before = processes.CpuSample.take(pids)
        started = time.perf_counter()
        call = stub.SubscribeEvents(orders_pb2.SubscribeEventsRequest(from_position=0), timeout=args.timeout)
        caught_up_at = 0
        async for message in call:
            kind = message.WhichOneof("message")
            if kind == "event":
                events += 1
                if message.event.position <= last:
                    out_of_order += 1
                last = message.event.position
            elif kind == "checkpoint":
                checkpoints += 1
            elif kind == "fell_behind":
                fell_behind += 1
            elif kind == "caught_up":
                caught_up_at = message.caught_up.position
                break
        seconds = time.perf_counter() - started
        cpu = processes.CpuSample.take(pids).since(cpu_before)
        call.cancel()
    return {
        "events": events,
        "caught_up_position": caught_up_at,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / max(seconds, 1e-9), 1),
        "out_of_order": out_of_order,
        "checkpoints": checkpoints,
        "fell_behind": fell_behind,
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
