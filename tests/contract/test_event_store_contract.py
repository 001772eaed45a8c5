"""The EventStore contract, run against InMemoryEventStore and SQLiteEventStore alike."""

from __future__ import annotations

import time

import pytest

from eventcore.errors import ConcurrencyConflict
from eventcore.event_store import DuplicateCommand, EventFilter, EventStore
from eventcore.events import CommandRecord, PendingAppend, RecordedEvent
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderItem, OrderShipped


def created(order_id: str, total: int = 100) -> OrderCreated:
    return OrderCreated(order_id, "cust-1", (OrderItem("p", 1, total),), total)


def append(
    store: EventStore, stream: str, expected: int, events: list[object], command_id: str = "", fp: str = ""
) -> list[RecordedEvent]:
    return store.append(PendingAppend(stream, expected, events, command_id, fp or command_id))


def test_an_empty_store(event_store: EventStore) -> None:
    assert event_store.head_position() == 0
    assert event_store.read_all(0, 100) == []
    assert event_store.read_stream("order-x") == []
    assert event_store.find_command("cmd") is None


def test_append_to_a_new_stream(event_store: EventStore) -> None:
    before_us = time.time_ns() // 1000
    recorded = append(event_store, "order-a", 0, [created("a"), OrderConfirmed("a")], "cmd-1")
    after_us = time.time_ns() // 1000
    assert [(e.position, e.stream_id, e.stream_version) for e in recorded] == [
        (1, "order-a", 1),
        (2, "order-a", 2),
    ]
    assert [e.type for e in recorded] == ["OrderCreated", "OrderConfirmed"]
    assert [e.data for e in recorded] == [created("a"), OrderConfirmed("a")]
    assert all(e.command_id == "cmd-1" for e in recorded)
    assert len({e.event_id for e in recorded}) == 2 and all(len(e.event_id) == 36 for e in recorded)
    assert all(before_us - 1000 <= e.recorded_at_us <= after_us + 1000 for e in recorded)
    assert event_store.head_position() == 2
    assert event_store.read_all(0, 10) == recorded
    assert event_store.read_stream("order-a") == recorded


def test_append_with_the_expected_version(event_store: EventStore) -> None:
    append(event_store, "order-a", 0, [created("a")])
    confirmed = append(event_store, "order-a", 1, [OrderConfirmed("a")])
    shipped = append(event_store, "order-a", 2, [OrderShipped("a", "T")])
    assert [(e.position, e.stream_version) for e in confirmed + shipped] == [(2, 2), (3, 3)]


@pytest.mark.parametrize("expected", [0, 1, 3, 7])
def test_a_wrong_expected_version_is_refused(event_store: EventStore, expected: int) -> None:
    append(event_store, "order-a", 0, [created("a"), OrderConfirmed("a")])
    with pytest.raises(ConcurrencyConflict) as conflict:
        append(event_store, "order-a", expected, [OrderShipped("a", "T")], "cmd-x")
    assert (conflict.value.expected, conflict.value.actual) == (expected, 2)
    assert event_store.head_position() == 2
    assert len(event_store.read_stream("order-a")) == 2
    assert event_store.find_command("cmd-x") is None
    assert append(event_store, "order-a", 2, [OrderShipped("a", "T")])[0].position == 3


def test_an_expected_version_for_a_stream_that_does_not_exist_is_refused(event_store: EventStore) -> None:
    with pytest.raises(ConcurrencyConflict) as conflict:
        append(event_store, "order-ghost", 1, [OrderConfirmed("ghost")])
    assert (conflict.value.expected, conflict.value.actual) == (1, 0)
    assert event_store.head_position() == 0


def test_positions_are_gap_free_across_streams(event_store: EventStore) -> None:
    for i in range(5):
        append(event_store, f"order-{i}", 0, [created(str(i))])
    for i in range(0, 5, 2):
        append(event_store, f"order-{i}", 1, [OrderConfirmed(str(i))])
    with pytest.raises(ConcurrencyConflict):  # a refused append leaves no gap behind
        append(event_store, "order-1", 0, [created("1")])
    append(event_store, "order-1", 1, [OrderCancelled("1", "r")])
    events = event_store.read_all(0, 100)
    assert [e.position for e in events] == list(range(1, 10))
    assert event_store.head_position() == 9
    assert [e.stream_version for e in event_store.read_stream("order-1")] == [1, 2]
    assert [type(e.data) for e in event_store.read_stream("order-1")] == [OrderCreated, OrderCancelled]


def test_read_all_from_a_position_with_a_limit(event_store: EventStore) -> None:
    for i in range(10):
        append(event_store, f"order-{i}", 0, [created(str(i), i + 1)])
    assert [e.position for e in event_store.read_all(0, 3)] == [1, 2, 3]
    assert [e.position for e in event_store.read_all(3, 4)] == [4, 5, 6, 7]
    assert [e.position for e in event_store.read_all(8, 100)] == [9, 10]
    assert event_store.read_all(10, 5) == []
    assert event_store.read_all(50, 5) == []
    assert [e.data.total for e in event_store.read_all(4, 2)] == [5, 6]


