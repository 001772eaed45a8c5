"""Change signals: how a reader learns that a store it follows has new commits, without a timer.

A store's writer announces each commit; the backend carries the announcement to every process that
follows the store (SQLite: a file watch on the writer's lock file; PostgreSQL: LISTEN/NOTIFY), and a
`ChangeHub` in that process fans it out to the threads and coroutines waiting. An announcement may
be spurious, and one may be lost (a writer that was not running yet, a file that was replaced), so
waiters always bound their wait and look once more when it ends: a slow safety look is the
fallback, never the mechanism.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod


class ChangeSignal(ABC):
    """One waiter's view of a store's announcements; each signal remembers what it has seen."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block until a change was announced since this signal's previous wait returned (or since it
        was made), or until `timeout` seconds pass; True on a change."""

    @abstractmethod
    async def wait_async(self, timeout: float) -> bool:
        """The same, for a coroutine: the event loop keeps running meanwhile."""

    @abstractmethod
    def wake(self) -> None:
        """End the current and the next wait at once, as a change would (e.g. to stop a follower)."""

    def close(self) -> None:
        """Release what this signal holds; the default holds nothing."""


class ChangeHub:
    """Fans one source of announcements out to any number of signals, in threads and event loops.

    `announce` may be called from any thread; a generation counter makes every announcement
    visible to every signal exactly when it next waits, so none is lost between two waits.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._futures: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}

    @property
    def generation(self) -> int:
        return self._generation

    def announce(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()
            futures, self._futures = self._futures, {}
        for loop, future in futures.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    def signal(self) -> HubSignal:
        return HubSignal(self)

    def _wait(self, seen: int, timeout: float) -> int:
        with self._condition:
            if self._generation == seen:
                self._condition.wait(timeout)
            return self._generation

    def _future(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        with self._condition:
            future = self._futures.get(loop)
            if future is None:
                future = self._futures[loop] = loop.create_future()
            return future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class HubSignal(ChangeSignal):
    """A signal fed by a ChangeHub."""

    def __init__(self, hub: ChangeHub) -> None:
        self._hub = hub
        self._seen = hub.generation

    def wait(self, timeout: float) -> bool:
        generation = self._hub._wait(self._seen, timeout)
        return self._saw(generation)

    async def wait_async(self, timeout: float) -> bool:
        hub = self._hub
        if hub.generation == self._seen:
            future = hub._future(asyncio.get_running_loop())
            if hub.generation == self._seen:  # no announcement slipped in before the future existed
                try:
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(future)
                except TimeoutError:
                    pass
        return self._saw(hub.generation)

    def wake(self) -> None:
        """Announces on the hub: every signal of it wakes (a spurious wake is harmless)."""
        self._hub.announce()

    def _saw(self, generation: int) -> bool:
        changed = generation != self._seen
        self._seen = generation
        return changed


class ChangeSource(ABC):
    """The announcements of one store in one process (a file watch, a LISTEN connection...), handed
    out as any number of signals. Backends subclass it and call `self.hub.announce()`."""

    def __init__(self) -> None:
        self.hub = ChangeHub()

    def signal(self) -> ChangeSignal:
        return self.hub.signal()

    @abstractmethod
    def close(self) -> None:
        """Stop listening; signals handed out then only time out. Idempotent."""


class ManualChanges(ChangeSource):
    """Announced by the code that commits, in the same process (in-memory stores, tests)."""

    def announce(self) -> None:
        self.hub.announce()

    def close(self) -> None:
        pass
