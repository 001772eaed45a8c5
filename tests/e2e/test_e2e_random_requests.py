"""Property-based requests through the real processes (the shared trio): arbitrary and malformed
requests for every unary RPC of OrderCommandService and OrderQueryService.

For every example: the status is one the contract names for that RPC (never INTERNAL or UNKNOWN;
DEADLINE_EXCEEDED or UNAVAILABLE only while waiting on a non-zero min_position), a request that
breaks a documented limit is INVALID_ARGUMENT, a refused command appends nothing and an accepted one
appends exactly what its reply says, a min_position beyond the head is OUT_OF_RANGE (and one at or
below it is not), answers carry the true event-store head, and every process is still alive.
Tests run one at a time, so the event store's head only moves by the example's own command.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from e2e_support import Trio, create_request, item
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from orders_api.v1 import orders_pb2
from read_service.servicer import OrderQueryServicer

pytestmark = pytest.mark.e2e

C = grpc.StatusCode
MAX_TOTAL = 2**63 - 1
MAX_U64 = 2**64 - 1
MAX_U32 = 2**32 - 1
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
RPC_TIMEOUT = 10.0

RUN = uuid.uuid4().hex[:8]
KNOWN = {state: f"hyp-{RUN}-{state}" for state in ("pending", "confirmed", "shipped", "cancelled")}
KNOWN_CUSTOMER = f"hyp-{RUN}-customer"
KNOWN_PRODUCT = f"hyp-{RUN}-sku"
COMMAND_IDS = [f"hyp-{RUN}-cmd-{n}" for n in range(3)]

EXAMPLES = 100  # typed requests per RPC
RAW_EXAMPLES = 40  # raw bodies per RPC

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the repository
    # No shrinking: every shrink step is a real call, and a 100-item failure took minutes to shrink.
    # The failing example is reported as found, with notes naming the request and the answer.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture(scope="module")
def known_orders(shared_trio: Trio) -> Iterator[None]:
    """One order in each status (commands in the examples may move them on), for one customer."""
    for order_id in KNOWN.values():
        shared_trio.commands.CreateOrder(
            create_request(order_id, KNOWN_CUSTOMER, [item(KNOWN_PRODUCT, 2, 150)]), timeout=10
        )
    shared_trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=KNOWN["confirmed"]), timeout=10)
    shared_trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=KNOWN["shipped"]), timeout=10)
    shared_trio.commands.ShipOrder(
        orders_pb2.ShipOrderRequest(order_id=KNOWN["shipped"], tracking_number="TRK"), timeout=10
    )
    shared_trio.commands.CancelOrder(orders_pb2.CancelOrderRequest(order_id=KNOWN["cancelled"]), timeout=10)
    yield


# ------------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------------

CONTROL_CHARS = st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\x9f"])


def texts(max_size: int = 140) -> st.SearchStrategy[str]:
    """Ids and other strings: empty, plain, anything, with a control character, at and past 128."""
    return st.one_of(
        st.just(""),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
        st.text(max_size=max_size),
        st.tuples(st.text(max_size=40), CONTROL_CHARS, st.text(max_size=40)).map("".join),
        st.integers(126, 131).map(lambda n: "x" * n),
        st.integers(126, 131).map(lambda n: "\U0001f389" * n),  # 4 UTF-8 bytes each: characters, not bytes
        st.integers(129, 5000).map(lambda n: "y" * n),
        st.sampled_from([*KNOWN.values(), KNOWN_CUSTOMER, KNOWN_PRODUCT]),
    )


def uints(top: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (top, top - 1, top // 2, top // 2 + 1, 2**31 - 1, 2**31) if 0 <= v <= top})
    return st.one_of(st.integers(0, 5), st.integers(0, top), st.sampled_from(edges))


def u64_sample() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 5),
        st.integers(0, 10_000),
        st.integers(0, MAX_U64),
        st.sampled_from([MAX_TOTAL, MAX_TOTAL + 1, MAX_U64 - 1, MAX_U64]),
    )


ITEM = st.tuples(texts(), uints(MAX_U32), u64_sample())
ITEMS = st.one_of(
    st.lists(ITEM, max_size=3),
    st.lists(ITEM, min_size=99, max_size=101),
    st.lists(ITEM, max_size=120),
)
COMMAND_ID = st.one_of(st.just(""), st.sampled_from(COMMAND_IDS), texts())
EXPECTED = st.one_of(st.none(), st.integers(0, 6), u64_sample())
REASON = st.one_of(st.just(""), st.text(max_size=600), st.integers(498, 503).map(lambda n: "r" * n))
# A min_position relative to the head at call time: 0, at or below the head, or beyond it.
MIN_POSITION = st.one_of(
    st.just(("zero", 0)),
    st.tuples(st.just("at-or-below"), u64_sample()),
    st.tuples(st.just("beyond"), u64_sample()),
)
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)


def _b64(obj: Any, pad: bool) -> str:
    text = base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()
    return text if pad else text.rstrip("=")


PAGE_TOKEN = st.one_of(
    st.just(""),
    st.text(max_size=300),
    st.builds(
        _b64,
        st.one_of(
            st.tuples(
                st.sampled_from(["by_customer", "by_status", "by_nothing", ""]),
                st.one_of(st.sampled_from([KNOWN_CUSTOMER, "PENDING", "pending"]), JSON_SCALAR),
                JSON_SCALAR,
                JSON_SCALAR,
            ).map(list),
            st.lists(JSON_SCALAR, max_size=6),
            st.dictionaries(st.text(max_size=5), JSON_SCALAR, max_size=3),
            JSON_SCALAR,
        ),
        st.booleans(),
    ),
)
STATUS = st.one_of(st.integers(0, 5), st.integers(-(2**31), 2**31 - 1))


def bad_id(value: str, required: bool = True) -> bool:
    """Breaks the documented id rule: 1..128 characters, no control characters."""
    if not value:
        return required
    return len(value) > 128 or bool(CONTROL.search(value))


PLAIN = re.compile(r"[\x21-\x7e]{1,128}")


def classify(value: str) -> bool | None:
    """True: breaks the id rule; False: surely fine (printable ASCII); None: the contract leaves it open."""
    if bad_id(value):
        return True
    return False if PLAIN.fullmatch(value) else None


def combine(*verdicts: bool | None) -> bool | None:
    if any(v is True for v in verdicts):
        return True
    return False if all(v is False for v in verdicts) else None


def token_verdict(token: str) -> bool | None:
    """An empty page token is fine; any other random one may or may not be refused."""
    return False if not token else None


def resolve_min_position(spec: tuple[str, int], head: int) -> int:
    kind, n = spec
    if kind == "zero":
        return 0
    if kind == "at-or-below":
        return n % (head + 1)
    return min(max(n, head + 1), MAX_U64)


# ------------------------------------------------------------------------------------------------
# Commands: build (request, breaks a documented limit)
# ------------------------------------------------------------------------------------------------


def build_create(f: dict[str, Any]) -> tuple[Any, bool]:
    items = [orders_pb2.OrderItem(product_id=p, quantity=q, unit_price=u) for p, q, u in f["items"]]
    request = orders_pb2.CreateOrderRequest(
        order_id=f["order_id"], customer_id=f["customer_id"], items=items, command_id=f["command_id"]
    )
    invalid = (
        bad_id(f["order_id"])
        or bad_id(f["customer_id"])
        or bad_id(f["command_id"], required=False)
        or not items
        or len(items) > 100
        or any(bad_id(p) or q == 0 for p, q, _ in f["items"])
        or sum(q * u for _, q, u in f["items"]) > MAX_TOTAL
    )
    return request, invalid


def _with_expected(request: Any, expected: int | None) -> Any:
    if expected is not None:
        request.expected_version = expected
    return request


def build_confirm(f: dict[str, Any]) -> tuple[Any, bool]:
    request = orders_pb2.ConfirmOrderRequest(order_id=f["order_id"], command_id=f["command_id"])
    invalid = bad_id(f["order_id"]) or bad_id(f["command_id"], required=False)
    return _with_expected(request, f["expected"]), invalid


def build_ship(f: dict[str, Any]) -> tuple[Any, bool]:
    request = orders_pb2.ShipOrderRequest(
        order_id=f["order_id"], tracking_number=f["tracking_number"], command_id=f["command_id"]
    )
    invalid = bad_id(f["order_id"]) or bad_id(f["command_id"], required=False) or bad_id(f["tracking_number"])
    return _with_expected(request, f["expected"]), invalid


def build_cancel(f: dict[str, Any]) -> tuple[Any, bool]:
    request = orders_pb2.CancelOrderRequest(
        order_id=f["order_id"], reason=f["reason"], command_id=f["command_id"]
    )
    invalid = bad_id(f["order_id"]) or bad_id(f["command_id"], required=False) or len(f["reason"]) > 500
    return _with_expected(request, f["expected"]), invalid


COMMANDS: dict[
    str, tuple[st.SearchStrategy[dict[str, Any]], Callable[[dict[str, Any]], tuple[Any, bool]]]
] = {
    "CreateOrder": (
        st.fixed_dictionaries(
            {"order_id": texts(), "customer_id": texts(), "items": ITEMS, "command_id": COMMAND_ID}
        ),
        build_create,
    ),
    "ConfirmOrder": (
        st.fixed_dictionaries({"order_id": texts(), "expected": EXPECTED, "command_id": COMMAND_ID}),
        build_confirm,
    ),
    "ShipOrder": (
        st.fixed_dictionaries(
            {"order_id": texts(), "tracking_number": texts(), "expected": EXPECTED, "command_id": COMMAND_ID}
        ),
        build_ship,
    ),
    "CancelOrder": (
        st.fixed_dictionaries(
            {"order_id": texts(), "reason": REASON, "expected": EXPECTED, "command_id": COMMAND_ID}
        ),
        build_cancel,
    ),
}
COMMAND_CODES = {
    "CreateOrder": {C.OK, C.INVALID_ARGUMENT, C.ALREADY_EXISTS},
    **{
        rpc: {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.ABORTED}
        for rpc in ("ConfirmOrder", "ShipOrder", "CancelOrder")
    },
}


def _call(fn: Any, request: Any) -> tuple[grpc.StatusCode, Any, str]:
    try:
        return C.OK, fn(request, timeout=RPC_TIMEOUT), ""
    except grpc.RpcError as error:
        return error.code(), None, error.details() or ""  # type: ignore[attr-defined]


def _alive(trio: Trio) -> None:
    for proc in trio.processes():
        assert proc.alive(), f"{proc.module} died: {proc.stderr_tail()}"


def check_command(
    trio: Trio, rpc: str, request: Any, invalid: bool | None, call: Any = None, decoded: Any = None
) -> None:
    """invalid: True when the request breaks a documented limit, None when not known (raw bodies, sent
    as `request` bytes through `call`, with `decoded` the message they decode to)."""
    decoded = request if decoded is None else decoded
    before = trio.head()
    code, reply, details = _call(call or getattr(trio.commands, rpc), request)
    after = trio.head()
    note(f"{rpc} -> {code.name}: {details[:300]!r}; head {before} -> {after}")
    assert code in COMMAND_CODES[rpc], f"{rpc} answered {code.name}: {details[:500]}"
    if invalid:
        assert code == C.INVALID_ARGUMENT, f"{rpc} breaking a documented limit answered {code.name}"
    if code != C.OK:
        assert after == before, f"{rpc} refused with {code.name} but the head moved {before} -> {after}"
    else:
        if isinstance(reply, bytes):
            reply = orders_pb2.CommandReply.FromString(reply)
        if reply.deduplicated:
            assert after == before, f"a deduplicated {rpc} moved the head {before} -> {after}"
        else:
            assert reply.events and after == before + len(reply.events) == reply.position, (
                f"{rpc} replied position {reply.position} with {len(reply.events)} events; "
                f"head {before} -> {after}"
            )
    if code == C.ABORTED and decoded.HasField("expected_version"):
        assert str(decoded.expected_version) in details, (
            f"ABORTED does not name the expected version: {details}"
        )
    _alive(trio)


@SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("rpc", sorted(COMMANDS))
def test_random_commands_end_in_a_contract_status(
    trio: Trio, known_orders: None, rpc: str, data: Any
) -> None:
    strategy, build = COMMANDS[rpc]
    request, invalid = build(data.draw(strategy, label="fields"))
    note(repr(request)[:1500])
    check_command(trio, rpc, request, invalid)


# ------------------------------------------------------------------------------------------------
# Queries
# ------------------------------------------------------------------------------------------------

QUERY_FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "GetOrder": st.fixed_dictionaries({"order_id": texts(), "min": MIN_POSITION}),
    "ListOrdersByCustomer": st.fixed_dictionaries(
        {"customer_id": texts(), "page_size": uints(MAX_U32), "page_token": PAGE_TOKEN, "min": MIN_POSITION}
    ),
    "ListOrdersByStatus": st.fixed_dictionaries(
        {"status": STATUS, "page_size": uints(MAX_U32), "page_token": PAGE_TOKEN, "min": MIN_POSITION}
    ),
    "GetCustomerSummary": st.fixed_dictionaries({"customer_id": texts(), "min": MIN_POSITION}),
    "GetProjectionStatus": st.fixed_dictionaries({}),
    "GetProductSales": st.fixed_dictionaries({"product_id": texts(), "min": MIN_POSITION}),
    "ListTopProducts": st.fixed_dictionaries({"limit": uints(MAX_U32), "min": MIN_POSITION}),
}
KNOWN_STATUSES = {0, 1, 2, 3, 4}
# The queries the read service serves: one the servicer does not define yet joins when it does.
SERVED = sorted(rpc for rpc in QUERY_FIELDS if rpc in vars(OrderQueryServicer))


def build_query(rpc: str, f: dict[str, Any], head: int) -> tuple[Any, bool | None, int]:
    """(request, breaks a documented limit: True / surely not: False / not known: None, min_position)."""
    m = resolve_min_position(f["min"], head) if "min" in f else 0
    if rpc == "GetOrder":
        return orders_pb2.GetOrderRequest(order_id=f["order_id"], min_position=m), classify(f["order_id"]), m
    if rpc == "ListOrdersByCustomer":
        request = orders_pb2.ListOrdersByCustomerRequest(
            customer_id=f["customer_id"], page_size=f["page_size"], page_token=f["page_token"], min_position=m
        )
        return request, combine(classify(f["customer_id"]), token_verdict(f["page_token"])), m
    if rpc == "ListOrdersByStatus":
        request = orders_pb2.ListOrdersByStatusRequest(
            status=f["status"], page_size=f["page_size"], page_token=f["page_token"], min_position=m
        )
        status_verdict = True if f["status"] == 0 else (False if f["status"] in KNOWN_STATUSES else None)
        return request, combine(status_verdict, token_verdict(f["page_token"])), m
    if rpc == "GetCustomerSummary":
        request = orders_pb2.GetCustomerSummaryRequest(customer_id=f["customer_id"], min_position=m)
        return request, classify(f["customer_id"]), m
    if rpc == "GetProjectionStatus":
        return orders_pb2.GetProjectionStatusRequest(), False, 0
    if rpc == "GetProductSales":
        request = orders_pb2.GetProductSalesRequest(product_id=f["product_id"], min_position=m)
        return request, classify(f["product_id"]), m
    assert rpc == "ListTopProducts"
    return orders_pb2.ListTopProductsRequest(limit=f["limit"], min_position=m), False, m


def query_codes(rpc: str, min_position: int) -> set[grpc.StatusCode]:
    codes = {C.OK} if rpc == "GetProjectionStatus" else {C.OK, C.INVALID_ARGUMENT, C.OUT_OF_RANGE}
    if rpc == "GetOrder":
        codes.add(C.NOT_FOUND)
    if min_position:
        codes |= {C.DEADLINE_EXCEEDED, C.UNAVAILABLE}
    return codes


RESPONSES = {
    "GetOrder": orders_pb2.GetOrderResponse,
    "ListOrdersByCustomer": orders_pb2.ListOrdersResponse,
    "ListOrdersByStatus": orders_pb2.ListOrdersResponse,
    "GetCustomerSummary": orders_pb2.GetCustomerSummaryResponse,
    "GetProjectionStatus": orders_pb2.GetProjectionStatusResponse,
    "GetProductSales": orders_pb2.GetProductSalesResponse,
    "ListTopProducts": orders_pb2.ListTopProductsResponse,
}


def check_query(
    trio: Trio,
    rpc: str,
    request: Any,
    invalid: bool | None,
    min_position: int,
    head: int,
    call: Any = None,
    decoded: Any = None,
) -> None:
    decoded = request if decoded is None else decoded
    code, reply, details = _call(call or getattr(trio.queries, rpc), request)
    note(f"{rpc} min_position={min_position} head={head} -> {code.name}: {details[:300]!r}")
    assert code in query_codes(rpc, min_position), f"{rpc} answered {code.name}: {details[:500]}"
    if min_position > head:
        # The order of field validation and the head check is the team's; a surely valid request
        # beyond the head can only be OUT_OF_RANGE.
        expected = {C.OUT_OF_RANGE} if invalid is False else {C.OUT_OF_RANGE, C.INVALID_ARGUMENT}
        assert code in expected, f"{rpc} with min_position {min_position} > head {head} answered {code.name}"
    else:
        assert code != C.OUT_OF_RANGE, (
            f"{rpc} with min_position {min_position} <= head {head} is OUT_OF_RANGE"
        )
        if invalid:
            assert code == C.INVALID_ARGUMENT, f"{rpc} breaking a documented limit answered {code.name}"
    if code == C.OK:
        if isinstance(reply, bytes):
            reply = RESPONSES[rpc].FromString(reply)
        if rpc == "GetProjectionStatus":
            assert reply.event_store_version == head, (reply.event_store_version, head)
        else:
            c = reply.consistency
            assert c.event_store_version == head, (
                f"event_store_version {c.event_store_version} != head {head}"
            )
            assert c.read_model_version >= min_position, (c.read_model_version, min_position)
        if rpc == "ListOrdersByStatus" and decoded.status not in KNOWN_STATUSES:
            assert not reply.orders, f"orders listed for unknown status {decoded.status}"
    assert trio.head() == head, f"a query moved the head {head} -> {trio.head()}"
    _alive(trio)


@SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("rpc", SERVED)
def test_random_queries_end_in_a_contract_status(trio: Trio, known_orders: None, rpc: str, data: Any) -> None:
    head = trio.head()
    request, invalid, min_position = build_query(rpc, data.draw(QUERY_FIELDS[rpc], label="fields"), head)
    note(repr(request)[:500])
    check_query(trio, rpc, request, invalid, min_position, head)


# ------------------------------------------------------------------------------------------------
# Raw bodies: arbitrary bytes, decodable or not
# ------------------------------------------------------------------------------------------------

REQUEST_CLASSES = {
    "CreateOrder": orders_pb2.CreateOrderRequest,
    "ConfirmOrder": orders_pb2.ConfirmOrderRequest,
    "ShipOrder": orders_pb2.ShipOrderRequest,
    "CancelOrder": orders_pb2.CancelOrderRequest,
    "GetOrder": orders_pb2.GetOrderRequest,
    "ListOrdersByCustomer": orders_pb2.ListOrdersByCustomerRequest,
    "ListOrdersByStatus": orders_pb2.ListOrdersByStatusRequest,
    "GetCustomerSummary": orders_pb2.GetCustomerSummaryRequest,
    "GetProjectionStatus": orders_pb2.GetProjectionStatusRequest,
    "GetProductSales": orders_pb2.GetProductSalesRequest,
    "ListTopProducts": orders_pb2.ListTopProductsRequest,
}
RAW_BODY = st.one_of(
    st.binary(max_size=64),
    # a well-formed start with a damaged tail: more often parseable up to the damage
    st.builds(
        lambda good, junk: good + junk,
        st.sampled_from([b"\x0a\x03abc", b"\x10\x01", b"\x1a\x02\x08\x01"]),
        st.binary(max_size=16),
    ),
)


@settings(SETTINGS, max_examples=RAW_EXAMPLES)
@given(body=RAW_BODY)
@pytest.mark.parametrize("rpc", sorted(r for r in REQUEST_CLASSES if r in COMMANDS or r in SERVED))
def test_random_raw_bodies_end_in_a_contract_status(trio: Trio, rpc: str, body: bytes) -> None:
    command = rpc in COMMANDS
    service = "OrderCommandService" if command else "OrderQueryService"
    channel = trio.write_channel() if command else trio.read_channel()
    call = channel.unary_unary(
        f"/orders.v1.{service}/{rpc}", request_serializer=None, response_deserializer=None
    )
    try:
        decoded = REQUEST_CLASSES[rpc].FromString(body)
    except DecodeError:
        decoded = None
    note(f"{rpc} body {body!r} decodes to {decoded!r}")
    head = trio.head()
    if decoded is None:
        code, _, details = _call(call, body)
        assert code == C.INVALID_ARGUMENT, (
            f"{rpc} with an undecodable body answered {code.name}: {details[:300]}"
        )
        assert trio.head() == head, "an undecodable body appended events"
        _alive(trio)
    elif command:
        check_command(trio, rpc, body, None, call=call, decoded=decoded)
    else:
        min_position = getattr(decoded, "min_position", 0)
        check_query(trio, rpc, body, None, min_position, head, call=call, decoded=decoded)
