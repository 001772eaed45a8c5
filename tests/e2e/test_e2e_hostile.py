"""Hostile input and hostile surroundings, end to end (CONTRACT.md, "Limits and hostile input" and
"Security"): stop signals at the worst moment, sums past 2^64-1, huge error details, undecodable
request bodies, overload, files that are not ours, broken files under a running read service, file
modes, message-size limits, and the new flags in --help.

One test (or a small parametrized group) per numbered failure of the brief; each is bounded by
timeouts and describes what the services must do, so many fail until the services are fixed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import (
    REPO,
    STARTUP_TIMEOUT,
    ServiceProcess,
    Trio,
    connect_ro,
    create_request,
    event_store_head,
    health,
    item,
    rpc_error,
    run_cli,
    unique,
    wait_for,
)
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from orders_api.v1 import orders_pb2, orders_pb2_grpc

pytestmark = pytest.mark.e2e

MAX_TOTAL = 2**63 - 1
MAX_U64 = 2**64 - 1
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
QUERY_SERVICE = "orders.v1.OrderQueryService"
PAGE = 4096  # SQLite's default page size


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


def write_args(events_db: Path) -> list[str]:
    return ["--listen", "127.0.0.1:0", "--event-store", str(events_db)]


def projector_args(events_db: Path, read_db: Path) -> list[str]:
    return ["--event-store", str(events_db), "--read-db", str(read_db)]


def read_args(read_db: Path, events_db: Path) -> list[str]:
    return ["--listen", "127.0.0.1:0", "--read-db", str(read_db), "--event-store", str(events_db)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int = 64 * 1024) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def copy_database(source: Path, target: Path) -> Path:
    """A consistent copy of a live or stopped SQLite file (its -wal included), via the backup API."""
    src = connect_ro(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    return target


def swap_in(path: Path, content: bytes) -> None:
    """Replace the file at `path` (a new inode, as a restore or a bad copy would) and drop its -wal/-shm."""
    tmp = path.with_name(path.name + ".swap-tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def foreign_sqlite(path: Path, *statements: str) -> Path:
    """Another program's SQLite file (rollback journal, as sqlite3 makes it by default)."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    return path


FOREIGN_EVENTS = (
    "CREATE TABLE events(id INTEGER PRIMARY KEY, name TEXT)",
    "INSERT INTO events(name) VALUES ('birthday'), ('wedding')",
)
FOREIGN_NOTES = ("CREATE TABLE notes(x)", "INSERT INTO notes VALUES ('remember the milk')")


@dataclass
class StartOutcome:
    """How a start that should be refused ended."""

    code: int | None  # the exit code, or None when the test had to stop it (it accepted the file)
    accepted: str  # why the test stopped it, "" when it exited on its own
    stdout: str
    stderr: str
    seconds: float

    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def describe(self) -> str:
        how = f"exit {self.code}" if self.code is not None else f"stopped by the test: {self.accepted}"
        tail = "\n".join(self.stderr.splitlines()[-15:])
        return f"{how} after {self.seconds:.1f}s; stderr tail:\n{tail}"


_runs = Counter[str]()


def start_expecting_refusal(
    module: str,
    args: list[str],
    log_dir: Path,
    *,
    accepted: Callable[[], str] | None = None,
    prefix: list[str] | None = None,
    timeout: float = 15.0,
) -> StartOutcome:
    """Start a process that should refuse to start; wait for its exit, at most `timeout` seconds.

    It is stopped early (and the outcome says why) when it shows it accepted what it was given: a
    server prints `listening on`, or `accepted()` returns a reason (e.g. the file changed).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    _runs[module] += 1
    out_path = log_dir / f"{module}.refused.{_runs[module]}.stdout"
    err_path = log_dir / f"{module}.refused.{_runs[module]}.stderr"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", module, *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=os.environ.copy(),
        )
    why = ""
    try:
        while proc.poll() is None:
            if "listening on" in out_path.read_text(errors="replace"):
                why = "it printed 'listening on': it started on that file"
                break
            if accepted is not None and (why := accepted()):
                break
            if time.monotonic() - started > timeout:
                why = f"still running after {timeout:.0f}s"
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    seconds = time.monotonic() - started
    return StartOutcome(
        None if why else proc.returncode,
        why,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
        seconds,
    )


def file_watch(path: Path) -> Callable[[], str]:
    """`accepted` for start_expecting_refusal: the file (if it is one) changed, which is never right.

    A lock file beside it is not taken as acceptance here: a process may take its lock before it
    looks at the file (and must remove it again when it refuses; test 7 checks that afterwards)."""
    before = sha256(path) if path.is_file() else None

    def changed() -> str:
        if before is not None and path.is_file() and sha256(path) != before:
            return f"it changed {path}"
        return ""

    return changed


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(events.db, read.db) made by a real write service and projector: 40 orders, projected, both
    processes stopped. Tests copy them; nothing runs on them afterwards."""
    trio = Trio(tmp_path_factory.mktemp("real-files"))
    try:
        trio.start_write()
        trio.start_projector()
        last = 0
        for n in range(40):
            items = [item(f"sku-{n}-{k}-" + "p" * 40, k + 1, 100 + n) for k in range(5)]
            last = trio.commands.CreateOrder(
                create_request(unique("o"), f"c-{n % 5}", items), timeout=10
            ).position

        def projected() -> bool:
            if not trio.read_db.exists():
                return False
            conn = connect_ro(trio.read_db)
            try:
                rows = conn.execute("SELECT position FROM projections").fetchall()
            finally:
                conn.close()
            return bool(rows) and all(r[0] >= last for r in rows)

        wait_for(projected, 30, f"the projector to reach position {last}", interval=0.05)
        assert trio.projector.stop() == 0, trio.projector.stderr_tail()
        assert trio.write.stop() == 0, trio.write.stderr_tail()
        yield trio.events_db, trio.read_db
    finally:
        trio.close()


