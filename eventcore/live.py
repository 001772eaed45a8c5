"""The live feed: the newest events of the log, read once for every live subscriber of a process.

One task follows the log while anybody subscribes: it sleeps until the store announces a commit
(a change signal), reads what is new, and keeps it in a window of at most `capacity` events that
every subscriber reads from. A subscriber that reads more slowly than the log grows is left behind
by the window, never the other way round: the feed does not wait for anyone, so writers are never
slowed and the memory held is bounded by the window whatever the subscribers do. A subscriber
outside the window goes back to the store (eventcore/subscriptions.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from eventcore.changes import ChangeSignal
from eventcore.event_store import EventLogReader
from eventcore.events import RecordedEvent


class LiveFeed:
    def __init__(
        self,
        reader: Callable[[], EventLogReader],
        changes: ChangeSignal,
        capacity: int = 10_000,
        page_size: int = 1_000,
        safety_look: float = 1.0,
    ) -> None:
        self._reader = reader
        self._changes = changes
        self._capacity = capacity
        self._page_size = page_size
        self._safety_look = safety_look
        self._events: list[RecordedEvent] = []  # positions _first .. _head, contiguous
        self._first = 1
        self._head = 0
        self._subscribers = 0
        self._task: asyncio.Task[None] | None = None
        self._advanced: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def attach(self) -> None:
        """A subscriber arrives; the first one starts the feed at the log's head.

        Raises what reading the head raises (e.g. Unavailable).
        """
        if not self.running:
            head = self._reader().head_position()
            self._events, self._first, self._head = [], head + 1, head
            self._task = asyncio.get_running_loop().create_task(self._follow(), name="live-feed")
        self._subscribers += 1

    def detach(self) -> None:
        """A subscriber leaves; with the last one the feed stops and lets its window go."""
        self._subscribers -= 1
        if self._subscribers == 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self._events = []
            self._wake()

    def events_after(self, position: int, limit: int) -> list[RecordedEvent] | None:
        """Up to `limit` events after `position` from the window; [] when the feed has nothing
        newer yet; None when the window no longer reaches back to `position + 1`."""
        if not self.reaches_back_to(position):
            return None
        start = position - self._first + 1
        return self._events[start : start + limit]

    def reaches_back_to(self, position: int) -> bool:
        """Whether the window holds every event after `position` that the feed has read."""
        return position >= self._first - 1

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        """Wait until the feed has read past `position` (True) or `timeout` passes (False)."""
        if self._head > position:
            return True
        if self._advanced is None or self._advanced.done():
            self._advanced = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._advanced)
        except TimeoutError:
            pass
        return self._head > position

    def check(self) -> None:
        """Raise what stopped the feed, if something did (subscribers then end with it)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error

    async def _follow(self) -> None:
        changes = self._changes
        try:
            while True:
                await self._read_new()
                await changes.wait_async(self._safety_look)
        finally:
            self._wake()  # waiting subscribers look again, and find the feed stopped

    async def _read_new(self) -> None:
        reader = self._reader()
        while True:
            page = reader.read_all(self._head, self._page_size)
            if not page:
                return
            self._events += page
            self._head = page[-1].position
            excess = len(self._events) - self._capacity
            if excess > 0:
                del self._events[:excess]
                self._first += excess
            self._wake()
            if len(page) < self._page_size:
                return
            await asyncio.sleep(0)  # a burst is read page by page; subscribers go on meanwhile

    def _wake(self) -> None:
        if self._advanced is not None and not self._advanced.done():
            self._advanced.set_result(None)
