"""The soak's checks of the log can fail: a gap, a command applied twice, a lost acknowledged event."""

from __future__ import annotations

from tools.soak_support import (
    Ack,
    AckEvent,
    Findings,
    StoredCommand,
    StoredEvent,
    check_acks,
    check_commands,
    check_log,
)


def event(position: int, stream: str, version: int, command_id: str) -> StoredEvent:
    return StoredEvent(position, stream, version, "OrderCreated", {}, f"e{position}", command_id)


def test_a_clean_log_has_no_findings() -> None:
    events = [event(1, "order-a", 1, "c1"), event(2, "order-a", 2, "c2")]
    commands = {c: StoredCommand(c, "order-a", p, p) for c, p in (("c1", 1), ("c2", 2))}
    ack = Ack("c2", "a", "ConfirmOrder", (AckEvent(2, "e2", "order-a", 2, "OrderCreated"),), False)
    findings = Findings()
    check_log(events, findings)
    check_acks([ack], events, findings)
    check_commands(events, commands, [ack], findings)
    assert findings.total() == 0


def test_gaps_duplicates_and_lost_acks_are_found() -> None:
    events = [event(1, "order-a", 1, "c1"), event(3, "order-a", 3, "c1")]
    ack = Ack("c9", "a", "ConfirmOrder", (AckEvent(2, "e2", "order-a", 2, "OrderConfirmed"),), False)
    findings = Findings()
    check_log(events, findings)
    check_acks([ack], events, findings)
    check_commands(events, {}, [ack], findings)
    assert {
        "log: position gap",
        "log: stream version gap",
        "ack: acknowledged event lost",
        "command: applied more than once",
        "command: events without a commands row",
        "command: acknowledged command not recorded",
    } <= set(findings.counts)
