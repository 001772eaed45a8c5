"""Blue-green rebuilds: the shadow fills beside the live read model and swaps in once caught up."""

from __future__ import annotations

import dataclasses
from typing import Any

from eventcore.events import PendingAppend
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import ProjectionRunner
from eventcore.projection_status import projection_statuses
from eventcore.read_store import UnitOfWork
from eventcore.rebuild import Rebuild
from orders import queries
from orders.events import OrderCreated, OrderItem, order_codec, stream_id
from orders.projections import ORDER_VIEW, ORDERS, PROJECTIONS


def created(store: InMemoryEventStore, order_id: str) -> None:
    event = OrderCreated(order_id, "c", (OrderItem("p", 1, 10),), 10)
    store.append(PendingAppend(stream_id(order_id), 0, [event]))


def order(views: InMemoryReadStoreWriter, order_id: str) -> tuple[Any, int]:
    result = queries.query_bus().ask(views.reader(), queries.GetOrder(order_id))
    return result.value, result.read_model_version


def test_a_new_version_is_built_beside_the_old_which_keeps_answering_until_the_swap() -> None:
    log = InMemoryEventStore(order_codec().deferred())
    views = InMemoryReadStoreWriter()
    live = ProjectionRunner(log, views, PROJECTIONS, batch_size=3)
    live.prepare()
    for n in range(10):
        created(log, f"o-{n}")
    live.run_until_idle()

    base = ORDER_VIEW.handlers[OrderCreated]

    def tagged(work: UnitOfWork, event: Any) -> None:
        base(work, event)
        document = work.get(ORDERS, event.data.order_id)
        assert document is not None
        work.put(ORDERS, event.data.order_id, {**document, "tag": "v2"})

    v2 = dataclasses.replace(ORDER_VIEW, version=2, handlers={**ORDER_VIEW.handlers, OrderCreated: tagged})
    others = ProjectionRunner(log, views, [p for p in PROJECTIONS if p is not ORDER_VIEW], batch_size=3)
    others.prepare()
    rebuild = Rebuild(log, views, v2, batch_size=4)
    assert rebuild.step() is False  # one batch of four
    created(log, "late")  # the log moves on while it rebuilds
    others.run_until_idle()
    statuses = {s.name: s for s in projection_statuses(views.reader(), log.head_position())}
    assert statuses["order_view"].state == "rebuilding" and "order_view@rebuild" not in statuses
    old, version = order(views, "o-1")
    assert "tag" not in old and version == 10  # the old version answers, frozen
    while not rebuild.step():
        pass
    new, version = order(views, "late")
    assert new["tag"] == "v2" and version == 11
    assert {c.name: (c.version, c.position) for c in views.checkpoints().values()}["order_view"] == (2, 11)
    assert "order_view@rebuild" not in views.checkpoints()


def test_a_rebuild_waits_for_the_live_projector_before_it_swaps() -> None:
    log = InMemoryEventStore(order_codec().deferred())
    views = InMemoryReadStoreWriter()
    live = ProjectionRunner(log, views, PROJECTIONS, batch_size=100)
    live.prepare()
    created(log, "a")
    rebuild = Rebuild(log, views, ORDER_VIEW, batch_size=100)
    assert rebuild.step() is False  # applied position 1
    created(log, "b")
    live.run_until_idle()  # the live one is at 2 now, the shadow at 1
    assert rebuild.step() is False  # catches up to 2 ...
    assert rebuild.step() is True  # ... and swaps, never below what the live one answered
    assert order(views, "b")[1] == 2


def test_a_stopped_rebuild_leaves_nothing_behind() -> None:
    log = InMemoryEventStore(order_codec().deferred())
    views = InMemoryReadStoreWriter()
    live = ProjectionRunner(log, views, PROJECTIONS, batch_size=100)
    live.prepare()
    for n in range(5):
        created(log, f"o-{n}")
    live.run_until_idle()
    rebuild = Rebuild(log, views, ORDER_VIEW, batch_size=2)
    assert rebuild.run(until_stopped=lambda: rebuild.position >= 2) is False
    assert set(views.checkpoints()) == {p.name for p in PROJECTIONS}
    statuses = {s.name: s.state for s in projection_statuses(views.reader(), log.head_position())}
    assert statuses["order_view"] == "running"
