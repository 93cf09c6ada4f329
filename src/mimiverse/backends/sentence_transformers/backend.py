"""The embedded sentence-transformers backend: batching and the replicas that run them.

One worker thread per backend runs the loads and every batch, so batches run one at a time
and a large request is cut into batches of `batch_size`, each queued on its own: a short
query waits for at most one batch of a long indexing request, not for all of it.

ONNX runs each text alone (no padding, and a text's vector never depends on what it was
batched with: int8 activations are scaled per run), on `replicas` copies of the model,
each single-threaded by default: on 2 cores, two texts at a time beat one text on two
threads, which wait on each other at every operator.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path
from typing import ClassVar

from mimiverse.backends.base import Passthrough
from mimiverse.backends.inprocess import InProcessBackend
from mimiverse.backends.sentence_transformers.engines import Loader
from mimiverse.backends.sentence_transformers.export import OnnxExports, default_onnx_cache
from mimiverse.backends.sentence_transformers.model import (
    DEFAULT_MODEL_NAME,
    INT8_SUFFIX,
    Encoder,
    Engine,
    EngineChoice,
    Loaded,
    Variant,
    brief,
    configured_dimension,
    encode,
    missing,
    model_dir,
)
from mimiverse.config import BackendSettings, Task

DEFAULT_BATCH_SIZE = 32
MAX_REPLICAS = 4  # each holds the whole model (fp32 ~90 MB); beyond 4, threads go inside


class SentenceTransformersBackend(InProcessBackend):
    """One local sentence-transformers model, in two variants (fp32 and `-int8`), each
    loaded on first use; batches run one at a time.

    `engine`: "auto" prefers ONNX and falls back to torch; "onnx" or "torch" insist (the
    int8 variant is ONNX only). `threads`: CPU threads for one batch (default:
    `n_threads`, else every CPU this process may use); ONNX spreads them over up to
    MAX_REPLICAS single-text model copies.
    """

    kind: ClassVar[str] = "sentence-transformers"
    tasks: ClassVar[frozenset[Task]] = frozenset({"embedding"})

    def __init__(
        self,
        config: BackendSettings,
        *,
        engine: EngineChoice = "auto",
        onnx_cache_dir: str | Path | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
    ) -> None:
        super().__init__(config)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.engine_choice: EngineChoice = engine
        self.onnx_cache_dir = (
            Path(onnx_cache_dir).expanduser() if onnx_cache_dir else default_onnx_cache()
        )
        self.batch_size = batch_size
        self.threads = threads or config.n_threads or _usable_cpus()
        self.replicas = min(self.threads, MAX_REPLICAS)
        # resolve(): "." or "models/minilm/" still name the folder; nothing needs to exist.
        self.model_name = (
            Path(config.model_path).expanduser().resolve().name if config.model_path
            else DEFAULT_MODEL_NAME
        )
        self.int8_model_name = self.model_name + INT8_SUFFIX
        self._loader = Loader(
            self.name, config.model_path, self.model_name, engine, self.threads, self.replicas,
            OnnxExports(self.onnx_cache_dir, self.model_name, self.name),
        )
        # One worker thread (the base's): every batch runs alone with all `threads`.
        # The other replicas' threads; the worker thread itself drives the first replica.
        self._helpers: ThreadPoolExecutor | None = None
        self._loaded: dict[Variant, Loaded] = {}  # written only on the worker thread
        self._current: Variant = "fp32"  # the variant last asked for
        self._dimension: int | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        """The runtime of the variant last asked for, or None until it is loaded."""
        loaded = self._loaded.get(self._current)
        return loaded.engine if loaded is not None else None

    @property
    def model_folder(self) -> Path | None:
        """The folder the variant last asked for was loaded from (exports are cached)."""
        loaded = self._loaded.get(self._current)
        return loaded.folder if loaded is not None else None

    @property
    def dimension(self) -> int:
        """Length of the vectors (384 for all-MiniLM-L6-v2), the same for both variants.

        Known without loading the model: read from the folder's small JSON configs.
        """
        loaded = self._loaded.get(self._current)
        if loaded is not None:
            return loaded.dimension
        if self._dimension is None:
            folder = model_dir(self.config.model_path, self.name)
            self._dimension = configured_dimension(folder, self.name)
        return self._dimension

    def variant(self, model: str) -> Variant:
        """Which variant serves `model`: int8 for `<model>-int8`, else fp32."""
        return "int8" if model == self.int8_model_name else "fp32"

    async def list_models(self) -> list[str]:
        # find_spec only: listing imports nothing heavy.
        if self.engine_choice == "torch" or missing("onnxruntime"):
            return [self.model_name]
        return [self.model_name, self.int8_model_name]

    async def check_health(self) -> None:
        # Loading (and one tiny batch) is the real check: a folder may exist and not load.
        await self._in_worker(self._ensure_loaded, self._current)

    async def warm_up(self) -> None:
        # Load at start, in the background: meanwhile /health/ready says "loading"
        # instead of timing out a health check that would have to load it.
        await self.check_health()

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        """Unit-length vectors for `texts`, in order, from the variant `model` names."""
        if not texts:
            return []
        variant = self._current = self.variant(model)
        items = list(texts)
        # Longest first: torch pads each batch to its longest text, and ONNX replicas
        # finish together when the long texts are handed out first.
        order = sorted(range(len(items)), key=lambda i: len(items[i]), reverse=True)
        vectors: list[list[float]] = [[] for _ in items]
        for start in range(0, len(order), self.batch_size):
            part = order[start:start + self.batch_size]
            batch = await self._in_worker(
                self._encode_sync, variant, [items[i] for i in part]
            )
            for i, vector in zip(part, batch, strict=True):
                vectors[i] = vector
        return vectors

    async def aclose(self) -> None:
        # Queued behind a running batch, so the model is dropped after it finishes.
        await self._close_worker(self._unload)

    # -- plumbing -----------------------------------------------------------------------

    def _describe_failure(self, exc: Exception) -> str:
        return f"sentence-transformers failed: {brief(exc)}"

    def _unload(self) -> None:
        self._loaded.clear()
        if self._helpers is not None:
            self._helpers.shutdown(wait=True)  # idle: batches run on this thread only
            self._helpers = None

    def _encode_sync(self, variant: Variant, texts: list[str]) -> list[list[float]]:
        loaded = self._ensure_loaded(variant)
        if loaded.engine == "torch":
            return encode(loaded.replicas[0], texts, self.batch_size)
        return self._encode_apart(loaded.replicas, texts)

    def _encode_apart(self, replicas: tuple[Encoder, ...], texts: list[str]) -> list[list[float]]:
        """Each text alone, on whichever replica is free next (texts come longest first)."""
        vectors: list[list[float]] = [[] for _ in texts]
        pending = collections.deque(range(len(texts)))  # popleft() is thread-safe

        def drain(replica: Encoder) -> None:
            try:
                while True:
                    try:
                        i = pending.popleft()
                    except IndexError:
                        return
                    vectors[i] = encode(replica, [texts[i]], 1)[0]
            except BaseException:
                pending.clear()  # the batch has failed: the other replicas stop too
                raise

        futures: list[Future[None]] = []
        helpers = replicas[1:len(texts)]
        if helpers:
            if self._helpers is None:
                self._helpers = ThreadPoolExecutor(
                    len(replicas) - 1, thread_name_prefix=f"embed-{self.name}-replica"
                )
            futures = [self._helpers.submit(drain, replica) for replica in helpers]
        try:
            drain(replicas[0])
        finally:
            wait_all(futures)  # the next batch must not start while these still run
        for future in futures:
            future.result()  # re-raises a helper's failure
        return vectors

    def _ensure_loaded(self, variant: Variant) -> Loaded:
        """The variant's model, loaded the first time. Runs on the worker thread only."""
        loaded = self._loaded.get(variant)
        if loaded is None:
            loaded = self._loaded[variant] = self._loader.load(variant)
        return loaded


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may run on (Linux)
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
