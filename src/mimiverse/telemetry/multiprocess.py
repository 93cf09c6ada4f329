"""Metrics of several worker processes on one port: prometheus_client's multiprocess mode.

`serve --workers N` points PROMETHEUS_MULTIPROC_DIR at an empty folder before any worker
starts; every metric then keeps its values in memory-mapped files there (one per worker
and kind), and a scrape, answered by whichever worker the kernel hands it to, reads and
combines all of them (`MultiProcessCollector`): counters and histograms are summed,
gauges as each declares (`multiprocess_mode`). One process (the default) keeps the
in-memory values and its own registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess, values

ENV = "PROMETHEUS_MULTIPROC_DIR"
STATE_INTERVAL_S = 1.0  # how stale another worker's copied state may be on a scrape


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def use_directory(directory: Path) -> None:
    """Switch this process (and the workers it forks) to multiprocess values in
    `directory`, which must be empty. Metrics made before this keep in-memory values: call
    it before building the app."""
    os.environ[ENV] = str(directory)
    # The library picks its value class when it is imported (the CLI imports it early);
    # `get_value_class` is its own switch, read again now that the folder is set.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def page_registry(own: CollectorRegistry) -> CollectorRegistry:
    """The registry a scrape renders: `own` for one process; with several, a collector
    of every worker's files (`own` then only feeds those files)."""
    if not enabled():
        return own
    page = CollectorRegistry()
    multiprocess.MultiProcessCollector(page)  # type: ignore[no-untyped-call]
    return page


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its in-flight counts, its breakers' view)."""
    if enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
