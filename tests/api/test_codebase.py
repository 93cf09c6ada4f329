"""/api/codebase/index, /status and /search over real HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.api.conftest import Serve
from tests.index.test_service import make_repo, settings
from tests.support.embedder import BowEmbedder


async def wait_ready(http: httpx.AsyncClient, url: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        status: dict[str, object] = (await http.get(f"{url}/api/codebase/status")).json()
        if (status["state"] != "indexing" and status["pending_embeddings"] == 0) or (
            time.monotonic() > deadline
        ):
            return status
        await asyncio.sleep(0.02)


async def test_index_poll_and_search(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    app = serve(settings(allowed_roots=[str(tmp_path)]), {"bow": BowEmbedder()})
    r = await http.post(f"{app.url}/api/codebase/search", json={"query": "cart"})
    assert r.status_code == 409
    assert "no repository is indexed yet" in r.json()["error"]["message"]

    root = make_repo(tmp_path / "repo").resolve()
    r = await http.post(f"{app.url}/api/codebase/index", json={"path": str(root)})
    assert r.status_code == 202
    assert r.json()["root"] == str(root)
    status = await wait_ready(http, app.url)
    assert status["state"] == "ready"
    assert (status["files"], status["chunks"], status["pending_embeddings"]) == (4, 10, 0)
    assert (status["embedding_model"], status["embedding_dim"]) == ("bow-64", 64)

    r = await http.post(f"{app.url}/api/codebase/search",
                        json={"query": "add item to cart", "limit": 2})
    body = r.json()
    assert r.status_code == 200 and body["took_ms"] > 0 and body["mode"] == "hybrid"
    top = body["results"][0]
    assert (top["path"], top["start_line"], top["end_line"], top["symbol"], top["language"]) == (
        "web/cart.js", 1, 5, "addToCart", "javascript")
    assert top["snippet"].startswith("export function addToCart(cart, item) {")
    assert set(top["signals"]) == {"lexical", "vector"}
    assert top["signals"]["lexical"]["rank"] == 1

    r = await http.post(f"{app.url}/api/codebase/search",
                        json={"query": "handler", "mode": "lexical", "language": "go"})
    assert [(x["path"], x["symbol"]) for x in r.json()["results"]] == [
        ("cmd/server/main.go", "healthHandler"), ("cmd/server/main.go", "main")]
    r = await http.post(f"{app.url}/api/codebase/search",
                        json={"query": "password", "path_glob": "web/*", "mode": "lexical"})
    assert r.json()["results"] == []
    r = await http.post(f"{app.url}/api/codebase/search",
                        json={"query": "password", "path_glob": "src/**/*.py"})
    assert {x["path"] for x in r.json()["results"]} <= {"src/auth/login.py",
                                                       "src/net/http_client.py"}


async def test_bad_requests(serve: Serve, http: httpx.AsyncClient, tmp_path: Path) -> None:
    app = serve(settings(allowed_roots=[str(tmp_path)]), {"bow": BowEmbedder()})
    for body, status, text in [
        ({"path": "relative"}, 422, "must be absolute"),
        ({"path": str(tmp_path / "nope")}, 422, "is not a directory"),
        ({}, 422, "path: Field required"),
        ({"path": str(tmp_path), "watch": True}, 422, "watch: Extra inputs are not permitted"),
    ]:
        r = await http.post(f"{app.url}/api/codebase/index", json=body)
        assert r.status_code == status and text in r.json()["error"]["message"]
    for body, field in [
        ({"query": ""}, "query"), ({"query": "x", "limit": 0}, "limit"),
        ({"query": "x", "mode": "fuzzy"}, "mode"), ({"query": "x", "language": "C; drop"},
                                                    "language"),
        ({"query": "x", "rerank": True}, "rerank"),  # unknown: refused, never dropped
    ]:
        r = await http.post(f"{app.url}/api/codebase/search", json=body)
        assert r.status_code == 422 and r.json()["error"]["message"].startswith(field)


async def test_serve_with_repo_indexes_on_start(
    serve: Serve, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = make_repo(tmp_path / "repo").resolve()
    app = serve(settings(), {"bow": BowEmbedder()}, repos=[str(root)])
    status = await wait_ready(http, app.url)
    assert (status["root"], status["state"], status["files"]) == (str(root), "ready", 4)
    r = await http.post(f"{app.url}/api/codebase/search", json={"query": "health handler"})
    assert r.json()["results"][0]["symbol"] == "healthHandler"
