"""The base of backends that run a model inside this process.

All model work runs on one dedicated worker thread per backend: loading, inference and
freeing happen in order on the thread that owns the model, never on the event loop.
Foreign failures there become BackendUnavailable, mapped here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mimiverse.backends.base import Backend
from mimiverse.config import BackendSettings
from mimiverse.errors import BackendError, BackendUnavailable

T = TypeVar("T")

# transformers' lazy module is not safe to import from two threads at once (a name can
# come back missing: "cannot import name 'WhisperForConditionalGeneration'"), and each
# in-process backend loads on its own worker thread, all at once at start: they import
# their libraries and load their models under this lock.
LOADING = threading.Lock()


class InProcessBackend(Backend):
    def __init__(self, config: BackendSettings) -> None:
        super().__init__(config)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-{self.name}")
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("backend is closed", backend=self.name)

    def _describe_failure(self, exc: Exception) -> str:
        """How a foreign failure on the worker thread reads in our error message."""
        return f"{self.kind} failed: {exc}"

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # the executor was shut down by aclose()
            raise BackendUnavailable("backend is closed", backend=self.name) from exc
        try:
            return await future
        except BackendError:
            raise
        except Exception as exc:
            raise BackendUnavailable(self._describe_failure(exc), backend=self.name) from exc

    async def _close_worker(self, release: Callable[[], None]) -> bool:
        """Mark closed and run `release` on the worker thread, after any work queued there.
        False if it was already closed."""
        if self._closed:
            return False
        self._closed = True
        with contextlib.suppress(RuntimeError):
            await asyncio.get_running_loop().run_in_executor(self._executor, release)
        self._executor.shutdown(wait=False)
        return True
