"""ONNX models built once per model and cached: the fp32 export and the int8 build.

The fp32 model is exported offline into `<cache>/<name>-<hash>` (the hash names the model
folder and its weights), the int8 model is built from that export into
`<name>-int8-<hash>` (the hash names the fp32 file and the recipe). Each folder is built
beside its target and renamed into place with a marker written last, so several
processes may race and a folder without the marker is never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimiverse.backends.sentence_transformers.int8 import INT8_RECIPE, quantize_int8
from mimiverse.backends.sentence_transformers.model import (
    CPU_PROVIDER,
    INSTALL_HINT,
    INT8_SUFFIX,
    ONNX_FILE,
    missing,
)

log = logging.getLogger(__package__)

EXPORTED = ".mimiverse-exported"  # written last: an export folder without it is unfinished
# Weight files the int8 folder does not need (its transformer is onnx/model.onnx).
_TRANSFORMER_WEIGHTS = frozenset({
    "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
    "rust_model.ot", "onnx", "openvino", EXPORTED,
})


def default_onnx_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mimiverse" / "onnx"


@dataclass(frozen=True, slots=True)
class OnnxExports:
    """The ONNX folders of one model (`model_name`) in `cache_dir`; `backend` names the
    backend in log lines."""

    cache_dir: Path
    model_name: str
    backend: str

    def fp32(self, library: Any, source: Path) -> Path:
        """The folder holding the fp32 ONNX model: the model's own, or a cached export."""
        for needed in ("onnxruntime", "optimum.onnxruntime"):
            if missing(needed):
                raise ModuleNotFoundError(f"{needed} is not installed ({INSTALL_HINT})")
        if (source / "onnx" / ONNX_FILE).is_file():
            return source  # the model ships its own ONNX file
        folder = self.cache_dir / _export_name(self.model_name, source)
        if not (folder / EXPORTED).is_file():
            self._export(library, source, folder)
        return folder

    def int8(self, library: Any, source: Path) -> Path:
        """The folder holding the int8 model, built from the fp32 export once."""
        fp32 = self.fp32(library, source)
        folder = self.cache_dir / _int8_name(self.model_name + INT8_SUFFIX, fp32)
        if not (folder / EXPORTED).is_file():
            self._build_int8(fp32, folder)
        return folder

    def _export(self, library: Any, source: Path, target: Path) -> None:
        """Export `source` to ONNX in `target`, whole or not at all (several processes may
        race: the first finished folder wins)."""
        started = time.perf_counter()
        with _staging(target) as staging:
            # sentence-transformers would log that the export should be saved, naming the
            # source folder (site-packages): misleading, since the next lines save it.
            with _quieted("sentence_transformers.backend"):
                model = library.SentenceTransformer(
                    str(source), device="cpu", backend="onnx", local_files_only=True,
                    model_kwargs={"provider": CPU_PROVIDER},
                )
            try:
                model.save_pretrained(str(staging))
            finally:
                _drop_export_tempdir(model)
            if not (staging / "onnx" / ONNX_FILE).is_file():
                raise RuntimeError(f"the export wrote no onnx/{ONNX_FILE}")
            _publish(staging, target, {"source": str(source.resolve())})
        log.info("%s: exported %s to ONNX in %s in %.1f s", self.backend, self.model_name,
                 target, time.perf_counter() - started)

    def _build_int8(self, fp32: Path, target: Path) -> None:
        """Quantise the fp32 export in `fp32` into `target`, whole or not at all."""
        for needed in ("onnx", "onnxruntime.quantization", "transformers"):
            if missing(needed):
                raise ModuleNotFoundError(f"{needed} is not installed ({INSTALL_HINT})")
        started = time.perf_counter()
        with _staging(target) as staging:
            # Tokenizer, configs and the pooling/normalising modules; not the weights.
            shutil.copytree(fp32, staging, dirs_exist_ok=True,
                            ignore=lambda folder, names: _TRANSFORMER_WEIGHTS & set(names)
                            if Path(folder) == fp32 else set())
            (staging / "onnx").mkdir()
            quantize_int8(fp32 / "onnx" / ONNX_FILE, staging / "onnx" / ONNX_FILE, fp32)
            _publish(staging, target, {"source": str(fp32.resolve()), "recipe": INT8_RECIPE})
        log.info("%s: built %s in %s in %.1f s", self.backend, self.model_name + INT8_SUFFIX,
                 target, time.perf_counter() - started)


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _export_name(name: str, source: Path) -> str:
    """A cache folder name unique to this model folder and the weights in it."""
    resolved = source.resolve()
    key = [str(resolved)]
    for weights in ("model.safetensors", "pytorch_model.bin"):
        path = resolved / weights
        if path.is_file():
            key.append(_file_key(path))
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:12]
    return f"{name}-{digest}"


def _int8_name(name: str, fp32: Path) -> str:
    """A cache folder name unique to the fp32 ONNX file it is built from and the recipe."""
    key = [str(fp32.resolve()), _file_key(fp32 / "onnx" / ONNX_FILE), INT8_RECIPE]
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:12]
    return f"{name}-{digest}"


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A fresh folder beside `target` to build it in; removed afterwards if still there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, target: Path, marker: dict[str, str]) -> None:
    """Mark `staging` finished and move it to `target` in one rename; when another process
    finished the same folder first, keep theirs."""
    (staging / EXPORTED).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    if target.exists() and not (target / EXPORTED).is_file():
        shutil.rmtree(target)  # an unfinished folder left by an older layout
    try:
        staging.rename(target)
    except OSError:
        if not (target / EXPORTED).is_file():
            raise


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
