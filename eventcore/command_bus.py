"""The command bus: one declarative handler per command type, decided against the stream's own
history, appended with group commit.

A handler says which stream a command addresses, whether it expects that stream to be new or to
exist, and how to decide events from the stream's state (Eventuous style). Commands are queued;
a single writer thread takes everything queued so far, decides each command in order against the
state its predecessors left, and commits the whole batch in one durable transaction. Under load a
batch holds many commands, so one fsync serves all of them; with one caller it holds one, so no
caller waits for a gathering window.

Several write services may share one store (PostgreSQL), so a cached stream state can be stale:
a refusal decided on a cached state is decided once more on the stored history, and a command the
store refuses for a version conflict is decided again on fresh state (a few rounds at most), where
a client's expected_version that differs from the real version is answered with ABORTED.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from eventcore.errors import (
    AlreadyExists,
    ApplicationError,
    CommandIdReused,
    ConcurrencyConflict,
    HandlerContractViolated,
    NotFound,
    Unavailable,
    Unregistered,
)
from eventcore.event_store import DuplicateCommand, EventStore, StorageFailure
from eventcore.events import CommandRecord, PendingAppend, RecordedEvent

log = logging.getLogger(__name__)

# Rounds of deciding a command whose append lost a race with another writer before answering ABORTED.
_CONFLICT_ROUNDS = 5

S = TypeVar("S")
C = TypeVar("C", bound="Command")


class Command(Protocol):
    """What the bus needs of every command: its idempotency key and optional expected version."""

    @property
    def command_id(self) -> str: ...

    @property
    def expected_version(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Aggregate(Generic[S]):
    """How one kind of stream folds its events into the state commands are decided on."""

    initial: S
    evolve: Callable[[S, Any], S]

    def fold(self, state: S, events: Sequence[Any]) -> S:
        for event in events:
            state = self.evolve(state, event)
        return state


class Expects(Enum):
    NEW_STREAM = "new"
    EXISTING_STREAM = "existing"


@dataclass(frozen=True, slots=True)
class CommandHandler(Generic[C, S]):
    """Declares how one command type becomes events."""

    aggregate: Aggregate[S]
    expects: Expects
    stream_id: Callable[[C], str]
    decide: Callable[[S, C], Sequence[Any]]
    describe: Callable[[C], str]  # names the entity in errors, e.g. "order 'A-1'"
    validate: Callable[[C], None] | None = None  # raises InvalidArgument before anything is queued


class CommandResult(NamedTuple):
    events: list[RecordedEvent]
    position: int  # global position of the last event: the store's version right after the command
    stream_version: int
    deduplicated: bool


class StreamStateCache:
    """Bounded LRU of stream states; the store's version check catches an entry another writer outdated."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def get(self, stream_id: str) -> tuple[Any, int] | None:
        entry = self._entries.get(stream_id)
        if entry is not None:
            self._entries.move_to_end(stream_id)
        return entry

    def put(self, stream_id: str, state: Any, version: int) -> None:
        if self._capacity <= 0:
            return
        self._entries[stream_id] = (state, version)
        self._entries.move_to_end(stream_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def discard(self, stream_id: str) -> None:
        self._entries.pop(stream_id, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class _Queued:
    handler: CommandHandler[Any, Any]
    command: Any
    future: asyncio.Future[CommandResult]


@dataclass(slots=True)
class _Decided:
    """A command decided within a batch, waiting for the batch's commit."""

    index: int
    stream_id: str
    state: Any
    version_after: int
    pending: PendingAppend
    exists_message: str  # for a command that expects a new stream: the refusal if it exists


class CommandBus:
    """Registers handlers per command type and dispatches commands through group commit."""

    def __init__(
        self,
        store: EventStore,
        *,
        stream_cache_size: int = 10_000,
        max_batch: int = 1_000,
    ) -> None:
        self._store = store
        self._handlers: dict[type[Any], CommandHandler[Any, Any]] = {}
        self._cache = StreamStateCache(stream_cache_size)
        self._max_batch = max_batch
        self._queue: deque[_Queued] = deque()
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-writer")
        self._closing = False

    def register(self, command_type: type[C], handler: CommandHandler[C, Any]) -> None:
        if command_type in self._handlers:
            raise ValueError(f"a handler for {command_type.__name__} is registered already")
        self._handlers[command_type] = handler

    async def dispatch(self, command: Command) -> CommandResult:
        """Decide and durably append one command; raises an ApplicationError on refusal."""
        return await self.submit(command)

    def submit(self, command: Command) -> asyncio.Future[CommandResult]:
        """Validate and queue one command; the future resolves once it is durable or refused.

        Invalid input raises here, before anything is queued. Commands submitted one after the
        other are decided in that order, so a stream of commands for one entity keeps its order.
        """
        handler = self._handlers.get(type(command))
        if handler is None:
            raise Unregistered(f"no command handler registered for {type(command).__name__}")
        if handler.validate is not None:
            handler.validate(command)
        if self._closing:
            raise Unavailable("the write service is shutting down")
        if self._writer is None:
            self._wakeup = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(handler, command, future))
        assert self._wakeup is not None
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Finish every queued command, then stop the writer. Safe to call twice."""
        self._closing = True
        if self._writer is not None and self._wakeup is not None:
            self._wakeup.set()
            await self._writer
            self._writer = None
        self._executor.shutdown(wait=True)

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            try:
                results = await loop.run_in_executor(self._executor, self._process_batch, batch)
            except BaseException as error:  # the batch as a whole failed: tell every caller
                log.exception("command batch of %d failed", len(batch))
                results = [error] * len(batch)
            for queued, result in zip(batch, results, strict=True):
                if queued.future.done():  # the caller gave up (deadline); its command may still land
                    continue
                if isinstance(result, BaseException):
                    queued.future.set_exception(result)
                else:
                    queued.future.set_result(result)

    def _process_batch(self, batch: list[_Queued], attempt: int = 1) -> list[CommandResult | BaseException]:
        """Runs on the writer thread: decide every command, then commit them together."""
        results: list[Any] = []  # CommandResult or the exception, per command; _Decided until committed
        overlay: dict[str, tuple[Any, int]] = {}  # stream states as this batch leaves them
        ids_in_batch: dict[str, tuple[int, str]] = {}  # command_id -> (index, fingerprint)
        unread: set[str] = set()  # streams a create in this batch assumed new without reading them
        retries_in_batch: list[tuple[int, int]] = []  # (retry index, original index)
        decided: list[_Decided] = []
        for index, queued in enumerate(batch):
            outcome: _Decided | CommandResult | BaseException
            try:
                outcome = self._decide(index, queued, overlay, ids_in_batch, unread)
            except _SameCommandInBatch as retry:
                retries_in_batch.append((index, retry.original_index))
                outcome = retry
            except ApplicationError as refusal:
                outcome = self._replay_or(refusal, queued.command)
            except Exception as bug:
                log.exception("command handler for %s failed", type(queued.command).__name__)
                outcome = bug
            if isinstance(outcome, _Decided):
                decided.append(outcome)
                overlay[outcome.stream_id] = (outcome.state, outcome.version_after)
            results.append(outcome)
        if decided:
            lost_races = self._commit(decided, results)
            if lost_races and attempt < _CONFLICT_ROUNDS:  # another writer moved these streams
                again = self._process_batch([batch[i] for i in lost_races], attempt + 1)
                for index, result in zip(lost_races, again, strict=True):
                    results[index] = result
        for index, original in retries_in_batch:
            first = results[original]
            results[index] = first._replace(deduplicated=True) if isinstance(first, CommandResult) else first
        return results

    def _commit(self, decided: list[_Decided], results: list[Any]) -> list[int]:
        """Append the decided commands in one transaction and put each outcome in its slot.

        Returns the indexes of the commands the store refused for a version conflict, to decide
        again: they were decided on a state another writer (or an earlier refused command of the
        batch) made stale.
        """
        lost_races: list[int] = []
        try:
            outcomes = self._store.append_batch([d.pending for d in decided])
        except StorageFailure as failure:
            error = Unavailable(str(failure))
            for d in decided:
                self._cache.discard(d.stream_id)
                results[d.index] = error
            return lost_races
        for d, appended in zip(decided, outcomes, strict=True):
            if isinstance(appended, ConcurrencyConflict):
                self._cache.discard(d.stream_id)
                results[d.index] = AlreadyExists(d.exists_message) if d.exists_message else appended
                if not d.exists_message:
                    lost_races.append(d.index)
            elif isinstance(appended, DuplicateCommand):
                try:
                    results[d.index] = self._replay(appended.record, d.pending.fingerprint)
                except ApplicationError as refusal:
                    results[d.index] = refusal
            else:
                self._cache.put(d.stream_id, d.state, d.version_after)
                results[d.index] = CommandResult(
                    appended, appended[-1].position, d.version_after, deduplicated=False
                )
        return lost_races

    def _decide(
        self,
        index: int,
        queued: _Queued,
        overlay: dict[str, tuple[Any, int]],
        ids_in_batch: dict[str, tuple[int, str]],
        unread: set[str],
    ) -> _Decided | CommandResult:
        handler, command = queued.handler, queued.command
        command_id: str = command.command_id
        fingerprint = repr(command) if command_id else ""
        if command_id:
            earlier_in_batch = ids_in_batch.get(command_id)
            if earlier_in_batch is not None:
                if earlier_in_batch[1] != fingerprint:
                    raise CommandIdReused(command_id)
                raise _SameCommandInBatch(earlier_in_batch[0])
            # Not looked up here: a retry of a command that was appended either is refused by the
            # rules (then _replay_or finds its record) or collides with its record's key in the
            # store (then the store reports DuplicateCommand). New commands cost no read.
        stream_id = handler.stream_id(command)
        exists_message = ""
        if handler.expects is Expects.NEW_STREAM:
            # No read: a stream this process has not seen is assumed new, and the store's unique
            # key refuses the append if it exists after all.
            exists_message = f"{handler.describe(command)} already exists"
            known = overlay.get(stream_id) or self._cache.get(stream_id)
            if known is not None and known[1] > 0:
                raise AlreadyExists(exists_message)
            state, version = handler.aggregate.initial, 0
            unread.add(stream_id)
        else:
            if stream_id in unread:
                # A create earlier in this batch assumed the stream new; if it exists after all,
                # that create will be refused, and this command must be decided on the real state.
                unread.discard(stream_id)
                history = self._store.read_stream(stream_id)
                if history:
                    aggregate = handler.aggregate
                    real = aggregate.fold(aggregate.initial, [e.data for e in history])
                    overlay[stream_id] = (real, len(history))
            state, version = self._load(handler.aggregate, stream_id, overlay)
        try:
            events = self._decide_on(handler, command, state, version)
        except ApplicationError:
            if stream_id in overlay or self._cache.get(stream_id) is None:
                raise
            # Decided on a cached state, which another writer may have outdated: decide on the store's.
            self._cache.discard(stream_id)
            state, version = self._load(handler.aggregate, stream_id, overlay)
            events = self._decide_on(handler, command, state, version)
        if command_id:
            ids_in_batch[command_id] = (index, fingerprint)
        return _Decided(
            index,
            stream_id,
            handler.aggregate.fold(state, events),
            version + len(events),
            PendingAppend(stream_id, version, events, command_id, fingerprint),
            exists_message,
        )

    @staticmethod
    def _decide_on(handler: CommandHandler[Any, Any], command: Any, state: Any, version: int) -> list[Any]:
        """The events `command` decides on `state` at `version`, or its refusal."""
        if handler.expects is Expects.EXISTING_STREAM and version == 0:
            raise NotFound(f"{handler.describe(command)} not found")
        expected = command.expected_version
        if expected is not None and expected != version:
            raise ConcurrencyConflict(handler.describe(command), expected, version)
        events = list(handler.decide(state, command))
        if not events:
            raise HandlerContractViolated(
                f"the handler for {type(command).__name__} decided no events; a command must record"
                " what it did or be refused with an error"
            )
        return events

    def _replay_or(self, refusal: ApplicationError, command: Any) -> CommandResult | ApplicationError:
        """A refused command may be the retry of one that succeeded: answer it as that one did."""
        if not command.command_id:
            return refusal
        record = self._store.find_command(command.command_id)
        if record is None:
            return refusal
        try:
            return self._replay(record, repr(command))
        except CommandIdReused as reused:
            return reused

    def _replay(self, record: CommandRecord, fingerprint: str) -> CommandResult:
        if record.fingerprint != fingerprint:
            raise CommandIdReused(record.command_id)
        events = self._store.read_command_events(record)
        return CommandResult(events, record.last_position, events[-1].stream_version, deduplicated=True)

    def _load(
        self, aggregate: Aggregate[Any], stream_id: str, overlay: dict[str, tuple[Any, int]]
    ) -> tuple[Any, int]:
        entry = overlay.get(stream_id) or self._cache.get(stream_id)
        if entry is not None:
            return entry
        history = self._store.read_stream(stream_id)
        state = aggregate.fold(aggregate.initial, [e.data for e in history])
        return state, len(history)


class _SameCommandInBatch(Exception):
    """Marks a retry queued in the same batch as its original; it gets the original's result."""

    def __init__(self, original_index: int) -> None:
        super().__init__(original_index)
        self.original_index = original_index
