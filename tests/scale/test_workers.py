"""`mimiverse serve --workers 2`: two processes on one port sharing Redis and metrics."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.scale.configs import write_config
from tests.servers.harness import ServerHandle
from tests.support.redis_server import RedisServer
from tests.support.serve_process import ServeProcess, wait_for

FIM = {"prefix": "def area(r):\n    return ", "temperature": 0}


def per_worker(directory: Path, name: str, labels: dict[str, str]) -> dict[int, float]:
    """`name`'s sample in each worker's own metric files (pid -> value)."""
    pids = {int(f.stem.rsplit("_", 1)[1]) for f in directory.glob("*.db")}
    values: dict[int, float] = {}
    for pid in pids:
        alone = directory / f"pid-{pid}"
        alone.mkdir(exist_ok=True)
        for f in directory.glob(f"*_{pid}.db"):
            shutil.copy(f, alone / f.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        values[pid] = registry.get_sample_value(name, labels) or 0.0
        shutil.rmtree(alone)
    return values


@pytest.fixture
def workers(tmp_path: Path, openai_server: ServerHandle,
            redis_server: RedisServer) -> Iterator[tuple[ServeProcess, Path]]:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    config = write_config(tmp_path / "mimiverse.toml", openai_server.url, redis_server.url)
    server = ServeProcess(config,
                          ["--workers", "2"], env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        server.wait_ready()
        yield server, metrics_dir
    finally:
        server.stop()


def test_a_miss_on_one_worker_is_a_hit_on_the_other(
    workers: tuple[ServeProcess, Path], openai_server: ServerHandle
) -> None:
    server, metrics_dir = workers
    # A fresh connection per request: the workers take turns accepting them, so requests
    # land on both (asserted below through each worker's own metric files).
    first = httpx.post(f"{server.url}/api/ai/fim", json=FIM, trust_env=False, timeout=10)
    assert first.status_code == 200 and first.json()["cached"] is False
    sent = 1

    def hits() -> dict[int, float]:
        return per_worker(metrics_dir, "mimiverse_cache_requests_total", {"result": "hit"})

    def misses() -> dict[int, float]:
        return per_worker(metrics_dir, "mimiverse_cache_requests_total", {"result": "miss"})

    wait_for("the miss is counted", lambda: sum(misses().values()) == 1, 10)
    [missed_on] = [pid for pid, n in misses().items() if n == 1]
    for _ in range(200):
        r = httpx.post(f"{server.url}/api/ai/fim", json=FIM, trust_env=False, timeout=10)
        sent += 1
        assert r.status_code == 200 and r.json()["cached"] is True
        assert r.json()["completion"] == first.json()["completion"]
        if sum(n for pid, n in hits().items() if pid != missed_on) > 0:
            break
    # The other worker answered from Redis what the first one stored: one model call.
    assert any(n > 0 for pid, n in hits().items() if pid != missed_on)
    assert openai_server.behaviour.requests["/v1/completions"] == 1
    assert len(per_worker(metrics_dir, "mimiverse_cache_requests_total",
                          {"result": "hit"})) == 2

    # /metrics on any worker counts every worker's answers (the copies take <= 1 s).
    def page_counts() -> tuple[float, float]:
        page = httpx.get(f"{server.url}/metrics", trust_env=False, timeout=10).text
        answers = sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                      if line.startswith("mimiverse_requests_total{")
                      and 'task="completion"' in line)
        lookups = sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                      if line.startswith("mimiverse_cache_requests_total{"))
        return answers, lookups

    wait_for("the page sums both workers", lambda: page_counts() == (sent, sent), 10)


def test_the_start_up_report_is_said_once_though_every_worker_probes(
    workers: tuple[ServeProcess, Path], openai_server: ServerHandle
) -> None:
    server, _ = workers
    wait_for("both workers started",
             lambda: server.output().count("Application startup complete") == 2)
    out = server.output()
    # The first worker says what serves each task; the other logs it at DEBUG only.
    assert out.count(f"completion: test-model -> vllm (openai, {openai_server.url})") == 1
    assert out.count("embedding: test-embed -> vllm") == 1
    # ... yet each probed its backends (what answers decides what it warms up).
    assert openai_server.behaviour.requests["/v1/models"] >= 2
    # Where to go, once, from the process the operator started.
    assert out.count(f"Mimiverse: {server.url} (a page to ask and search; interactive API "
                     f"docs: {server.url}/docs, 2 workers)") == 1


def test_repositories_given_on_start_are_indexed_by_one_worker_and_searched_by_all(
    tmp_path: Path, openai_server: ServerHandle, redis_server: RedisServer
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(5):
        (repo / f"tariff_{i}.py").write_text(f"def tariff_rate_{i}(zone):\n    return {i}\n")
    config = write_config(tmp_path / "mimiverse.toml", openai_server.url, redis_server.url)
    server = ServeProcess(config,
                          ["--workers", "2", "--repo", str(repo)])
    try:
        server.wait_ready()
        # A new connection per request: both workers answer these (SQLite: each opened
        # the repository; only the first one indexed it).
        for _ in range(20):
            r = httpx.post(f"{server.url}/api/codebase/search", trust_env=False, timeout=10,
                           json={"query": "tariff_rate_3", "mode": "lexical"})
            if r.status_code == 200 and r.json()["results"]:
                assert r.json()["results"][0]["path"] == "tariff_3.py"
            else:  # the indexing worker has not committed the files yet
                wait_for("indexed", lambda: "indexed " in server.output(), 30)
    finally:
        server.stop()
    assert server.output().count(f"indexed {repo}:") == 1
    # SIGTERM: the parent stops both workers, each shuts down gracefully.
    assert server.proc.returncode == 0
    assert server.output().count("Finished server process") == 2
