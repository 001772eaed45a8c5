"""One benchmark run: the stages in order, their results gathered into one dict for the report.

A stage that fails (a service that will not start, a timeout) is recorded and the run goes on, so one
broken figure does not hide the others; the work directory is then kept for its logs.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from bench import processes, stages
from bench.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_CORES = processes.BUSY_CORES


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "grpcio": grpc.__version__,
    }


def run(settings: Settings) -> dict[str, Any]:
    """All stages; the returned dict is what `bench.report` renders and writes."""
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": settings.mode,
        "started_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "settings": {
            "levels": list(settings.levels),
            "stream_levels": list(settings.stream_levels),
            "warmup_s": settings.warmup_s,
            "duration_s": settings.duration_s,
            "small_orders": settings.small_orders,
            "large_orders": settings.large_orders,
            "catchup_events": settings.catchup_events,
            "lag_rate": settings.lag_rate,
            "idle_s": settings.idle_s,
            "rebuild_events": settings.rebuild_events,
            "peer_events": settings.peer_events if settings.peer else 0,
        },
        "errors": [],
        "notes": [],
    }
    work = settings.work_dir or Path(tempfile.mkdtemp(prefix="bench-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log.info("work directory %s", work)

    def stage(name: str, body: Callable[[], T]) -> T | None:
        if settings.only and name.split()[0].lower() not in settings.only:
            log.info("stage %s skipped (--only)", name)
            return None
        if settings.wait_quiet_s > 0:
            foreign = processes.wait_for_quiet_machine(settings.wait_quiet_s, BUSY_CORES)
            if foreign >= BUSY_CORES:
                log.warning("stage %s starts on a busy machine (%.2f cores used by others)", name, foreign)
        # No stage pays for the previous one's writeback (fixtures, floods of commands).
        os.sync()
        stage_started = time.perf_counter()
        try:
            return body()
        except Exception as error:  # a failed stage is a result too; the run goes on
            log.exception("stage %s failed", name)
            results["errors"].append(f"{name}: {error}")
            return None
        finally:
            log.info("stage %s: %.1f s", name, time.perf_counter() - stage_started)

    try:
        results["ceilings"] = {"sqlite": stage("raw SQLite", lambda: stages.raw_appends(settings, work))}
        small = stage(
            "small",
            lambda: stages.data_set(settings, work, "small", settings.small_orders, full_workload=True),
        )
        large = stage(
            "large",
            lambda: stages.data_set(
                settings,
                work,
                "large",
                settings.large_orders,
                full_workload=False,
                scale_baseline=settings.small_orders,
            ),
        )
        results["catchup"] = stage("catchup", lambda: stages.catch_up(settings, work))
        if settings.idle_s > 0 and (not settings.only or "idle" in settings.only):
            results["idle"] = stage("idle", lambda: stages.idle_cpu(settings, work))
        if settings.watch_lag and (not settings.only or "watch" in settings.only):
            results["watch"] = stage("watch lag", lambda: stages.watch_lag(settings, work))
        if settings.rebuild_events > 0 and (not settings.only or "rebuild" in settings.only):
            results["rebuild"] = stage("rebuild", lambda: stages.rebuild(settings, work))
        if settings.postgres_url:
            results["postgres"] = stage("postgres", lambda: stages.postgres(settings, work))
        if settings.peer:
            results["peer"] = stage("peer", lambda: stages.peer(settings, work))
            results["umadb"] = stage("umadb", lambda: stages.umadb_peer(settings, work))
        _gather(results, small, large)
    finally:
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
        if settings.keep or results["errors"]:
            results["notes"].append(f"work directory kept: {work}")
        elif settings.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return results


def _gather(results: dict[str, Any], small: dict[str, Any] | None, large: dict[str, Any] | None) -> None:
    """Lift the small data set's throughput figures to the top, pair the data sets for scale and memory."""
    notes: list[str] = results["notes"]
    if small:
        results["ceilings"]["noop"] = small.get("noop")
        results["ceilings"]["noop_peak_rss_kib"] = small.get("noop_peak_rss_kib")
        results["commands"] = small.get("commands")
        results["stream"] = small.get("stream")
        results["queries"] = small.get("queries")
        results["lag"] = small.get("lag")
    scale: dict[str, Any] = dict((large or {}).get("scale") or {})
    if large and "large" in scale:
        scale["large"]["projection"] = large.get("projection")
    results["scale"] = scale
    peaks: dict[str, int] = {}
    memory: dict[str, Any] = {}
    for label, data in (("small", small), ("large", large)):
        if not data:
            continue
        memory[label] = data.get("peak_rss_kib", {})
        for snapshot in (data.get("peak_rss_kib", {}), data.get("peak_rss_kib_end", {})):
            for process, kib in snapshot.items():
                peaks[process] = max(peaks.get(process, 0), kib)
    catch = results.get("catchup") or {}
    if catch.get("projector_peak_rss_kib"):
        peaks["projector"] = max(peaks.get("projector", 0), catch["projector_peak_rss_kib"])
    memory["peak"] = peaks
    results["memory"] = memory
    for label, data in (
        ("small", small),
        ("large", large),
        ("catchup", catch),
        ("idle", results.get("idle")),
        ("watch", results.get("watch")),
        ("rebuild", results.get("rebuild")),
        ("postgres", results.get("postgres")),
        ("postgres catch-up", (results.get("postgres") or {}).get("catchup")),
    ):
        for process, code in ((data or {}).get("exit_codes") or {}).items():
            if code != 0:
                notes.append(f"{label}: {process} exited with {code} on SIGTERM (the contract says 0)")
    _client_notes(results, notes)