# ------------------------------------------------------------------------------------------------
# 1. A stop signal right after start exits 0
# ------------------------------------------------------------------------------------------------

SERVER_ARGS: dict[str, Callable[[Path], list[str]]] = {
    "write_service": lambda d: write_args(d / "events.db"),
    "read_service": lambda d: read_args(d / "read.db", d / "events.db"),
}
ATTEMPTS = 10


def _wait_first_line(proc: ServiceProcess, timeout: float = STARTUP_TIMEOUT) -> str:
    """Poll stdout every millisecond for a complete first line; return it."""
    deadline = time.monotonic() + timeout
    while True:
        text = proc.stdout_text()
        if "\n" in text:
            return text.split("\n", 1)[0]
        assert proc.alive(), f"{proc.module} exited before listening:\n{proc.stderr_tail()}"
        assert time.monotonic() < deadline, f"{proc.module} printed no first line within {timeout}s"
        time.sleep(0.001)


@pytest.mark.parametrize("module", sorted(SERVER_ARGS))
def test_sigterm_right_after_the_listening_line_exits_0(module: str, tmp_path: Path) -> None:
    """SIGTERM sent the moment `listening on` appears: a graceful stop, exit 0, every time."""
    proc = ServiceProcess(module, SERVER_ARGS[module](tmp_path), tmp_path)
    codes: list[int] = []
    failures: list[str] = []
    try:
        for attempt in range(ATTEMPTS):
            proc.start()
            first = _wait_first_line(proc)
            proc.send(signal.SIGTERM)
            code = proc.wait()
            codes.append(code)
            assert first.startswith("listening on "), first
            if code != 0:
                failures.append(f"attempt {attempt}: exit {code}; stderr: {proc.stderr_tail(5)!r}")
    finally:
        proc.cleanup()
    assert not failures, (
        f"{module}: {len(failures)} of {ATTEMPTS} SIGTERMs right after 'listening on' did not exit 0 "
        f"(codes {codes}):\n" + "\n".join(failures)
    )


# After the moment the process catches SIGTERM (no program can handle a signal before its interpreter
# runs, 40-100 ms after the spawn depending on the machine's load): at once, during its imports, while
# it opens its files, while it follows the log.
PROJECTOR_DELAYS = [0.0, 0.02, 0.05, 0.1, 0.25]


