"""Application errors, independent of any transport.

Domains and the core raise these; the gRPC edge maps each class to one status code in one table
(servicekit.status). Nothing in here knows about gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ApplicationError(Exception):
    """Base of every error that a client is meant to see, with a message for humans."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(ApplicationError):
    """One or more request fields are malformed; nothing was changed."""

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


class CommandIdReused(ApplicationError):
    """A command_id was already used by a different request."""

    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        super().__init__(f"command_id {command_id!r} was already used by a different request")


class NotFound(ApplicationError):
    """The addressed entity does not exist."""


class AlreadyExists(ApplicationError):
    """The entity to create exists already."""


class FailedPrecondition(ApplicationError):
    """The entity's state does not allow the requested change."""


class ConcurrencyConflict(ApplicationError):
    """The stream is not at the version the caller expected."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"expected version {expected} but {stream_id} is at version {actual}")


class OutOfRange(ApplicationError):
    """A position beyond what exists was asked for."""


class Unavailable(ApplicationError):
    """Storage is not there yet or not reachable; retrying later may succeed."""


class DeadlineExceeded(ApplicationError):
    """The caller's deadline passed before the answer was ready."""


class WaitTimedOut(Unavailable):
    """The read model did not reach the requested position within the server's wait limit."""


class Unregistered(ApplicationError):
    """A message was dispatched to a bus that has no handler for its type (a wiring bug)."""


class HandlerContractViolated(ApplicationError):
    """A handler broke the bus's contract, e.g. a command handler that decided no events."""


class StorageRefused(Exception):
    """A store that is not this program's (or is newer than it): the process exits 1 with this line."""