def test_read_stream_holds_only_that_stream_in_order(event_store: EventStore) -> None:
    append(event_store, "order-a", 0, [created("a")])
    append(event_store, "order-b", 0, [created("b")])
    append(event_store, "order-a", 1, [OrderConfirmed("a")])
    append(event_store, "order-ab", 0, [created("ab")])  # a prefix of another stream's name
    append(event_store, "order-a", 2, [OrderShipped("a", "T-1")])
    stream = event_store.read_stream("order-a")
    assert [(e.position, e.stream_version) for e in stream] == [(1, 1), (3, 2), (5, 3)]
    assert [e.data for e in stream] == [created("a"), OrderConfirmed("a"), OrderShipped("a", "T-1")]
    assert [e.stream_id for e in event_store.read_stream("order-ab")] == ["order-ab"]


def test_events_read_back_equal_the_recorded_ones(event_store: EventStore) -> None:
    big = OrderCreated("ü-✓", 'kunde "quoted"', (OrderItem("p\\1", 3, 2**62),), 3 * 2**62 % 2**63)
    recorded = append(event_store, "order-ü", 0, [big, OrderCancelled("ü-✓", "line\nbreak")], "cmd-ü")
    assert event_store.read_all(0, 10) == recorded
    assert event_store.read_stream("order-ü") == recorded


def test_find_command_and_duplicate_command(event_store: EventStore) -> None:
    append(event_store, "order-z", 0, [created("z")])
    recorded = append(event_store, "order-a", 0, [created("a"), OrderConfirmed("a")], "cmd-1", fp="fp-1")
    record = event_store.find_command("cmd-1")
    assert record == CommandRecord("cmd-1", "fp-1", "order-a", 2, 3)
    assert event_store.read_command_events(record) == recorded

    with pytest.raises(DuplicateCommand) as duplicate:
        append(event_store, "order-b", 0, [created("b")], "cmd-1", fp="fp-other")
    assert duplicate.value.record == record
    assert event_store.head_position() == 3
    assert event_store.read_stream("order-b") == []
    assert event_store.find_command("cmd-1") == record


def test_appends_without_command_id_record_no_command(event_store: EventStore) -> None:
    append(event_store, "order-a", 0, [created("a")])
    assert event_store.find_command("") is None


# -- append_batch: one transaction, each append on its own ----------------------------------------


def versions_of(outcome: object) -> tuple[int, int]:
    assert isinstance(outcome, ConcurrencyConflict), outcome
    return outcome.expected, outcome.actual


def test_each_append_in_a_batch_succeeds_or_fails_on_its_own(event_store: EventStore) -> None:
    append(event_store, "order-old", 0, [created("old")], "cmd-old")
    outcomes = event_store.append_batch(
        [
            PendingAppend("order-a", 0, [created("a")], "cmd-a", "fp-a"),
            PendingAppend("order-old", 0, [created("old")]),  # exists: conflict
            PendingAppend("order-b", 0, [created("b"), OrderConfirmed("b")]),
            PendingAppend("order-c", 0, [created("c")], "cmd-old", "fp-c"),  # command id used: duplicate
            PendingAppend("order-a", 1, [OrderConfirmed("a")]),  # builds on the first append
            PendingAppend("order-b", 1, [OrderShipped("b", "T")]),  # stale within the batch: conflict
            PendingAppend("order-d", 0, [created("d")], "cmd-a", "fp-d"),  # id used earlier in the batch
            PendingAppend("order-e", 0, [created("e")]),
        ]
    )
    assert len(outcomes) == 8
    assert [[(e.position, e.stream_version) for e in o] for o in (outcomes[0], outcomes[2], outcomes[4])] == [
        [(2, 1)],
        [(3, 1), (4, 2)],
        [(5, 2)],
    ]
    assert versions_of(outcomes[1]) == (0, 1)
    assert isinstance(outcomes[3], DuplicateCommand) and outcomes[3].record.command_id == "cmd-old"
    assert versions_of(outcomes[5]) == (1, 2)
    assert isinstance(outcomes[6], DuplicateCommand)
    assert outcomes[6].record == CommandRecord("cmd-a", "fp-a", "order-a", 2, 2)
    assert [(e.position, e.stream_id) for e in outcomes[7]] == [(6, "order-e")]  # type: ignore[union-attr]

    assert event_store.head_position() == 6
    assert [e.position for e in event_store.read_all(0, 100)] == [1, 2, 3, 4, 5, 6]
    assert event_store.read_stream("order-c") == [] and event_store.read_stream("order-d") == []
    assert event_store.find_command("cmd-a") == CommandRecord("cmd-a", "fp-a", "order-a", 2, 2)