def _wait_catching_sigterm(proc: ServiceProcess, timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll /proc until the process has a SIGTERM handler (bit 15 of SigCgt)."""
    deadline = time.monotonic() + timeout
    while True:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        assert proc.alive(), f"{proc.module} exited: {proc.stderr_tail()}"
        assert time.monotonic() < deadline, f"{proc.module} installed no SIGTERM handler within {timeout}s"
        time.sleep(0.001)


def test_projector_sigterm_soon_after_start_exits_0(tmp_path: Path, real_files: tuple[Path, Path]) -> None:
    """SIGTERM 0..250 ms after the projector can catch it: exit 0 every time, with and without an
    event store to follow."""
    failures: list[str] = []
    for with_store in (False, True):
        data = tmp_path / ("with-store" if with_store else "no-store")
        data.mkdir()
        if with_store:
            copy_database(real_files[0], data / "events.db")
        proc = ServiceProcess("projector", projector_args(data / "events.db", data / "read.db"), data)
        try:
            for delay in PROJECTOR_DELAYS:
                proc.start()
                _wait_catching_sigterm(proc)
                time.sleep(delay)
                proc.send(signal.SIGTERM)
                code = proc.wait()
                if code != 0:
                    failures.append(
                        f"store={with_store} delay={delay * 1000:.0f}ms: exit {code}; "
                        f"stderr: {proc.stderr_tail(5)!r}"
                    )
        finally:
            proc.cleanup()
    assert not failures, "projector did not exit 0 on an early SIGTERM:\n" + "\n".join(failures)


# ------------------------------------------------------------------------------------------------
# 2. Sums past 2^64-1 saturate in the read model and say so
# ------------------------------------------------------------------------------------------------


def _create_max_orders(trio: Trio, customer: str, count: int) -> list[tuple[str, int]]:
    """`count` orders for `customer`, each of total 2^63-1; [(order_id, position)]."""
    made = []
    for _ in range(count):
        order_id = unique("o-max")
        reply = trio.commands.CreateOrder(
            create_request(order_id, customer, [item("sku-max", 1, MAX_TOTAL)]), timeout=10
        )
        made.append((order_id, reply.position))
    return made


def _summary(trio: Trio, customer: str, min_position: int) -> orders_pb2.CustomerSummary:
    try:
        return trio.queries.GetCustomerSummary(
            orders_pb2.GetCustomerSummaryRequest(customer_id=customer, min_position=min_position), timeout=10
        ).summary
    except grpc.RpcError as error:
        raise AssertionError(
            f"GetCustomerSummary answered {error.code()}: {error.details()} for data it accepted"  # type: ignore[attr-defined]
        ) from None


def test_customer_total_value_past_max_uint64_saturates_and_says_so(trio: Trio) -> None:
    customer = unique("c-sat")
    made = _create_max_orders(trio, customer, 3)  # 3 * (2^63-1) > 2^64-1
    summary = _summary(trio, customer, made[-1][1])
    assert summary.order_count == 3 and summary.pending_count == 3, summary
    assert summary.total_value == MAX_U64, summary.total_value
    assert summary.total_value_saturated is True, summary


def test_customer_total_value_that_fits_is_exact_and_not_saturated(trio: Trio) -> None:
    customer = unique("c-fit")
    made = _create_max_orders(trio, customer, 2)  # 2 * (2^63-1) = 2^64-2 fits
    summary = _summary(trio, customer, made[-1][1])
    assert summary.order_count == 2, summary
    assert summary.total_value == 2 * MAX_TOTAL == MAX_U64 - 1, summary.total_value
    assert summary.total_value_saturated is False, summary


def test_cancelling_one_of_three_max_orders_gives_the_exact_sum_again(trio: Trio) -> None:
    """The read model keeps the exact sum and saturates only what it answers."""
    customer = unique("c-unsat")
    made = _create_max_orders(trio, customer, 3)
    cancelled = trio.commands.CancelOrder(orders_pb2.CancelOrderRequest(order_id=made[0][0]), timeout=10)
    summary = _summary(trio, customer, cancelled.position)
    assert (summary.order_count, summary.pending_count, summary.cancelled_count) == (3, 2, 1), summary
    assert summary.total_value == 2 * MAX_TOTAL, summary.total_value
    assert summary.total_value_saturated is False, summary


# ------------------------------------------------------------------------------------------------
# 3. Error details stay small, so a default client gets the real status
# ------------------------------------------------------------------------------------------------

MORE = re.compile(r"(\d+)\s+more")


def _violations(error: grpc.RpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    found: list[error_details_pb2.BadRequest.FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend(bad_request.field_violations)
    return found


def _trailer_bytes(error: grpc.RpcError) -> int:
    metadata = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    size = sum(len(k) + len(v if isinstance(v, bytes) else v.encode()) for k, v in metadata)
    return size + len((error.details() or "").encode())  # type: ignore[attr-defined]


ERROR_SIZE_CASES = {
    # id: (items, how many violations the request has)
    "100-empty-product-ids-and-quantity-0": ([item("", 0, 5) for _ in range(100)], 200),
    "100-product-ids-of-128-control-characters": (
        [item("".join(chr(1 + (k + n) % 31) for k in range(128)), 1, 5) for n in range(100)],
        100,
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_SIZE_CASES))
def test_an_error_with_hundreds_of_violations_stays_small(trio: Trio, case: str) -> None:
    items, total_violations = ERROR_SIZE_CASES[case]
    before = trio.head()
    error = rpc_error(trio.commands.CreateOrder, create_request(unique("o-many"), unique("c"), items))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"a default client got {error.code()}: {(error.details() or '')[:300]}"
    )
    assert trio.head() == before
    size = _trailer_bytes(error)
    assert size < 8 * 1024, f"trailing metadata and message are {size} bytes"

    violations = _violations(error)
    assert len(violations) <= 21, f"{len(violations)} field violations listed, at most 20 (+1 summary)"
    summary = [v for v in violations if MORE.search(v.description) or MORE.search(v.field)]
    listed = [v for v in violations if v not in summary]
    assert listed and len(listed) <= 20, f"{len(listed)} real violations listed"
    assert all(re.match(r"items(\[\d+\]|\.\d+)\.", v.field) for v in listed), [v.field for v in listed]
    where = [error.details() or "", *(f"{v.field} {v.description}" for v in summary)]  # type: ignore[attr-defined]
    counts = [int(m.group(1)) for text in where for m in [MORE.search(text)] if m]
    assert counts, f"neither the message nor a final violation says how many more: {where}"
    assert len(listed) + counts[0] == total_violations, (
        f"{len(listed)} listed + {counts[0]} more != the request's {total_violations} violations"
    )


# ------------------------------------------------------------------------------------------------
# 4. Undecodable request bodies are INVALID_ARGUMENT
# ------------------------------------------------------------------------------------------------


def _unary_methods() -> list[tuple[str, Any]]:
    methods = []
    for name in ("OrderCommandService", "OrderQueryService"):
        service = orders_pb2.DESCRIPTOR.services_by_name[name]
        for method in service.methods:
            if not method.client_streaming and not method.server_streaming:
                methods.append((f"/{service.full_name}/{method.name}", method.input_type))
    return methods


def _bad_utf8_body(message_type: Any) -> bytes | None:
    """The message's first string field holding the bytes C3 28 (not UTF-8); None without a string."""
    for f in message_type.fields:
        if f.type == f.TYPE_STRING:
            return bytes([(f.number << 3) | 2]) + b"\x02\xc3\x28"
    return None


def _undecodable_cases() -> list[Any]:
    cases = []
    for path, message_type in _unary_methods():
        rpc = path.rsplit("/", 1)[1]
        cases.append(pytest.param(path, b"\xff\xff\xff\xff", id=f"{rpc}-varint-overrun"))
        cases.append(pytest.param(path, b"\x0a\x05ab", id=f"{rpc}-truncated-field"))
        body = _bad_utf8_body(message_type)
        if body is not None:
            cases.append(pytest.param(path, body, id=f"{rpc}-invalid-utf8"))
    cases.append(
        pytest.param(
            "/orders.v1.OrderCommandService/CreateOrder",
            b"\x0a\x02ok\x12\x01c\x1a\x04\x0a\x02\xc3\x28",
            id="CreateOrder-invalid-utf8-in-item",
        )
    )
    return cases


@pytest.mark.parametrize(("path", "body"), _undecodable_cases())
def test_an_undecodable_request_body_is_invalid_argument(trio: Trio, path: str, body: bytes) -> None:
    service = path.split("/")[1]
    channel = trio.write_channel() if service.endswith("CommandService") else trio.read_channel()
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    before = trio.head()
    error = rpc_error(call, body, timeout=5)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{path} {body!r}: {error.code()}: {error.details()}"
    )
    assert trio.head() == before, f"{path} {body!r} appended events"
    for proc in trio.processes():
        assert proc.alive(), f"{proc.module} died: {proc.stderr_tail()}"


