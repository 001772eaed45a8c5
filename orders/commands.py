"""The order commands and their input rules (each violation names its field)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from eventcore.errors import FieldViolation, InvalidArgument
from orders.events import OrderItem

MAX_ID_LENGTH = 128
MAX_ITEMS = 100
MAX_TRACKING_NUMBER_LENGTH = 128
MAX_REASON_LENGTH = 500
MAX_TOTAL = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class CreateOrder:
    order_id: str
    customer_id: str
    items: tuple[OrderItem, ...]
    command_id: str = ""
    expected_version: int | None = None  # a new order has no version to expect

    @property
    def total(self) -> int:
        return sum(item.quantity * item.unit_price for item in self.items)


@dataclass(frozen=True, slots=True)
class ConfirmOrder:
    order_id: str
    expected_version: int | None = None
    command_id: str = ""


@dataclass(frozen=True, slots=True)
class ShipOrder:
    order_id: str
    tracking_number: str
    expected_version: int | None = None
    command_id: str = ""


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: str
    reason: str = ""
    expected_version: int | None = None
    command_id: str = ""


OrderCommand = CreateOrder | ConfirmOrder | ShipOrder | CancelOrder


def check_id(field: str, value: str, violations: list[FieldViolation], *, required: bool = True) -> None:
    """Ids are 1..128 characters without control characters (optional ids may be empty)."""
    if not value:
        if required:
            violations.append(FieldViolation(field, "must not be empty"))
        return
    if len(value) > MAX_ID_LENGTH:
        violations.append(FieldViolation(field, f"must be at most {MAX_ID_LENGTH} characters"))
    elif _CONTROL.search(value):
        violations.append(FieldViolation(field, "must not contain control characters"))


def _check_common(command: OrderCommand, violations: list[FieldViolation]) -> None:
    check_id("order_id", command.order_id, violations)
    check_id("command_id", command.command_id, violations, required=False)


def validate_create(command: CreateOrder) -> None:
    violations: list[FieldViolation] = []
    _check_common(command, violations)
    check_id("customer_id", command.customer_id, violations)
    if not command.items:
        violations.append(FieldViolation("items", "must hold at least one item"))
    elif len(command.items) > MAX_ITEMS:
        violations.append(FieldViolation("items", f"must hold at most {MAX_ITEMS} items"))
    else:
        for i, item in enumerate(command.items):
            check_id(f"items[{i}].product_id", item.product_id, violations)
            if item.quantity <= 0:
                violations.append(FieldViolation(f"items[{i}].quantity", "must be at least 1"))
        if command.total > MAX_TOTAL:
            violations.append(FieldViolation("items", f"the order total must not exceed {MAX_TOTAL}"))
    _raise(violations)


def validate_confirm(command: ConfirmOrder) -> None:
    violations: list[FieldViolation] = []
    _check_common(command, violations)
    _raise(violations)


def validate_ship(command: ShipOrder) -> None:
    violations: list[FieldViolation] = []
    _check_common(command, violations)
    if not command.tracking_number:
        violations.append(FieldViolation("tracking_number", "must not be empty"))
    elif len(command.tracking_number) > MAX_TRACKING_NUMBER_LENGTH:
        violations.append(
            FieldViolation("tracking_number", f"must be at most {MAX_TRACKING_NUMBER_LENGTH} characters")
        )
    elif _CONTROL.search(command.tracking_number):
        violations.append(FieldViolation("tracking_number", "must not contain control characters"))
    _raise(violations)


def validate_cancel(command: CancelOrder) -> None:
    violations: list[FieldViolation] = []
    _check_common(command, violations)
    if len(command.reason) > MAX_REASON_LENGTH:
        violations.append(FieldViolation("reason", f"must be at most {MAX_REASON_LENGTH} characters"))
    _raise(violations)


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)
