"""The services' command lines are the contract's, with the settings' paths, URLs and extra flags."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools import launch


def test_commands_are_the_contracts_command_lines() -> None:
    settings = launch.Settings.in_dir(
        Path("data"), write_listen="127.0.0.1:50051", read_listen="127.0.0.1:50052"
    )
    python = [sys.executable, "-m"]
    assert launch.commands(settings) == {
        "write_service": [
            *python,
            "write_service",
            "--listen",
            "127.0.0.1:50051",
            "--event-store",
            "data/events.db",
        ],
        "projector": [*python, "projector", "--event-store", "data/events.db", "--read-db", "data/read.db"],
        "read_service": [
            *python,
            "read_service",
            *("--listen", "127.0.0.1:50052", "--read-db", "data/read.db", "--event-store", "data/events.db"),
        ],
    }


def test_urls_metrics_and_extra_flags_are_passed_on_as_given() -> None:
    settings = launch.Settings(
        event_store="postgresql://127.0.0.1/orders",
        read_db="postgresql://127.0.0.1/orders_read",
        metrics_listen="127.0.0.1:0",
        extra={launch.READ: ["--max-wait", "2"]},
    )
    assert launch.flags(settings, launch.PROJECTOR) == [
        *(
            "--event-store",
            "postgresql://127.0.0.1/orders",
            "--read-db",
            "postgresql://127.0.0.1/orders_read",
        ),
        *("--metrics-listen", "127.0.0.1:0"),
    ]
    assert launch.flags(settings, launch.READ)[-4:] == ["--metrics-listen", "127.0.0.1:0", "--max-wait", "2"]
    with pytest.raises(ValueError, match="unknown service"):
        launch.flags(settings, "nothing")
