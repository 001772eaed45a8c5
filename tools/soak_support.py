"""The parts of `tools.soak` that do not drive load: processes, addresses, and checking the files.

- `Service` starts one of the three processes as a user would (`python -m <module> <flags>`), with its
  stdout and stderr in files of the data directory (one pair per start), reads the `listening on
  HOST:PORT` line, and kills, restarts and stops it.
- `Addresses` is where the clients look up a server's current address: the killer marks a server down
  before it sends SIGKILL and publishes the new port once the restarted server listens, so an error
  from an address that is no longer current is known to come from the kill. `ChannelPool` re-creates
  the gRPC channel whenever the address changes.
- The rest reads the event store with the `sqlite3` module, read-only, and checks it: a gap-free log,
  every acknowledged event where its reply said it was, no command applied twice, and the read models
  expected from a replay of the log (compared, by `tools.soak`, with what the read service answers).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc as _generated
from tools import launch

# grpc_tools writes no type hints for the service stubs; one `Any` here instead of ignores everywhere.
stubs: Any = _generated

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"^listening on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)\s*$")
STARTUP_TIMEOUT = 30.0  # seconds for a server to print its `listening on` line
STOP_TIMEOUT = 30.0  # seconds for a process to exit after SIGTERM


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


class StartFailed(RuntimeError):
    """A process exited, or printed something else, before its `listening on` line."""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Service:
    """One of the three processes; `server` ones print `listening on HOST:PORT` first."""

    name: str
    module: str
    args: list[str]
    log_dir: Path
    server: bool
    popen: subprocess.Popen[bytes] | None = None
    address: str = ""
    starts: int = 0
    kills: int = 0
    unexpected_exits: list[int] = field(default_factory=list)
    _stdout: Path | None = None

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is running"
        self.starts += 1
        self.address = ""
        stem = f"{self.name}.{self.starts}"
        self._stdout = self.log_dir / f"{stem}.stdout"
        with open(self._stdout, "wb") as out, open(self.log_dir / f"{stem}.stderr", "wb") as err:
            self.popen = subprocess.Popen(
                launch.argv(self.module, self.args),
                cwd=REPO,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # a Ctrl-C reaches the soak only; it stops the children itself
            )

    async def wait_listening(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """The HOST:PORT of the first stdout line (servers); for the projector, that it is still up."""
        assert self.popen is not None and self._stdout is not None
        if not self.server:
            return ""
        deadline = time.monotonic() + timeout
        while True:
            text = self._stdout.read_bytes().decode(errors="replace")
            if "\n" in text:
                first = text.split("\n", 1)[0]
                match = LISTENING.match(first)
                if not match or int(match["port"]) == 0:
                    raise StartFailed(f"{self.name}: first stdout line {first!r}")
                self.address = f"{match['host']}:{match['port']}"
                return self.address
            if self.popen.poll() is not None:
                raise StartFailed(f"{self.name} exited {self.popen.returncode} before listening")
            if time.monotonic() >= deadline:
                raise StartFailed(f"{self.name} printed no `listening on` line within {timeout:g} s")
            await asyncio.sleep(0.02)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    async def _wait_exit(self, timeout: float) -> int | None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None:
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.01)
        return self.popen.returncode

    async def kill(self) -> None:
        """SIGKILL and wait until the process is gone."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.kills += 1
        await self._wait_exit(30.0)

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM; the exit code, or None if it had to be killed after `timeout` seconds."""
        assert self.popen is not None
        if self.popen.poll() is not None:
            return self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        code = await self._wait_exit(timeout)
        if code is None:
            self.popen.kill()
            self.popen.wait(10)
        return code

    def force_stop(self) -> None:
        """Best effort when the soak itself is interrupted."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def log_findings(log_dir: Path) -> dict[str, Counter[str]]:
    """Per process: ERROR / CRITICAL log lines and tracebacks in its stderr files (every start)."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for path in sorted(log_dir.glob("*.stderr")):
        name = path.name.split(".", 1)[0]
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line:
                found[name]["ERROR lines"] += 1
            elif " CRITICAL " in line:
                found[name]["CRITICAL lines"] += 1
            elif line.startswith("Traceback"):
                found[name]["tracebacks"] += 1
    return found


# ------------------------------------------------------------------------------------------------
# Addresses and channels
# ------------------------------------------------------------------------------------------------


class Addresses:
    """Each server's current address; "" while it is down (marked before the kill)."""

    def __init__(self) -> None:
        self._current: dict[str, str] = {}

    def get(self, name: str) -> str:
        return self._current.get(name, "")

    def set(self, name: str, address: str) -> None:
        self._current[name] = address

    def mark_down(self, name: str) -> None:
        self._current[name] = ""


