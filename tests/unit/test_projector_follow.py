"""The projector's follow loop never waits while the log holds more than a batch, and wakes on each
announced commit. The idle look is long here, so a wrong wait fails the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from eventcore.changes import ManualChanges
from eventcore.events import PendingAppend
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import ProjectionRunner
from orders.events import OrderCreated, OrderItem, order_codec
from orders.projections import PROJECTIONS
from projector import app as projector_app

IDLE_LOOK_S = 30.0  # far beyond the test's deadline: only announcements may wake the loop


def append_orders(store: InMemoryEventStore, first: int, count: int) -> None:
    item = (OrderItem("p-1", 1, 100),)
    store.append_batch(
        [
            PendingAppend(f"order-o-{n}", 0, [OrderCreated(f"o-{n}", "c-1", item, 100)], f"cmd-{n}", "")
            for n in range(first, first + count)
        ]
    )


class Following:
    def __init__(self, batch_size: int) -> None:
        self.log = InMemoryEventStore(order_codec())
        self.read_store = InMemoryReadStoreWriter()
        self.changes = ManualChanges()
        self.stop = threading.Event()
        settings = projector_app.Settings("unused", "unused", batch_size=batch_size, idle_look=IDLE_LOOK_S)
        runner = ProjectionRunner(self.log, self.read_store, PROJECTIONS, batch_size)
        signal = self.changes.signal()
        self.thread = threading.Thread(
            target=projector_app.follow, args=(runner, settings, self.stop, signal), daemon=True
        )

    def projected(self) -> int:
        return min((c.position for c in self.read_store.checkpoints().values()), default=-1)

    def wait_for(self, position: int) -> None:
        deadline = time.monotonic() + 5
        while self.projected() < position:
            assert time.monotonic() < deadline, f"projected {self.projected()} of {position}"
            time.sleep(0.001)


StartFollowing = Callable[[int], Following]


@pytest.fixture
def start_following() -> Iterator[StartFollowing]:
    """Starts follow() in a thread with the given batch size; stops it after the test."""
    made: list[Following] = []

    def start(batch_size: int) -> Following:
        follower = Following(batch_size)
        follower.thread.start()
        made.append(follower)
        return follower

    yield start
    for follower in made:
        follower.stop.set()
        follower.changes.announce()
        follower.thread.join(5)
        assert not follower.thread.is_alive()


def test_a_full_batch_is_followed_by_the_next_without_waiting(start_following: StartFollowing) -> None:
    follower = start_following(2)
    follower.wait_for(0)
    append_orders(follower.log, 1, 5)
    follower.changes.announce()  # one announcement for five events: batches of 2, 2 and 1
    follower.wait_for(5)
    append_orders(follower.log, 6, 1)
    follower.changes.announce()
    follower.wait_for(6)
