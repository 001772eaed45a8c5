"""What a run measures and how long it takes: one frozen object built by the CLI.

The full run is sized to finish in under 10 minutes on 2 cores; --quick keeps every code path but
shrinks sizes and windows (0.8 s per level) so CI can prove the harness works in under a minute
(its figures are rough).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

LEVELS = (1, 16, 64)


@dataclass(frozen=True)
class Settings:
    mode: str  # "full" or "quick"
    results_dir: Path
    work_dir: Path | None  # None: a fresh temporary directory, removed afterwards
    keep: bool  # keep the work directory (data files and process logs)
    peer: bool
    levels: tuple[int, ...] = LEVELS
    stream_levels: tuple[int, ...] = (64,)  # ExecuteCommands: commands in flight on one stream
    only: frozenset[str] = frozenset()  # stages to run (empty: all)
    warmup_s: float = 1.0
    duration_s: float = 5.0
    small_orders: int = 10_000
    large_orders: int = 1_000_000
    catchup_events: int = 200_000
    lag_rate: float = 500.0
    lag_warmup_s: float = 1.0
    lag_duration_s: float = 10.0
    probe_s: float = 3.0  # GetOrder at 1 in flight: one window per data set per round
    probe_rounds: int = 3
    burst_s: float = 3.0  # the same command burst on each data set before memory is read
    raw_scale: float = 1.0
    peer_events: int = 20_000
    projection_timeout_s: float = 420.0
    wait_quiet_s: float = 0.0  # before each stage, wait up to this long for other programs to go idle
    idle_s: float = 10.0  # idle CPU window (0: the stage is skipped)
    watch_lag: bool = True  # the watch-lag stage (reply -> WatchOrder message at lag_rate)
    rebuild_events: int = 1_000_000  # the rebuild stage's log (0: the stage is skipped)
    retry_busy: int = 2  # measure again when other programs used the CPU meanwhile (at most this often)
    postgres_url: str = ""  # a PostgreSQL server to create the run's databases on ("": no such stage)
    postgres_catchup_events: int = 50_000  # the catch-up log on PostgreSQL (it projects ~10x slower)


STAGES = ("raw", "small", "large", "catchup", "idle", "watch", "rebuild", "postgres", "peer", "umadb")


def full(
    results_dir: Path,
    work_dir: Path | None,
    keep: bool,
    peer: bool,
    wait_quiet_s: float,
    only: frozenset[str] = frozenset(),
    postgres_url: str = "",
) -> Settings:
    return Settings(
        "full", results_dir, work_dir, keep, peer, wait_quiet_s=wait_quiet_s, only=only,
        postgres_url=postgres_url,
    )  # fmt: skip


def quick(
    results_dir: Path,
    work_dir: Path | None,
    keep: bool,
    peer: bool,
    wait_quiet_s: float,
    only: frozenset[str] = frozenset(),
    postgres_url: str = "",
) -> Settings:
    return replace(
        full(results_dir, work_dir, keep, peer, wait_quiet_s, only, postgres_url),
        mode="quick",
        warmup_s=0.25,
        duration_s=0.8,
        small_orders=2_000,
        large_orders=20_000,
        catchup_events=5_000,
        lag_warmup_s=0.3,
        lag_duration_s=2.0,
        probe_s=0.8,
        probe_rounds=1,
        burst_s=0.5,
        raw_scale=0.1,
        peer_events=1_000,
        projection_timeout_s=60.0,
        retry_busy=0,
        idle_s=0.0,
        watch_lag=False,
        rebuild_events=0,
        postgres_catchup_events=2_000,
    )
