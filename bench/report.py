"""Turns a run's raw results into ratios, targets and one table (text on stdout, Markdown and JSON on disk).

Every figure is shown with its ceiling from the same run and the ratio to it, because only figures taken
together on this noisy machine can be compared. The targets come from the issue that asked for the
harness; each is printed with PASS/MISS and how far it is from its line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CATCH_UP_TARGET = 50_000.0
LAG_P99_TARGET_MS = 20.0
LIVE_LAG_P50_MS, LIVE_LAG_P99_MS = 3.0, 15.0  # issue 8: push wake-ups instead of 2 ms polling
WATCH_LAG_P50_MS, WATCH_LAG_P99_MS = 5.0, 25.0  # issue 8: reply -> WatchOrder message
IDLE_CORES_TARGET = 0.01  # issue 8: idle, each process under 1% of a core
PROCESSES = ("write_service", "projector", "read_service")
SINGLE_COMMAND_SLACK_MS = 0.3  # what one command may cost beyond gRPC and its fsync


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: float | None
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    ceiling: float | None = None
    ratio: float | None = None  # value / ceiling (or the comparison the figure names)


@dataclass(frozen=True)
class Target:
    name: str
    measured: float | None
    limit: float
    kind: str  # ">=" or "<="
    unit: str

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        return self.measured >= self.limit if self.kind == ">=" else self.measured <= self.limit

    @property
    def ratio_to_limit(self) -> float | None:
        return None if self.measured is None else self.measured / self.limit


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or not ceiling:
        return None
    return value / ceiling


def rows(results: dict[str, Any]) -> list[Row]:
    """Every figure of the run, in the order the table shows them."""
    out: list[Row] = []
    noop = _get(results, "ceilings", "noop") or {}
    levels = [str(level) for level in results.get("settings", {}).get("levels", [1, 16, 64])]

    def level_rows(section: str, rpc: str, measured: dict[str, Any] | None, label: str) -> None:
        for level in levels:
            m = _get(measured, level)
            c = _get(noop, rpc, level, "rate")
            if m is None:
                out.append(Row(section, f"{label} @{level}", None, "calls/s", ceiling=c))
                continue
            out.append(
                Row(
                    section,
                    f"{label} @{level}",
                    m["rate"],
                    "calls/s",
                    m["p50_ms"],
                    m["p99_ms"],
                    c,
                    _ratio(m["rate"], c),
                )
            )

    stream_levels = [str(level) for level in results.get("settings", {}).get("stream_levels", [64])]
    for rpc in ("CreateOrder", "GetOrder", "ListOrdersByCustomer", "ExecuteCommands"):
        for level in stream_levels if rpc == "ExecuteCommands" else levels:
            m = _get(noop, rpc, level)
            if m is not None:
                out.append(
                    Row(
                        "ceiling: no-op grpc.aio",
                        f"{rpc} @{level}",
                        m["rate"],
                        "calls/s",
                        m["p50_ms"],
                        m["p99_ms"],
                    )
                )
    for case, rate in (_get(results, "ceilings", "sqlite") or {}).items():
        out.append(Row("ceiling: raw SQLite", case.replace("_", " "), rate, "events/s"))

    level_rows("commands (durable, FULL)", "CreateOrder", _get(results, "commands"), "CreateOrder")
    for level in stream_levels:
        m = _get(results, "stream", level)
        c = _get(noop, "ExecuteCommands", level, "rate")
        out.append(
            Row("command stream (durable, FULL)", f"ExecuteCommands creates @{level}",
                _get(m, "rate"), "commands/s", _get(m, "p50_ms"), _get(m, "p99_ms"), c,
                _ratio(_get(m, "rate"), c))
        )  # fmt: skip
    for rpc in ("GetOrder", "ListOrdersByCustomer"):
        level_rows("queries", rpc, _get(results, "queries", rpc), rpc)

    catch = results.get("catchup") or {}
    raw_batch = _get(results, "ceilings", "sqlite", "append_500_per_txn_normal")
    rate = catch.get("events_per_s")
    out.append(
        Row(
            "projector catch-up",
            f"{catch.get('events', '?')} events from 0",
            rate,
            "events/s",
            ceiling=raw_batch,
            ratio=_ratio(rate, raw_batch),
        )
    )
    if catch.get("wall_s"):
        out.append(Row("projector catch-up", "wall time incl. start-up", catch["wall_s"], "s"))
    subscription = catch.get("subscription") or {}
    if subscription:
        delivered = subscription.get("events_per_s")
        out.append(
            Row("subscription catch-up (gRPC)",
                f"SubscribeEvents {subscription.get('events')} events to caught_up", delivered, "events/s",
                ceiling=rate, ratio=_ratio(delivered, rate))
        )  # fmt: skip

    lag = results.get("lag") or {}
    if lag:
        out.append(
            Row(
                "live lag",
                f"reply -> read model @{lag.get('achieved_rate', 0):.0f} cmd/s",
                lag.get("lag", {}).get("p50_ms"),
                "ms (p50)",
                lag.get("lag", {}).get("p50_ms"),
                lag.get("lag", {}).get("p99_ms"),
            )
        )
        command = lag.get("command", {})
        out.append(
            Row("live lag", "CreateOrder reply meanwhile", command.get("p50_ms"), "ms (p50)",
                command.get("p50_ms"), command.get("p99_ms"))
        )  # fmt: skip
    else:
        out.append(Row("live lag", "reply -> read model", None, "ms"))
    watch = results.get("watch") or {}
    if watch:
        out.append(
            Row("watch lag", f"reply -> WatchOrder message @{watch.get('achieved_rate', 0):.0f} cmd/s",
                _get(watch, "lag", "p50_ms"), "ms (p50)", _get(watch, "lag", "p50_ms"),
                _get(watch, "lag", "p99_ms"))
        )  # fmt: skip
    rebuilt = results.get("rebuild") or {}
    if rebuilt:
        before = _get(rebuilt, "get_order_before", "rate")
        during = _get(rebuilt, "get_order_during", "rate")
        out += [
            Row("rebuild", f"rebuild of {rebuilt.get('events', 0):,} events, incl. start-up",
                rebuilt.get("seconds"), "s"),
            Row("rebuild", "rebuild rate", rebuilt.get("events_per_s"), "events/s"),
            Row("rebuild", "GetOrder @16 before", before, "calls/s",
                _get(rebuilt, "get_order_before", "p50_ms"), _get(rebuilt, "get_order_before", "p99_ms")),
            Row("rebuild", "GetOrder @16 during (ratio: share of before)", during, "calls/s",
                _get(rebuilt, "get_order_during", "p50_ms"), _get(rebuilt, "get_order_during", "p99_ms"),
                before, _ratio(during, before)),
        ]  # fmt: skip

    scale = results.get("scale") or {}
    small, large = scale.get("small") or {}, scale.get("large") or {}
    small_p50 = _get(small, "get_order", "p50_ms")
    large_p50 = _get(large, "get_order", "p50_ms")
    if small:
        out.append(
            Row(
                "scale",
                f"GetOrder @1, {small['orders']:,} orders",
                small_p50,
                "ms (p50)",
                small_p50,
                _get(small, "get_order", "p99_ms"),
            )
        )
    if large:
        out.append(
            Row(
                "scale",
                f"GetOrder @1, {large['orders']:,} orders",
                large_p50,
                "ms (p50)",
                large_p50,
                _get(large, "get_order", "p99_ms"),
                small_p50,
                _ratio(large_p50, small_p50),
            )
        )
        out.append(
            Row(
                "scale",
                f"projection of {large['orders']:,} orders",
                _get(large, "projection", "events_per_s"),
                "events/s",
            )
        )

    memory = results.get("memory") or {}
    small_events, large_events = _sizes(results)
    for process, small_kib in (memory.get("small") or {}).items():
        large_kib = _get(memory, "large", process)
        out.append(Row("peak memory (VmHWM)", f"{process} @{small_events:,}", small_kib / 1024, "MiB"))
        if large_kib is not None:
            out.append(
                Row(
                    "peak memory (VmHWM)",
                    f"{process} @{large_events:,}",
                    large_kib / 1024,
                    "MiB",
                    ceiling=small_kib / 1024,
                    ratio=large_kib / small_kib,
                )
            )
    for process, kib in (memory.get("peak") or {}).items():
        out.append(Row("peak memory (VmHWM)", f"{process}, whole run", kib / 1024, "MiB"))

    out.extend(_cpu_rows(results))
    idle = results.get("idle") or {}
    for process, cores in (idle.get("cores") or {}).items():
        out.append(Row("idle CPU", f"{process} over {idle.get('window_s', 0):.0f} s", cores * 100, "% core"))
    on_postgres = results.get("postgres")
    if on_postgres and not on_postgres.get("skipped"):
        out.extend(_postgres_rows(results, on_postgres))
    peer = results.get("peer")
    if peer:
        out.extend(_peer_rows(results, peer))
    umadb = results.get("umadb")
    if umadb:
        out.extend(_umadb_rows(results, umadb))
    return out


def _postgres_rows(results: dict[str, Any], on_postgres: dict[str, Any]) -> list[Row]:
    """The figures on PostgreSQL, each beside the same figure on SQLite in this run (ratio PG / SQLite).

    Two write services have no SQLite counterpart (SQLite takes one writer): they stand beside the one
    SQLite write service, which is what a second one is meant to beat.
    """
    section = f"PostgreSQL {on_postgres.get('server_version', '?')} (ceiling: SQLite, same run)"
    out: list[Row] = []
    levels = [str(level) for level in results.get("settings", {}).get("levels", [1, 16, 64])]

    def paired(figure: str, m: Any, sqlite: Any, unit: str = "calls/s", key: str = "rate") -> None:
        value, ceiling = _get(m, key), _get(sqlite, key)
        p50, p99 = _get(m, "p50_ms"), _get(m, "p99_ms")
        out.append(Row(section, figure, value, unit, p50, p99, ceiling, _ratio(value, ceiling)))

    sqlite_commands = results.get("commands")
    for level in levels:
        paired(
            f"CreateOrder @{level}, one write service",
            _get(on_postgres, "commands", level),
            _get(sqlite_commands, level),
        )
    for level, m in (on_postgres.get("commands_two_writers") or {}).items():
        paired(f"CreateOrder @{level}, two write services", m, _get(sqlite_commands, level))
    for rpc in ("GetOrder", "ListOrdersByCustomer"):
        for level in levels:
            paired(
                f"{rpc} @{level}",
                _get(on_postgres, "queries", rpc, level),
                _get(results, "queries", rpc, level),
            )
    catch = on_postgres.get("catchup") or {}
    paired(
        f"projector catch-up, {catch.get('events', '?')} events from 0",
        catch,
        results.get("catchup"),
        "events/s",
        "events_per_s",
    )
    lag = on_postgres.get("lag") or {}
    paired(
        f"live lag, reply -> read model @{lag.get('achieved_rate', 0):.0f} cmd/s",
        lag.get("lag"),
        _get(results, "lag", "lag"),
        "ms (p50)",
        "p50_ms",
    )
    for rpc, measured, server in (
        ("CreateOrder", _get(on_postgres, "commands", "64"), "write_service"),
        ("GetOrder", _get(on_postgres, "queries", "GetOrder", "64"), "read_service"),
    ):
        cpu = (measured or {}).get("server_cpu_us_per_call") or {}
        for process in (server, "postgres"):
            if process in cpu:
                out.append(Row(section, f"server CPU per {rpc} @64: {process}", cpu[process], "us"))
    return out


def _umadb_rows(results: dict[str, Any], umadb: dict[str, Any]) -> list[Row]:
    section = f"peer: {umadb.get('library', 'umadb')}"
    out = []
    for level, m in (umadb.get("appends") or {}).items():
        out.append(
            Row(section, f"conditional appends @{level} (its client)", m["rate"], "appends/s",
                m["p50_ms"], m["p99_ms"])
        )  # fmt: skip
        cpu = _get(m, "server_cpu_us_per_call", "umadb")
        if cpu is not None:
            out.append(Row(section, f"server CPU per append @{level}", cpu, "us"))
    for level, m in (umadb.get("appends") or {}).items():
        for label, ours in (
            ("ExecuteCommands", _get(results, "stream", level, "rate")),
            ("CreateOrder", _get(results, "commands", level, "rate")),
        ):
            if ours is not None:
                out.append(
                    Row(section, f"ours: {label} @{level}", ours, "calls/s", ceiling=m["rate"],
                        ratio=_ratio(ours, m["rate"]))
                )  # fmt: skip
    return out


def _cpu_rows(results: dict[str, Any]) -> list[Row]:
    """Server CPU per call at 64 in flight, next to the no-op server's: where a throughput ratio is lost.

    Also the projector's CPU per command, which competes with the write service and the client for the
    machine's two cores while commands run.
    """
    out: list[Row] = []
    section = "server CPU per call @64 (us)"
    pairs = (
        ("CreateOrder", _get(results, "commands", "64"), "write_service"),
        ("ExecuteCommands", _get(results, "stream", "64"), "write_service"),
        ("GetOrder", _get(results, "queries", "GetOrder", "64"), "read_service"),
        ("ListOrdersByCustomer", _get(results, "queries", "ListOrdersByCustomer", "64"), "read_service"),
    )
    for rpc, measured, server in pairs:
        cpu = (measured or {}).get("server_cpu_us_per_call") or {}
        noop = _get(results, "ceilings", "noop", rpc, "64", "server_cpu_us_per_call", "noop")
        if server in cpu:
            out.append(Row(section, f"{rpc}: {server}", cpu[server], "us", ceiling=noop,
                           ratio=_ratio(cpu[server], noop)))  # fmt: skip
        if rpc == "CreateOrder" and "projector" in cpu:
            out.append(Row(section, "CreateOrder: projector (tailing)", cpu["projector"], "us"))
    return out


def _peer_rows(results: dict[str, Any], peer: dict[str, Any]) -> list[Row]:
    section = f"peer: {peer.get('library', 'eventsourcing')}"
    creates = _get(peer, "append", "creates_per_s")
    projection = _get(peer, "projection", "events_per_s")
    out = [
        Row(section, "peer creates (in-process, no gRPC)", creates, "events/s"),
        Row(section, "peer lifecycle commands", _get(peer, "append", "events_per_s"), "events/s"),
        Row(section, "peer projection", projection, "events/s"),
    ]
    for level in ("1", "64"):
        ours = _get(results, "commands", level, "rate")
        out.append(
            Row(
                section,
                f"ours: CreateOrder @{level} over gRPC",
                ours,
                "calls/s",
                ceiling=creates,
                ratio=_ratio(ours, creates),
            )
        )
    ours_catch = _get(results, "catchup", "events_per_s")
    out.append(
        Row(
            section,
            "ours: projector catch-up",
            ours_catch,
            "events/s",
            ceiling=projection,
            ratio=_ratio(ours_catch, projection),
        )
    )
    return out


def _sizes(results: dict[str, Any]) -> tuple[int, int]:
    """The small and large data sets' sizes (orders, which here are also events)."""
    settings = results.get("settings") or {}
    return int(settings.get("small_orders", 0)), int(settings.get("large_orders", 0))