def _client_notes(results: dict[str, Any], notes: list[str]) -> None:
    """Errors the clients saw: a figure built on failing calls is flagged, not silently printed."""
    measured: list[tuple[str, dict[str, Any]]] = []
    for level, m in (results.get("commands") or {}).items():
        measured.append((f"CreateOrder @{level}", m))
    for level, m in (results.get("stream") or {}).items():
        measured.append((f"ExecuteCommands @{level}", m))
    for rpc, per_level in (results.get("queries") or {}).items():
        measured.extend((f"{rpc} @{level}", m) for level, m in per_level.items())
    on_postgres = results.get("postgres") or {}
    if on_postgres.get("skipped"):
        notes.append(f"postgres: stage left out, {on_postgres['skipped']}")
    for label in ("commands", "commands_two_writers"):
        for level, m in (on_postgres.get(label) or {}).items():
            measured.append((f"PostgreSQL CreateOrder ({label.replace('_', ' ')}) @{level}", m))
    for rpc, per_level in (on_postgres.get("queries") or {}).items():
        measured.extend((f"PostgreSQL {rpc} @{level}", m) for level, m in per_level.items())
    noop = (results.get("ceilings") or {}).get("noop") or {}
    for rpc, per_level in noop.items():
        measured.extend((f"no-op {rpc} @{level}", m) for level, m in per_level.items())
    for name, m in measured:
        if m.get("errors"):
            notes.append(f"{name}: errors {m['errors']} besides {m['calls']} successful calls")
    busy = [(name, m) for name, m in measured if m.get("foreign_cores", 0) > BUSY_CORES]
    for name, m in (
        ("live lag", results.get("lag") or {}),
        ("catch-up", results.get("catchup") or {}),
        ("idle CPU", results.get("idle") or {}),
        ("watch lag", results.get("watch") or {}),
    ):
        if m.get("foreign_cores", 0) > BUSY_CORES:
            busy.append((name, m))
    if busy:
        worst = max(m["foreign_cores"] for _, m in busy)
        names = ", ".join(name for name, _ in busy)
        notes.append(
            f"MACHINE BUSY: other programs used up to {worst:.2f} cores during {names}; those figures "
            "are not comparable (rerun on a quiet machine)"
        )
    watch = results.get("watch") or {}
    if watch.get("errors") or watch.get("stale_answers"):
        notes.append(f"watch lag: errors {watch.get('errors')}, {watch.get('stale_answers')} stale messages")
    if (results.get("rebuild") or {}).get("window_inside_rebuild") is False:
        notes.append("rebuild: the rebuild ended before the GetOrder window did; 'during' is partly after it")
    lag = results.get("lag") or {}
    if lag.get("errors"):
        notes.append(f"live lag: errors {lag['errors']}")
    if lag.get("stale_answers"):
        notes.append(f"live lag: {lag['stale_answers']} answers with read_model_version < min_position")
    if lag and lag.get("achieved_rate", 0) < 0.95 * lag.get("target_rate", 0):
        notes.append(
            f"live lag: the client sent only {lag['achieved_rate']} of {lag['target_rate']} commands/s"
        )
