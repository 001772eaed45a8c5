"""Soak test: the three real processes under mixed load while one of them is SIGKILLed every few seconds.

Why it exists: the unit, integration and end-to-end suites each check one crash at a chosen moment. This
checks the promises that only matter when crashes land at *random* moments under load, for minutes: an
acknowledged command is never lost, a retry with the same `command_id` is never applied twice and gets the
original events back, the log stays gap-free, the projector resumes from its checkpoint without skipping
or repeating an event, and the read models end up equal to a replay of the log.

`make soak` (SOAK_SECONDS, default 120) or `python -m tools.soak --seconds 40`. It starts write_service,
projector and read_service as a user would, in a temporary directory (or `--data-dir`); writer tasks run
each order's life cycle (create, then confirm and ship, or cancel, or confirm and cancel) and retry every
command with its own `command_id` until it is answered (and now and then re-send an old acknowledged
command on purpose, which must come back deduplicated with its original events); reader tasks query with
`min_position`; a killer SIGKILLs a random process every 2-6 s and restarts it on a new port. At the end
all three are stopped with SIGTERM (each must exit 0) and the files are checked read-only; the read
models are compared, over gRPC, with a replay of the log. Prints a summary; exit 0 only on PASS (1 on
FAIL, 2 on a usage error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orders_api.v1 import orders_pb2 as pb
from tools import launch
from tools import soak_support as sup
from tools.soak_support import Ack, ChannelPool, Findings, Service, stubs

log = logging.getLogger("soak")

CALL_TIMEOUT = 5.0  # deadline of each command attempt
READ_TIMEOUT = 4.0  # deadline of each reader query
DRAIN_TIMEOUT = 60.0  # after the load stops, how long a command may still retry before it is given up
CATCH_UP_TIMEOUT = 120.0  # for the projector to reach the head at the end
PROGRESS_EVERY = 10.0
CUSTOMERS = 40
PRODUCTS = 25
RESEND_PROBABILITY = 0.03  # after an order's life cycle, re-send one earlier acknowledged command as is
VERIFY_SAMPLE = 5_000  # GetOrder for every order up to this many, else a random sample of this size
VERIFY_CONCURRENCY = 32

# Transient by nature: the server was down, or did not answer in time; the outcome is unknown, so the same
# request (same command_id) goes again. Any error from an address the killer has since marked down is
# transient too, whatever its code: the process that gave it is gone.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# Every life cycle after CreateOrder.
PATHS: tuple[tuple[str, ...], ...] = (("confirm", "ship"), ("cancel",), ("confirm", "cancel"))
EVENT_OF = {
    "create": "OrderCreated",
    "confirm": "OrderConfirmed",
    "ship": "OrderShipped",
    "cancel": "OrderCancelled",
}
METHOD_OF = {"create": "CreateOrder", "confirm": "ConfirmOrder", "ship": "ShipOrder", "cancel": "CancelOrder"}
STATUS_AFTER = {"create": "PENDING", "confirm": "CONFIRMED", "ship": "SHIPPED", "cancel": "CANCELLED"}

# The kinds of finding the summary always lists (with 0 when none was seen); others are listed as they come.
KINDS = (
    "log: position gap",
    "log: stream version gap",
    "log: event_id not unique",
    "ack: acknowledged event lost",
    "ack: acknowledged event differs from the log",
    "ack: reply without events",
    "ack: re-sent command not answered with its original events",
    "command: applied more than once",
    "command: acknowledged command not recorded",
    "command: events without a commands row",
    "command: commands row without events",
    "command: commands row differs from its events",
    "replay: client and log disagree",
    "read model: order differs",
    "read model: order missing",
    "read model: customer summary differs",
    "read model: customer order list differs",
    "read model: query failed",
    "anomaly: command refused",
    "anomaly: bad reply",
    "anomaly: reader error",
    "anomaly: stale read",
    "end: projector did not catch up",
    "end: log changed after the load",
)


def new_command_id() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------------------------------
# What the run saw
# ------------------------------------------------------------------------------------------------


@dataclass
class ClientOrder:
    """An order as its writer knows it from acknowledged replies."""

    order_id: str
    customer_id: str
    status: str = ""
    version: int = 0
    uncertain: bool = False  # a command of it was given up or refused: its outcome is unknown


@dataclass(frozen=True)
class Recent:
    order_id: str
    customer_id: str
    position: int
    stream_version: int


@dataclass
class Run:
    """Shared state of one soak run: addresses, channels, and everything counted."""

    seed: int
    tag: str
    addresses: sup.Addresses
    write_pool: ChannelPool
    read_pool: ChannelPool
    findings: Findings = field(default_factory=Findings)
    acks: list[Ack] = field(default_factory=list)
    acks_by_method: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    retry_codes: Counter[str] = field(default_factory=Counter)
    deduplicated: int = 0
    unresolved: int = 0
    resends: int = 0
    history: deque[tuple[str, Any, Ack, ClientOrder]] = field(default_factory=lambda: deque(maxlen=20_000))
    orders: dict[str, ClientOrder] = field(default_factory=dict)
    latest_position: int = 0
    recent: deque[Recent] = field(default_factory=lambda: deque(maxlen=2_000))
    reader_calls: Counter[str] = field(default_factory=Counter)
    reader_tolerated: Counter[str] = field(default_factory=Counter)
    reader_anomalies: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    stop_load: asyncio.Event = field(default_factory=asyncio.Event)
    give_up: asyncio.Event = field(default_factory=asyncio.Event)

    # -- commands --------------------------------------------------------------------------------

    async def command(self, step: str, request: Any, order: ClientOrder, original: Ack | None = None) -> bool:
        """Send until answered; True once acknowledged. The same request (same command_id) every time.

        `original`: this is a deliberate re-send of that acknowledged command; the reply must be it again.
        """
        method = METHOD_OF[step]
        command_id = str(request.command_id)
        sent = False
        while True:
            address, channel = self.write_pool.current()
            if channel is None:  # the write service is down: wait for its new address
                if self.give_up.is_set():
                    return self._unresolved(order, method, command_id)
                await asyncio.sleep(0.05)
                continue
            if sent:
                self.retries += 1
            sent = True
            try:
                reply = await getattr(stubs.OrderCommandServiceStub(channel), method)(
                    request, timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code in RETRYABLE or not self.write_pool.is_current(address):
                    self.retry_codes[code.name] += 1
                    if self.give_up.is_set():
                        return self._unresolved(order, method, command_id)
                    await asyncio.sleep(random.uniform(0.02, 0.1))
                    continue
                order.uncertain = True
                self.findings.add(
                    "anomaly: command refused",
                    f"{method} {order.order_id} ({command_id}): {code.name} {error.details()}",
                )
                return False
            if original is None:
                self._acknowledged(step, method, command_id, order, reply, request)
            else:
                self._resent(original, reply)
            return True

    def _resent(self, original: Ack, reply: Any) -> None:
        self.resends += 1
        again = sup.ack_from_reply(original.command_id, original.order_id, original.kind, reply)
        if not again.deduplicated or again.events != original.events:
            self.findings.add(
                "ack: re-sent command not answered with its original events",
                f"{original.kind} {original.order_id} ({original.command_id}): first {original.events},"
                f" re-sent deduplicated={again.deduplicated} {again.events}",
            )

    def _unresolved(self, order: ClientOrder, method: str, command_id: str) -> bool:
        self.unresolved += 1
        order.uncertain = True
        log.warning("gave up %s %s (%s) after the load stopped", method, order.order_id, command_id)
        return False

    def _acknowledged(
        self, step: str, method: str, command_id: str, order: ClientOrder, reply: Any, request: Any
    ) -> None:
        ack = sup.ack_from_reply(command_id, order.order_id, method, reply)
        self.acks.append(ack)
        self.history.append((step, request, ack, order))
        self.acks_by_method[method] += 1
        if ack.deduplicated:
            self.deduplicated += 1
        problems: list[str] = []
        if len(ack.events) != 1:
            problems.append(f"{len(ack.events)} events")
        for event in ack.events:
            if event.stream_id != f"order-{order.order_id}" or event.type != EVENT_OF[step]:
                problems.append(f"event {event.type} on {event.stream_id}")
        for event in reply.events:
            if event.command_id != command_id:
                problems.append(f"event command_id {event.command_id!r}")
        if ack.events and (
            int(reply.position) != ack.events[-1].position
            or int(reply.stream_version) != ack.events[-1].stream_version
        ):
            problems.append(f"reply position/stream_version {reply.position}/{reply.stream_version}")
        if problems:
            self.findings.add(
                "anomaly: bad reply", f"{method} {order.order_id} ({command_id}): {'; '.join(problems)}"
            )
        if ack.events:
            last = ack.events[-1]
            order.status = STATUS_AFTER[step]
            order.version = last.stream_version
            self.latest_position = max(self.latest_position, last.position)
            self.recent.append(Recent(order.order_id, order.customer_id, last.position, last.stream_version))

    async def resend_old(self, rng: random.Random) -> None:
        """Send an earlier acknowledged command again, unchanged (maybe from before a restart)."""
        step, request, ack, order = rng.choice(self.history)
        await self.command(step, request, order, original=ack)

    # -- load ------------------------------------------------------------------------------------

    async def writer(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-writer-{index}")
        number = 0
        while not self.stop_load.is_set():
            number += 1
            order = ClientOrder(f"{self.tag}-w{index}-{number}", f"{self.tag}-c{rng.randrange(CUSTOMERS)}")
            self.orders[order.order_id] = order
            items = [
                pb.OrderItem(
                    product_id=f"sku-{rng.randrange(PRODUCTS)}",
                    quantity=rng.randint(1, 5),
                    unit_price=rng.randint(1, 5_000),
                )
                for _ in range(rng.randint(1, 3))
            ]
            create = pb.CreateOrderRequest(
                order_id=order.order_id,
                customer_id=order.customer_id,
                items=items,
                command_id=new_command_id(),
            )
            if not await self.command("create", create, order):
                continue
            for step in rng.choice(PATHS):
                if self.stop_load.is_set():
                    break
                request: Any
                if step == "confirm":
                    request = pb.ConfirmOrderRequest(order_id=order.order_id, command_id=new_command_id())
                elif step == "ship":
                    request = pb.ShipOrderRequest(
                        order_id=order.order_id,
                        tracking_number=f"1Z{rng.randrange(10**12):012d}",
                        command_id=new_command_id(),
                    )
                else:
                    request = pb.CancelOrderRequest(
                        order_id=order.order_id,
                        reason=rng.choice(["", "changed my mind"]),
                        command_id=new_command_id(),
                    )
                if not await self.command(step, request, order):
                    break
            if self.history and rng.random() < RESEND_PROBABILITY and not self.stop_load.is_set():
                await self.resend_old(rng)

    async def reader(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-reader-{index}")
        while not self.stop_load.is_set():
            address, channel = self.read_pool.current()
            if channel is None or not self.recent:
                await asyncio.sleep(0.05)
                continue
            pick = rng.choice(self.recent)
            min_position = self.latest_position
            queries = stubs.OrderQueryServiceStub(channel)
            method = rng.choice(("GetOrder", "ListOrdersByCustomer", "GetCustomerSummary"))
            request: Any
            if method == "GetOrder":
                request = pb.GetOrderRequest(order_id=pick.order_id, min_position=min_position)
            elif method == "ListOrdersByCustomer":
                request = pb.ListOrdersByCustomerRequest(
                    customer_id=pick.customer_id, min_position=min_position
                )
            else:
                request = pb.GetCustomerSummaryRequest(
                    customer_id=pick.customer_id, min_position=min_position
                )
            self.reader_calls[method] += 1
            try:
                reply = await getattr(queries, method)(request, timeout=READ_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code in RETRYABLE or not self.read_pool.is_current(address):
                    self.reader_tolerated[code.name] += 1
                    await asyncio.sleep(0.05)
                else:
                    self.reader_anomalies[code.name] += 1
                    self.findings.add(
                        "anomaly: reader error",
                        f"{method} min_position={min_position}: {code.name} {error.details()}",
                    )
                continue
            seen = int(reply.consistency.read_model_version)
            if seen < min_position:
                self.findings.add(
                    "anomaly: stale read", f"{method} min_position={min_position} answered at {seen}"
                )
            elif method == "GetOrder" and int(reply.order.version) < pick.stream_version:
                self.findings.add(
                    "anomaly: stale read",
                    f"GetOrder {pick.order_id} at {seen}: version {reply.order.version},"
                    f" acknowledged {pick.stream_version} at position {pick.position}",
                )
            await asyncio.sleep(0.005)


# ------------------------------------------------------------------------------------------------
# Processes: start, kill, watch
# ------------------------------------------------------------------------------------------------


def make_services(data_dir: Path) -> list[Service]:
    settings = launch.Settings.in_dir(data_dir)
    return [
        Service(name, name, launch.flags(settings, name), data_dir, server=name != launch.PROJECTOR)
        for name in launch.SERVICES
    ]


async def start(service: Service, addresses: sup.Addresses) -> None:
    """Start (retrying a failed start a few times) and publish the new address."""
    for attempt in range(1, 4):
        service.start()
        try:
            address = await service.wait_listening()
        except sup.StartFailed as exc:
            log.error("%s (start %d): %s; see its .stderr file", service.name, service.starts, exc)
            service.force_stop()
            if attempt == 3:
                raise
            await asyncio.sleep(0.5)
            continue
        if service.server:
            addresses.set(service.name, address)
        return


async def killer(
    services: list[Service], run: Run, lock: asyncio.Lock, stop: asyncio.Event, rng: random.Random
) -> None:
    """Every 2-6 s: SIGKILL a random process, wait 0-1 s, start it again, wait until it listens."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(2.0, 6.0))
        if stop.is_set():
            return
        service = rng.choice(services)
        async with lock:
            run.addresses.mark_down(service.name)  # before the kill: errors from now on come from it
            await service.kill()
            log.info("killed %s (kill %d)", service.name, service.kills)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            await start(service, run.addresses)
            run.restarts += 1


