"""The parking rules: a failing handler parks its stream for its projection only; the rest go on;
retry and skip resolve a park; too many parks fail the projection; unknown event types pass; and
the lag health that follows from the projections' state."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from eventcore import parking
from eventcore.codec import EventCodec
from eventcore.events import PendingAppend
from eventcore.lag_health import LagHealth
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import Projection, ProjectionRunner
from eventcore.projection_status import ProjectionStatus
from eventcore.read_store import WHOLE_PROJECTION, Collection, UnitOfWork
from eventcore.verify import verify
from orders import queries
from orders.events import OrderConfirmed, OrderCreated, OrderItem, order_codec, stream_id
from orders.projections import ORDER_VIEW, PRODUCT_SALES, PROJECTIONS


@pytest.fixture
def deferred_store() -> InMemoryEventStore:
    return InMemoryEventStore(order_codec().deferred())


def created(store: InMemoryEventStore, order_id: str, customer: str = "c") -> None:
    event = OrderCreated(order_id, customer, (OrderItem("p", 1, 10),), 10)
    store.append(PendingAppend(stream_id(order_id), 0, [event]))


def confirmed(store: InMemoryEventStore, order_id: str, version: int = 1) -> None:
    store.append(PendingAppend(stream_id(order_id), version, [OrderConfirmed(order_id)]))


def runner_over(
    store: InMemoryEventStore, views: InMemoryReadStoreWriter, **options: Any
) -> ProjectionRunner:
    runner = ProjectionRunner(store, views, PROJECTIONS, batch_size=50, **options)
    runner.prepare()
    return runner


def order_status(views: InMemoryReadStoreWriter, order_id: str) -> str | None:
    result = queries.query_bus().ask(views.reader(), queries.GetOrder(order_id))
    return None if result.value is None else result.value["status"]


def orphan_confirm(store: InMemoryEventStore, order_id: str) -> None:
    """A confirm for an order no read model ever saw (written as a broken log would hold it)."""
    store.append(PendingAppend(stream_id(order_id), 0, [OrderConfirmed(order_id)]))


def test_a_failing_stream_is_parked_for_each_projection_that_fails_and_the_rest_go_on(
    deferred_store: InMemoryEventStore,
) -> None:
    views = InMemoryReadStoreWriter()
    runner = runner_over(deferred_store, views)
    created(deferred_store, "a")
    orphan_confirm(deferred_store, "ghost")  # position 2
    created(deferred_store, "b")
    confirmed(deferred_store, "a")
    runner.run_until_idle()
    assert runner.positions == {"order_view": 4, "customer_summary": 4, "product_sales": 4}
    parked = views.parked_streams()
    # product sales ignores confirmations: only the two projections whose handler failed park it
    assert sorted(parked) == [("customer_summary", "order-ghost"), ("order_view", "order-ghost")]
    assert parked[("order_view", "order-ghost")].position == 2
    assert "ProjectionInconsistency" in parked[("order_view", "order-ghost")].error
    assert order_status(views, "a") == "CONFIRMED" and order_status(views, "b") == "PENDING"
    answer = queries.query_bus().ask(views.reader(), queries.GetOrder("a"))
    assert answer.depends_on_parked is False
    summary = queries.query_bus().ask(views.reader(), queries.GetCustomerSummary("c"))
    assert summary.depends_on_parked is True  # a summary may miss a parked stream's events


def test_a_parked_streams_later_events_wait_and_retry_applies_them_after_a_fix(
    deferred_store: InMemoryEventStore,
) -> None:
    views = InMemoryReadStoreWriter()
    broken = {"on": True}

    def flaky_created(work: UnitOfWork, event: Any) -> None:
        if broken["on"] and event.data.order_id == "bad":
            raise RuntimeError("handler bug")
        work.put(NOTES, event.data.order_id, {"n": event.position})

    def noted_confirm(work: UnitOfWork, event: Any) -> None:
        note = work.get(NOTES, event.data.order_id)
        assert note is not None
        note["confirmed"] = event.position
        work.put(NOTES, event.data.order_id, note)

    NOTES = Collection("notes")
    notes = Projection("notes", 1, (NOTES,), {OrderCreated: flaky_created, OrderConfirmed: noted_confirm})
    runner = ProjectionRunner(deferred_store, views, [notes], batch_size=50)
    runner.prepare()
    created(deferred_store, "bad")
    created(deferred_store, "good")
    confirmed(deferred_store, "bad")  # waits behind the parked creation
    runner.run_until_idle()
    assert list(views.parked_streams()) == [("notes", "order-bad")]

    def note(key: str) -> Any:
        with views.reader().snapshot() as view:
            return view.get(NOTES, key)

    assert note("bad") is None and note("good") == {"n": 2}
    assert (
        parking.retry(deferred_store, views, notes, "order-bad")[0].parked_again is not None
    )  # still broken
    broken["on"] = False
    resolution = parking.retry(deferred_store, views, notes, "order-bad")[0]
    assert (resolution.applied, resolution.parked_again) == (2, None)
    assert note("bad") == {"n": 1, "confirmed": 3}
    assert views.parked_streams() == {}
    created(deferred_store, "after")
    runner.run_until_idle()
    assert note("after") == {"n": 4}


def test_skip_drops_the_failing_event_records_it_and_applies_the_rest(
    deferred_store: InMemoryEventStore,
) -> None:
    views = InMemoryReadStoreWriter()
    runner = runner_over(deferred_store, views)
    orphan_confirm(deferred_store, "ghost")
    runner.run_until_idle()
    resolution = parking.skip(deferred_store, views, ORDER_VIEW, "order-ghost")
    assert resolution.parked_again is None
    with views.reader().snapshot() as view:
        assert [(k.projection, k.stream_id, k.position) for k in view.skipped_events()] == [
            ("order_view", "order-ghost", 1)
        ]
    assert ("order_view", "order-ghost") not in views.parked_streams()
    assert ("customer_summary", "order-ghost") in views.parked_streams()  # its own park stays
    with pytest.raises(parking.NotParked):
        parking.skip(deferred_store, views, ORDER_VIEW, "order-ghost")
    # verify replays with the recorded skip, so the skipped projection compares equal
    verdicts = {v.projection: v for v in verify(deferred_store, views.reader(), PROJECTIONS)}
    assert all(not v.differences for v in verdicts.values()), verdicts


def test_more_than_max_parked_streams_fail_the_projection_only(deferred_store: InMemoryEventStore) -> None:
    views = InMemoryReadStoreWriter()
    runner = runner_over(deferred_store, views, max_parked=2)
    for n in range(4):
        orphan_confirm(deferred_store, f"ghost-{n}")  # positions 1..4
    created(deferred_store, "later")  # position 5
    runner.run_until_idle()
    parked = views.parked_streams()
    whole = parked[("order_view", WHOLE_PROJECTION)]
    assert whole.position == 3 and "more than 2 streams parked" in whole.error
    assert runner.positions["order_view"] == 2  # stopped before the event that failed it
    assert runner.positions["product_sales"] == 5  # the others go on
    assert runner.run_once() == 0  # a failed projection is not read again and again
    parking.retry(deferred_store, views, ORDER_VIEW, WHOLE_PROJECTION)  # resume: it fails again, no loop
    runner.run_until_idle()
    assert ("order_view", WHOLE_PROJECTION) in views.parked_streams()


def test_event_types_no_projection_handles_are_passed_over_undecoded_and_counted() -> None:
    codec = EventCodec()
    codec.register(OrderCreated)
    store = InMemoryEventStore(order_codec())  # the writer knows every type ...
    created(store, "a")
    confirmed(store, "a")
    store._codec = codec.deferred()  # ... this reader knows only OrderCreated
    views = InMemoryReadStoreWriter()
    runner = runner_over(store, views)
    runner.run_until_idle()
    assert runner.positions == {"order_view": 2, "customer_summary": 2, "product_sales": 2}
    assert runner.unhandled_types == {"OrderConfirmed": 1}
    assert views.parked_streams() == {}
    assert order_status(views, "a") == "PENDING"


def test_only_handled_types_are_decoded(deferred_store: InMemoryEventStore) -> None:
    created(deferred_store, "a")
    confirmed(deferred_store, "a")
    views = InMemoryReadStoreWriter()
    decoded: list[str] = []
    original = OrderConfirmed.from_payload.__func__  # type: ignore[attr-defined]

    def counting(cls: type, payload: dict[str, Any]) -> Any:
        decoded.append(payload["order_id"])
        return original(cls, payload)

    OrderConfirmed.from_payload = classmethod(counting)  # type: ignore[method-assign, assignment]
    try:
        runner = ProjectionRunner(deferred_store, views, [PRODUCT_SALES], batch_size=50)
        runner.prepare()
        runner.run_until_idle()
    finally:
        OrderConfirmed.from_payload = classmethod(original)  # type: ignore[method-assign, assignment]
    assert decoded == []  # product sales never needs a confirmation decoded


def test_lag_health_turns_only_after_the_grace_and_on_failure() -> None:
    def status(lag: int, state: str = "catching_up") -> list[ProjectionStatus]:
        return [ProjectionStatus("v", 1, 0, 0, lag, state, 0, "boom" if state == "failed" else "")]

    health = LagHealth(max_lag=10, max_lag_seconds=5)
    assert health.verdict(status(11), now=100) == ""  # a burst: not yet
    assert health.verdict(status(50), now=104) == ""
    assert "50 events behind" in health.verdict(status(50), now=105.5)
    assert health.verdict(status(3), now=106) == ""  # recovered
    assert health.verdict(status(11), now=107) == ""  # the grace starts again
    assert "failed: boom" in health.verdict(status(0, "failed"), now=107)


def test_a_failing_prefetch_is_logged_and_the_handlers_load_what_they_need(
    deferred_store: InMemoryEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Prefetch is a hint: when it raises, nothing parks or stops, and the read model is the same."""

    def broken(work: UnitOfWork, events: Any) -> None:
        raise KeyError("a bug in the hint")

    views = InMemoryReadStoreWriter()
    for i in range(3):
        created(deferred_store, f"o-{i}")
    first = ProjectionRunner(deferred_store, views, [replace(ORDER_VIEW, prefetch=broken)], batch_size=50)
    first.run_until_idle()
    for i in range(3):
        confirmed(deferred_store, f"o-{i}")
    assert first.run_until_idle() == 3
    assert [order_status(views, f"o-{i}") for i in range(3)] == ["CONFIRMED"] * 3
    assert views.parked_streams() == {}
    warnings = [r.getMessage() for r in caplog.records if "prefetch failed" in r.getMessage()]
    assert len(warnings) == 1 and "a bug in the hint" in warnings[0], warnings
