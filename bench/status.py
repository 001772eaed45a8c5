"""How far the read model has got, asked the way a user would: `GetProjectionStatus` on the read service.

Used to wait for a projection to catch up, and to time catch-up from the projector's own checkpoints
rather than from process start-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc

from bench.api import grpc_api
from orders_api.v1 import orders_pb2

log = logging.getLogger(__name__)

POLL_S = 0.02


@dataclass(frozen=True)
class Sample:
    """One observation: when, the slowest projection's position, and the event-store head."""

    at: float
    position: int
    head: int


class ProjectionWatcher:
    """Polls one read service; the position is the minimum over all its projections."""

    def __init__(self, read_address: str) -> None:
        self._channel = grpc.insecure_channel(read_address)
        self._stub = grpc_api.OrderQueryServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def sample(self) -> Sample | None:
        """The current position, or None while the read model does not exist yet (UNAVAILABLE)."""
        try:
            reply = self._stub.GetProjectionStatus(orders_pb2.GetProjectionStatusRequest(), timeout=5)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
            raise
        positions = [int(p.position) for p in reply.projections]
        position = min(positions) if positions else 0
        return Sample(time.perf_counter(), position, int(reply.event_store_version))

    def wait_for(self, position: int, timeout: float) -> list[Sample]:
        """Poll until every projection has applied `position`; returns the samples seen.

        Raises TimeoutError (with the last position) when the projector does not get there in time.
        """
        samples: list[Sample] = []
        deadline = time.monotonic() + timeout
        last_logged = time.monotonic()
        while True:
            sample = self.sample()
            if sample is not None:
                samples.append(sample)
                if sample.position >= position:
                    return samples
            now = time.monotonic()
            if now > deadline:
                seen = samples[-1].position if samples else "nothing"
                raise TimeoutError(f"read model at {seen} of {position} after {timeout:.0f} s")
            if now - last_logged > 10:
                log.info("projection at %s of %d", samples[-1].position if samples else "?", position)
                last_logged = now
            time.sleep(POLL_S)

    def head(self) -> int:
        """The event store's head position as the read service sees it."""
        sample = None
        deadline = time.monotonic() + 30
        while sample is None:
            sample = self.sample()
            if sample is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("read service stayed UNAVAILABLE for 30 s")
                time.sleep(POLL_S)
        return sample.head


def steady_rate(samples: list[Sample], target: int, started: float) -> tuple[float, float, str]:
    """(events/s, seconds, how) to reach `target`.

    From the first observed progress when the polls saw at least half the work happen, so start-up
    (interpreter, imports, migrations) is left out; it is reported separately as wall time. A log
    projected too fast for that (a quick run's) is timed from `started` instead, start-up included.
    """
    moving = [s for s in samples if s.position > 0]
    if not moving:
        return 0.0, 0.0, "none"
    first, last = moving[0], moving[-1]
    done = min(last.position, target)
    if last.at > first.at and first.position <= done / 2:
        return (done - first.position) / (last.at - first.at), last.at - first.at, "from first progress"
    return done / (last.at - started), last.at - started, "from start, start-up included"