class ChannelPool:
    """One grpc.aio channel to a server's current address, replaced when the address changes.

    Superseded channels are closed only at the end: their server is dead, and closing them early
    would turn the calls still failing on them into CANCELLED.
    """

    def __init__(self, addresses: Addresses, name: str) -> None:
        self._addresses = addresses
        self._name = name
        self._address = ""
        self._channel: Any = None
        self._retired: list[Any] = []
        self.replacements = 0

    def current(self) -> tuple[str, Any]:
        """(address, channel), or ("", None) while the server is down."""
        address = self._addresses.get(self._name)
        if not address:
            return "", None
        if address != self._address:
            if self._channel is not None:
                self._retired.append(self._channel)
                self.replacements += 1
            self._address = address
            self._channel = grpc.aio.insecure_channel(address)
        return address, self._channel

    def is_current(self, address: str) -> bool:
        return self._addresses.get(self._name) == address

    async def close(self) -> None:
        for channel in [*self._retired, self._channel]:
            if channel is not None:
                await channel.close()
        self._retired.clear()
        self._channel = None
        self._address = ""


# ------------------------------------------------------------------------------------------------
# What the clients were told
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckEvent:
    position: int
    event_id: str
    stream_id: str
    stream_version: int
    type: str


@dataclass(frozen=True)
class Ack:
    """An acknowledged command: its id and the events its reply named."""

    command_id: str
    order_id: str
    kind: str
    events: tuple[AckEvent, ...]
    deduplicated: bool


def ack_from_reply(command_id: str, order_id: str, kind: str, reply: pb.CommandReply) -> Ack:
    events = tuple(
        AckEvent(int(e.position), e.event_id, e.stream_id, int(e.stream_version), e.type)
        for e in reply.events
    )
    return Ack(command_id, order_id, kind, events, bool(reply.deduplicated))


# ------------------------------------------------------------------------------------------------
# The event store, read-only
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    position: int
    stream_id: str
    stream_version: int
    type: str
    payload: dict[str, Any]
    event_id: str
    command_id: str


@dataclass(frozen=True)
class StoredCommand:
    command_id: str
    stream_id: str
    first_position: int
    last_position: int


def connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def head(path: Path) -> int:
    """The highest position in the log (0 before there is one)."""
    if not path.exists():
        return 0
    conn = connect_ro(path)
    try:
        (position,) = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
    except sqlite3.OperationalError:  # no events table yet
        return 0
    finally:
        conn.close()
    return int(position)


def read_events(path: Path) -> list[StoredEvent]:
    conn = connect_ro(path)
    try:
        rows = conn.execute(
            "SELECT position, stream_id, stream_version, type, payload,"
            " metadata ->> '$.event_id', metadata ->> '$.command_id' FROM events ORDER BY position"
        ).fetchall()
    finally:
        conn.close()
    return [
        StoredEvent(int(p), str(s), int(v), str(t), json.loads(payload), str(eid or ""), str(cid or ""))
        for p, s, v, t, payload, eid, cid in rows
    ]


def read_commands(path: Path) -> dict[str, StoredCommand]:
    conn = connect_ro(path)
    try:
        rows = conn.execute(
            "SELECT command_id, stream_id, first_position, last_position FROM commands"
        ).fetchall()
    finally:
        conn.close()
    return {str(c): StoredCommand(str(c), str(s), int(f), int(last)) for c, s, f, last in rows}