# ------------------------------------------------------------------------------------------------
# 5. Overload: RESOURCE_EXHAUSTED at once, never CANCELLED
# ------------------------------------------------------------------------------------------------


async def _fire_creates(address: str, prefix: str, calls: int, channels: int = 6) -> list[grpc.StatusCode]:
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in opened)), 10)
        stubs = [orders_pb2_grpc.OrderCommandServiceStub(c) for c in opened]

        async def one(n: int) -> grpc.StatusCode:
            try:
                await stubs[n % channels].CreateOrder(
                    create_request(f"{prefix}-{n}", f"c-{n % 13}"), timeout=60
                )
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(calls))), 90)
    finally:
        for channel in opened:
            await channel.close()


def _overload(trio: Trio, calls: int) -> Counter[grpc.StatusCode]:
    assert trio.write.address
    codes = Counter(asyncio.run(_fire_creates(trio.write.address, unique("o-load"), calls)))
    assert trio.write.alive(), trio.write.stderr_tail()
    unexpected = {
        c.name: n
        for c, n in codes.items()
        if c not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
    }
    assert not unexpected, (
        f"{calls} concurrent creates ended with {dict((c.name, n) for c, n in codes.items())}"
    )
    assert trio.head() == codes[grpc.StatusCode.OK], (
        f"event store head {trio.head()} != {codes[grpc.StatusCode.OK]} OK replies"
    )
    return codes


