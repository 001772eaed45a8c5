"""The read path as one call: validate, wait for min_position, answer from one snapshot, attach versions.

Every query of a read service goes the same way, whatever its transport: refuse a malformed query at
once, wait (read-your-writes) until the read models it reads have applied `min_position`, answer from
one snapshot, and say which read-model and event-store versions the answer belongs to, errors
included. `ReadPath.ask` is that path for one answer; `ReadPath.watch` repeats it each time the read
models move, for streaming queries. The transport only translates messages and statuses.

`PositionWatch` is the one waiting room: a single task serves every waiting call and runs only while
some call waits, so an idle or a non-waiting query load costs nothing. Given the read store's change
signal it looks at the positions when the projector announces a commit (and once a second at most
otherwise); without one it looks every `interval`.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from eventcore.changes import ChangeSignal
from eventcore.errors import ApplicationError, DeadlineExceeded, NotFound, OutOfRange, WaitTimedOut
from eventcore.query_bus import QueryBus
from eventcore.read_store import ReadStoreReader

R = TypeVar("R")

Positions = Callable[[], Mapping[str, int]]  # projection name -> applied position
VersionSink = Callable[[int, int], None]  # (read_model_version, event_store_version)

# Answer a little before the caller's deadline, so it gets our status rather than its own timeout.
DEADLINE_MARGIN = 0.005


class HeadReader(Protocol):
    def head_position(self) -> int: ...


class ReadSources(Protocol):
    """What one answer is computed from: the read models and the event store's head."""

    @property
    def read_model(self) -> ReadStoreReader: ...

    @property
    def events(self) -> HeadReader: ...


class Answer(NamedTuple, Generic[R]):
    """A query's value and the versions it belongs to."""

    value: R
    read_model_version: int
    event_store_version: int
    is_consistent: bool


# -- waiting for a position ----------------------------------------------------------------------


@dataclass(slots=True)
class _Waiter:
    position: int
    projections: tuple[str, ...]
    future: asyncio.Future[int]


def reached(positions: Mapping[str, int], projections: tuple[str, ...]) -> int:
    """The position every one of `projections` has applied."""
    return min((positions.get(name, 0) for name in projections), default=0)


class PositionWatch:
    def __init__(
        self,
        read_positions: Positions,
        changes: ChangeSignal | None = None,
        interval: float = 0.001,
        safety_look: float = 1.0,
    ) -> None:
        self._read_positions = read_positions
        self._changes = changes
        self._interval = interval
        self._safety_look = safety_look
        self._waiters: list[_Waiter] = []
        self._poller: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many calls wait for a position now."""
        return len(self._waiters)

    async def wait_for(self, position: int, projections: tuple[str, ...], timeout: float | None) -> int:
        """The version the projections reached once it is >= position.

        Raises TimeoutError after `timeout` seconds (None: no limit), or what reading the
        positions raised.
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
            if self._changes is None:
                await asyncio.sleep(self._interval)
            else:
                await self._changes.wait_async(self._safety_look)
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


# -- the path --------------------------------------------------------------------------------------


class ReadPath:
    """Answers queries of one query bus from the sources `sources()` returns (raises Unavailable
    while they cannot be opened)."""

    def __init__(
        self,
        bus: QueryBus,
        sources: Callable[[], ReadSources],
        watch: PositionWatch,
        max_wait: float,
    ) -> None:
        self._bus = bus
        self._sources = sources
        self._watch = watch
        self._max_wait = max_wait

    async def ask(
        self,
        query: object,
        min_position: int = 0,
        time_remaining: float | None = None,
        versions: VersionSink | None = None,
    ) -> Answer[Any]:
        """Validate, wait for min_position if asked, answer from one snapshot.

        `time_remaining` is the caller's deadline in seconds from now (None: no deadline);
        `versions` receives the two versions of the answer, or of the refusal when it raises.
        Raises InvalidArgument, OutOfRange, DeadlineExceeded, WaitTimedOut, Unavailable, or the
        handler's refusal (e.g. NotFound).
        """
        sources = self._sources()
        try:
            self._bus.validate(query)
            if min_position:
                await self._wait_for(sources, query, min_position, time_remaining)
            return self._answer(sources, query, versions)
        except Exception:
            if versions is not None:
                self._report_current(sources, query, versions)
            raise

    async def watch(
        self,
        query: object,
        min_position: int = 0,
        time_remaining: float | None = None,
        changed: Callable[[Any, Any], bool] = operator.ne,
    ) -> AsyncIterator[Answer[Any]]:
        """The first answer as `ask` gives it, then a new answer each time the read models have
        moved past the last answered position and `changed(previous value, new value)` holds.

        A refusal of the first answer is raised (e.g. NotFound); a later refusal (the value went
        away) is passed over until the value comes back. Runs until the consumer stops iterating.
        """
        first = await self.ask(query, min_position, time_remaining)
        yield first
        projections = self._bus.handler_for(query).reads
        last_version, last_value = first.read_model_version, first.value
        while True:
            await self._watch.wait_for(last_version + 1, projections, None)
            sources = self._sources()
            try:
                answer = self._answer(sources, query, None)
            except NotFound:
                last_version = self._bus.read_model_version(sources.read_model, query)
                continue
            last_version = answer.read_model_version
            if changed(last_value, answer.value):
                last_value = answer.value
                yield answer

    async def after(self, query: object, version: int) -> Answer[Any]:
        """The query's answer once its read models have moved past `version`, however long that
        takes: how a watch asks what changed since its last answer."""
        await self._watch.wait_for(version + 1, self._bus.handler_for(query).reads, None)
        return self._answer(self._sources(), query, None)

    def _answer(self, sources: ReadSources, query: object, versions: VersionSink | None) -> Answer[Any]:
        head = sources.events.head_position()
        result = self._bus.ask(sources.read_model, query)
        if versions is not None:
            versions(result.read_model_version, head)
        if result.refusal is not None:
            raise result.refusal
        version = result.read_model_version
        consistent = version >= head and not result.depends_on_parked
        return Answer(result.value, version, head, consistent)

    def _report_current(self, sources: ReadSources, query: object, versions: VersionSink) -> None:
        """Versions for a refusal; storage trouble at that point leaves them unsent."""
        try:
            head = sources.events.head_position()
            versions(self._bus.read_model_version(sources.read_model, query), head)
        except ApplicationError:
            pass

    async def _wait_for(
        self, sources: ReadSources, query: object, min_position: int, remaining: float | None
    ) -> None:
        head = sources.events.head_position()
        if min_position > head:
            raise OutOfRange(f"min_position {min_position} is beyond the event store's head position {head}")
        deadline_first = remaining is not None and remaining - DEADLINE_MARGIN < self._max_wait
        timeout = max(remaining - DEADLINE_MARGIN, 0.0) if deadline_first and remaining else self._max_wait
        projections = self._bus.handler_for(query).reads
        try:
            await self._watch.wait_for(min_position, projections, timeout)
        except TimeoutError:
            if deadline_first:
                raise DeadlineExceeded(
                    f"the read model did not reach position {min_position} before the call's deadline"
                ) from None
            raise WaitTimedOut(
                f"the read model did not reach position {min_position} within {self._max_wait:g} s"
            ) from None