def targets(results: dict[str, Any]) -> list[Target]:
    """The issue's targets, from this run's figures."""
    noop = _get(results, "ceilings", "noop") or {}

    def vs_noop(measured: Any, rpc: str) -> float | None:
        return _ratio(_get(measured, "64", "rate"), _get(noop, rpc, "64", "rate"))

    small = _get(results, "scale", "small") or {}
    large = _get(results, "scale", "large") or {}
    small_size, large_size = _sizes(results)
    sizes = f"{large_size:,} / {small_size:,}"
    out = [
        Target(
            "durable commands @64 vs no-op", vs_noop(results.get("commands"), "CreateOrder"), 0.75, ">=", "x"
        ),
        Target(
            "GetOrder @64 vs no-op",
            vs_noop(_get(results, "queries", "GetOrder"), "GetOrder"),
            0.85,
            ">=",
            "x",
        ),
        Target(
            "ListOrdersByCustomer @64 vs no-op",
            vs_noop(_get(results, "queries", "ListOrdersByCustomer"), "ListOrdersByCustomer"),
            0.8,
            ">=",
            "x",
        ),
        Target(
            "projector catch-up", _get(results, "catchup", "events_per_s"), CATCH_UP_TARGET, ">=", "events/s"
        ),
        Target(
            f"GetOrder p50 at {sizes} orders",
            _ratio(_get(large, "get_order", "p50_ms"), _get(small, "get_order", "p50_ms")),
            1.25,
            "<=",
            "x",
        ),
        Target(
            f"live lag p99 @{_get(results, 'lag', 'target_rate') or 500:.0f} cmd/s",
            _get(results, "lag", "lag", "p99_ms"),
            LAG_P99_TARGET_MS,
            "<=",
            "ms",
        ),
    ]
    rate = f"@{_get(results, 'lag', 'target_rate') or 500:.0f} cmd/s"
    out += [
        Target(f"live lag p50 {rate} (issue 8)", _get(results, "lag", "lag", "p50_ms"), LIVE_LAG_P50_MS,
               "<=", "ms"),
        Target(f"live lag p99 {rate} (issue 8)", _get(results, "lag", "lag", "p99_ms"), LIVE_LAG_P99_MS,
               "<=", "ms"),
    ]  # fmt: skip
    if "watch" in results:  # the stage ran (or failed)
        out += [
            Target("watch lag p50 (issue 8)", _get(results, "watch", "lag", "p50_ms"), WATCH_LAG_P50_MS, "<=",
                   "ms"),
            Target("watch lag p99 (issue 8)", _get(results, "watch", "lag", "p99_ms"), WATCH_LAG_P99_MS, "<=",
                   "ms"),
        ]  # fmt: skip
    if "idle" in results:  # the stage ran (or failed): each process gets its line
        for process in PROCESSES:
            out.append(
                Target(f"idle CPU {process}", _get(results, "idle", "cores", process), IDLE_CORES_TARGET,
                       "<=", "cores")
            )  # fmt: skip
    memory = results.get("memory") or {}
    for process, small_kib in (memory.get("small") or {}).items():
        large_kib = _get(memory, "large", process)
        out.append(
            Target(f"memory {process} at {sizes} events", _ratio(large_kib, small_kib), 1.2, "<=", "x")
        )
    return out + lean_targets(results)