async def watchdog(services: list[Service], run: Run, lock: asyncio.Lock, stop: asyncio.Event) -> None:
    """A process that exits without being killed is a failure; it is recorded and started again."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
        async with lock:
            if stop.is_set():
                return
            for service in services:
                code = service.exit_code()
                if code is not None:
                    service.unexpected_exits.append(code)
                    log.error("%s exited by itself with %d; restarting it", service.name, code)
                    run.addresses.mark_down(service.name)
                    await start(service, run.addresses)
                    run.restarts += 1


async def progress(run: Run, services: list[Service], started: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        kills = ", ".join(f"{s.name} {s.kills}" for s in services)
        log.info(
            "%4.0f s: %d commands acknowledged, %d retries, %d deduplicated; kills: %s",
            time.monotonic() - started,
            len(run.acks),
            run.retries,
            run.deduplicated,
            kills,
        )


async def wait_serving(run: Run, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _, channel = run.read_pool.current()
        with contextlib.suppress(grpc.aio.AioRpcError):
            if channel is not None:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        if time.monotonic() >= deadline:
            raise sup.StartFailed(f"read service not SERVING within {timeout:g} s")
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------------------------------
# The end: catch up, compare the read models, stop, check the files
# ------------------------------------------------------------------------------------------------


async def query(run: Run, method: str, request: Any, attempts: int = 5) -> Any:
    """A verification query, retried on the transient codes; raises the last error."""
    for attempt in range(attempts):
        _, channel = run.read_pool.current()
        try:
            return await getattr(stubs.OrderQueryServiceStub(channel), method)(request, timeout=30)
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def wait_caught_up(run: Run, events_db: Path) -> str:
    """Until every projection's position == the read service's event store version == the file's head."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        head = sup.head(events_db)
        try:
            status = await query(run, "GetProjectionStatus", pb.GetProjectionStatusRequest(), attempts=1)
        except grpc.aio.AioRpcError as error:
            last = f"{error.code().name} {error.details()}"
        else:
            positions = {p.name: int(p.position) for p in status.projections}
            last = f"head {head}, event_store_version {status.event_store_version}, projections {positions}"
            if positions and int(status.event_store_version) == head and set(positions.values()) == {head}:
                return last
        await asyncio.sleep(0.2)
    run.findings.add("end: projector did not catch up", last)
    return last


