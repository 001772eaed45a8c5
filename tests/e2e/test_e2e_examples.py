"""The clients in examples/ run against the real processes: the Node.js one (installed with `npm ci`
from its committed lock file, reading protos/ directly) and the Python one (generated stubs only).
Both create an order, read it back with min_position, watch it through a confirm and a ship, and
follow SubscribeEvents from 0 to caught_up."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_e2e_secure
from e2e_support import REPO, Trio
from test_e2e_secure import Secured

NODE_EXAMPLE = REPO / "examples" / "node"
PYTHON_EXAMPLE = REPO / "examples" / "python" / "orders_client.py"

# The trio on TLS with tokens, as the README's "Running it securely" starts it.
secured = test_e2e_secure.secured
TIMEOUT = 120.0  # seconds for `npm ci` or one run of an example


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the examples test needs Node.js 18+ and npm")
    return path


@pytest.fixture(scope="module")
def node_example() -> Path:
    """examples/node with its dependencies installed exactly as the lock file says."""
    subprocess.run(
        [_tool("npm"), "ci", "--no-audit", "--no-fund"],
        cwd=NODE_EXAMPLE,
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    return NODE_EXAMPLE


def _check_output(output: str) -> None:
    created = re.search(r"^created (\S+) at position (\d+) \(version 1\)$", output, re.M)
    assert created, output
    order_id, position = created[1], int(created[2])
    assert re.search(
        rf"^read {order_id}: ORDER_STATUS_PENDING, total 2999, read model at (\d+)", output, re.M
    )
    assert (
        "watch saw ORDER_STATUS_PENDING@1 -> ORDER_STATUS_CONFIRMED@2 -> ORDER_STATUS_SHIPPED@3" in output
    ), output
    followed = re.search(r"^subscription: (\d+) events from position 0, caught up at (\d+)$", output, re.M)
    assert followed, output
    count, caught_up = int(followed[1]), int(followed[2])
    assert count == caught_up >= position + 2  # every event once, its own confirm and ship included


def _run(command: list[str], trio: Trio, cwd: Path) -> str:
    assert trio.write.address and trio.read.address
    finished = subprocess.run(
        [*command, "--write", trio.write.address, "--read", trio.read.address],
        cwd=cwd,
        timeout=TIMEOUT,
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 0, f"stdout:\n{finished.stdout}\nstderr:\n{finished.stderr}"
    return finished.stdout


def test_the_node_example_runs_against_the_services(trio: Trio, node_example: Path) -> None:
    _check_output(_run([_tool("node"), "orders_client.js"], trio, node_example))


def test_the_python_example_runs_against_the_services(trio: Trio) -> None:
    _check_output(_run([sys.executable, str(PYTHON_EXAMPLE)], trio, REPO / "examples"))


def _secure_flags(secured: Secured) -> list[str]:
    """The example's flags for the secured trio: its addresses, the CA, a client certificate (the write
    service asks for one) and a token with both scopes."""
    assert secured.write.address and secured.read.address
    pki = secured.pki
    return [
        *("--write", secured.write.address, "--read", secured.read.address),
        *("--ca", str(pki.ca_cert), "--cert", str(pki.client_cert), "--key", str(pki.client_key)),
        *("--token", secured.tokens["back-office"]),
    ]


def _run_secured(command: list[str], secured: Secured, cwd: Path) -> str:
    finished = subprocess.run(
        [*command, *_secure_flags(secured)], cwd=cwd, timeout=TIMEOUT, capture_output=True, text=True
    )
    assert finished.returncode == 0, f"stdout:\n{finished.stdout}\nstderr:\n{finished.stderr}"
    for proc in secured.processes():
        assert secured.tokens["back-office"] not in proc.stderr_text()
    return finished.stdout


def test_the_node_example_runs_with_tls_and_a_token(secured: Secured, node_example: Path) -> None:
    _check_output(_run_secured([_tool("node"), "orders_client.js"], secured, node_example))


def test_the_python_example_runs_with_tls_and_a_token(secured: Secured) -> None:
    _check_output(_run_secured([sys.executable, str(PYTHON_EXAMPLE)], secured, REPO / "examples"))


def test_the_examples_are_refused_without_their_token(secured: Secured) -> None:
    flags = _secure_flags(secured)[:-2]  # everything but the token
    finished = subprocess.run(
        [sys.executable, str(PYTHON_EXAMPLE), *flags], timeout=TIMEOUT, capture_output=True, text=True
    )
    assert finished.returncode != 0
    assert "UNAUTHENTICATED" in finished.stderr, finished.stderr
