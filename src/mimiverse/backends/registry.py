"""Backend kinds by name, and `build_backend(config)`.

`llamacpp` lives behind an optional extra (llama-cpp-python, a compiled wheel): it is
imported only when a configuration names it, so the gateway runs without it (the default
`embedded-llm` then answers 503 saying what to install).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping

from mimiverse.backends.base import Backend
from mimiverse.backends.missing import MissingExtraBackend
from mimiverse.backends.ollama import OllamaBackend
from mimiverse.backends.openai import OpenAIBackend
from mimiverse.backends.sentence_transformers import SentenceTransformersBackend
from mimiverse.backends.whisper import WhisperBackend
from mimiverse.config import BackendSettings, default_backends
from mimiverse.errors import ConfigError


def _load_llamacpp() -> type[Backend]:
    try:
        module = importlib.import_module("mimiverse.backends.llamacpp")
    except ImportError as exc:
        raise ConfigError(
            f"backend kind 'llamacpp' needs llama-cpp-python: install mimiverse[llamacpp] ({exc})"
        ) from exc
    cls = getattr(module, "LlamaCppBackend", None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError("mimiverse.backends.llamacpp does not define LlamaCppBackend")
    return cls


def _load_triton() -> type[Backend]:
    # tritonclient (with grpc and protobuf) costs ~0.3 s to import: only when configured.
    try:
        module = importlib.import_module("mimiverse.backends.triton")
    except ImportError as exc:
        raise ConfigError(
            f"backend kind 'triton' needs tritonclient: install mimiverse[triton] ({exc})"
        ) from exc
    cls: type[Backend] = module.TritonBackend
    return cls


class _BackendKinds(Mapping[str, type[Backend]]):
    """kind -> Backend class; lazy kinds are imported on first lookup, then remembered.

    `in`, `len` and iterating the keys never import anything.
    """

    def __init__(
        self, eager: dict[str, type[Backend]], lazy: dict[str, Callable[[], type[Backend]]]
    ) -> None:
        self._classes = dict(eager)
        self._loaders = lazy
        self._kinds = (*eager, *lazy)

    def __getitem__(self, kind: str) -> type[Backend]:
        cls = self._classes.get(kind)
        if cls is None:
            cls = self._loaders[kind]()  # KeyError for unknown kinds, as a Mapping should
            self._classes[kind] = cls
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds


BACKEND_KINDS: Mapping[str, type[Backend]] = _BackendKinds(
    {
        OllamaBackend.kind: OllamaBackend,
        OpenAIBackend.kind: OpenAIBackend,
        # Imports nothing heavy until first use; without the extra it says how to install it.
        SentenceTransformersBackend.kind: SentenceTransformersBackend,
        WhisperBackend.kind: WhisperBackend,  # likewise (torch, transformers, soundfile)
    },
    {"llamacpp": _load_llamacpp, "triton": _load_triton},
)


def build_backend(config: BackendSettings) -> Backend:
    """A backend for `config`; ConfigError if its kind is unknown or its extra is missing."""
    if config.kind not in BACKEND_KINDS:
        raise ConfigError(
            f"backend {config.name!r}: unknown kind {config.kind!r}; "
            f"known: {', '.join(sorted(BACKEND_KINDS))}"
        )
    try:
        return BACKEND_KINDS[config.kind](config)
    except ConfigError as exc:
        # A default backend (as the defaults define it, not merely by name) whose extra is
        # missing: serve on without it (it says why). One the user declared refuses.
        if config not in default_backends():
            raise
        return MissingExtraBackend(config, f"{exc}; `make run` installs it")
