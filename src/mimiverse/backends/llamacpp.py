"""An embedded llama.cpp backend: a GGUF file loaded in-process through llama-cpp-python.

llama.cpp is blocking C code and one model context is not safe to share between threads,
so every call into it runs on one dedicated worker thread per backend (load, tokenize,
generate, embed, free), never on the event loop. A generation streams tokens back to the
event loop through an asyncio queue; closing or cancelling the stream sets an event the
worker checks before each new token, so it stops within one token.

The prompt arrives already rendered (FIM templates live in mimiverse.fim): it is
tokenized with special tokens parsed, so `<|fim_prefix|>` becomes its single id.
llama-cpp-python's own `suffix=` infill is deliberately unused: it does not use the
model's FIM tokens.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import math
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

# Imported at module level on purpose: the registry imports this module only when a
# configuration names the llamacpp kind, and turns a missing extra into a ConfigError.
import llama_cpp
from llama_cpp import Llama

from mimiverse.backends import llamacpp_chat as chat
from mimiverse.backends.base import (
    ChatRequest,
    Delta,
    GenerateRequest,
    Passthrough,
    PromptSpeed,
)
from mimiverse.backends.inprocess import InProcessBackend
from mimiverse.backends.llamacpp_load import cpu_has_amx, extra_buffers
from mimiverse.config import BackendSettings, Task
from mimiverse.errors import (
    BackendError,
    BackendProtocolError,
    BackendRejected,
    BackendUnavailable,
    ModelFileError,
    Unsupported,
)
from mimiverse.weights import fetch
from mimiverse.weights.catalog import CATALOG

T = TypeVar("T")
Emit = Callable[[Delta], None]

# llama.cpp's own sampling defaults (llama-server uses the same); applied when a request
# leaves them open. No repeat penalty: it would bend code completions.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05

# What the prompt-speed probe reads: ordinary code, about as many tokens as a small prompt.
_PROBE_TOKENS = 128
_PROBE_TEXT = "".join(
    f"def step_{i}(values, factor={i}):\n    total = sum(v * factor for v in values)\n"
    f"    return total / max(len(values), 1)\n\n" for i in range(12)
)


@dataclass(frozen=True, slots=True)
class GenerationStats:
    """What the last generation did; finish_reason is "cancelled" when the stream was closed."""

    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str
    seconds: float


class LlamaCppBackend(InProcessBackend):
    """One GGUF model, loaded lazily on first use; generations run one at a time."""

    kind: ClassVar[str] = "llamacpp"
    default_target_prompt_s: ClassVar[float | None] = 1.5  # CPU prompt reading is slow
    tasks: ClassVar[frozenset[Task]] = frozenset({"completion", "chat", "embedding"})
    # Tools through the chat template and grammars (llamacpp_chat.py); no images (no
    # vision projector is loaded), no thinking switch, a context fixed at load.
    chat_fields: ClassVar[frozenset[str]] = frozenset({
        "tools", "tool_choice", "response_format", "top_k", "min_p", "presence_penalty",
        "frequency_penalty", "repeat_penalty",
    })

    def __init__(self, config: BackendSettings) -> None:
        super().__init__(config)
        # A catalog model's file is found (or fetched, at warm-up) before the first load.
        self.model_path: Path | None = Path(config.model_path) if config.model_path else None
        self._fetching = False
        # One worker thread (the base's): llama.cpp contexts are single-threaded.
        self._lock = asyncio.Lock()
        self._llm: Llama | None = None
        self._embedder: Llama | None = None
        self._cancel: threading.Event | None = None
        self._worker: asyncio.Future[None] | None = None
        self.last_generation: GenerationStats | None = None
        self._context_ids: list[int] = []  # what llama.cpp holds in its KV cache

    @property
    def generating(self) -> bool:
        """True while the worker thread is still running a generation."""
        return self._worker is not None and not self._worker.done()

    # -- public API ---------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        return [self.served_model("")]

    def served_model(self, requested: str) -> str:
        # The catalog model, or the GGUF's file name: whatever the route calls it.
        return self.config.model or Path(self.config.model_path or "").stem

    async def model_capabilities(self, model: str) -> tuple[str, ...] | None:
        async with self._lock:
            llm = await self._model()
        return chat.template_capabilities(llm.metadata.get("tokenizer.chat_template", ""))

    async def check_health(self) -> None:
        # Loading is the real check: a file that exists may still not be a usable GGUF.
        if self._llm is None:
            async with self._lock:
                await self._model()

    async def warm_up(self) -> None:
        # A catalog model missing here is fetched now (with a progress bar), never on a
        # request. Loading (the health check) also measures the prompt speed: the first
        # request gets a learned budget.
        await self.model_file(fetch_missing=True)
        await self.check_health()

    @property
    def fetching(self) -> bool:
        """True while warm-up downloads the model file."""
        return self._fetching

    async def model_file(self, *, fetch_missing: bool = False) -> Path:
        """The GGUF to load: model_path, or the catalog model's file found here (fetched
        and checked first when `fetch_missing`); BackendUnavailable says what to do."""
        if self.model_path is not None:
            return self.model_path
        model = CATALOG[self.config.model or ""]
        found = await asyncio.to_thread(fetch.find_local, model)
        if found is None and self._fetching:
            raise BackendUnavailable(f"model {model.name} is still downloading",
                                     backend=self.name)
        if found is None and not fetch_missing:
            raise BackendUnavailable(fetch.missing_hint(model), backend=self.name)
        if found is None:
            self._fetching = True
            try:
                found = await asyncio.to_thread(fetch.fetch, model)
            except ModelFileError as exc:
                raise BackendUnavailable(str(exc), backend=self.name) from None
            finally:
                self._fetching = False
        self.model_path = found
        return found

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as generation sees it: special tokens parsed, no BOS added."""
        async with self._lock:
            llm = await self._model()
            return await self._in_worker(_tokenize, llm, text)

    async def forget_prompt_cache(self) -> None:
        """Drop the KV cache, so the next prompt is read from scratch (benchmarks use it
        to time cold requests)."""
        async with self._lock:
            llm = self._llm
            if llm is not None:
                await self._in_worker(llm.reset)
            self._context_ids = []

    def count_tokens(self, text: str) -> int | None:
        # Tokenizing only reads the vocabulary: safe beside a generation on the worker.
        llm = self._llm
        return None if llm is None else len(_tokenize(llm, text))

    async def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        async with self._lock:
            llm = await self._model()
            work = functools.partial(self._generate_sync, llm, request)
            # aclosing: closing this stream must close the bridge now, not at GC time.
            async with aclosing(self._bridge(work)) as deltas:
                async for delta in deltas:
                    yield delta

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        async with self._lock:
            llm = await self._model()
            work = functools.partial(self._chat_sync, llm, request)
            async with aclosing(self._bridge(work)) as deltas:
                async for delta in deltas:
                    yield delta

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        if not texts:
            return []
        async with self._lock:
            if self._embedder is None:
                self._check_open()
                await self.model_file()
                self._embedder = await self._in_worker(self._load, True)
            return await self._in_worker(self._embed_sync, self._embedder, list(texts))

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._cancel is not None:
            self._cancel.set()
        models = [m for m in (self._llm, self._embedder) if m is not None]
        self._llm = self._embedder = None
        # Queued behind any running generation, so the model is freed after it stops.
        await self._close_worker(lambda: _free(models))

    # -- plumbing -----------------------------------------------------------------------

    async def _model(self) -> Llama:
        """The generation model, loaded on the worker thread the first time. Needs _lock."""
        self._check_open()
        if self._llm is None:
            await self.model_file()
            self._llm = await self._in_worker(self._load, False)
            speed = self.prompt_speed
            if speed is not None and speed.tokens_per_s is None:
                await self._in_worker(self._probe_prompt_speed, self._llm, speed)
        return self._llm

    def _probe_prompt_speed(self, llm: Llama, speed: PromptSpeed) -> None:
        """Read a short prompt once, timed, so even the first request's prompt fits the
        target time (unmeasured, it gets the route's whole budget: 2,048 tokens take
        ~12 s on a 2-core CPU). Just after loading the model's pages are still cold, so
        this errs on the slow side; real requests refine it."""
        tokens = _tokenize(llm, _PROBE_TEXT)[:_PROBE_TOKENS]
        started = time.perf_counter()
        llm.eval(tokens)
        speed.observe(len(tokens), time.perf_counter() - started)
        llm.reset()  # type: ignore[no-untyped-call]
        self._context_ids = []

    def _describe_failure(self, exc: Exception) -> str:
        return f"llama.cpp failed: {exc}"

    def _load(self, embedding: bool) -> Llama:
        path = Path(self.model_path or "")
        if not path.is_file():
            raise BackendUnavailable(
                f"GGUF model {path} does not exist or is not a file", backend=self.name
            )
        extra = self.config.extra_buffers
        if extra is None:
            extra = not cpu_has_amx()
        try:
            with extra_buffers(extra):
                return Llama(
                    model_path=str(path),
                    n_ctx=self.config.n_ctx,
                    # llama-cpp-python would generate on half the CPUs; this process's own
                    # CPUs, all of them, are what a local completion server is for.
                    n_threads=self.config.n_threads or len(os.sched_getaffinity(0)),
                    embedding=embedding,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            # llama.cpp says only "failed to load model"; the path is what the user needs.
            raise BackendUnavailable(
                f"cannot load GGUF model {path}: {exc}", backend=self.name
            ) from exc

    async def _bridge(
        self, work: Callable[[threading.Event, Emit], None]
    ) -> AsyncGenerator[Delta, None]:
        """Run `work` on the worker thread and yield the Deltas it emits, as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Delta | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def run() -> None:
            try:
                work(cancel, put)
            except BaseException as exc:  # handed to the consumer, who re-raises it
                put(exc)
            else:
                put(None)

        try:
            worker = loop.run_in_executor(self._executor, run)
        except RuntimeError as exc:
            raise BackendUnavailable("backend is closed", backend=self.name) from exc
        self._cancel, self._worker = cancel, worker
        finished = False
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BackendError):
                    raise item
                if isinstance(item, Exception):
                    raise BackendUnavailable(
                        f"llama.cpp failed: {item}", backend=self.name
                    ) from item
                if isinstance(item, BaseException):
                    raise item
                finished = finished or item.finish_reason is not None
                yield item
            if not finished:  # only aclose() stops a worker whose consumer is still here
                raise BackendUnavailable(
                    "the backend was closed during the generation", backend=self.name
                )
        finally:
            cancel.set()
            # Hold the lock until the worker has really stopped touching the model.
            await asyncio.shield(worker)

    def _generate_sync(
        self, llm: Llama, request: GenerateRequest, cancel: threading.Event, emit: Emit
    ) -> None:
        started = time.perf_counter()
        prompt = _tokenize(llm, request.prompt) or [llm.token_bos()]
        n_ctx: int = llm.n_ctx()
        if len(prompt) >= n_ctx:
            raise BackendRejected(
                f"prompt has {len(prompt)} tokens; the context window is {n_ctx}",
                backend=self.name,
                status_code=400,
            )
        budget = min(request.max_tokens, n_ctx - len(prompt))
        stops = [s for s in request.stop if s]
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        stop_ids = _special_token_ids(llm, vocab, stops)
        seed = request.seed if request.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        llm.set_seed(seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""  # decoded but unsent: it may be the start of a stop string
        ids: list[int] = []  # tokens since the last Delta
        n = 0
        prev = prompt[-1]
        if cancel.is_set():  # the consumer left while this waited its turn
            self.last_generation = GenerationStats(len(prompt), 0, "cancelled", 0.0)
            return
        finish = "length"
        cut_by_stop = False
        # llama.cpp keeps the longest common prefix of its last sequence in the KV cache
        # and reads only the rest: that rest is what the prompt speed is measured on.
        reused = _common_prefix(self._context_ids, prompt)
        self._context_ids = list(prompt)
        tokens = llm.generate(
            prompt,
            temp=request.temperature,
            top_p=request.top_p if request.top_p is not None else _TOP_P,
            top_k=request.top_k if request.top_k is not None else _TOP_K,
            min_p=request.min_p if request.min_p is not None else _MIN_P,
            repeat_penalty=request.repeat_penalty or 1.0,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
        )
        try:
            for token in tokens:
                if n == 0 and self.prompt_speed is not None:
                    self.prompt_speed.observe(len(prompt) - reused,
                                              time.perf_counter() - started)
                self._context_ids.append(token)
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if token in stop_ids or llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                n += 1
                ids.append(token)
                pending += decoder.decode(_piece(llm, prev, token))
                prev = token
                cut = _first_stop(pending, stops)
                if cut is not None:
                    pending, finish, cut_by_stop = pending[:cut], "stop", True
                    break
                send = len(pending) - _stop_prefix_len(pending, stops)
                if send > 0:
                    emit(Delta(text=pending[:send], token_ids=tuple(ids)))
                    pending, ids = pending[send:], []
                if n >= budget:
                    break
        finally:
            tokens.close()
        if not cut_by_stop:
            pending += decoder.decode(b"", final=True)
        self.last_generation = GenerationStats(
            len(prompt), n, finish, time.perf_counter() - started
        )
        if finish != "cancelled":
            emit(Delta(text=pending, finish_reason=finish, prompt_tokens=len(prompt),
                       completion_tokens=n, token_ids=tuple(ids)))

    def _chat_sync(
        self, llm: Llama, request: ChatRequest, cancel: threading.Event, emit: Emit
    ) -> None:
        started = time.perf_counter()
        defaults = {"top_p": _TOP_P, "top_k": _TOP_K, "min_p": _MIN_P}
        try:
            finish = chat.run(llm, request, defaults, cancel, emit)
        except ValueError as exc:  # llama-cpp-python's "exceeds the context window"
            raise BackendRejected(str(exc), backend=self.name, status_code=400) from exc
        except chat.CutShort as exc:
            raise BackendProtocolError(str(exc), backend=self.name) from exc
        # llama-cpp-python's chat stream reports no usage, so no token counts here.
        self.last_generation = GenerationStats(None, None, finish, time.perf_counter() - started)

    def _embed_sync(self, llm: Llama, texts: list[str]) -> list[list[float]]:
        # Typed as str upstream, but it is the C enum's int.
        if int(llm.pooling_type()) == llama_cpp.LLAMA_POOLING_TYPE_NONE:
            raise Unsupported(
                f"GGUF model {self.model_path} declares no pooling type, so it gives one "
                "vector per token: configure an embedding model",
                backend=self.name,
            )
        vectors: list[list[float]] = llm.embed(texts)
        return [_normalized(v) for v in vectors]


def _tokenize(llm: Llama, text: str) -> list[int]:
    # add_bos=False: the rendered template decides what comes first (Qwen has no BOS).
    ids: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    return ids


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _special_token_ids(llm: Llama, vocab: Any, stops: list[str]) -> frozenset[int]:
    """Stops that are one special token (`<|file_sep|>`), by id: special tokens decode
    to no text, so a stop string alone would never see them."""
    ids = set()
    for stop in stops:
        tokens = _tokenize(llm, stop)
        if len(tokens) == 1 and llama_cpp.llama_vocab_is_control(vocab, tokens[0]):
            ids.add(tokens[0])
    return frozenset(ids)


def _piece(llm: Llama, prev: int, token: int) -> bytes:
    """The bytes `token` adds after `prev`.

    Decoding after the previous token keeps the leading space of SentencePiece tokens,
    which llama.cpp strips from the first token of a sequence it detokenizes.
    """
    before: bytes = llm.detokenize([prev])
    both: bytes = llm.detokenize([prev, token])
    return both[len(before):]


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts in `text`, if any does."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def _free(models: list[Llama]) -> None:
    for model in models:
        model.close()
