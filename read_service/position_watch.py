"""Read-your-writes: wait until the read models a query reads have applied a position.

One poller serves every waiting call, and runs only while some call waits, so an idle or a
non-waiting query load costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Positions = Callable[[], Mapping[str, int]]  # projection name -> applied position


@dataclass(slots=True)
class _Waiter:
    position: int
    projections: tuple[str, ...]
    future: asyncio.Future[int]


def reached(positions: Mapping[str, int], projections: tuple[str, ...]) -> int:
    return min((positions.get(name, 0) for name in projections), default=0)


class PositionWatch:
    def __init__(self, read_positions: Positions, interval: float = 0.001) -> None:
        self._read_positions = read_positions
        self._interval = interval
        self._waiters: list[_Waiter] = []
        self._poller: asyncio.Task[None] | None = None

    async def wait_for(self, position: int, projections: tuple[str, ...], timeout: float) -> int:
        """The version the projections reached once it is >= position.

        Raises TimeoutError after `timeout` seconds, or what reading the positions raised.
        """
        version = reached(self._read_positions(), projections)
        if version >= position:
            return version
        loop = asyncio.get_running_loop()
        waiter = _Waiter(position, projections, loop.create_future())
        self._waiters.append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll())
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(self._interval)
            try:
                positions = self._read_positions()
            except Exception as error:  # storage trouble: the waiting calls fail with it
                for waiter in self._waiters:
                    if not waiter.future.done():
                        waiter.future.set_exception(error)
                self._waiters.clear()
                return
            for waiter in list(self._waiters):
                version = reached(positions, waiter.projections)
                if version >= waiter.position:
                    if not waiter.future.done():
                        waiter.future.set_result(version)
                    self._waiters.remove(waiter)