@dataclass
class Findings:
    """Mismatches of each kind, with up to a few examples each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(example)

    def total(self) -> int:
        return sum(self.counts.values())


def check_log(events: list[StoredEvent], findings: Findings) -> None:
    """a) positions are exactly 1..N; each stream's versions are 1..k in position order."""
    for expected, event in enumerate(events, start=1):
        if event.position != expected:
            findings.add("log: position gap", f"expected position {expected}, found {event.position}")
            break
    versions: dict[str, int] = defaultdict(int)
    for event in events:
        if event.stream_version != versions[event.stream_id] + 1:
            findings.add(
                "log: stream version gap",
                f"{event.stream_id} version {event.stream_version} after {versions[event.stream_id]}"
                f" (position {event.position})",
            )
        versions[event.stream_id] = event.stream_version
    event_ids = Counter(e.event_id for e in events)
    for event_id, n in event_ids.items():
        if n > 1 or not event_id:
            findings.add("log: event_id not unique", f"event_id {event_id!r} on {n} events")


def check_acks(acks: Iterable[Ack], events: list[StoredEvent], findings: Findings) -> None:
    """b) every acknowledged event is in the log at its position, with the same identity."""
    by_position = {e.position: e for e in events}
    for ack in acks:
        if not ack.events:
            findings.add("ack: reply without events", f"{ack.kind} {ack.command_id}")
        for got in ack.events:
            stored = by_position.get(got.position)
            if stored is None:
                findings.add(
                    "ack: acknowledged event lost",
                    f"{ack.kind} {ack.command_id} position {got.position} {got.stream_id}"
                    f" v{got.stream_version} not in the log",
                )
                continue
            theirs = (
                stored.event_id,
                stored.stream_id,
                stored.stream_version,
                stored.type,
                stored.command_id,
            )
            ours = (got.event_id, got.stream_id, got.stream_version, got.type, ack.command_id)
            if theirs != ours:
                findings.add(
                    "ack: acknowledged event differs from the log",
                    f"position {got.position}: reply {ours}"
                    f"{' (deduplicated)' if ack.deduplicated else ''}, log {theirs}",
                )


def check_commands(
    events: list[StoredEvent], commands: dict[str, StoredCommand], acks: Iterable[Ack], findings: Findings
) -> None:
    """c) no command applied twice; the `commands` table matches the events that carry each id."""
    groups: dict[str, list[StoredEvent]] = defaultdict(list)
    for event in events:
        if event.command_id:
            groups[event.command_id].append(event)
    for command_id, group in groups.items():
        positions = [e.position for e in group]
        contiguous = positions == list(range(positions[0], positions[0] + len(positions)))
        streams = {e.stream_id for e in group}
        if not contiguous or len(streams) != 1:
            findings.add(
                "command: applied more than once",
                f"{command_id} on positions {positions} of {sorted(streams)}",
            )
        record = commands.get(command_id)
        if record is None:
            findings.add("command: events without a commands row", f"{command_id} positions {positions}")
        elif (record.stream_id, record.first_position, record.last_position) != (
            group[0].stream_id,
            positions[0],
            positions[-1],
        ):
            findings.add(
                "command: commands row differs from its events",
                f"{command_id}: row {record.stream_id} {record.first_position}..{record.last_position},"
                f" events {group[0].stream_id} {positions[0]}..{positions[-1]}",
            )
    for command_id, record in commands.items():
        if command_id not in groups:
            findings.add(
                "command: commands row without events",
                f"{command_id} {record.stream_id} {record.first_position}..{record.last_position}",
            )
    for ack in acks:
        if ack.command_id not in commands:
            findings.add("command: acknowledged command not recorded", f"{ack.kind} {ack.command_id}")


# ------------------------------------------------------------------------------------------------
# The read models a replay of the log gives
# ------------------------------------------------------------------------------------------------

STATUS_NAMES = {
    pb.ORDER_STATUS_PENDING: "PENDING",
    pb.ORDER_STATUS_CONFIRMED: "CONFIRMED",
    pb.ORDER_STATUS_SHIPPED: "SHIPPED",
    pb.ORDER_STATUS_CANCELLED: "CANCELLED",
}
_NEXT_STATUS = {"OrderConfirmed": "CONFIRMED", "OrderShipped": "SHIPPED", "OrderCancelled": "CANCELLED"}


