"""The benchmark harness works end to end: `python -m bench --quick` against the three real processes.

No timing is asserted here (figures on a shared 2-core machine are noise for a test); this only proves
that the harness starts everything, measures every figure and writes its JSON and Markdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from postgres_support import SERVER_URL, unreachable_reason

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("1", "16", "64")
PROCESSES = ("write_service", "projector", "read_service")


def _positive(data: dict[str, Any], *path: str) -> None:
    value: Any = data
    for key in path:
        assert isinstance(value, dict) and key in value, f"missing {'.'.join(path)}"
        value = value[key]
    assert isinstance(value, int | float) and value > 0, f"{'.'.join(path)} = {value!r}"


def _bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.e2e
def test_quick_run_measures_every_figure(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    work = str(tmp_path / "work")
    completed = _bench(
        "--quick",
        "--results-dir",
        str(results_dir),
        "--work-dir",
        work,
        "--postgres",
        SERVER_URL,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((results_dir / "quick.json").read_text())
    assert (results_dir / "quick.md").read_text().startswith("# Benchmark results")
    assert results["mode"] == "quick"
    assert results["errors"] == []
    for rpc in ("CreateOrder", "GetOrder", "ListOrdersByCustomer"):
        for level in LEVELS:
            for figure in ("rate", "p50_ms", "p99_ms"):
                _positive(results, "ceilings", "noop", rpc, level, figure)
    for case in ("append_1_per_txn_full", "append_100_per_txn_full", "append_500_per_txn_normal"):
        _positive(results, "ceilings", "sqlite", case)
    for level in LEVELS:
        for figure in ("rate", "p50_ms", "p99_ms"):
            _positive(results, "commands", level, figure)
            _positive(results, "queries", "GetOrder", level, figure)
            _positive(results, "queries", "ListOrdersByCustomer", level, figure)
    for figure in ("rate", "p50_ms", "p99_ms"):
        _positive(results, "stream", "64", figure)
        _positive(results, "ceilings", "noop", "ExecuteCommands", "64", figure)
    _positive(results, "stream", "64", "server_cpu_us_per_call", "write_service")
    _positive(results, "catchup", "events_per_s")
    _positive(results, "catchup", "subscription", "events_per_s")
    _positive(results, "lag", "achieved_rate")
    _positive(results, "lag", "lag", "p50_ms")
    _positive(results, "lag", "lag", "p99_ms")
    for label in ("small", "large"):
        _positive(results, "scale", label, "orders")
        _positive(results, "scale", label, "get_order", "p50_ms")
        for process in PROCESSES:
            _positive(results, "memory", label, process)
    _check_postgres(results)
    names = [target["name"] for target in results["targets"]]
    assert len(names) == 16, names
    assert all(isinstance(target["pass"], bool) for target in results["targets"])
    assert "PASS" in completed.stdout or "MISS" in completed.stdout


def _check_postgres(results: dict[str, Any]) -> None:
    """The same services measured on PostgreSQL; without a server (and without CI) the stage says why."""
    on_postgres = results["postgres"]
    if unreachable_reason() and not os.environ.get("CI"):
        assert "PostgreSQL not reachable" in on_postgres["skipped"]
        return
    for level in LEVELS:
        for figure in ("rate", "p50_ms", "p99_ms"):
            _positive(on_postgres, "commands", level, figure)
            _positive(on_postgres, "queries", "GetOrder", level, figure)
            _positive(on_postgres, "queries", "ListOrdersByCustomer", level, figure)
    for level in ("16", "64"):
        _positive(on_postgres, "commands_two_writers", level, "rate")
    _positive(on_postgres, "commands", "64", "server_cpu_us_per_call", "write_service")
    _positive(on_postgres, "commands", "64", "server_cpu_us_per_call", "postgres")
    _positive(on_postgres, "catchup", "events_per_s")
    _positive(on_postgres, "lag", "lag", "p99_ms")
    figures = [
        figure["figure"] for figure in results["figures"] if figure["section"].startswith("PostgreSQL")
    ]
    assert "CreateOrder @64, two write services" in figures, figures


def test_help_and_bad_flag() -> None:
    assert _bench("--help").returncode == 0
    bad = _bench("--no-such-flag")
    assert bad.returncode == 2
    assert "--no-such-flag" in bad.stderr
    unknown_stage = _bench("--only", "small,nonsense")
    assert unknown_stage.returncode == 2
    assert "nonsense" in unknown_stage.stderr


def test_peer_without_its_extra_exits_2_with_one_line() -> None:
    # Hide the library whether or not it is installed: find_spec is what `--peer` checks first.
    hide = (
        "import importlib.util, runpy, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'eventsourcing' else real(name, *a)\n"
        "sys.argv = ['bench', '--peer']\n"
        "runpy.run_module('bench', run_name='__main__')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "bench/requirements.txt" in lines[0], completed.stderr