def lean_targets(results: dict[str, Any]) -> list[Target]:
    """The targets of the lean-hot-paths work: CPU per call next to the no-op server's, the single
    command's latency against its parts, catch-up against the raw append ceiling, and command
    streams against UmaDB (only when the peers ran)."""
    out = []
    for rpc, measured, server, limit in (
        ("CreateOrder", _get(results, "commands", "64"), "write_service", 1.5),
        ("GetOrder", _get(results, "queries", "GetOrder", "64"), "read_service", 1.3),
        ("ListOrdersByCustomer", _get(results, "queries", "ListOrdersByCustomer", "64"), "read_service", 1.4),
    ):
        noop = _get(results, "ceilings", "noop", rpc, "64", "server_cpu_us_per_call", "noop")
        ours = _get(measured, "server_cpu_us_per_call", server)
        out.append(Target(f"server CPU per {rpc} @64 vs no-op", _ratio(ours, noop), limit, "<=", "x"))
    noop_p50 = _get(results, "ceilings", "noop", "CreateOrder", "1", "p50_ms")
    full_commit = _get(results, "ceilings", "sqlite", "append_1_per_txn_full")
    single = float("nan")
    if noop_p50 and full_commit:
        single = noop_p50 + 1000.0 / full_commit + SINGLE_COMMAND_SLACK_MS
    out.append(
        Target(
            "CreateOrder @1 p50 <= no-op p50 + one FULL commit + 0.3 ms",
            _get(results, "commands", "1", "p50_ms"),
            round(single, 3),
            "<=",
            "ms",
        )
    )
    out.append(
        Target(
            "projector catch-up vs raw append ceiling",
            _ratio(
                _get(results, "catchup", "events_per_s"),
                _get(results, "ceilings", "sqlite", "append_500_per_txn_normal"),
            ),
            0.5,
            ">=",
            "x",
        )
    )
    umadb_64 = _get(results, "umadb", "appends", "64", "rate")
    if umadb_64:
        out.append(
            Target(
                "ExecuteCommands @64 vs UmaDB conditional appends @64",
                _ratio(_get(results, "stream", "64", "rate"), umadb_64),
                1.5,
                ">=",
                "x",
            )
        )
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if value != value:  # NaN: a limit whose parts were not measured
        return "n/a"
    if unit in ("calls/s", "events/s", "commands/s", "appends/s") or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


