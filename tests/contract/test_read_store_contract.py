"""The ReadStoreWriter / ReadStoreReader contract, run against the in-memory and SQLite stores."""

from __future__ import annotations

import time
from typing import Any

import pytest

from eventcore.read_store import Collection, Index, ParkedStream, ReadStoreWriter, SkippedEvent

ITEMS = Collection(
    "items",
    indexes=(
        Index("by_owner", equals=("owner",), order_by="rank"),
        Index("by_owner_kind", equals=("owner", "kind"), order_by="rank"),
    ),
)
NOTES = Collection("notes")
OTHER = Collection("other_things")


def doc(key: str, owner: str = "a", rank: int = 0, kind: str = "k", **more: Any) -> dict[str, Any]:
    return {"key": key, "owner": owner, "rank": rank, "kind": kind, **more}


@pytest.fixture
def store(read_store: ReadStoreWriter) -> ReadStoreWriter:
    read_store.reset("items_view", 1, [ITEMS, NOTES])
    read_store.reset("other_view", 1, [OTHER])
    return read_store


def get(store: ReadStoreWriter, collection: Collection, key: str) -> Any:
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            return view.get(collection, key)
    finally:
        reader.close()


def checkpoint(store: ReadStoreWriter, name: str) -> tuple[int, int]:
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            found = [(c.version, c.position) for c in view.checkpoints() if c.name == name]
            assert view.position(name) == (found[0][1] if found else 0)
            return found[0] if found else (0, 0)
    finally:
        reader.close()


def keys(
    store: ReadStoreWriter, index: str, equals: tuple[Any, ...], after: Any = None, limit: int = 99
) -> Any:
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            page = view.page(ITEMS, index, equals, after, limit)
            return [d["key"] for d in page.documents], page.next_cursor
    finally:
        reader.close()


# -- reset and checkpoints ------------------------------------------------------------------------


def test_reset_creates_empty_collections_at_checkpoint_zero(store: ReadStoreWriter) -> None:
    assert get(store, ITEMS, "x") is None
    assert checkpoint(store, "items_view") == (1, 0)
    assert {n: (c.version, c.position) for n, c in store.checkpoints().items()} == {
        "items_view": (1, 0),
        "other_view": (1, 0),
    }
    assert checkpoint(store, "never_ran") == (0, 0)


def test_checkpoints_are_written_with_the_rows(store: ReadStoreWriter) -> None:
    before_us = time.time_ns() // 1000
    with store.transaction() as work:
        work.put(ITEMS, "i-1", doc("i-1"))
        work.set_checkpoint("items_view", 1, 42)
    after_us = time.time_ns() // 1000
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            assert view.get(ITEMS, "i-1") == doc("i-1")
            assert view.position("items_view") == 42
            (items,) = [c for c in view.checkpoints() if c.name == "items_view"]
            assert before_us - 1000 <= items.updated_at_us <= after_us + 1000
            assert view.position("other_view") == 0
    finally:
        reader.close()
    assert store.checkpoints()["items_view"].position == 42