def test_a_batch_of_only_refusals_appends_nothing(event_store: EventStore) -> None:
    append(event_store, "order-a", 0, [created("a")], "cmd-a")
    outcomes = event_store.append_batch(
        [PendingAppend("order-a", 0, [created("a")]), PendingAppend("order-x", 0, [created("x")], "cmd-a")]
    )
    assert isinstance(outcomes[0], ConcurrencyConflict) and isinstance(outcomes[1], DuplicateCommand)
    assert event_store.head_position() == 1
    assert event_store.append_batch([]) == []
    assert append(event_store, "order-b", 0, [created("b")])[0].position == 2


def test_a_large_batch_keeps_positions_gap_free(event_store: EventStore) -> None:
    outcomes = event_store.append_batch(
        [PendingAppend(f"order-{i}", 0, [created(str(i))], f"cmd-{i}", f"fp-{i}") for i in range(300)]
    )
    positions = [o[0].position for o in outcomes]  # type: ignore[index]
    assert positions == list(range(1, 301))
    assert len({o[0].event_id for o in outcomes}) == 300  # type: ignore[index]
    assert event_store.find_command("cmd-299") == CommandRecord("cmd-299", "fp-299", "order-299", 300, 300)


def test_a_refused_append_refuses_the_batchs_later_appends_to_its_stream(event_store: EventStore) -> None:
    """They were decided on top of the refused one, so even a matching version must not let them in."""
    append(event_store, "order-a", 0, [created("a")])
    append(event_store, "order-a", 1, [OrderConfirmed("a")])
    outcomes = event_store.append_batch(
        [
            PendingAppend("order-a", 1, [OrderConfirmed("a")]),  # stale: the stream is at 2
            PendingAppend("order-a", 2, [OrderShipped("a", "T")]),  # decided on the stale one
            PendingAppend("order-b", 0, [created("b")]),
        ]
    )
    assert isinstance(outcomes[0], ConcurrencyConflict) and isinstance(outcomes[1], ConcurrencyConflict)
    assert [e.position for e in outcomes[2]] == [3]  # type: ignore[union-attr]
    assert len(event_store.read_stream("order-a")) == 2


def _mixed_log(store: EventStore) -> None:
    """Positions 1..6: a (created, confirmed), ab (created, cancelled), b (created, shipped)."""
    append(store, "order-a", 0, [created("a"), OrderConfirmed("a")])
    append(store, "order-ab", 0, [created("ab"), OrderCancelled("ab", "no")])
    append(store, "other-b", 0, [created("b"), OrderShipped("b", "T")])


@pytest.mark.parametrize(
    ("event_filter", "positions"),
    [
        (EventFilter(), [1, 2, 3, 4, 5, 6]),
        (EventFilter(frozenset({"OrderCreated"})), [1, 3, 5]),
        (EventFilter(frozenset({"OrderConfirmed", "OrderShipped"})), [2, 6]),
        (EventFilter(stream_prefix="order-a"), [1, 2, 3, 4]),
        (EventFilter(stream_prefix="order-ab"), [3, 4]),
        (EventFilter(frozenset({"OrderCreated"}), "other-"), [5]),
        (EventFilter(frozenset({"Nothing"})), []),
        (EventFilter(stream_prefix="order_"), []),  # no pattern semantics: _ and % are plain
    ],
)
def test_a_filtered_read_passes_only_what_the_filter_names(
    event_store: EventStore, event_filter: EventFilter, positions: list[int]
) -> None:
    _mixed_log(event_store)
    assert [e.position for e in event_store.read_filtered(0, 6, event_filter, 100)] == positions


def test_a_filtered_read_stays_within_its_range_and_limit(event_store: EventStore) -> None:
    _mixed_log(event_store)
    created_only = EventFilter(frozenset({"OrderCreated"}))
    assert [e.position for e in event_store.read_filtered(1, 4, created_only, 100)] == [3]
    assert [e.position for e in event_store.read_filtered(0, 6, created_only, 2)] == [1, 3]
    assert event_store.read_filtered(6, 6, EventFilter(), 10) == []


def test_a_stream_slice_and_version(event_store: EventStore) -> None:
    _mixed_log(event_store)
    append(event_store, "order-a", 2, [OrderShipped("a", "T")])
    assert [e.stream_version for e in event_store.read_stream_slice("order-a", 2, 10)] == [2, 3]
    assert [e.stream_version for e in event_store.read_stream_slice("order-a", 1, 2)] == [1, 2]
    assert event_store.read_stream_slice("order-a", 4, 10) == []
    assert event_store.stream_version("order-a") == 3
    assert event_store.stream_version("order-zz") == 0
    assert event_store.read_stream_slice("order-zz", 1, 10) == []