async def compare_read_models(
    run: Run,
    head: int,
    orders: dict[str, sup.ExpectedOrder],
    customers: dict[str, sup.ExpectedCustomer],
    rng: random.Random,
) -> tuple[int, int]:
    """GetOrder for every order (or a sample), GetCustomerSummary and ListOrdersByCustomer per customer."""
    limit = asyncio.Semaphore(VERIFY_CONCURRENCY)
    order_ids = sorted(orders)
    if len(order_ids) > VERIFY_SAMPLE:
        order_ids = rng.sample(order_ids, VERIFY_SAMPLE)

    async def one_order(order_id: str) -> None:
        async with limit:
            try:
                reply = await query(run, "GetOrder", pb.GetOrderRequest(order_id=order_id, min_position=head))
            except grpc.aio.AioRpcError as error:
                kind = (
                    "read model: order missing"
                    if error.code() == grpc.StatusCode.NOT_FOUND
                    else "read model: query failed"
                )
                run.findings.add(kind, f"GetOrder {order_id}: {error.code().name} {error.details()}")
                return
            differences = sup.compare_order(orders[order_id], reply.order)
            if differences:
                run.findings.add("read model: order differs", f"{order_id}: {'; '.join(differences)}")

    async def one_customer(customer: sup.ExpectedCustomer) -> None:
        async with limit:
            try:
                reply = await query(
                    run,
                    "GetCustomerSummary",
                    pb.GetCustomerSummaryRequest(customer_id=customer.customer_id, min_position=head),
                )
                listed: list[str] = []
                token = ""
                while True:
                    page = await query(
                        run,
                        "ListOrdersByCustomer",
                        pb.ListOrdersByCustomerRequest(
                            customer_id=customer.customer_id,
                            page_size=500,
                            page_token=token,
                            min_position=head,
                        ),
                    )
                    listed.extend(o.order_id for o in page.orders)
                    token = page.next_page_token
                    if not token:
                        break
            except grpc.aio.AioRpcError as error:
                run.findings.add(
                    "read model: query failed", f"customer {customer.customer_id}: {error.code().name}"
                )
                return
            differences = sup.compare_customer(customer, reply.summary)
            if differences:
                run.findings.add(
                    "read model: customer summary differs",
                    f"{customer.customer_id}: {'; '.join(differences)}",
                )
            expected = sorted(o.order_id for o in orders.values() if o.customer_id == customer.customer_id)
            if sorted(listed) != expected:
                run.findings.add(
                    "read model: customer order list differs",
                    f"{customer.customer_id}: {len(listed)} listed ({len(set(listed))} distinct),"
                    f" {len(expected)} expected; missing {sorted(set(expected) - set(listed))[:3]},"
                    f" extra {sorted(set(listed) - set(expected))[:3]}",
                )

    await asyncio.gather(*(one_order(o) for o in order_ids), *(one_customer(c) for c in customers.values()))
    return len(order_ids), len(customers)


