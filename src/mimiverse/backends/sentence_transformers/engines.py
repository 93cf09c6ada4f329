"""Loading a variant of the model on an engine: ONNX replicas, or one torch model.

The fp32 variant prefers ONNX (same vectors as torch to 1e-5) and falls back to torch
with a log line saying why, unless an engine is insisted on; the int8 variant is ONNX
only. Loads run on the backend's worker thread, under the in-process loading lock.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimiverse.backends.inprocess import LOADING
from mimiverse.backends.sentence_transformers.export import OnnxExports
from mimiverse.backends.sentence_transformers.model import (
    CPU_PROVIDER,
    INSTALL_HINT,
    INT8_SUFFIX,
    ONNX_FILE,
    Encoder,
    Engine,
    EngineChoice,
    Loaded,
    Variant,
    brief,
    encode,
    source_dir,
)
from mimiverse.errors import BackendError, BackendUnavailable

log = logging.getLogger(__package__)


@dataclass(frozen=True, slots=True)
class Loader:
    """How one backend (`backend` names it in errors and logs) loads its model."""

    backend: str
    model_path: str | None
    model_name: str
    engine_choice: EngineChoice
    threads: int
    replicas: int
    exports: OnnxExports

    def load(self, variant: Variant) -> Loaded:
        started = time.perf_counter()
        source = source_dir(self.model_path, self.backend)
        _go_offline()
        # Third-party import and export chatter (deprecations, tracer notes) is not
        # actionable here, and under a warnings-as-errors filter it would abort the load.
        with LOADING, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            library = self._import_library()
            _limit_torch_threads(self.threads)
            if variant == "int8":
                loaded = self._load_int8(library, source)
            else:
                loaded = self._load_fp32(library, source)
        name = self.model_name + INT8_SUFFIX if variant == "int8" else self.model_name
        log.info("%s: loaded %s with %s (dimension %d, %d threads, %d replicas) in %.1f s",
                 self.backend, name, loaded.engine, loaded.dimension, self.threads,
                 len(loaded.replicas), time.perf_counter() - started)
        return loaded

    def _load_fp32(self, library: Any, source: Path) -> Loaded:
        if self.engine_choice != "torch":
            try:
                return self._load_onnx(library, self.exports.fp32(library, source))
            except Exception as exc:
                if self.engine_choice == "onnx":
                    raise BackendUnavailable(
                        f"cannot use ONNX for {source}: {brief(exc)}", backend=self.backend,
                    ) from exc
                log.warning("%s: ONNX unavailable for %s (%s); using torch instead",
                            self.backend, self.model_name, brief(exc))
        return self._load_torch(library, source)

    def _load_int8(self, library: Any, source: Path) -> Loaded:
        # No torch fallback: its fp32 vectors would land under the int8 name.
        if self.engine_choice == "torch":
            raise BackendUnavailable(
                f"{self.model_name + INT8_SUFFIX} needs the ONNX engine; this backend is "
                "torch only",
                backend=self.backend,
            )
        try:
            return self._load_onnx(library, self.exports.int8(library, source))
        except BackendError:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot use ONNX int8 for {source}: {brief(exc)}", backend=self.backend,
            ) from exc

    def _import_library(self) -> Any:
        try:
            return importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise BackendUnavailable(
                f"the sentence-transformers backend needs its extra: {INSTALL_HINT} ({exc})",
                backend=self.backend,
            ) from exc

    def _load_torch(self, library: Any, source: Path) -> Loaded:
        try:
            model: Encoder = library.SentenceTransformer(
                str(source), device="cpu", backend="torch", local_files_only=True
            )
            return self._checked((model,), "torch", source)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot load sentence-transformers model {source}: {brief(exc)}",
                backend=self.backend,
            ) from exc

    def _load_onnx(self, library: Any, folder: Path) -> Loaded:
        """`replicas` copies of the ONNX model in `folder`, sharing the threads."""
        ort = importlib.import_module("onnxruntime")
        inner = max(1, self.threads // self.replicas)

        def replica() -> Encoder:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = inner
            options.inter_op_num_threads = 1
            # Idle workers sleep instead of spinning: they share the CPUs with the
            # gateway, and spinning threads starve each other whenever something else
            # wants a core.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            model: Encoder = library.SentenceTransformer(
                str(folder), device="cpu", backend="onnx", local_files_only=True,
                model_kwargs={"provider": CPU_PROVIDER, "file_name": ONNX_FILE,
                              "session_options": options},
            )
            return model

        return self._checked(tuple(replica() for _ in range(self.replicas)), "onnx", folder)

    def _checked(self, replicas: tuple[Encoder, ...], engine: Engine, folder: Path) -> Loaded:
        model = replicas[0]
        dimension = model.get_embedding_dimension()
        width = len(encode(model, ["def probe(): pass"], 1)[0])
        if dimension is not None and dimension != width:
            raise BackendUnavailable(
                f"model {folder} declares dimension {dimension} but gives {width}",
                backend=self.backend,
            )
        return Loaded(replicas, engine, width, folder)


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
