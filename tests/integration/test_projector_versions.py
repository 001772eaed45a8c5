"""A projection whose code declares a new version is rebuilt on start beside the old one, which keeps
answering until the new one has caught up; then the new one answers, without a restart."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest

from eventcore.projection import Projection
from eventcore.read_store import UnitOfWork
from eventcore.sqlite.read_store import SQLiteReadStoreReader
from orders import projections
from orders.events import OrderCreated
from orders_api.v1 import orders_pb2 as pb
from orders_api.v1 import orders_pb2_grpc
from projector import app as projector_app

from .conftest import Files, Projector
from .support import create

NEW_VERSION = projections.ORDER_VIEW.version + 1


def order_view_v2() -> Projection:
    base = projections.ORDER_VIEW.handlers[OrderCreated]

    def created(work: UnitOfWork, event: Any) -> None:
        base(work, event)
        document = work.get(projections.ORDERS, event.data.order_id)
        assert document is not None
        work.put(projections.ORDERS, event.data.order_id, {**document, "tracking_number": "v2"})

    handlers = {**projections.ORDER_VIEW.handlers, OrderCreated: created}
    return dataclasses.replace(projections.ORDER_VIEW, version=NEW_VERSION, handlers=handlers)


async def test_a_new_version_is_rebuilt_on_start_and_swapped_in(
    commands: orders_pb2_grpc.OrderCommandServiceStub,
    queries: orders_pb2_grpc.OrderQueryServiceStub,
    projector: Projector,
    files: Files,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for n in range(30):
        await create(commands, f"o-{n}")
    head = projector.catch_up()
    before = await queries.GetOrder(pb.GetOrderRequest(order_id="o-1"))
    assert before.order.tracking_number == ""

    v2 = order_view_v2()
    monkeypatch.setattr(
        projector_app, "PROJECTIONS", tuple(v2 if p.name == v2.name else p for p in projections.PROJECTIONS)
    )
    stop = threading.Event()
    settings = projector_app.Settings(files.events, files.read, batch_size=7)
    thread = threading.Thread(target=projector_app.run, args=(settings, stop), daemon=True)
    caplog.set_level("INFO")
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            reader = SQLiteReadStoreReader.open(files.read)
            try:
                with reader.snapshot() as view:
                    versions = {c.name: c.version for c in view.checkpoints()}
            finally:
                reader.close()
            if versions.get("order_view") == NEW_VERSION:
                break
            time.sleep(0.05)
        assert versions == {"order_view": NEW_VERSION, "customer_summary": 1, "product_sales": 1}
        after = await queries.GetOrder(pb.GetOrderRequest(order_id="o-1"))
        assert after.order.tracking_number == "v2"
        assert after.consistency.read_model_version >= before.consistency.read_model_version == head
        await create(commands, "new")  # the swapped-in version is projected live from then on
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                found = await queries.GetOrder(pb.GetOrderRequest(order_id="new", min_position=head + 1))
                break
            except Exception:
                time.sleep(0.05)
        assert found.order.tracking_number == "v2"
    finally:
        stop.set()
        thread.join(timeout=20)
    assert "rebuilding it from position 0 beside the old one" in caplog.text
    assert "projection order_view rebuilt at position" in caplog.text
