"""A default backend whose optional extra is not installed: it is there, says why it
cannot answer and how to fix it, and the rest of the gateway serves on.

A backend the user declared refuses to start instead (a ConfigError): that is a
configuration to fix. A default one must not stop `mimiverse serve` on a machine that
installed only the core package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from mimiverse.backends.base import Backend, ChatRequest, Delta, GenerateRequest, Passthrough
from mimiverse.config import BackendSettings, Task
from mimiverse.errors import BackendUnavailable


class MissingExtraBackend(Backend):
    tasks: ClassVar[frozenset[Task]] = frozenset({"completion", "chat", "embedding"})

    def __init__(self, config: BackendSettings, reason: str) -> None:
        super().__init__(config)
        self.kind = config.kind  # type: ignore[misc]  # reads as the kind it stands for
        self.reason = reason

    def _unavailable(self) -> BackendUnavailable:
        return BackendUnavailable(self.reason, backend=self.name)

    def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        raise self._unavailable()

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        raise self._unavailable()

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        raise self._unavailable()

    async def check_health(self) -> None:
        raise self._unavailable()