def compare_client_and_log(run: Run, orders: dict[str, sup.ExpectedOrder]) -> None:
    """Each order's status and version as its writer's acknowledged replies left it, against the replay."""
    for client in run.orders.values():
        if client.uncertain or not client.status:
            continue
        stored = orders.get(client.order_id)
        if stored is None or (stored.status, stored.version) != (client.status, client.version):
            found = "absent" if stored is None else f"{stored.status} v{stored.version}"
            run.findings.add(
                "replay: client and log disagree",
                f"{client.order_id}: acknowledged {client.status} v{client.version}, log {found}",
            )
    for order_id in orders:
        client_order = run.orders.get(order_id)
        if client_order is None or (not client_order.status and not client_order.uncertain):
            run.findings.add("replay: client and log disagree", f"{order_id} in the log, never acknowledged")


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float = 0.0
    head: int = 0
    streams: int = 0
    customers: int = 0
    orders_checked: int = 0
    customers_checked: int = 0
    caught_up: str = ""
    final_exits: dict[str, int | None] = field(default_factory=dict)
    error: str = ""


async def soak(args: argparse.Namespace, data_dir: Path) -> tuple[Run, list[Service], Outcome]:
    seed: int = args.seed
    rng = random.Random(seed)
    addresses = sup.Addresses()
    run = Run(
        seed=seed,
        tag=f"soak{seed}",
        addresses=addresses,
        write_pool=ChannelPool(addresses, "write_service"),
        read_pool=ChannelPool(addresses, "read_service"),
    )
    services = make_services(data_dir)
    outcome = Outcome()
    events_db = data_dir / "events.db"
    tasks: list[asyncio.Task[None]] = []
    this = asyncio.current_task()
    assert this is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop the children on the way out
        asyncio.get_running_loop().add_signal_handler(signum, this.cancel)
    try:
        for service in services:
            await start(service, addresses)
        await wait_serving(run, 60.0)
        log.info(
            "started: write service %s, read service %s; data in %s; seed %d",
            addresses.get("write_service"),
            addresses.get("read_service"),
            data_dir,
            seed,
        )
        lock = asyncio.Lock()
        stop_killer, stop_watchdog = asyncio.Event(), asyncio.Event()
        started = time.monotonic()
        load = [asyncio.create_task(run.writer(i)) for i in range(args.writers)]
        load += [asyncio.create_task(run.reader(i)) for i in range(args.readers)]
        kill_task = asyncio.create_task(killer(services, run, lock, stop_killer, rng))
        watch_task = asyncio.create_task(watchdog(services, run, lock, stop_watchdog))
        tasks = [*load, kill_task, watch_task, asyncio.create_task(progress(run, services, started))]

        await asyncio.sleep(args.seconds)
        stop_killer.set()
        await kill_task  # its current kill-and-restart finishes; every process runs again
        run.stop_load.set()
        outcome.seconds = time.monotonic() - started
        log.info("load stopping: writers finish the command in hand")
        give_up = asyncio.get_running_loop().call_later(DRAIN_TIMEOUT, run.give_up.set)
        await asyncio.gather(*load)
        give_up.cancel()

        outcome.caught_up = await wait_caught_up(run, events_db)
        log.info("caught up: %s", outcome.caught_up)
        events = sup.read_events(events_db)
        orders, customers = sup.replay(events, run.findings)
        outcome.orders_checked, outcome.customers_checked = await compare_read_models(
            run, len(events), orders, customers, rng
        )

        stop_watchdog.set()
        await watch_task
        async with lock:
            for service in reversed(services):  # read service, projector, write service
                outcome.final_exits[service.name] = await service.terminate()
        log.info("stopped: exit codes %s", outcome.final_exits)

        final = sup.read_events(events_db)
        if len(final) != len(events):
            run.findings.add("end: log changed after the load", f"{len(events)} events, then {len(final)}")
        sup.check_log(final, run.findings)
        sup.check_acks(run.acks, final, run.findings)
        sup.check_commands(final, sup.read_commands(events_db), run.acks, run.findings)
        compare_client_and_log(run, orders)
        outcome.head = len(final)
        outcome.streams = len({e.stream_id for e in final})
        outcome.customers = len(customers)
    except sup.StartFailed as exc:
        outcome.error = f"a process did not start: {exc}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for service in services:
            service.force_stop()
        await run.write_pool.close()
        await run.read_pool.close()
    return run, services, outcome


