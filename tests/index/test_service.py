"""Indexing and hybrid search through the codebase service, with exact rankings."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mimiverse.config import Settings, load_settings
from mimiverse.errors import AllBackendsFailed, InvalidRequest, NotReady
from mimiverse.index.model import SearchFilter
from mimiverse.index.service import CodebaseService, PathNotAllowed
from mimiverse.routing.router import Router
from tests.support.embedder import BowEmbedder

FILES = {
    "src/auth/login.py": '''import hashlib


def hash_password(password: str, salt: str) -> str:
    digest = hashlib.sha256((salt + password).encode())
    return digest.hexdigest()


def authenticate_user(username: str, password: str, users: dict) -> bool:
    record = users.get(username)
    if record is None:
        return False
    return record["hash"] == hash_password(password, record["salt"])
''',
    "src/net/http_client.py": '''import urllib.request


class HttpClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def get_json(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path) as response:
            return response.read()

    def retry_request(self, path: str, attempts: int = 3) -> bytes:
        for attempt in range(attempts):
            try:
                return self.get_json(path)
            except OSError:
                if attempt == attempts - 1:
                    raise
        raise RuntimeError("unreachable")
''',
    "web/cart.js": '''export function addToCart(cart, item) {
  cart.items.push(item);
  cart.total += item.price;
  return cart;
}

export function removeFromCart(cart, itemId) {
  cart.items = cart.items.filter((i) => i.id !== itemId);
  return cart;
}
''',
    "cmd/server/main.go": '''package main

import "net/http"

func healthHandler(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
}

func main() {
	http.HandleFunc("/health", healthHandler)
	http.ListenAndServe(":8080", nil)
}
''',
}


def make_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def settings(**index: object) -> Settings:
    return load_settings(
        None,
        backends=[{"name": "bow", "kind": "openai", "url": "http://127.0.0.1:9"}],
        models={
            "completion": {"model": "m", "family": "qwen2.5-coder", "backends": ["bow"]},
            "chat": {"model": "m", "backends": ["bow"]},
            "embedding": {"model": "bow-64", "backends": ["bow"]},
        },
        index=index,
    )


async def indexed(tmp_path: Path, embedder: BowEmbedder | None = None,
                  **index: object) -> tuple[CodebaseService, Path, BowEmbedder]:
    s = settings(**index)
    embedder = embedder or BowEmbedder()
    service = CodebaseService(s.index, Router(s, {"bow": embedder}), [str(tmp_path)])
    root = make_repo(tmp_path / "repo")
    job = await service.start(str(root))
    await service.wait(job.root)
    assert job.state == "ready", job.error
    return service, root.resolve(), embedder


def where(hits: list) -> list[tuple[str, str | None]]:  # type: ignore[type-arg]
    return [(h.chunk.path, h.chunk.symbol) for h in hits]


async def test_index_then_search_each_mode(tmp_path: Path) -> None:
    service, root, _ = await indexed(tmp_path)
    try:
        stats = service.jobs[root].store.stats(service.jobs[root].repo)
        assert stats.files == 4 and stats.pending_embeddings == 0
        assert (stats.embedding_model, stats.embedding_dim) == ("bow-64", 64)

        lexical = await service.search("authenticate user password", mode="lexical", limit=3)
        assert where(lexical.hits)[0] == ("src/auth/login.py", "authenticate_user")
        assert lexical.hits[0].signals["lexical"]["rank"] == 1
        assert "vector" not in lexical.hits[0].signals

        vector = await service.search("retry request attempts", mode="vector", limit=2)
        assert where(vector.hits)[0] == ("src/net/http_client.py", "HttpClient.retry_request")
        assert "lexical" not in vector.hits[0].signals

        hybrid = await service.search("add item to cart", limit=3)
        assert where(hybrid.hits)[0] == ("web/cart.js", "addToCart")
        assert set(hybrid.hits[0].signals) == {"lexical", "vector"}
        assert hybrid.hits[0].chunk.language == "javascript"
        assert hybrid.hits[0].chunk.start_line == 1 and hybrid.hits[0].chunk.end_line == 5
        assert hybrid.took_ms > 0
    finally:
        await service.aclose()


async def test_unset_allowed_roots_mean_the_repos_given_and_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, given, other = tmp_path / "home", tmp_path / "given", tmp_path / "other"
    for folder in (home / "code", given, other):
        folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    s = settings()
    service = CodebaseService(s.index, Router(s, {"bow": BowEmbedder()}), [str(given)])
    assert service.allowed_roots == [given.resolve(), home.resolve()]
    assert service.resolve_root(str(home / "code")) == (home / "code").resolve()
    assert service.resolve_root(str(given)) == given.resolve()
    with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
        service.resolve_root(str(other))
    with pytest.raises(PathNotAllowed):
        service.resolve_root("/etc")
    await service.aclose()


async def test_the_index_lives_in_the_data_dir_never_in_the_repository(tmp_path: Path) -> None:
    service, root, _ = await indexed(tmp_path, data_dir=str(tmp_path / "data"))
    await service.aclose()
    assert not (root / ".mimiverse").exists()
    [db] = (tmp_path / "data" / "indexes").glob("repo-*/index.db")
    assert db.stat().st_size > 0


async def test_filters_and_per_file_cap(tmp_path: Path) -> None:
    service, _root, _ = await indexed(tmp_path, max_hits_per_file=1)
    try:
        py = await service.search("cart item path health", limit=10,
                                  where=SearchFilter(path_glob="src/**"))
        assert py.hits and all(h.chunk.path.startswith("src/") for h in py.hits)
        go = await service.search("health handler", where=SearchFilter(language="go"))
        assert {h.chunk.path for h in go.hits} == {"cmd/server/main.go"}
        capped = await service.search("cart item", limit=10)
        paths = [h.chunk.path for h in capped.hits]
        assert len(paths) == len(set(paths))  # one hit per file
    finally:
        await service.aclose()


async def test_reindex_is_incremental_and_follows_changes(tmp_path: Path) -> None:
    service, root, embedder = await indexed(tmp_path)
    try:
        job = service.jobs[root]
        assert job.report is not None and job.report.indexed == 4
        texts_embedded = embedder.texts
        # nothing changed: one stat per file, nothing re-chunked or re-embedded
        await service.start(str(root))
        await service.wait(root)
        assert job.report.indexed == 0 and job.report.unchanged == 4
        assert embedder.texts == texts_embedded
        # touched but identical: still nothing re-chunked
        os.utime(root / "web/cart.js", ns=(1, 1))
        await service.start(str(root))
        await service.wait(root)
        assert job.report.indexed == 0
        # a change and a deletion
        (root / "web/cart.js").write_text("export function emptyTheBasket(cart) {}\n")
        (root / "cmd/server/main.go").unlink()
        await service.start(str(root))
        await service.wait(root)
        assert (job.report.indexed, job.report.deleted, job.report.files) == (1, 1, 3)
        found = await service.search("empty basket", mode="lexical")
        assert where(found.hits) == [("web/cart.js", "emptyTheBasket")]
        assert (await service.search("healthHandler", mode="lexical")).hits == []
        assert job.store.check_integrity(job.repo) == []
    finally:
        await service.aclose()


async def test_lexical_search_works_before_embeddings_arrive(tmp_path: Path) -> None:
    embedder = BowEmbedder()
    embedder.gate = asyncio.Event()  # embeddings wait until the test lets them through
    s = settings()
    service = CodebaseService(s.index, Router(s, {"bow": embedder}), [str(tmp_path)])
    root = make_repo(tmp_path / "repo").resolve()
    try:
        job = await service.start(str(root))
        for _ in range(200):
            if job.report is not None:
                break
            await asyncio.sleep(0.01)
        assert job.state == "ready" and job.store.stats(job.repo).pending_embeddings > 0
        early = await service.search("hash password", mode="lexical")
        assert where(early.hits)[0] == ("src/auth/login.py", "hash_password")
        embedder.gate.set()
        await service.wait(root)
        assert job.store.stats(job.repo).pending_embeddings == 0
    finally:
        embedder.gate.set()
        await service.aclose()


async def test_embedding_backend_down_degrades_hybrid_to_lexical(tmp_path: Path) -> None:
    service, _root, embedder = await indexed(tmp_path)
    try:
        embedder.down = True
        result = await service.search("hash password")
        assert where(result.hits)[0] == ("src/auth/login.py", "hash_password")
        assert result.notes[0].startswith("vector search unavailable, lexical only")
        with pytest.raises(AllBackendsFailed):
            await service.search("hash password", mode="vector")
    finally:
        await service.aclose()


async def test_changing_the_embedding_model_re_embeds(tmp_path: Path) -> None:
    service, root, _ = await indexed(tmp_path)
    await service.aclose()
    s = settings()
    s.models.embedding.model = "bow-32"
    other = BowEmbedder(dim=32)
    service = CodebaseService(s.index, Router(s, {"bow": other}), [str(root)])
    try:
        job = await service.start(str(root))
        await service.wait(root)
        stats = job.store.stats(job.repo)
        assert (stats.embedding_model, stats.embedding_dim) == ("bow-32", 32)
        assert stats.pending_embeddings == 0
        assert other.texts == stats.chunks + 1  # a dimension probe, then every chunk again
        vector = await service.search("retry request attempts", mode="vector", limit=1)
        assert where(vector.hits) == [("src/net/http_client.py", "HttpClient.retry_request")]
    finally:
        await service.aclose()


async def test_bad_paths_and_search_before_indexing(tmp_path: Path) -> None:
    s = settings(allowed_roots=[str(tmp_path / "allowed")])
    service = CodebaseService(s.index, Router(s, {"bow": BowEmbedder()}))
    (tmp_path / "allowed").mkdir()
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(NotReady, match="no repository is indexed yet"):
        await service.search("x")
    with pytest.raises(InvalidRequest, match="must be absolute"):
        await service.start("relative/path")
    # Where a path may not go is said before whether it exists: no probing outside.
    with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
        await service.start(str(tmp_path / "missing"))
    with pytest.raises(InvalidRequest, match="is not a directory"):
        await service.start(str(tmp_path / "allowed" / "missing"))
    with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
        await service.start(str(tmp_path / "elsewhere"))
    with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
        await service.start(str(tmp_path / "allowed" / ".." / "elsewhere"))
    await service.aclose()
