"""A per-backend circuit breaker: closed -> open after N consecutive failures -> half-open.

While open, the backend is skipped until `cooldown_s` has passed; then exactly one request
probes it (half-open). Success closes the breaker, failure re-opens it for another cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self._opened_at: float | None = None
        self._probing = False
        self.times_opened = 0  # cooldowns started (metrics)

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def cooldown_left(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a request go to this backend now? Claims the single half-open probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._opened_at = None
        self._probing = False

    def record_first_token(self) -> None:
        """A stream started: close the breaker (a probe passed) but keep the failure count,
        so a backend that always dies mid-stream still opens it; the stream's clean end
        resets the count (`record_success`)."""
        self._opened_at = None
        self._probing = False

    def record_failure(self, reason: str) -> None:
        self.last_error = reason
        self.consecutive_failures += 1
        if self._probing or self.consecutive_failures >= self.threshold:
            if self.state != "open":  # a new cooldown, not a running one extended
                self.times_opened += 1
            self._opened_at = self._clock()
        self._probing = False

    def release_probe(self) -> None:
        """The probe ended without a verdict (e.g. the client went away): let another try."""
        self._probing = False
