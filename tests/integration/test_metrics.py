"""Metrics of an in-process read service before its files exist: a scrape still answers, with the call
counters (an UNAVAILABLE query counted) and no storage gauges until there is storage to read."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request

import grpc

from orders_api.v1 import orders_pb2, orders_pb2_grpc
from read_service import app as read_app

from .conftest import Files, read_settings


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_a_read_service_without_files_serves_call_counters_and_no_gauges(files: Files) -> None:
    settings = dataclasses.replace(read_settings(files), metrics_listen="127.0.0.1:0")
    service = read_app.ReadService(settings)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.host.address) as channel:
            queries = orders_pb2_grpc.OrderQueryServiceStub(channel)
            try:
                await queries.GetOrder(orders_pb2.GetOrderRequest(order_id="o-1"), timeout=5)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
            else:
                raise AssertionError("GetOrder answered without a read database")
        text = await asyncio.to_thread(scrape, service.metrics.address)
    finally:
        await service.stop()
    assert 'orders_queries_total{code="UNAVAILABLE",method="GetOrder"} 1.0' in text
    assert 'orders_queries_total{code="OK",method="GetOrder"} 0.0' in text
    assert 'orders_query_duration_seconds_count{method="GetOrder"} 1.0' in text
    assert "orders_event_store_head" not in text
    assert "process_cpu_seconds_total" in text