def test_more_than_max_concurrent_calls_get_resource_exhausted(make_trio: Callable[..., Trio]) -> None:
    trio = make_trio()
    trio.write.args += ["--max-concurrent-calls", "50"]
    trio.start_write()
    codes = _overload(trio, 600)
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 1, f"600 calls over a limit of 50: {codes}"
    assert codes[grpc.StatusCode.OK] >= 50, f"600 calls over a limit of 50: {codes}"


def test_3000_concurrent_calls_at_the_default_limit_are_never_cancelled(
    make_trio: Callable[..., Trio],
) -> None:
    trio = make_trio()
    trio.start_write()
    codes = _overload(trio, 3000)
    assert codes[grpc.StatusCode.OK] >= 100, codes


# ------------------------------------------------------------------------------------------------
# 6. Start-up on files that are not ours: exit 1, one line naming the file, no traceback
# ------------------------------------------------------------------------------------------------

SETPRIV = shutil.which("setpriv")
# Root without the capabilities that bypass file permissions (the interpreter under /root stays
# usable because root owns it). A preexec_fn would do the same, but forking a process that runs
# grpc threads and then running Python in the child can abort in grpc's fork handlers.
WITHOUT_FILE_CAPABILITIES = [
    SETPRIV or "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search,-fowner",
    "--",
]
CAN_MAKE_UNWRITABLE = os.geteuid() != 0 or SETPRIV is not None


@dataclass
class Refusal:
    module: str
    args: list[str]
    path: Path  # the file the last stderr line must name
    prefix: list[str] | None = None  # command prefix, e.g. to drop capabilities


def _unwritable_dir(tmp: Path) -> tuple[Path, list[str] | None]:
    """A directory the process started with the returned command prefix cannot create files in."""
    d = tmp / "unwritable"
    d.mkdir()
    if os.geteuid() == 0:
        os.chown(d, 65534, 65534)  # nobody's, 0755: root without DAC capabilities may only read it
        d.chmod(0o755)
        return d, WITHOUT_FILE_CAPABILITIES
    d.chmod(0o555)
    return d, None


def _corrupted_store(tmp: Path, real_events: Path) -> Path:
    path = copy_database(real_events, tmp / "events.db")
    data = bytearray(path.read_bytes())
    assert len(data) >= 3 * PAGE, f"the real event store is only {len(data)} bytes"
    data[PAGE:] = os.urandom(len(data) - PAGE)  # page 1 (header, schema) intact, every table's pages garbage
    path.write_bytes(bytes(data))
    return path


def _newer_schema(source: Path, target: Path) -> Path:
    copy_database(source, target)
    conn = sqlite3.connect(target)
    try:
        conn.execute("PRAGMA user_version = 999")
        conn.commit()
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    return target


REFUSALS: dict[str, Callable[[Path, tuple[Path, Path]], Refusal]] = {}


def refusal(name: str, when: bool = True) -> Callable[[Callable[[Path, tuple[Path, Path]], Refusal]], Any]:
    def register(build: Callable[[Path, tuple[Path, Path]], Refusal]) -> Any:
        if when:
            REFUSALS[name] = build
        return build

    return register


def _store_copy(tmp: Path, real: tuple[Path, Path]) -> Path:
    return copy_database(real[0], tmp / "good-events.db")


@refusal("a-write-random-bytes-event-store")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = random_file(tmp / "events.db")
    return Refusal("write_service", write_args(path), path)


@refusal("b-projector-random-bytes-read-db")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = random_file(tmp / "read.db")
    return Refusal("projector", projector_args(_store_copy(tmp, real), path), path)


@refusal("c-write-missing-parent-directory")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = tmp / "nope" / "events.db"
    return Refusal("write_service", write_args(path), path)


@refusal("c-projector-missing-parent-directory")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = tmp / "nope" / "read.db"
    return Refusal("projector", projector_args(_store_copy(tmp, real), path), path)


@refusal("d-write-event-store-is-a-directory")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = tmp / "adir"
    path.mkdir()
    return Refusal("write_service", write_args(path), path)


@refusal("d-projector-read-db-is-a-directory")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = tmp / "adir"
    path.mkdir()
    return Refusal("projector", projector_args(_store_copy(tmp, real), path), path)


@refusal("d-write-directory-not-writable", when=CAN_MAKE_UNWRITABLE)
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    d, prefix = _unwritable_dir(tmp)
    path = d / "events.db"
    return Refusal("write_service", write_args(path), path, prefix)


