"""In which order a task's backends are tried: the balancing strategies.

- "ordered": as configured; the second backend only sees traffic when the first fails.
- "least-busy": fewest requests in flight per unit of `weight`; ties go to the backend
  that answered fewest of the task's requests per unit of weight (a weighted round robin
  when nothing is in flight).
- "latency": the shortest expected wait: the moving average of the backend's time to
  first token times (its requests in flight + 1), per unit of weight. A backend not
  measured yet, or not for `LATENCY_REFRESH_S` (it may have recovered from a slow spell,
  a model load say), gets the next request while it has none in flight: one probe at a
  time, never a burst.

Completions name a file: the same file goes to the same backend (weighted rendezvous
hashing over the usable ones), so its prompt cache is reused, unless that backend has
`STICKY_SLACK` more requests in flight per unit of weight than the least busy one.

The router still skips backends whose breaker is open or whose probe failed, and falls
back down this order only before the first token.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mimiverse.config import TASKS, Balance, Task

LATENCY_SMOOTHING = 0.2  # weight of the newest time to first token in the moving average
STICKY_SLACK = 2.0  # in-flight requests (per unit of weight) a file's backend may be ahead
LATENCY_REFRESH_S = 30.0  # a measurement older than this is checked with one request


@dataclass(slots=True)
class Load:
    in_flight: int = 0
    first_token_s: float | None = None  # moving average; None until measured
    measured_at: float = 0.0


class Balancer:
    """The load of every backend of one process, and the order it implies per request."""

    def __init__(self, weights: Mapping[str, float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.weights = dict(weights)
        self.clock = clock
        self.load = {name: Load() for name in weights}
        self.answered: dict[Task, Counter[str]] = {task: Counter() for task in TASKS}

    def order(
        self, task: Task, strategy: Balance, names: Sequence[str], affinity: str | None = None,
        usable: Callable[[str], bool] = lambda name: True,
    ) -> list[str]:
        """`names` in the order to try them. `affinity` (a file) keeps a request on the
        backend its earlier ones went to; `usable` says which backends could take it now."""
        if strategy == "ordered" or len(names) < 2:
            return list(names)
        cost = self._expected_wait if strategy == "latency" else self._busy
        answered = self.answered[task]
        position = {name: i for i, name in enumerate(names)}
        ranked = sorted(names, key=lambda n: (cost(n), answered[n] / self._weight(n),
                                              position[n]))
        if affinity is None:
            return ranked
        candidates = [n for n in ranked if usable(n)]
        if not candidates:
            return ranked
        home = max(candidates, key=lambda n: _rendezvous(affinity, n, self._weight(n)))
        if self._busy(home) > min(self._busy(n) for n in candidates) + STICKY_SLACK:
            return ranked  # overloaded: this request goes elsewhere, later ones may return
        return [home] + [n for n in ranked if n != home]

    def started(self, name: str) -> None:
        self._load(name).in_flight += 1

    def finished(self, name: str) -> None:
        load = self._load(name)
        load.in_flight = max(load.in_flight - 1, 0)

    def first_token(self, name: str, seconds: float) -> None:
        load = self._load(name)
        previous = load.first_token_s
        load.first_token_s = seconds if previous is None else (
            previous + LATENCY_SMOOTHING * (seconds - previous))
        load.measured_at = self.clock()

    def answer(self, task: Task, name: str) -> None:
        self.answered[task][name] += 1

    def share(self, task: Task, name: str) -> float:
        """The fraction of the task's answers (in this process) that came from `name`."""
        total = sum(self.answered[task].values())
        return self.answered[task][name] / total if total else 0.0

    def _load(self, name: str) -> Load:
        load = self.load.get(name)
        if load is None:
            load = self.load[name] = Load()
        return load

    def _weight(self, name: str) -> float:
        return self.weights.get(name, 1.0)

    def _busy(self, name: str) -> float:
        return self._load(name).in_flight / self._weight(name)

    def _expected_wait(self, name: str) -> float:
        load = self._load(name)
        if load.first_token_s is None or self.clock() - load.measured_at > LATENCY_REFRESH_S:
            return 0.0 if load.in_flight == 0 else math.inf  # one probe at a time
        return load.first_token_s * (load.in_flight + 1) / self._weight(name)


def _rendezvous(key: str, name: str, weight: float) -> float:
    """Weighted rendezvous hashing: each key picks the backend with the highest score;
    removing a backend moves only its keys, and shares follow the weights."""
    digest = hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -weight / math.log(unit)