def _fmt_target(value: float | None, unit: str) -> str:
    """Ratios with three decimals, so 0.798 against a limit of 0.80 does not print as 0.80 and MISS."""
    if value is not None and unit == "x":
        return f"{value:.3f}"
    if value is not None and unit == "cores":
        return f"{value:.4f}"
    return _fmt(value, unit)


def _table(header: list[str], body: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(cells) + " |" for cells in body]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Names left-aligned, numbers right-aligned.
        padded = (
            c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded)

    return [line(header), "  ".join("-" * w for w in widths), *(line(cells) for cells in body)]


def render(results: dict[str, Any], *, markdown: bool) -> str:
    """The figures table and the targets table, as aligned text or as Markdown."""
    figure_rows = [
        [
            r.section,
            r.figure,
            _fmt(r.value, r.unit),
            r.unit,
            _fmt(r.p50_ms) if r.p50_ms is not None else "",
            _fmt(r.p99_ms) if r.p99_ms is not None else "",
            _fmt(r.ceiling, r.unit) if r.ceiling is not None else "",
            f"{r.ratio:.2f}" if r.ratio is not None else "",
        ]
        for r in rows(results)
    ]
    target_rows = [
        [
            t.name,
            _fmt_target(t.measured, t.unit),
            f"{t.kind} {_fmt_target(t.limit, t.unit)}",
            t.unit,
            f"{t.ratio_to_limit:.3f}" if t.ratio_to_limit is not None else "n/a",
            "PASS" if t.passed else "MISS",
        ]
        for t in targets(results)
    ]
    machine = results.get("machine", {})
    head = (
        f"bench ({results.get('mode')}) {results.get('started_at', '')}, "
        f"{results.get('elapsed_s', 0):.0f} s; "
        f"{machine.get('cpus')} cpus, Python {machine.get('python')}, SQLite {machine.get('sqlite')}, "
        f"grpcio {machine.get('grpcio')}"
    )
    out = [f"# Benchmark results\n\n{head}" if markdown else head, ""]
    out += _table(
        ["section", "figure", "value", "unit", "p50 ms", "p99 ms", "ceiling", "ratio"], figure_rows, markdown
    )
    out += ["", "## Targets" if markdown else "Targets", ""]
    out += _table(["target", "measured", "limit", "unit", "measured/limit", "result"], target_rows, markdown)
    notes = results.get("notes") or []
    errors = results.get("errors") or []
    if notes or errors:
        out += ["", "## Notes" if markdown else "Notes", ""]
        out += [f"- ERROR {e}" for e in errors] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def summarize(results: dict[str, Any]) -> None:
    """Add the derived figures (ratios, targets) to the results, so the JSON stands on its own."""
    results["targets"] = [
        {**asdict(t), "ratio_to_limit": t.ratio_to_limit, "pass": t.passed} for t in targets(results)
    ]
    results["figures"] = [asdict(r) for r in rows(results)]


def write(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """`<mode>.json` and `<mode>.md` in `directory`, each written whole or not at all."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = str(results.get("mode", "run"))
    paths = (directory / f"{stem}.json", directory / f"{stem}.md")
    for path, text in zip(
        paths, (json.dumps(results, indent=2) + "\n", render(results, markdown=True)), strict=True
    ):
        scratch = path.with_name(path.name + ".tmp")
        scratch.write_text(text)
        os.replace(scratch, path)
    return paths