@refusal("d-projector-directory-not-writable", when=CAN_MAKE_UNWRITABLE)
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    store = _store_copy(tmp, real)
    d, prefix = _unwritable_dir(tmp)
    path = d / "read.db"
    return Refusal("projector", projector_args(store, path), path, prefix)


@refusal("e-write-corrupted-event-store")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = _corrupted_store(tmp, real[0])
    return Refusal("write_service", write_args(path), path)


@refusal("f-write-foreign-events-table")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = foreign_sqlite(tmp / "calendar.db", *FOREIGN_EVENTS)
    return Refusal("write_service", write_args(path), path)


@refusal("f-projector-foreign-events-table-as-event-store")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = foreign_sqlite(tmp / "calendar.db", *FOREIGN_EVENTS)
    return Refusal("projector", projector_args(path, tmp / "read.db"), path)


@refusal("g-write-newer-event-store-schema")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = _newer_schema(real[0], tmp / "events.db")
    return Refusal("write_service", write_args(path), path)


@refusal("g-projector-newer-read-db-schema")
def _(tmp: Path, real: tuple[Path, Path]) -> Refusal:
    path = _newer_schema(real[1], tmp / "read.db")
    return Refusal("projector", projector_args(_store_copy(tmp, real), path), path)


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_file_that_is_not_ours_makes_the_process_exit_1_naming_it(
    case: str, tmp_path: Path, real_files: tuple[Path, Path]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    r = REFUSALS[case](data, real_files)
    try:
        outcome = start_expecting_refusal(
            r.module, r.args, tmp_path / "logs", accepted=file_watch(r.path), prefix=r.prefix
        )
    finally:
        for d in data.iterdir():  # let pytest remove what the case made unwritable
            if d.is_dir():
                d.chmod(0o755)
    assert outcome.code == 1, f"{r.module} on {r.path}: {outcome.describe()}"
    assert outcome.seconds < 15, outcome.describe()
    assert "Traceback" not in outcome.stderr, f"{r.module} printed a traceback: {outcome.describe()}"
    last = outcome.last_line()
    assert str(r.path) in last or str(r.path.resolve()) in last, (
        f"the last stderr line {last!r} does not name {r.path}"
    )
    assert "listening on" not in outcome.stdout


# ------------------------------------------------------------------------------------------------
# 7. Foreign files are never changed; our own files are marked
# ------------------------------------------------------------------------------------------------

FOREIGN_CASES = {
    # id: (module, statements making the foreign file); write_service gets it as --event-store,
    # the projector as --read-db
    "write-event-store-with-foreign-events-table": ("write_service", FOREIGN_EVENTS),
    "write-event-store-with-unrelated-tables": ("write_service", FOREIGN_NOTES),
    "projector-read-db-with-unrelated-tables": ("projector", FOREIGN_NOTES),
    "projector-read-db-with-foreign-events-table": ("projector", FOREIGN_EVENTS),
}


@pytest.mark.parametrize("case", sorted(FOREIGN_CASES))
def test_a_foreign_sqlite_file_is_refused_and_left_untouched(
    case: str, tmp_path: Path, real_files: tuple[Path, Path]
) -> None:
    module, statements = FOREIGN_CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    foreign = foreign_sqlite(data / "theirs.db", *statements)
    if module == "write_service":
        args = write_args(foreign)
    else:
        args = projector_args(copy_database(real_files[0], data / "events.db"), foreign)
    before_hash = sha256(foreign)
    before_files = {p.name for p in data.iterdir()}

    outcome = start_expecting_refusal(module, args, tmp_path / "logs", accepted=file_watch(foreign))

    assert sha256(foreign) == before_hash, f"{module} changed {foreign}: {outcome.describe()}"
    for suffix in (".writer-lock", "-wal", "-shm", "-journal"):
        sibling = Path(f"{foreign}{suffix}")
        assert not sibling.exists(), f"{module} left {sibling.name} beside a foreign file"
    # Only the projector's (our) event store may have grown its own -wal/-shm.
    new = {p.name for p in data.iterdir() if not p.name.startswith("events.db")} - before_files
    assert not new, f"{module} created {sorted(new)} beside a foreign file"
    assert outcome.code == 1, f"{module} on a foreign file: {outcome.describe()}"


def test_our_files_carry_distinct_nonzero_application_ids(real_files: tuple[Path, Path]) -> None:
    ids = {}
    for path in real_files:
        conn = connect_ro(path)
        try:
            (ids[path.name],) = conn.execute("PRAGMA application_id").fetchone()
        finally:
            conn.close()
    assert ids["events.db"] != 0 and ids["read.db"] != 0, f"application_id not set: {ids}"
    assert ids["events.db"] != ids["read.db"], f"event store and read database share one id: {ids}"


# ------------------------------------------------------------------------------------------------
# 8. The read service on broken files: UNAVAILABLE and NOT_SERVING, then recovery
# ------------------------------------------------------------------------------------------------


def _query_codes(trio: Trio, order_id: str, customer: str) -> dict[str, str]:
    calls = {
        "GetOrder": (trio.queries.GetOrder, orders_pb2.GetOrderRequest(order_id=order_id)),
        "ListOrdersByCustomer": (
            trio.queries.ListOrdersByCustomer,
            orders_pb2.ListOrdersByCustomerRequest(customer_id=customer),
        ),
        "GetCustomerSummary": (
            trio.queries.GetCustomerSummary,
            orders_pb2.GetCustomerSummaryRequest(customer_id=customer),
        ),
        "GetProjectionStatus": (trio.queries.GetProjectionStatus, orders_pb2.GetProjectionStatusRequest()),
    }
    codes = {}
    for name, (fn, request) in calls.items():
        try:
            fn(request, timeout=5)
            codes[name] = "OK"
        except grpc.RpcError as error:
            codes[name] = error.code().name  # type: ignore[attr-defined]
            if error.code() not in (grpc.StatusCode.UNAVAILABLE,):  # type: ignore[attr-defined]
                codes[name] += f" ({error.details()})"  # type: ignore[attr-defined]
    return codes


def _health_pair(trio: Trio) -> tuple[int, int]:
    return health(trio.read_channel()), health(trio.read_channel(), QUERY_SERVICE)


def _wait_broken(trio: Trio, order_id: str, customer: str) -> None:
    """Within 5 s every query answers UNAVAILABLE and health says NOT_SERVING; never INTERNAL/UNKNOWN."""
    seen: list[dict[str, str]] = []

    def broken() -> bool:
        codes = _query_codes(trio, order_id, customer)
        seen.append(codes)
        return all(v == "UNAVAILABLE" for v in codes.values()) and _health_pair(trio) == (
            NOT_SERVING,
            NOT_SERVING,
        )

    try:
        wait_for(broken, 5, "UNAVAILABLE and NOT_SERVING", interval=0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}; last answers {seen[-1:]}, health {_health_pair(trio)}") from None
    finally:
        bad = [{k: v for k, v in codes.items() if not v.startswith(("OK", "UNAVAILABLE"))} for codes in seen]
        bad = [b for b in bad if b]
        assert not bad, f"queries on a broken file answered {bad[:3]}"
    assert all(v == "UNAVAILABLE" for v in _query_codes(trio, order_id, customer).values())
    assert trio.read.alive(), trio.read.stderr_tail()


def _wait_recovered(trio: Trio, order_id: str, position: int) -> None:
    wait_for(lambda: _health_pair(trio) == (SERVING, SERVING), 10, "health SERVING again", interval=0.1)
    reply = trio.queries.GetOrder(
        orders_pb2.GetOrderRequest(order_id=order_id, min_position=position), timeout=10
    )
    assert reply.order.order_id == order_id


def _trio_with_orders(make_trio: Callable[..., Trio]) -> tuple[Trio, str, str, int]:
    trio = make_trio()
    trio.start_all()
    customer = unique("c")
    order_id, last = "", 0
    for _ in range(5):
        order_id = unique("o")
        last = trio.commands.CreateOrder(create_request(order_id, customer), timeout=10).position
    trio.wait_projected(last)
    return trio, order_id, customer, last


@pytest.mark.sqlite_files
def test_read_service_on_a_random_bytes_read_db_is_unavailable_then_recovers(
    make_trio: Callable[..., Trio],
) -> None:
    trio, order_id, customer, last = _trio_with_orders(make_trio)
    assert trio.projector.stop() == 0
    saved = copy_database(trio.read_db, trio.data_dir / "read.db.saved")
    swap_in(trio.read_db, os.urandom(64 * 1024))

    _wait_broken(trio, order_id, customer)

    swap_in(trio.read_db, saved.read_bytes())
    trio.start_projector()
    _wait_recovered(trio, order_id, last)


@pytest.mark.sqlite_files
def test_read_service_on_a_random_bytes_event_store_is_unavailable_then_recovers(
    make_trio: Callable[..., Trio],
) -> None:
    trio, order_id, customer, last = _trio_with_orders(make_trio)
    assert trio.write.stop() == 0
    assert trio.projector.stop() == 0
    saved = copy_database(trio.events_db, trio.data_dir / "events.db.saved")
    swap_in(trio.events_db, os.urandom(64 * 1024))

    _wait_broken(trio, order_id, customer)

    swap_in(trio.events_db, saved.read_bytes())
    _wait_recovered(trio, order_id, last)


# ------------------------------------------------------------------------------------------------
# 9. Files are created 0600 unless --file-mode says otherwise
# ------------------------------------------------------------------------------------------------

DB_FILES = ["events.db", "events.db-wal", "events.db-shm", "read.db", "read.db-wal", "read.db-shm"]


@pytest.mark.sqlite_files
@pytest.mark.parametrize(
    ("flag", "mode"), [(None, 0o600), ("0640", 0o640)], ids=["default-0600", "flag-0640"]
)
def test_created_files_have_the_file_mode(
    make_trio: Callable[..., Trio], flag: str | None, mode: int
) -> None:
    extra = ["--file-mode", flag] if flag else []
    trio = make_trio()
    trio.write.args += extra
    trio.projector.args += extra
    trio.start_all()
    order_id = unique("o")
    position = trio.commands.CreateOrder(create_request(order_id), timeout=10).position
    trio.queries.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, min_position=position), timeout=10)

    missing = [name for name in DB_FILES if not (trio.data_dir / name).exists()]
    assert not missing, f"missing while running: {missing}"
    locks = sorted(p.name for p in trio.data_dir.iterdir() if p.name.endswith("-lock"))
    assert "events.db.writer-lock" in locks, locks
    modes = {name: stat.S_IMODE((trio.data_dir / name).stat().st_mode) for name in DB_FILES + locks}
    wrong = {name: oct(m) for name, m in modes.items() if m != mode}
    assert not wrong, f"expected {oct(mode)}, got {wrong}"