# ------------------------------------------------------------------------------------------------
# Summary and command line
# ------------------------------------------------------------------------------------------------


def counter_text(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def summarize(run: Run, services: list[Service], outcome: Outcome, data_dir: Path) -> bool:
    """Print the summary; True on PASS."""
    unexpected = {s.name: s.unexpected_exits for s in services if s.unexpected_exits}
    bad_exits = {name: code for name, code in outcome.final_exits.items() if code != 0}
    passed = (
        not outcome.error
        and run.findings.total() == 0
        and run.unresolved == 0
        and not unexpected
        and not bad_exits
        and len(outcome.final_exits) == len(services)
    )
    kills = {s.name: s.kills for s in services}
    out = sys.stdout.write
    out("\n=== soak summary ===\n")
    out(f"duration              {outcome.seconds:.1f} s under load (seed {run.seed}, data {data_dir})\n")
    out(f"commands acknowledged {len(run.acks)} ({counter_text(run.acks_by_method)})\n")
    out(f"retries               {run.retries} ({counter_text(run.retry_codes)})\n")
    out(
        f"deduplicated replies  {run.deduplicated} to retries after an error;"
        f" {run.resends} deliberate re-sends of acknowledged commands\n"
    )
    out(f"given up (unresolved) {run.unresolved}\n")
    out(f"kills                 {sum(kills.values())} ({', '.join(f'{k} {v}' for k, v in kills.items())})\n")
    out(f"restarts              {run.restarts} (exits nobody asked for: {unexpected or 'none'})\n")
    out(f"channel re-creations  write {run.write_pool.replacements}, read {run.read_pool.replacements}\n")
    out(f"reader calls          {sum(run.reader_calls.values())} ({counter_text(run.reader_calls)})\n")
    out(
        f"reader errors         tolerated: {counter_text(run.reader_tolerated)};"
        f" anomalous: {counter_text(run.reader_anomalies)}\n"
    )
    out(
        f"event log             {outcome.head} events,"
        f" {outcome.streams} orders, {outcome.customers} customers\n"
    )
    out(
        f"read model checked    {outcome.orders_checked} orders (GetOrder), {outcome.customers_checked}"
        " customers (GetCustomerSummary + ListOrdersByCustomer)\n"
    )
    out(f"at the end            {outcome.caught_up}\n")
    out(f"final stop exit codes {outcome.final_exits or 'not reached'}\n")
    findings = sup.log_findings(data_dir) if data_dir.exists() else {}
    out(
        f"service log findings  {', '.join(f'{n}: {counter_text(c)}' for n, c in findings.items()) or 'none'}"
        " (informational)\n"
    )
    out("mismatches / anomalies:\n")
    for kind in [*KINDS, *(k for k in run.findings.counts if k not in KINDS)]:
        out(f"  {run.findings.counts.get(kind, 0):6d}  {kind}\n")
        for example in run.findings.examples.get(kind, []):
            out(f"            e.g. {example}\n")
    if outcome.error:
        out(f"error: {outcome.error}\n")
    out(f"RESULT: {'PASS' if passed else 'FAIL'}\n")
    sys.stdout.flush()
    return passed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak",
        description="Soak test: run write_service, projector and read_service under mixed load while a"
        " random one of them is SIGKILLed and restarted every 2-6 s; then stop all three with SIGTERM and"
        " check that no acknowledged command was lost or applied twice, the log is gap-free, and the read"
        " models equal a replay of the log. Exit 0 on PASS, 1 on FAIL, 2 on a usage error.",
    )
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="how long the load and the kills run (default 120)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory for events.db, read.db and the processes' logs (must not hold an events.db yet;"
        " kept afterwards); default: a new temporary directory, removed after a PASS unless --keep",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the workload and of the kill schedule (default: random)",
    )
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer tasks (default 8)")
    parser.add_argument("--readers", type=int, default=2, help="concurrent reader tasks (default 2)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary data directory after a PASS too (it is always kept after a FAIL)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.writers < 1 or args.readers < 0:
        parser.error("--seconds and --writers must be positive, --readers at least 0")
    if args.data_dir is not None and (args.data_dir / "events.db").exists():
        parser.error(f"--data-dir {args.data_dir} already holds an events.db; give a fresh directory")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**9)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s soak %(levelname)s %(message)s")
    temporary = args.data_dir is None
    data_dir: Path = Path(tempfile.mkdtemp(prefix="soak-")) if temporary else args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    try:
        run, services, outcome = asyncio.run(soak(args, data_dir))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print(f"interrupted; processes stopped; data directory kept: {data_dir}", file=sys.stderr)
        return 130
    passed = summarize(run, services, outcome, data_dir)
    if temporary and passed and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"data directory kept: {data_dir}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
