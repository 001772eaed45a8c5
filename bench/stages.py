"""The measuring stages of a run, each on its own data directory, each returning plain JSON-able dicts.

Order matters on a 2-core machine: nothing else runs while a stage measures, and a stage's services are
stopped before the next starts. Ratios and targets are computed later, in `bench.report`.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench import clients, fixtures, processes, raw_sqlite, status
from bench import postgres as pg
from bench.settings import Settings
from bench.system import PROJECTOR, READ, WRITE, OrderSystem
from eventcore.postgres.connection import unreachable

log = logging.getLogger(__name__)

QUERY_RPCS = ["GetOrder", "ListOrdersByCustomer"]


def _fresh(work: Path, name: str) -> Path:
    directory = work / name
    directory.mkdir(parents=True, exist_ok=False)
    return directory


def raw_appends(settings: Settings, work: Path) -> dict[str, Any]:
    """The storage ceilings: raw SQLite appends. (The no-op gRPC ceiling is measured beside the services.)"""
    log.info("ceilings: raw SQLite appends")
    return raw_sqlite.run(_fresh(work, "raw-sqlite"), settings.raw_scale)


def _project(
    system: OrderSystem, watcher: status.ProjectionWatcher, head: int, timeout: float, started: float
) -> dict[str, Any]:
    """Wait until the read model has applied `head`; the rate, and the CPU other programs took meanwhile.

    `started` is when the projector was spawned (perf_counter), for the wall time.
    """
    pids = system.pids()
    cpu_before = processes.CpuSample.take(pids)
    samples = watcher.wait_for(head, timeout)
    cpu = processes.CpuSample.take(pids).since(cpu_before)
    rate, seconds, how = status.steady_rate(samples, head, started)
    system.check_alive()
    return {
        "events": head,
        "events_per_s": round(rate, 1),
        "seconds": round(seconds, 3),
        "timed": how,
        "wall_s": round(samples[-1].at - started, 3),
        "foreign_cores": round(cpu["foreign_cores"], 3),
    }


def data_set(
    settings: Settings, work: Path, label: str, orders: int, *, full_workload: bool, scale_baseline: int = 0
) -> dict[str, Any]:
    """One data set of `orders` orders: project it, read memory after the same fixed bursts of commands
    and queries as every data set gets.

    Then, with `full_workload`, the throughput levels and the live lag; with `scale_baseline`, GetOrder
    here against a fresh data set of that many orders, alternately (see `_scale_probes`).
    """
    data = _fresh(work, label)
    logs = work / "logs"
    head = fixtures.build_orders_store(data / "events.db", orders)
    result: dict[str, Any] = {"orders": orders}
    with OrderSystem(data, logs, label) as system:
        system.start_all()
        watcher = status.ProjectionWatcher(system.read_address)
        try:
            log.info("%s: projecting %d events", label, head)
            spawned = system.process(PROJECTOR).started_at
            result["projection"] = _project(system, watcher, head, settings.projection_timeout_s, spawned)
            burst = clients.closed_loop(
                write=system.write_address,
                read=system.read_address,
                rpcs=["CreateOrder", "GetOrder"],
                levels=(16,),
                warmup=0.0,
                duration=settings.burst_s,
                orders=orders,
                log_dir=logs,
                name=f"{label}-burst",
            )
            result["burst_calls"] = {
                rpc: burst["real"][rpc]["16"]["calls"] for rpc in ("CreateOrder", "GetOrder")
            }
            watcher.wait_for(watcher.head(), 60)
            result["peak_rss_kib"] = system.peak_rss_kib()
            if full_workload:
                result.update(_throughput_beside_noop(settings, system, orders, logs))
                result["peak_rss_kib_end"] = system.peak_rss_kib()
            if scale_baseline:
                result["scale"] = _scale_probes(settings, work, system, orders, scale_baseline)
            system.check_alive()
        finally:
            watcher.close()
            result["exit_codes"] = system.stop()
    return result


def _scale_probes(
    settings: Settings, work: Path, system: OrderSystem, orders: int, baseline_orders: int
) -> dict[str, Any]:
    """GetOrder at 1 in flight on `system` and on a fresh data set of `baseline_orders` orders.

    Both read services run side by side and the probes alternate, a few rounds each, so the two p50s
    are taken on the same machine state; the medians over the rounds are reported. Comparing a probe
    taken minutes earlier, in another stage, measured the machine's drift as much as the data size.
    """
    logs = work / "logs"
    data = _fresh(work, "scale-baseline")
    head = fixtures.build_orders_store(data / "events.db", baseline_orders)
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with OrderSystem(data, logs, "scale-baseline") as baseline:
        _start_read_side(baseline, head, settings.projection_timeout_s)
        log.info("GetOrder at %d vs %d orders, %d rounds", orders, baseline_orders, settings.probe_rounds)
        for index in range(settings.probe_rounds):
            probe = clients.closed_loop(
                read=system.read_address,
                rpcs=["GetOrder"],
                levels=(1,),
                warmup=settings.warmup_s,
                duration=settings.probe_s,
                orders=orders,
                baseline=baseline.process(READ),
                baseline_orders=baseline_orders,
                watch_pids=[*system.pids(), baseline.process(PROJECTOR).pid],
                retry_busy=settings.retry_busy,
                log_dir=logs,
                name=f"scale-probe-{index}",
            )
            rounds.append((probe["baseline"]["GetOrder"]["1"], probe["real"]["GetOrder"]["1"]))

    def side(position: int, size: int) -> dict[str, Any]:
        measured = [pair[position] for pair in rounds]
        return {
            "orders": size,
            "get_order": {
                "p50_ms": statistics.median(m["p50_ms"] for m in measured),
                "p99_ms": statistics.median(m["p99_ms"] for m in measured),
                "foreign_cores": max(m["foreign_cores"] for m in measured),
                "rounds": [
                    {k: m[k] for k in ("p50_ms", "p99_ms", "rate", "foreign_cores")} for m in measured
                ],
            },
        }

    return {"small": side(0, baseline_orders), "large": side(1, orders)}


def _throughput_beside_noop(
    settings: Settings, system: OrderSystem, orders: int, logs: Path
) -> dict[str, Any]:
    """The no-op server started next to the services, then `_throughput` against both."""
    noop = processes.start("noop_server", "bench.noop_server", ["--listen", "127.0.0.1:0"], logs, server=True)
    try:
        result = _throughput(settings, system, orders, logs, noop)
        result["noop_peak_rss_kib"] = noop.peak_rss_kib()
    finally:
        processes.stop(noop)
    return result


def _throughput(
    settings: Settings, system: OrderSystem, orders: int, logs: Path, noop: processes.Process
) -> dict[str, Any]:
    """Queries and commands at every level, each level right after the same level on the no-op server;
    then the live lag at a fixed command rate.

    Interleaving keeps a figure and its ceiling seconds apart, so a change in what else the machine
    does moves both alike, and their ratio holds.
    """
    read_pid, write_pid = system.process(READ).pid, system.process(WRITE).pid
    projector_pid = system.process(PROJECTOR).pid
    log.info("queries at %s in flight", settings.levels)
    queries = clients.closed_loop(
        read=system.read_address,
        rpcs=QUERY_RPCS,
        levels=settings.levels,
        warmup=settings.warmup_s,
        duration=settings.duration_s,
        orders=orders,
        watch_pids=[read_pid, projector_pid, write_pid],
        baseline=noop,
        log_dir=logs,
        retry_busy=settings.retry_busy,
        name="query-client",
    )
    log.info("commands at %s in flight", settings.levels)
    commands = clients.closed_loop(
        write=system.write_address,
        rpcs=["CreateOrder"],
        levels=settings.levels,
        warmup=settings.warmup_s,
        duration=settings.duration_s,
        watch_pids=[write_pid, projector_pid, read_pid],
        baseline=noop,
        log_dir=logs,
        retry_busy=settings.retry_busy,
        name="command-client",
    )
    log.info("command streams at %s in flight", settings.stream_levels)
    stream = clients.stream_loop(
        write=system.write_address,
        levels=settings.stream_levels,
        warmup=settings.warmup_s,
        duration=settings.duration_s,
        watch_pids=[write_pid, projector_pid, read_pid],
        baseline=noop,
        log_dir=logs,
    )
    log.info("live lag at %.0f commands/s", settings.lag_rate)
    lag: dict[str, Any] = {}
    for attempt in range(1 + settings.retry_busy):
        # The flood of commands just measured left the kernel hundreds of MB to write back; its
        # writeback would land in this stage's fsyncs. Lag is a steady-state figure: settle first.
        os.sync()
        measured = _live_lag(settings, system, logs)
        measured["attempts"] = attempt + 1
        if not lag or measured["foreign_cores"] < lag["foreign_cores"]:
            lag = measured
        if measured["foreign_cores"] <= processes.BUSY_CORES or attempt == settings.retry_busy:
            break
        log.info("live lag: other programs used %.2f cores; measuring again", measured["foreign_cores"])
    names = {str(write_pid): WRITE, str(projector_pid): PROJECTOR, str(read_pid): READ, str(noop.pid): "noop"}
    _name_server_cpu([stream, *queries.values(), *commands.values()], names)
    noop_results = {**commands["baseline"], **queries["baseline"], "ExecuteCommands": stream["baseline"]}
    return {
        "queries": queries["real"],
        "commands": commands["real"]["CreateOrder"],
        "stream": stream["real"],
        "noop": noop_results,
        "lag": lag,
    }


def _live_lag(settings: Settings, system: OrderSystem, logs: Path, *, watch: bool = False) -> dict[str, Any]:
    """`bench.lag` at the settings' rate against `system`, watching all its processes' CPU."""
    return clients.open_loop_lag(
        write=system.write_address,
        read=system.read_address,
        watch_pids=system.pids(),
        rate=settings.lag_rate,
        warmup=settings.lag_warmup_s,
        duration=settings.lag_duration_s,
        log_dir=logs,
        watch=watch,
    )


def _name_server_cpu(blocks: list[dict[str, dict[str, Any]]], names: dict[str, str]) -> None:
    """In every measured level of `blocks` ({target or rpc: {level: result}}), key the server CPU per
    call by process name instead of pid; pids of one name (a database server's processes) are summed."""
    for block in blocks:
        for per_level in block.values():
            for measured in per_level.values():
                named: dict[str, float] = {}
                for pid, us in measured.get("server_cpu_us_per_call", {}).items():
                    name = names.get(pid, pid)
                    named[name] = round(named.get(name, 0.0) + us, 1)
                measured["server_cpu_us_per_call"] = named


def catch_up(settings: Settings, work: Path) -> dict[str, Any]:
    """The projector alone on a prebuilt lifecycle log, from position 0, timed by its checkpoints; then
    a Python client's `SubscribeEvents` from 0 to `caught_up` over the same log (`bench.subscribe`).

    Done again from scratch (a new read database) when other programs used the CPU meanwhile.
    """
    data = _fresh(work, "catchup")
    head = fixtures.build_lifecycle_store(data / "events.db", settings.catchup_events)
    best: dict[str, Any] = {}
    for attempt in range(1 + settings.retry_busy):
        for stale in data.glob("read.db*"):
            stale.unlink()
        result = _catch_up_once(settings, data, work / "logs", head)
        result["attempts"] = attempt + 1
        if not best or result.get("foreign_cores", 9) < best.get("foreign_cores", 9):
            best = result
        if result.get("foreign_cores", 9) <= processes.BUSY_CORES or attempt == settings.retry_busy:
            break
        log.info("catch-up: other programs used %.2f cores; measuring again", result.get("foreign_cores"))
    return best


def _catch_up_once(settings: Settings, data: Path, logs: Path, head: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with OrderSystem(data, logs, "catchup") as system:
        system.start_read()  # only to answer GetProjectionStatus; it idles otherwise
        watcher = status.ProjectionWatcher(system.read_address)
        try:
            system.start_projector()
            log.info("catch-up: projecting %d events", head)
            spawned = system.process(PROJECTOR).started_at
            result.update(_project(system, watcher, head, settings.projection_timeout_s, spawned))
            log.info("catch-up: SubscribeEvents from 0 over the same %d events", head)
            read_pid = str(system.process(READ).pid)
            args = ["--read", system.read_address, "--watch-pids", read_pid]
            timeout = settings.projection_timeout_s
            result["subscription"] = clients.run_json(
                "bench.subscribe", args, logs, "subscribe-client", timeout
            )[0]
            result["projector_peak_rss_kib"] = system.peak_rss_kib().get(PROJECTOR, 0)
        finally:
            watcher.close()
            result["exit_codes"] = system.stop()
    return result


def peer(settings: Settings, work: Path) -> dict[str, Any]:
    """The `eventsourcing` library on the same append and projection workload, in its own process."""
    data = _fresh(work, "peer")
    args = ["--dir", str(data), "--events", str(settings.peer_events)]
    log.info("peer: eventsourcing, %d events", settings.peer_events)
    return clients.run_json("bench.peer", args, work / "logs", "peer", timeout=600)[0]


def umadb_peer(settings: Settings, work: Path) -> dict[str, Any]:
    """UmaDB's own server and Python client: conditional one-event appends at each stream level."""
    data = _fresh(work, "umadb")
    logs = work / "logs"
    server = processes.start_command(
        "umadb", [processes.venv_command("umadb"), "--db-path", str(data / "uma.db")], logs
    )
    try:
        levels = ",".join(str(level) for level in sorted({1, *settings.stream_levels}))
        args = ["--address", server.address, "--levels", levels, "--warmup", str(settings.warmup_s)]
        args += ["--duration", str(settings.duration_s), "--watch-pids", str(server.pid)]
        log.info("peer: UmaDB at %s in flight", levels)
        measured = clients.run_json("bench.umadb_peer", args, logs, "umadb-client", timeout=600)
    finally:
        processes.stop(server)
    by_level: dict[str, Any] = {}
    for result in measured:
        cpu = result.pop("server_cpu_us_per_call", {})
        result["server_cpu_us_per_call"] = {"umadb": cpu[str(server.pid)]} if cpu else {}
        by_level[str(result["concurrency"])] = result
    return {"library": measured[0].get("library", "umadb"), "appends": by_level}


IDLE_ORDERS = 1_000
IDLE_SETTLE_S = 3.0  # after projecting, before the window: start-up work and writeback finish


def _start_projected(system: OrderSystem, head: int, timeout: float) -> None:
    """Start the trio and wait until the read model has applied `head`; the status watcher is closed
    again, so it does not count in what follows."""
    system.start_write()
    _start_read_side(system, head, timeout)


def _start_read_side(system: OrderSystem, head: int, timeout: float) -> None:
    """Start the read service and the projector and wait until the read model has applied `head`
    (no write service: the log is prebuilt)."""
    system.start_read()
    system.start_projector()
    watcher = status.ProjectionWatcher(system.read_address)
    try:
        watcher.wait_for(head, timeout)
    finally:
        watcher.close()


def idle_cpu(settings: Settings, work: Path) -> dict[str, Any]:
    """Each service's CPU over an idle window, once the trio has projected a small log and settled.

    Nothing talks to the services during the window (the status watcher is closed first), so what they
    use is their own wake-ups: a fixed-interval poll of the disk would show here.
    """
    data = _fresh(work, "idle")
    head = fixtures.build_orders_store(data / "events.db", IDLE_ORDERS)
    result: dict[str, Any] = {"window_s": settings.idle_s}
    with OrderSystem(data, work / "logs", "idle") as system:
        _start_projected(system, head, settings.projection_timeout_s)
        time.sleep(IDLE_SETTLE_S)
        names = {system.process(name).pid: name for name in (WRITE, PROJECTOR, READ)}
        log.info("idle CPU: %.0f s with nothing to do", settings.idle_s)
        before = processes.CpuSample.take(list(names))
        time.sleep(settings.idle_s)
        cpu = processes.CpuSample.take(list(names)).since(before)
        system.check_alive()
        result["cores"] = {
            names[pid]: round(used / cpu["seconds"], 4) for pid, used in cpu["watched_seconds"].items()
        }
        result["foreign_cores"] = round(cpu["foreign_cores"], 3)
        result["exit_codes"] = system.stop()
    return result


def watch_lag(settings: Settings, work: Path) -> dict[str, Any]:
    """From a command's reply to a `WatchOrder` watcher receiving the change, at the live-lag rate,
    on a fresh small data set (see `bench.lag --watch`)."""
    data = _fresh(work, "watch")
    logs = work / "logs"
    head = fixtures.build_orders_store(data / "events.db", IDLE_ORDERS)
    with OrderSystem(data, logs, "watch") as system:
        _start_projected(system, head, settings.projection_timeout_s)
        os.sync()
        log.info("watch lag at %.0f commands/s", settings.lag_rate)
        result = _live_lag(settings, system, logs, watch=True)
        system.check_alive()
        result["exit_codes"] = system.stop()
    return result


def rebuild(settings: Settings, work: Path) -> dict[str, Any]:
    """`projector rebuild` over a prebuilt log while the live projector is caught up: its time, and
    GetOrder at 16 in flight during it against the same just before it."""
    data = _fresh(work, "rebuild")
    logs = work / "logs"
    events = settings.rebuild_events
    head = fixtures.build_orders_store(data / "events.db", events)
    result: dict[str, Any] = {"events": head}
    with OrderSystem(data, logs, "rebuild") as system:
        _start_read_side(system, head, settings.projection_timeout_s)

        def get_orders(name: str) -> dict[str, Any]:
            measured = clients.closed_loop(
                read=system.read_address,
                rpcs=["GetOrder"],
                levels=(16,),
                warmup=settings.warmup_s,
                duration=settings.duration_s,
                orders=events,
                watch_pids=system.pids(),
                log_dir=logs,
                name=name,
            )
            return dict(measured["real"]["GetOrder"]["16"])

        result["get_order_before"] = get_orders("rebuild-before")
        log.info("rebuild: %d events beside the live read models", head)
        rebuilder = processes.start("rebuild", "projector", [*system.projector_flags(), "rebuild"], logs,
                                    server=False)  # fmt: skip
        try:
            result["get_order_during"] = get_orders("rebuild-during")
            # The window counts only if the rebuild outlasted it (a tiny log may finish first).
            result["window_inside_rebuild"] = rebuilder.alive()
            code = rebuilder.popen.wait(settings.projection_timeout_s)
        finally:
            processes.stop(rebuilder)
        seconds = time.perf_counter() - rebuilder.started_at
        if code != 0:
            raise processes.ProcessFailed(f"projector rebuild exited with {code}: {rebuilder.stderr_tail()}")
        system.check_alive()
        result["seconds"] = round(seconds, 3)
        result["events_per_s"] = round(head / seconds, 1)
        result["exit_codes"] = system.stop()
    return result


def postgres(settings: Settings, work: Path) -> dict[str, Any]:
    """The services on PostgreSQL, event store and read database each in a fresh database: queries and
    commands at every level (commands with one and with two write services), the live lag, and the
    projector's catch-up. No no-op server here: the report sets each figure beside the SQLite figure
    of the same run.

    A server that cannot be reached leaves the stage out with its reason (a note, not an error).
    """
    reason = unreachable(settings.postgres_url)
    if reason:
        log.warning("postgres: stage left out, %s", reason)
        return {"skipped": reason}
    result: dict[str, Any] = {"server_version": pg.server_version(settings.postgres_url)}
    logs = work / "logs"
    orders = settings.small_orders
    with pg.databases(settings.postgres_url, "events", "read") as (events_url, read_url):
        head = pg.build_event_store(events_url, fixtures.orders_plan(orders), f"{orders} orders")
        with OrderSystem(
            _fresh(work, "postgres"), logs, "pg", event_store=events_url, read_db=read_url
        ) as system:
            system.start_all()
            watcher = status.ProjectionWatcher(system.read_address)
            try:
                spawned = system.process(PROJECTOR).started_at
                result["projection"] = _project(system, watcher, head, settings.projection_timeout_s, spawned)
            finally:
                watcher.close()

            def closed_loop(name: str, **kwargs: Any) -> dict[str, Any]:
                database = pg.server_pids(settings.postgres_url)
                measured = clients.closed_loop(
                    levels=kwargs.pop("levels", settings.levels),
                    warmup=settings.warmup_s,
                    duration=settings.duration_s,
                    orders=orders,
                    watch_pids=[*system.pids(), *database],
                    log_dir=logs,
                    name=name,
                    **kwargs,
                )
                names = {str(pid): "postgres" for pid in database} | system.names_by_pid()
                _name_server_cpu(list(measured.values()), names)
                return measured["real"]

            log.info("postgres: queries at %s in flight", settings.levels)
            result["queries"] = closed_loop("pg-query-client", read=system.read_address, rpcs=QUERY_RPCS)
            log.info("postgres: commands at %s in flight, one write service", settings.levels)
            commands = closed_loop("pg-command-client", write=system.write_address, rpcs=["CreateOrder"])
            result["commands"] = commands["CreateOrder"]
            os.sync()
            log.info("postgres: live lag at %.0f commands/s", settings.lag_rate)
            result["lag"] = _live_lag(settings, system, logs)
            system.start_another_write()
            shared = tuple(level for level in settings.levels if level > 1)
            log.info("postgres: commands at %s in flight over two write services", shared)
            two = closed_loop("pg-two-writers-client", write=",".join(system.write_addresses),
                              rpcs=["CreateOrder"], levels=shared)  # fmt: skip
            result["commands_two_writers"] = two["CreateOrder"]
            system.check_alive()
            result["exit_codes"] = system.stop()
    events = settings.postgres_catchup_events
    with pg.databases(settings.postgres_url, "events", "read") as (events_url, read_url):
        head = pg.build_event_store(events_url, fixtures.lifecycle_plan(events), f"{events} lifecycle events")
        with OrderSystem(_fresh(work, "postgres-catchup"), logs, "pg-catchup", event_store=events_url,
                         read_db=read_url) as system:  # fmt: skip
            system.start_read()
            watcher = status.ProjectionWatcher(system.read_address)
            try:
                system.start_projector()
                log.info("postgres: catch-up of %d events", head)
                spawned = system.process(PROJECTOR).started_at
                result["catchup"] = _project(system, watcher, head, settings.projection_timeout_s, spawned)
            finally:
                watcher.close()
            result["catchup"]["exit_codes"] = system.stop()
    return result
