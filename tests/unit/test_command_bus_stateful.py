"""The command bus against a small model of the order lifecycle, by stateful property testing.

Hypothesis drives random sequences of create/confirm/ship/cancel on a few orders, alone or queued
together (one group-commit batch), with retries under the same command_id, other requests under a
used command_id, right and wrong expected versions, and restarts of the bus (an empty cache) or of
the store. Each reply must be the one the model predicts, and after every step the store must hold
exactly what the model says: positions 1..N gap-free, each stream's versions 1..k, nothing appended
by a refused command, and each order's history folding to the model's status and version.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from eventcore.command_bus import CommandResult
from eventcore.errors import AlreadyExists, CommandIdReused, ConcurrencyConflict, FailedPrecondition, NotFound
from eventcore.event_store import EventStore
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.sqlite.event_store import SQLiteEventStore
from eventcore.sqlite.files import Synchronous
from orders.commands import CancelOrder, ConfirmOrder, CreateOrder, OrderCommand, ShipOrder
from orders.events import order_codec, stream_id
from orders.order import ORDER, OrderStatus

from .conftest import order_bus
from .support import item

ORDER_IDS = ("a", "b", "c")
KINDS = ("create", "confirm", "ship", "cancel")
# what each command needs the order to be in, and what it leaves it in
_ALLOWED: dict[type[Any], tuple[OrderStatus, ...]] = {
    ConfirmOrder: (OrderStatus.PENDING,),
    ShipOrder: (OrderStatus.CONFIRMED,),
    CancelOrder: (OrderStatus.PENDING, OrderStatus.CONFIRMED),
}
_AFTER: dict[type[Any], OrderStatus] = {
    CreateOrder: OrderStatus.PENDING,
    ConfirmOrder: OrderStatus.CONFIRMED,
    ShipOrder: OrderStatus.SHIPPED,
    CancelOrder: OrderStatus.CANCELLED,
}


@dataclass(frozen=True)
class Spec:
    """A command as drawn, before the model fills in its expected version and command_id."""

    kind: str
    order_id: str
    expectation: str  # "none", "right" or "wrong"
    wrong_by: int
    with_id: bool
    variant: int  # varies the payload, so requests under one command_id can differ


specs = st.builds(
    Spec,
    kind=st.sampled_from(KINDS),
    order_id=st.sampled_from(ORDER_IDS),
    expectation=st.sampled_from(("none", "right", "wrong")),
    wrong_by=st.sampled_from((-2, -1, 1, 2)),
    with_id=st.booleans(),
    variant=st.integers(0, 2),
)


class CommandBusMachine(RuleBasedStateMachine):
    """The model: per order its status and version, per used command_id its request and reply."""

    def make_store(self) -> EventStore:
        return InMemoryEventStore(order_codec())

    def reopen_store(self) -> None:
        """A store that lives in memory only cannot be reopened: keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = self.make_store()
        self.bus = order_bus(self.store)
        self.orders: dict[str, tuple[OrderStatus, int]] = {}
        self.replies: dict[str, tuple[OrderCommand, CommandResult]] = {}
        self.sent: list[OrderCommand] = []
        self.next_id = 0

    def teardown(self) -> None:
        self.loop.run_until_complete(self.bus.close())
        self.loop.close()
        self.store.close()

    # -- building commands --------------------------------------------------------------------

    def build(self, spec: Spec, command_id: str | None = None) -> OrderCommand:
        if command_id is None:
            command_id = ""
            if spec.with_id:
                self.next_id += 1
                command_id = f"cmd-{self.next_id}"
        if spec.kind == "create":
            items = (item(f"sku-{spec.variant}", spec.variant + 1, 100),)
            return CreateOrder(spec.order_id, f"cust-{spec.variant}", items, command_id)
        version = self.orders.get(spec.order_id, (None, 0))[1]
        wrong = max(0, version + spec.wrong_by)
        expected = {"none": None, "right": version, "wrong": wrong}[spec.expectation]
        if expected == version and spec.expectation == "wrong":
            expected = version + 1
        if spec.kind == "confirm":
            return ConfirmOrder(spec.order_id, expected, command_id)
        if spec.kind == "ship":
            return ShipOrder(spec.order_id, f"T-{spec.variant}", expected, command_id)
        return CancelOrder(spec.order_id, f"reason {spec.variant}", expected, command_id)

    # -- driving the bus ----------------------------------------------------------------------

    def run(self, commands: Sequence[OrderCommand]) -> None:
        """Queue the commands together (one batch) and check each reply against the model, in order."""

        async def submit_all() -> list[Any]:
            results: list[Any] = await asyncio.gather(
                *(self.bus.dispatch(c) for c in commands), return_exceptions=True
            )
            return results

        head_before = self.store.head_position()
        replies = self.loop.run_until_complete(submit_all())
        appended = 0
        for command, reply in zip(commands, replies, strict=True):
            appended += self.check(command, reply)
            self.sent.append(command)
        assert self.store.head_position() == head_before + appended

    def check(self, command: OrderCommand, reply: Any) -> int:
        """Assert `reply` is what the model predicts for `command`, update the model, return events added."""
        earlier = self.replies.get(command.command_id) if command.command_id else None
        if earlier is not None:
            original, first_reply = earlier
            if original == command:
                assert isinstance(reply, CommandResult), reply
                assert reply == first_reply._replace(deduplicated=True)
            else:
                assert isinstance(reply, CommandIdReused), reply
                assert reply.command_id == command.command_id
            return 0
        status, version = self.orders.get(command.order_id, (None, 0))
        if isinstance(command, CreateOrder):
            if status is not None:
                assert isinstance(reply, AlreadyExists), reply
                return 0
        elif status is None:
            assert isinstance(reply, NotFound), reply
            return 0
        elif command.expected_version is not None and command.expected_version != version:
            assert isinstance(reply, ConcurrencyConflict), reply
            assert (reply.expected, reply.actual) == (command.expected_version, version)
            assert f"expected version {command.expected_version}" in str(reply)
            assert f"at version {version}" in str(reply)
            return 0
        elif status not in _ALLOWED[type(command)]:
            assert isinstance(reply, FailedPrecondition), reply
            return 0
        assert isinstance(reply, CommandResult), reply
        assert not reply.deduplicated
        assert reply.stream_version == version + 1
        assert reply.position == reply.events[-1].position
        (event,) = reply.events
        assert (event.stream_id, event.stream_version) == (stream_id(command.order_id), version + 1)
        assert event.command_id == command.command_id
        self.orders[command.order_id] = (_AFTER[type(command)], version + 1)
        if command.command_id:
            self.replies[command.command_id] = (command, reply)
        return 1

    # -- rules --------------------------------------------------------------------------------

    @rule(spec=specs)
    def one_command(self, spec: Spec) -> None:
        self.run([self.build(spec)])

    @rule(batch=st.lists(specs, min_size=2, max_size=4))
    def commands_queued_together(self, batch: list[Spec]) -> None:
        # expected versions are drawn against the state before the batch, as concurrent clients would
        self.run([self.build(spec) for spec in batch])

    @rule(data=st.data())
    def retry_with_the_same_command_id(self, data: st.DataObject) -> None:
        with_ids = [c for c in self.sent if c.command_id]
        if with_ids:
            self.run([data.draw(st.sampled_from(with_ids))])

    @rule(data=st.data(), spec=specs)
    def another_request_under_a_used_command_id(self, data: st.DataObject, spec: Spec) -> None:
        used = sorted(self.replies)
        if used:
            command = self.build(spec, command_id=data.draw(st.sampled_from(used)))
            if command == self.replies[command.command_id][0]:  # drawn the same request after all
                command = replace(command, order_id="other")
            self.run([command])

    @rule(data=st.data(), times=st.integers(2, 3))
    def retries_queued_with_their_original(self, data: st.DataObject, times: int) -> None:
        command = self.build(data.draw(specs), command_id=f"cmd-{self.next_id + 1}")
        self.next_id += 1
        self.run([command] * times)

    @rule(cache=st.sampled_from((0, 1, 10_000)))
    def restart(self, cache: int) -> None:
        self.loop.run_until_complete(self.bus.close())
        self.reopen_store()
        self.bus = order_bus(self.store, stream_cache_size=cache)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def the_store_holds_what_the_model_says(self) -> None:
        events = self.store.read_all(0, 10_000)
        assert [e.position for e in events] == list(range(1, len(events) + 1))
        assert self.store.head_position() == len(events) == sum(v for _, v in self.orders.values())
        streams: dict[str, list[Any]] = {}
        for event in events:
            streams.setdefault(event.stream_id, []).append(event)
        assert set(streams) == {stream_id(o) for o in self.orders}
        for order_id, (status, version) in self.orders.items():
            history = streams[stream_id(order_id)]
            assert [e.stream_version for e in history] == list(range(1, version + 1))
            assert history == self.store.read_stream(stream_id(order_id))
            assert ORDER.fold(ORDER.initial, [e.data for e in history]).status is status
        for command_id, (_, reply) in self.replies.items():
            record = self.store.find_command(command_id)
            assert record is not None
            assert record.last_position == reply.position


class SQLiteCommandBusMachine(CommandBusMachine):
    """The same model over a SQLite file, reopened on restart (commands are remembered on disk)."""

    def make_store(self) -> EventStore:
        self.directory = Path(tempfile.mkdtemp(prefix="bus-model-"))
        return self.open_store()

    def open_store(self) -> SQLiteEventStore:
        return SQLiteEventStore.open(self.directory / "events.db", order_codec(), Synchronous.OFF)

    def reopen_store(self) -> None:
        self.store.close()
        self.store = self.open_store()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestCommandBusOnMemory = CommandBusMachine.TestCase
TestCommandBusOnMemory.settings = _SETTINGS
TestCommandBusOnSQLite = SQLiteCommandBusMachine.TestCase
TestCommandBusOnSQLite.settings = _SETTINGS
