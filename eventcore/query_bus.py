"""The query bus: one handler per query type, answered from one read-only snapshot.

A handler declares the projections it reads; the answer carries the position up to which those
projections had applied events in the snapshot it was computed from, so the version a client sees
always matches the data it got.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from eventcore.errors import ApplicationError, Unregistered
from eventcore.read_store import WHOLE_PROJECTION, ReadStoreReader, ReadView

Q = TypeVar("Q")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class QueryHandler(Generic[Q, R]):
    reads: tuple[str, ...]  # names of the projections the handler reads
    handle: Callable[[ReadView, Q], R]
    validate: Callable[[Q], None] | None = None  # raises InvalidArgument before any waiting
    # The streams an answer depends on; None: any stream of the projections it reads. An answer
    # depending on a parked stream is not consistent, whatever the versions say.
    streams: Callable[[Q], tuple[str, ...]] | None = None


class QueryResult(NamedTuple, Generic[R]):
    """The answer, or the refusal (e.g. NotFound), and the read-model version either came from."""

    value: R | None
    read_model_version: int
    refusal: ApplicationError | None = None
    depends_on_parked: bool = False  # the answer may miss events of a parked stream


def _depends_on_parked(view: ReadView, handler: QueryHandler[Any, Any], query: Any) -> bool:
    parked = [p for p in view.parked_streams() if p.projection in handler.reads]
    if not parked:
        return False
    if handler.streams is None or any(p.stream_id == WHOLE_PROJECTION for p in parked):
        return True
    streams = set(handler.streams(query))
    return any(p.stream_id in streams for p in parked)


class QueryBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Any], QueryHandler[Any, Any]] = {}

    def register(self, query_type: type[Q], handler: QueryHandler[Q, Any]) -> None:
        if query_type in self._handlers:
            raise ValueError(f"a handler for {query_type.__name__} is registered already")
        self._handlers[query_type] = handler

    def handler_for(self, query: object) -> QueryHandler[Any, Any]:
        handler = self._handlers.get(type(query))
        if handler is None:
            raise Unregistered(f"no query handler registered for {type(query).__name__}")
        return handler

    def validate(self, query: object) -> None:
        """Refuse a malformed query at once, before it waits for any position."""
        handler = self.handler_for(query)
        if handler.validate is not None:
            handler.validate(query)

    def ask(self, store: ReadStoreReader, query: object) -> QueryResult[Any]:
        """Answer from one snapshot; a refusal comes back with the version it was decided at."""
        handler = self.handler_for(query)
        with store.snapshot() as view:
            version = min((view.position(name) for name in handler.reads), default=0)
            try:
                value = handler.handle(view, query)
            except ApplicationError as refusal:
                return QueryResult(None, version, refusal)
            parked = _depends_on_parked(view, handler, query)
        return QueryResult(value, version, None, parked)

    def read_model_version(self, store: ReadStoreReader, query: object) -> int:
        """The version the query's projections have reached right now."""
        handler = self.handler_for(query)
        with store.snapshot() as view:
            return min((view.position(name) for name in handler.reads), default=0)