# ------------------------------------------------------------------------------------------------
# 10. Request size limit: RESOURCE_EXHAUSTED
# ------------------------------------------------------------------------------------------------


def _create_of_size(approx: int) -> orders_pb2.CreateOrderRequest:
    """A valid CreateOrder whose serialized size is a little under `approx` bytes (approx > 200)."""
    items = []
    request = create_request(unique("o-size"), "c-size", items)
    while True:
        candidate = orders_pb2.CreateOrderRequest()
        candidate.CopyFrom(request)
        candidate.items.append(item(unique("sku") + "p" * 40, 1, 1))
        if candidate.ByteSize() > approx or len(candidate.items) > 100:
            return request
        request = candidate


def test_max_message_bytes_refuses_a_bigger_request(make_trio: Callable[..., Trio]) -> None:
    trio = make_trio()
    trio.write.args += ["--max-message-bytes", "1024"]
    trio.start_write()

    big = _create_of_size(2000)
    assert big.ByteSize() > 1024
    error = rpc_error(trio.commands.CreateOrder, big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{error.code()}: {error.details()}"
    assert trio.head() == 0

    small = _create_of_size(900)
    assert 600 < small.ByteSize() <= 900
    assert trio.commands.CreateOrder(small, timeout=10).position == 1
    tiny = create_request(unique("o"))
    assert trio.commands.CreateOrder(tiny, timeout=10).position == 2


def test_the_default_message_limit_is_4_mib(trio: Trio) -> None:
    before = trio.head()
    huge = create_request(unique("o"), "c" * (5 * 1024 * 1024))
    error = rpc_error(trio.commands.CreateOrder, huge)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (
        f"{error.code()}: {(error.details() or '')[:200]}"
    )
    # Under the limit the request is read and validated: the over-long customer_id is the problem.
    under = create_request(unique("o"), "c" * (3 * 1024 * 1024))
    error = rpc_error(trio.commands.CreateOrder, under)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{error.code()}: {(error.details() or '')[:200]}"
    )
    assert trio.head() == before
    assert event_store_head(trio.events_db) == before


# ------------------------------------------------------------------------------------------------
# 11. --help documents the new flags
# ------------------------------------------------------------------------------------------------

SERVER_FLAGS = [
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--auth-token-file",
    "--max-message-bytes",
    "--max-concurrent-calls",
]
# The read service opens both files read-only and creates none: it has no --file-mode.
NEW_FLAGS = {
    "write_service": [*SERVER_FLAGS, "--file-mode"],
    "read_service": SERVER_FLAGS,
    "projector": ["--file-mode"],
}


@pytest.mark.parametrize("module", sorted(NEW_FLAGS))
def test_help_documents_the_new_flags(module: str) -> None:
    result = run_cli(module, ["--help"])
    assert result.returncode == 0, result.stderr
    missing = [f for f in NEW_FLAGS[module] if not re.search(rf"{re.escape(f)}\b", result.stdout)]
    assert not missing, f"{module} --help does not document {missing}"
