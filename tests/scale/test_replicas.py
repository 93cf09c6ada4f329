"""Two `mimiverse serve` replicas on one PostgreSQL and one Redis: repositories and index
jobs live in the store, so each replica searches what the other indexed, and a job left
by a replica that died is finished by the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.scale.configs import write_config
from tests.servers.harness import ServerHandle, run_in_thread
from tests.servers.openai_server import OpenAIApp
from tests.support.redis_server import RedisServer
from tests.support.serve_process import ServeProcess, wait_for

EMBEDDINGS = "/v1/embeddings"


def replica_config(path: Path, upstream: str, redis: str, conninfo: str) -> Path:
    allowed = path.parent / "repo"  # the folder both replicas may index (the same path)
    return write_config(path, upstream, redis, f"""
[index]
store = "postgres"
url = "{conninfo}"
job_lease_s = 1.0
job_poll_s = 0.2
allowed_roots = ["{allowed}"]
""")


def make_repo(root: Path) -> Path:
    root.mkdir()
    for i in range(20):
        (root / f"module_{i}.py").write_text(
            f"def shipping_cost_{i}(weight):\n    return weight * {i + 1}\n\n"
            f"class Parcel{i}:\n    volume = {i}\n")
    return root


@pytest.fixture
def upstreams() -> Iterator[dict[str, ServerHandle]]:
    handles = {"a": run_in_thread(OpenAIApp()), "b": run_in_thread(OpenAIApp())}
    yield handles
    for handle in handles.values():
        handle.stop()


def status(replica: ServeProcess, root: Path) -> dict[str, Any]:
    r = httpx.get(f"{replica.url}/api/codebase/status", params={"repo": str(root)},
                  trust_env=False, timeout=10)
    body: dict[str, Any] = r.json()
    body["http_status"] = r.status_code
    return body


def search(replica: ServeProcess, root: Path, mode: str) -> list[str]:
    r = httpx.post(f"{replica.url}/api/codebase/search", trust_env=False, timeout=10,
                   json={"query": "shipping_cost_7", "mode": mode, "repo": str(root)})
    assert r.status_code == 200, r.text
    return [hit["path"] for hit in r.json()["results"]]


def test_index_on_a_search_on_b_and_b_finishes_when_a_dies(
    tmp_path: Path, upstreams: dict[str, ServerHandle], redis_server: RedisServer,
    postgres_conninfo: str,
) -> None:
    root = make_repo(tmp_path / "repo")
    # A's embedding server never answers: A's job stays in its embedding phase.
    upstreams["a"].behaviour.mode = "hang"
    a = ServeProcess(replica_config(tmp_path / "a.toml", upstreams["a"].url, redis_server.url,
                                  postgres_conninfo))
    b = ServeProcess(replica_config(tmp_path / "b.toml", upstreams["b"].url, redis_server.url,
                                  postgres_conninfo))
    try:
        a.wait_ready()
        b.wait_ready()
        assert status(b, root)["http_status"] == 404  # not indexed anywhere yet
        r = httpx.post(f"{a.url}/api/codebase/index", json={"path": str(root)},
                       trust_env=False, timeout=10)
        assert r.status_code == 202, r.text
        # B knows the repository from the store, and sees A's job there.
        wait_for("B shows the repository ready (searchable)",
                 lambda: status(b, root).get("state") == "ready", 30)
        assert status(b, root)["files"] == 20
        assert search(b, root, "lexical")[0] == "module_7.py"
        wait_for("A is embedding (its server holds the request)",
                 lambda: upstreams["a"].behaviour.requests[EMBEDDINGS] >= 1, 30)
        assert status(b, root)["pending_embeddings"] > 0
        assert upstreams["b"].behaviour.requests[EMBEDDINGS] == 0  # B did not run it

        a.kill()
        # A's lease runs out (1 s); B takes the job over and embeds what is left.
        wait_for("B finished the job", lambda: status(b, root)["pending_embeddings"] == 0, 60)
        done = status(b, root)
        assert done["state"] == "ready" and done["error"] is None
        assert done["chunks"] > 0 and done["embedding_model"] == "test-embed"
        assert upstreams["b"].behaviour.requests[EMBEDDINGS] >= 1
        assert search(b, root, "vector")  # vectors exist now, written by B
    finally:
        a.kill()
        b.stop()
