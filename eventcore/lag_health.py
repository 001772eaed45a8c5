"""Lag health: whether a read service should say SERVING, from its projections' statuses.

NOT_SERVING while any projection has failed, or while one's lag has stayed above `max_lag` events
for longer than `max_lag_seconds`; SERVING again once that is over. A burst of writes that the
projector absorbs within the grace period never flips health, so load balancers do not flap.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventcore.projection_status import FAILED, ProjectionStatus


class LagHealth:
    def __init__(self, max_lag: int, max_lag_seconds: float) -> None:
        self.max_lag = max_lag
        self.max_lag_seconds = max_lag_seconds
        self._lagging_since: dict[str, float] = {}  # projection -> when its lag first passed max_lag

    def verdict(self, statuses: Sequence[ProjectionStatus], now: float) -> str:
        """Empty when serving; else why not (one line)."""
        reasons = []
        lagging = {s.name for s in statuses if s.lag > self.max_lag}
        self._lagging_since = {n: t for n, t in self._lagging_since.items() if n in lagging}
        for status in statuses:
            if status.state == FAILED:
                reasons.append(f"projection {status.name} failed: {status.last_error}")
            elif status.name in lagging:
                since = self._lagging_since.setdefault(status.name, now)
                if now - since > self.max_lag_seconds:
                    reasons.append(
                        f"projection {status.name} is {status.lag} events behind"
                        f" (more than {self.max_lag} for over {self.max_lag_seconds:g} s)"
                    )
        return "; ".join(reasons)