def test_reset_empties_a_projection_and_leaves_the_others(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        work.put(ITEMS, "i-1", doc("i-1"))
        work.put(NOTES, "n-1", {"text": "x"})
        work.put(OTHER, "o-1", {"text": "y"})
        work.set_checkpoint("items_view", 1, 5)
        work.set_checkpoint("other_view", 1, 5)
    store.reset("items_view", 2, [ITEMS, NOTES])
    assert get(store, ITEMS, "i-1") is None and get(store, NOTES, "n-1") is None
    assert get(store, OTHER, "o-1") == {"text": "y"}
    assert checkpoint(store, "items_view") == (2, 0)
    assert checkpoint(store, "other_view") == (1, 5)
    assert keys(store, "by_owner", ("a",)) == ([], None)


# -- put, get, delete, transactions ---------------------------------------------------------------


def test_put_get_delete(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        work.put(ITEMS, "i-1", doc("i-1", rank=1))
        work.put(ITEMS, "i-2", doc("i-2", rank=2))
        work.put(NOTES, "i-1", {"same key": "other collection"})
    assert get(store, ITEMS, "i-1") == doc("i-1", rank=1)
    assert get(store, NOTES, "i-1") == {"same key": "other collection"}
    with store.transaction() as work:
        work.put(ITEMS, "i-1", doc("i-1", rank=1, extra=[1, 2]))  # replaces
        work.delete(ITEMS, "i-2")
        work.delete(ITEMS, "never-there")
    assert get(store, ITEMS, "i-1") == doc("i-1", rank=1, extra=[1, 2])
    assert get(store, ITEMS, "i-2") is None
    assert get(store, NOTES, "i-1") is not None


def test_a_transaction_sees_its_own_writes_and_others_do_not(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        work.put(ITEMS, "i-1", doc("i-1"))
    with store.transaction() as work:
        work.put(ITEMS, "i-2", doc("i-2"))
        work.delete(ITEMS, "i-1")
        assert work.get(ITEMS, "i-2") == doc("i-2")
        assert work.get(ITEMS, "i-1") is None
        assert get(store, ITEMS, "i-1") == doc("i-1")  # not committed yet
        assert get(store, ITEMS, "i-2") is None
    assert get(store, ITEMS, "i-1") is None and get(store, ITEMS, "i-2") == doc("i-2")


def test_a_transaction_that_raises_leaves_neither_rows_nor_checkpoint(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        work.put(ITEMS, "keep", doc("keep", rank=1))
        work.set_checkpoint("items_view", 1, 10)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as work:
        work.put(ITEMS, "new", doc("new", rank=2))
        work.put(ITEMS, "keep", doc("keep", rank=99))
        work.delete(NOTES, "anything")
        work.set_checkpoint("items_view", 1, 11)
        work.set_checkpoint("other_view", 1, 11)
        raise Boom
    assert get(store, ITEMS, "new") is None
    assert get(store, ITEMS, "keep") == doc("keep", rank=1)
    assert checkpoint(store, "items_view") == (1, 10)
    assert checkpoint(store, "other_view") == (1, 0)
    assert keys(store, "by_owner", ("a",)) == (["keep"], None)
    with store.transaction() as work:  # the store is usable afterwards
        work.put(ITEMS, "after", doc("after", rank=3))
        work.set_checkpoint("items_view", 1, 11)
    assert checkpoint(store, "items_view") == (1, 11)


def test_documents_round_trip(store: ReadStoreWriter) -> None:
    value = doc("d", rank=2**63 - 1, nested={"list": [1, "two", None, True, {"x": -5}]}, text='ü ✓ "q" \n \\')
    with store.transaction() as work:
        work.put(ITEMS, "d", value)
    assert get(store, ITEMS, "d") == value


def test_a_document_read_from_a_view_is_a_copy(store: ReadStoreWriter) -> None:
    """The query side cannot change the store through what it was given."""
    with store.transaction() as work:
        work.put(ITEMS, "d", doc("d", tags=["a"]))
    first = get(store, ITEMS, "d")
    first["tags"].append("mutated after get")
    assert get(store, ITEMS, "d")["tags"] == ["a"]


def test_the_unit_of_work_is_an_identity_map(store: ReadStoreWriter) -> None:
    """Within a transaction a key has one working document; what commits is every document that
    was put, as it is when the transaction ends; a document only read is never written."""
    with store.transaction() as work:
        work.put(ITEMS, "stored", doc("stored", tags=["a"]))
    with store.transaction() as work:
        value = doc("pending", tags=["a"])
        work.put(ITEMS, "pending", value)
        assert work.get(ITEMS, "pending") is value
        value["tags"].append("changed after put")
        loaded = work.get(ITEMS, "stored")
        assert work.get(ITEMS, "stored") is loaded
        loaded["tags"].append("changed, never put")
    assert get(store, ITEMS, "pending")["tags"] == ["a", "changed after put"]
    assert get(store, ITEMS, "stored")["tags"] == ["a"]


def test_prefetch_loads_what_get_would_answer_and_keeps_this_transactions_changes(
    store: ReadStoreWriter,
) -> None:
    """A prefetch is only a faster way to the same answers: stored documents as stored, absent keys
    as None, and nothing this transaction put or deleted is replaced by the stored version."""
    with store.transaction() as work:
        for key in ("a", "b", "c", "d"):
            work.put(ITEMS, key, doc(key, rank=1))
    many = [f"k{i}" for i in range(1200)]  # more than one statement's worth of parameters
    with store.transaction() as work:
        for key in many:
            work.put(NOTES, key, {"n": key})
    with store.transaction() as work:
        work.put(ITEMS, "a", doc("a", rank=2))
        work.delete(ITEMS, "b")
        work.prefetch(ITEMS, ["a", "b", "c", "missing", "c"])
        assert work.get(ITEMS, "a") == doc("a", rank=2)
        assert work.get(ITEMS, "b") is None
        assert work.get(ITEMS, "c") == doc("c", rank=1)
        assert work.get(ITEMS, "missing") is None
        assert work.get(ITEMS, "d") == doc("d", rank=1)  # not prefetched: loaded by get
        work.prefetch(NOTES, [*many, "nope"])
        assert [work.get(NOTES, key) for key in many] == [{"n": key} for key in many]
        assert work.get(NOTES, "nope") is None
        work.prefetch(OTHER, [])
        changed = work.get(ITEMS, "c")
        changed["rank"] = 3
        work.put(ITEMS, "c", changed)
    assert get(store, ITEMS, "a") == doc("a", rank=2)
    assert get(store, ITEMS, "b") is None
    assert get(store, ITEMS, "c") == doc("c", rank=3)


def test_a_snapshot_does_not_see_later_commits(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        work.put(ITEMS, "i-1", doc("i-1", rank=1))
        work.set_checkpoint("items_view", 1, 1)
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            assert view.get(ITEMS, "i-1") == doc("i-1", rank=1)
            with store.transaction() as work:
                work.put(ITEMS, "i-1", doc("i-1", rank=5))
                work.put(ITEMS, "i-2", doc("i-2", rank=6))
                work.set_checkpoint("items_view", 1, 2)
            assert view.get(ITEMS, "i-1") == doc("i-1", rank=1)
            assert view.get(ITEMS, "i-2") is None
            assert view.position("items_view") == 1
            assert [d["key"] for d in view.page(ITEMS, "by_owner", ("a",), None, 10).documents] == ["i-1"]
        with reader.snapshot() as view:
            assert view.position("items_view") == 2
            assert view.get(ITEMS, "i-2") == doc("i-2", rank=6)
    finally:
        reader.close()


# -- paging ---------------------------------------------------------------------------------------


@pytest.fixture
def ranked(store: ReadStoreWriter) -> ReadStoreWriter:
    with store.transaction() as work:
        for rank in range(1, 8):
            work.put(ITEMS, f"a-{rank}", doc(f"a-{rank}", "a", rank, kind="even" if rank % 2 == 0 else "odd"))
            work.put(ITEMS, f"b-{rank}", doc(f"b-{rank}", "b", rank))
    return store


def test_pages_run_newest_first_with_cursors(ranked: ReadStoreWriter) -> None:
    first, cursor = keys(ranked, "by_owner", ("a",), None, 3)
    assert first == ["a-7", "a-6", "a-5"]
    assert cursor == (5, "a-5")
    second, cursor = keys(ranked, "by_owner", ("a",), cursor, 3)
    assert second == ["a-4", "a-3", "a-2"]
    third, cursor = keys(ranked, "by_owner", ("a",), cursor, 3)
    assert (third, cursor) == (["a-1"], None)


def test_an_exactly_full_last_page_has_no_cursor(ranked: ReadStoreWriter) -> None:
    assert keys(ranked, "by_owner", ("a",), None, 7) == ([f"a-{r}" for r in range(7, 0, -1)], None)
    assert keys(ranked, "by_owner", ("a",), None, 100)[1] is None
    assert keys(ranked, "by_owner", ("nobody",), None, 3) == ([], None)


def test_an_index_on_two_fields(ranked: ReadStoreWriter) -> None:
    assert keys(ranked, "by_owner_kind", ("a", "even"), None, 10) == (["a-6", "a-4", "a-2"], None)
    page, cursor = keys(ranked, "by_owner_kind", ("a", "odd"), None, 2)
    assert (page, cursor) == (["a-7", "a-5"], (5, "a-5"))
    assert keys(ranked, "by_owner_kind", ("a", "odd"), cursor, 2) == (["a-3", "a-1"], None)


def test_equal_order_values_are_ordered_by_key_descending(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        for key in ("k-b", "k-d", "k-a", "k-c"):
            work.put(ITEMS, key, doc(key, rank=7))
        work.put(ITEMS, "k-z", doc("k-z", rank=6))
    page, cursor = keys(store, "by_owner", ("a",), None, 2)
    assert (page, cursor) == (["k-d", "k-c"], (7, "k-c"))
    page, cursor = keys(store, "by_owner", ("a",), cursor, 2)
    assert (page, cursor) == (["k-b", "k-a"], (7, "k-a"))
    assert keys(store, "by_owner", ("a",), cursor, 2) == (["k-z"], None)


def test_a_cursor_stays_put_while_new_documents_arrive(ranked: ReadStoreWriter) -> None:
    seen, cursor = keys(ranked, "by_owner", ("a",), None, 2)
    rank = 100
    while cursor is not None:
        with ranked.transaction() as work:  # newer documents arrive, and one moves to another owner
            rank += 1
            work.put(ITEMS, f"new-{rank}", doc(f"new-{rank}", "a", rank))
            work.put(ITEMS, "b-1", doc("b-1", "a", rank + 1000))
        page, cursor = keys(ranked, "by_owner", ("a",), cursor, 2)
        seen += page
    assert seen == [f"a-{r}" for r in range(7, 0, -1)]


def test_an_updated_index_field_moves_the_document(ranked: ReadStoreWriter) -> None:
    with ranked.transaction() as work:
        work.put(ITEMS, "a-7", doc("a-7", "b", 7))
        work.delete(ITEMS, "a-6")
    assert keys(ranked, "by_owner", ("a",), None, 2)[0] == ["a-5", "a-4"]
    assert keys(ranked, "by_owner", ("b",), None, 2)[0] == ["b-7", "a-7"]


# -- parked streams, skipped events, scans ----------------------------------------------------------


def test_parked_streams_commit_with_the_transaction_and_unpark(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        work.park(ParkedStream("items_view", "s-1", 7, "Thing", "boom"))
        work.park(ParkedStream("other_view", "s-1", 8, "Thing", "bang"))
        work.set_checkpoint("items_view", 1, 9)
    parked = store.parked_streams()
    assert sorted(parked) == [("items_view", "s-1"), ("other_view", "s-1")]
    assert parked[("items_view", "s-1")][:5] == ("items_view", "s-1", 7, "Thing", "boom")
    assert abs(parked[("items_view", "s-1")].parked_at_us / 1e6 - time.time()) < 60

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as work:
        work.unpark("items_view", "s-1")
        raise Boom
    assert ("items_view", "s-1") in store.parked_streams()

    with store.transaction() as work:
        work.unpark("items_view", "s-1")
        work.park(ParkedStream("other_view", "s-1", 10, "Thing", "again"))  # replaces
        work.record_skip(SkippedEvent("items_view", "s-1", 7, "Thing", "boom"))
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            assert [p[:5] for p in view.parked_streams()] == [("other_view", "s-1", 10, "Thing", "again")]
            assert [k[:5] for k in view.skipped_events()] == [("items_view", "s-1", 7, "Thing", "boom")]
    finally:
        reader.close()
    store.reset("other_view", 1, [OTHER])
    assert store.parked_streams() == {}


def test_scan_lists_a_collection_by_key(store: ReadStoreWriter) -> None:
    with store.transaction() as work:
        for key in ["b", "a", "c"]:
            work.put(ITEMS, key, doc(key))
        work.put(NOTES, "n", {"x": 1})
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            assert [key for key, _ in view.scan(ITEMS)] == ["a", "b", "c"]
            assert list(view.scan(NOTES)) == [("n", {"x": 1})]
    finally:
        reader.close()


def test_replace_swaps_a_shadow_in_once_it_has_caught_up(store: ReadStoreWriter) -> None:
    shadow_items = Collection("items__g7", ITEMS.indexes)
    shadow_notes = Collection("notes__g7")
    with store.transaction() as work:
        work.put(ITEMS, "old", doc("old"))
        work.set_checkpoint("items_view", 1, 10)
        work.park(ParkedStream("items_view", "s-old", 3, "T", "old error"))
    store.reset("items_view@rebuild", 2, [shadow_items, shadow_notes])
    pairs = [(ITEMS, shadow_items), (NOTES, shadow_notes)]
    with store.transaction() as work:
        work.put(shadow_items, "new", doc("new", rank=5))
        work.put(shadow_notes, "n", {"x": 1})
        work.set_checkpoint("items_view@rebuild", 2, 9)
        work.park(ParkedStream("items_view@rebuild", "s-new", 4, "T", "new error"))
    assert store.replace("items_view", "items_view@rebuild", 2, pairs) is False  # behind: nothing changes
    assert get(store, ITEMS, "old") == doc("old") and checkpoint(store, "items_view") == (1, 10)
    with store.transaction() as work:
        work.set_checkpoint("items_view@rebuild", 2, 12)
    assert store.replace("items_view", "items_view@rebuild", 2, pairs) is True
    assert get(store, ITEMS, "old") is None and get(store, ITEMS, "new") == doc("new", rank=5)
    assert get(store, NOTES, "n") == {"x": 1}
    assert keys(store, "by_owner", ("a",)) == (["new"], None)  # the shadow's indexes serve the live name
    assert checkpoint(store, "items_view") == (2, 12)
    assert "items_view@rebuild" not in store.checkpoints()
    assert [(p, s) for p, s in store.parked_streams()] == [("items_view", "s-new")]
    with store.transaction() as work:  # the swapped-in tables are written under their live names
        work.put(ITEMS, "later", doc("later"))
    assert get(store, ITEMS, "later") == doc("later")


def test_discard_drops_an_abandoned_shadow(store: ReadStoreWriter) -> None:
    shadow_items = Collection("items__g8", ITEMS.indexes)
    store.reset("items_view@rebuild", 1, [shadow_items])
    with store.transaction() as work:
        work.put(shadow_items, "x", doc("x"))
        work.set_checkpoint("items_view@rebuild", 1, 3)
        work.park(ParkedStream("items_view@rebuild", "s", 2, "T", "e"))
    store.discard("items_view@rebuild", [shadow_items])
    assert "items_view@rebuild" not in store.checkpoints()
    assert store.parked_streams() == {}
    store.reset("items_view@rebuild", 1, [shadow_items])  # the same name can be built again
    assert get(store, shadow_items, "x") is None
