"""Runs the load clients as separate processes and reads back their JSON lines.

The client must not share a process (or a GIL) with the servers it measures, and its own start-up must
not count, so each client is a `python -m bench.load` / `python -m bench.lag` child whose results are
parsed here.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import processes

log = logging.getLogger(__name__)


class ClientFailed(RuntimeError):
    """A load client exited non-zero or printed no result."""


def run_json(module: str, args: list[str], log_dir: Path, name: str, timeout: float) -> list[dict[str, Any]]:
    """Run `python -m module args`; its stdout's JSON lines, or ClientFailed with its stderr's tail."""
    log_path = log_dir / f"{name}.stderr.log"
    with log_path.open("ab") as stderr:
        completed = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=processes.ROOT,
            env=processes.python_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=timeout,
            check=False,
        )
    if completed.returncode != 0:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
        raise ClientFailed(f"{module} exited with {completed.returncode}: {tail}")
    results = [json.loads(line) for line in completed.stdout.decode().splitlines() if line.startswith("{")]
    if not results:
        raise ClientFailed(f"{module} printed no result")
    return results


def closed_loop(
    *,
    write: str = "",
    read: str = "",
    rpcs: list[str],
    levels: tuple[int, ...],
    warmup: float,
    duration: float,
    orders: int = 1,
    watch_pids: list[int] | None = None,
    baseline: processes.Process | None = None,
    baseline_orders: int = 0,
    retry_busy: int = 0,
    log_dir: Path,
    name: str,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{"real"|"baseline": {rpc: {str(level): result}}} from one `bench.load` process.

    With `baseline` (the no-op server, or a smaller data set with `baseline_orders` orders), every level
    is measured there right before the real one.
    """
    args = [
        "--rpcs",
        ",".join(rpcs),
        "--levels",
        ",".join(str(level) for level in levels),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--orders",
        str(orders),
    ]
    if write:
        args += ["--write", write]
    if read:
        args += ["--read", read]
    if watch_pids:
        args += ["--watch-pids", ",".join(str(p) for p in watch_pids)]
    if baseline is not None:
        args += ["--baseline", baseline.address, "--baseline-pid", str(baseline.pid)]
        args += ["--baseline-orders", str(baseline_orders or orders)]
    args += ["--retry-busy", str(retry_busy)]
    budget = (1 + retry_busy) * (2 if baseline else 1) * len(rpcs) * len(levels) * (
        warmup + duration + 30
    ) + 30
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {"real": {}, "baseline": {}}
    for result in run_json("bench.load", args, log_dir, name, budget):
        out[result["target"]].setdefault(result["rpc"], {})[str(result["concurrency"])] = result
    return out


def open_loop_lag(
    *,
    write: str,
    read: str,
    rate: float,
    warmup: float,
    duration: float,
    watch_pids: list[int],
    log_dir: Path,
    watch: bool = False,
) -> dict[str, Any]:
    """The result of one `bench.lag` run (with `watch`: reply to WatchOrder message)."""
    args = [
        "--write",
        write,
        "--read",
        read,
        "--rate",
        str(rate),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--watch-pids",
        ",".join(str(p) for p in watch_pids),
    ]
    if watch:
        args.append("--watch")
    name = "watch-lag-client" if watch else "lag-client"
    return run_json("bench.lag", args, log_dir, name, warmup + duration + 60)[0]


def stream_loop(
    *,
    write: str,
    levels: tuple[int, ...],
    warmup: float,
    duration: float,
    watch_pids: list[int],
    baseline: processes.Process | None,
    log_dir: Path,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{"real"|"baseline": {str(level): result}} from one `bench.stream_load` process."""
    args = ["--write", write, "--levels", ",".join(str(level) for level in levels)]
    args += ["--warmup", str(warmup), "--duration", str(duration)]
    args += ["--watch-pids", ",".join(str(p) for p in watch_pids)]
    if baseline is not None:
        args += ["--baseline", baseline.address, "--baseline-pid", str(baseline.pid)]
    budget = 2 * len(levels) * (warmup + duration + 30) + 30
    out: dict[str, dict[str, dict[str, Any]]] = {"real": {}, "baseline": {}}
    for result in run_json("bench.stream_load", args, log_dir, "stream-client", budget):
        out[result["target"]][str(result["concurrency"])] = result
    return out