@dataclass
class ExpectedOrder:
    order_id: str
    customer_id: str
    items: tuple[tuple[str, int, int], ...]
    total: int
    status: str = "PENDING"
    version: int = 1
    tracking_number: str = ""
    cancel_reason: str = ""


@dataclass
class ExpectedCustomer:
    customer_id: str
    order_count: int = 0
    pending_count: int = 0
    confirmed_count: int = 0
    shipped_count: int = 0
    cancelled_count: int = 0
    total_value: int = 0


def replay(
    events: list[StoredEvent], findings: Findings
) -> tuple[dict[str, ExpectedOrder], dict[str, ExpectedCustomer]]:
    """Each order's status, version and total, and each customer's counts, from the payloads alone."""
    orders: dict[str, ExpectedOrder] = {}
    for event in events:
        payload = event.payload
        order_id = str(payload.get("order_id", ""))
        if event.stream_id != f"order-{order_id}":
            findings.add("replay: payload order_id differs from stream", f"position {event.position}")
        if event.type == "OrderCreated":
            items = tuple(
                (str(i["product_id"]), int(i["quantity"]), int(i["unit_price"])) for i in payload["items"]
            )
            total = int(payload["total"])
            if total != sum(q * p for _, q, p in items):
                findings.add("replay: total is not the sum of the items", f"position {event.position}")
            if order_id in orders:
                findings.add("replay: order created twice", f"{order_id} at position {event.position}")
            orders[order_id] = ExpectedOrder(order_id, str(payload["customer_id"]), items, total)
            continue
        order = orders.get(order_id)
        if order is None or event.type not in _NEXT_STATUS:
            findings.add("replay: unexpected event", f"{event.type} at position {event.position}")
            continue
        order.status = _NEXT_STATUS[event.type]
        order.version = event.stream_version
        if event.type == "OrderShipped":
            order.tracking_number = str(payload.get("tracking_number", ""))
        elif event.type == "OrderCancelled":
            order.cancel_reason = str(payload.get("reason", ""))
    customers: dict[str, ExpectedCustomer] = {}
    for order in orders.values():
        customer = customers.setdefault(order.customer_id, ExpectedCustomer(order.customer_id))
        customer.order_count += 1
        if order.status == "PENDING":
            customer.pending_count += 1
        elif order.status == "CONFIRMED":
            customer.confirmed_count += 1
        elif order.status == "SHIPPED":
            customer.shipped_count += 1
        else:
            customer.cancelled_count += 1
        if order.status != "CANCELLED":
            customer.total_value += order.total
    return orders, customers


def compare_order(expected: ExpectedOrder, view: pb.OrderView) -> list[str]:
    """What differs between a replayed order and the read service's OrderView."""
    got_items = tuple((i.product_id, int(i.quantity), int(i.unit_price)) for i in view.items)
    pairs: list[tuple[str, object, object]] = [
        ("customer_id", expected.customer_id, view.customer_id),
        ("status", expected.status, STATUS_NAMES.get(view.status, str(view.status))),
        ("version", expected.version, int(view.version)),
        ("total", expected.total, int(view.total)),
        ("items", expected.items, got_items),
        ("tracking_number", expected.tracking_number, view.tracking_number),
        ("cancel_reason", expected.cancel_reason, view.cancel_reason),
    ]
    return [f"{name}: expected {want!r}, read service {got!r}" for name, want, got in pairs if want != got]


def compare_customer(expected: ExpectedCustomer, summary: pb.CustomerSummary) -> list[str]:
    pairs: list[tuple[str, int, int]] = [
        ("order_count", expected.order_count, int(summary.order_count)),
        ("pending_count", expected.pending_count, int(summary.pending_count)),
        ("confirmed_count", expected.confirmed_count, int(summary.confirmed_count)),
        ("shipped_count", expected.shipped_count, int(summary.shipped_count)),
        ("cancelled_count", expected.cancelled_count, int(summary.cancelled_count)),
        ("total_value", expected.total_value, int(summary.total_value)),
    ]
    return [f"{name}: expected {want}, read service {got}" for name, want, got in pairs if want != got]
