"""ExecuteCommands against the real write service: a SIGKILL in the middle of a stream loses no
command whose outcome was acknowledged."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from e2e_support import Trio, create_request, event_rows, item, unique

from orders_api.v1 import orders_pb2

pytestmark = pytest.mark.e2e


def stored_events(trio: Trio) -> dict[int, tuple[str, int, str]]:
    return {p: (s, v, t) for p, s, v, t in event_rows(trio.events_db)}


def test_a_write_service_killed_mid_stream_loses_no_acknowledged_outcome(
    make_trio: Callable[..., Trio],
) -> None:
    trio = make_trio()
    trio.start_write()
    prefix = unique("bulk")
    total = 20_000

    def envelopes() -> Iterator[orders_pb2.CommandEnvelope]:
        for number in range(1, total + 1):
            yield orders_pb2.CommandEnvelope(
                correlation_id=number,
                create=create_request(f"{prefix}-{number}", items=[item("sku-1", 2, 150)]),
            )

    acked: list[orders_pb2.CommandReply] = []
    outcomes = trio.commands.ExecuteCommands(envelopes(), timeout=120)
    with pytest.raises(grpc.RpcError) as ended:
        for outcome in outcomes:
            assert outcome.WhichOneof("outcome") == "reply", outcome.error
            acked.append(outcome.reply)
            if len(acked) == 1_000:
                trio.write.kill9()  # outcomes already in flight may still arrive; each must be durable
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 1_000 <= len(acked) < total

    trio.start_write()  # recovery: the restarted service opens the store the kill left behind
    stored = stored_events(trio)
    for reply in acked:
        (event,) = reply.events
        assert stored.get(event.position) == (event.stream_id, 1, "OrderCreated"), event
    # And the restarted service goes on after the last durable position, gap-free.
    after = trio.commands.CreateOrder(create_request(f"{prefix}-after"), timeout=10)
    assert after.position == max(stored) + 1
