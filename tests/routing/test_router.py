"""Router behaviour with real Backend subclasses whose scripts are asserted exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from mimiverse.backends.base import Backend, Delta, GenerateRequest, Passthrough
from mimiverse.config import BackendSettings, Settings, Timeouts
from mimiverse.errors import (
    AllBackendsFailed,
    BackendUnavailable,
    StreamInterrupted,
)
from mimiverse.routing.router import Router


class Scripted(Backend):
    """Yields `tokens`; can fail before or after some tokens, or hang."""

    kind = "scripted"
    tasks = frozenset({"completion", "embedding"})

    def __init__(self, name: str, tokens: Sequence[str] = ("a", "b", "c"), *,
                 fail_after: int | None = None, hang_after: int | None = None,
                 timeouts: Timeouts | None = None) -> None:
        super().__init__(BackendSettings(name=name, kind="openai", url="http://127.0.0.1:9",
                                         timeouts=timeouts or Timeouts()))
        self.tokens = list(tokens)
        self.fail_after = fail_after
        self.hang_after = hang_after
        self.calls = 0
        self.closed = 0
        self.cancelled = 0

    async def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        self.calls += 1
        try:
            for i, token in enumerate(self.tokens):
                if self.fail_after == i:
                    raise BackendUnavailable("connection reset", backend=self.name)
                if self.hang_after == i:
                    await asyncio.sleep(3600)
                yield Delta(token, finish_reason="stop" if i == len(self.tokens) - 1 else None)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.closed += 1

    async def embed_batch(self, model: str, texts: Sequence[str],
                          passthrough: Passthrough = ()) -> list[list[float]]:
        self.calls += 1
        if self.fail_after == 0:
            raise BackendUnavailable("down", backend=self.name)
        return [[float(len(t))] for t in texts]


def make_router(*backends: Scripted, failures: int = 2, cooldown_s: float = 30) -> Router:
    names = [b.name for b in backends]
    settings = Settings(
        backends=[b.config for b in backends],
        models={
            "completion": {"model": "m", "family": "qwen2.5-coder", "backends": names},
            "chat": {"model": "c", "backends": names},
            "embedding": {"model": "e", "backends": names},
        },
        breaker={"failures": failures, "cooldown_s": cooldown_s},
    )
    return Router(settings, {b.name: b for b in backends})


def starter(backend: Backend, model: str) -> AsyncIterator[Delta]:
    return backend.stream_generate(GenerateRequest(model=model, prompt="p"))


async def collect(router: Router) -> tuple[str, str]:
    stream = await router.open_stream("completion", starter)
    try:
        text = "".join([d.text async for d in stream])
    finally:
        await stream.aclose()
    return text, stream.backend.name


async def test_first_healthy_backend_serves_in_order() -> None:
    a, b = Scripted("a", ["x", "y"]), Scripted("b", ["z"])
    assert await collect(make_router(a, b)) == ("xy", "a")
    assert (a.calls, b.calls) == (1, 0)


async def test_failure_before_first_token_falls_back_and_says_who_answered() -> None:
    a, b = Scripted("a", fail_after=0), Scripted("b", ["o", "k"])
    router = make_router(a, b)
    assert await collect(router) == ("ok", "b")
    assert router.breakers["a"].consecutive_failures == 1
    assert router.breakers["a"].last_error == "connection reset"


async def test_failure_after_first_token_interrupts_without_splicing() -> None:
    a, b = Scripted("a", ["1", "2", "3"], fail_after=2), Scripted("b", ["X"])
    router = make_router(a, b)
    stream = await router.open_stream("completion", starter)
    got = []
    with pytest.raises(StreamInterrupted, match="connection reset"):
        async for delta in stream:
            got.append(delta.text)
    assert got == ["1", "2"]
    assert b.calls == 0  # no text from a second backend is ever spliced in
    assert router.breakers["a"].consecutive_failures == 1


async def test_cooldown_skips_backend_then_half_open_probe_recovers() -> None:
    now = [0.0]
    a, b = Scripted("a", fail_after=0), Scripted("b", ["b"])
    router = make_router(a, b, failures=2, cooldown_s=10)
    for breaker in router.breakers.values():
        breaker._clock = lambda: now[0]
    for _ in range(2):
        assert await collect(router) == ("b", "b")
    assert router.breakers["a"].state == "open"
    assert await collect(router) == ("b", "b")
    assert a.calls == 2  # skipped while cooling down
    now[0] = 10.0
    a.fail_after = None
    assert await collect(router) == ("abc", "a")  # the half-open probe succeeds
    assert router.breakers["a"].state == "closed"
    assert a.calls == 3


async def test_all_down_names_each_backend_and_why() -> None:
    a = Scripted("a", fail_after=0)
    b = Scripted("b", hang_after=0, timeouts=Timeouts(first_token_s=0.05))
    with pytest.raises(AllBackendsFailed) as info:
        await collect(make_router(a, b))
    assert info.value.failures == [("a", "connection reset"),
                                   ("b", "no first token within 0.05s")]
    assert str(info.value) == (
        "all backends for completion failed: a: connection reset; "
        "b: no first token within 0.05s"
    )
    assert b.cancelled == 1 and b.closed == 1  # the hung request was cancelled


async def test_stall_between_tokens_interrupts() -> None:
    a = Scripted("a", ["1", "2"], hang_after=1, timeouts=Timeouts(between_tokens_s=0.05))
    router = make_router(a)
    stream = await router.open_stream("completion", starter)
    async with asyncio.timeout(1):  # cut at 0.05 s, not at the first token's 30 s limit
        with pytest.raises(StreamInterrupted, match=r"no token for 0\.05s"):
            async for _ in stream:
                pass
    assert a.cancelled == 1


class Dripping(Scripted):
    """Yields a token every `gap` seconds, for as long as asked."""

    def __init__(self, name: str, gap: float, count: int, timeouts: Timeouts) -> None:
        super().__init__(name, [str(i) for i in range(count)], timeouts=timeouts)
        self.gap = gap

    async def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        for token in self.tokens:
            await asyncio.sleep(self.gap)
            yield Delta(token)


async def test_a_slow_consumer_is_not_a_stalled_backend() -> None:
    # Tokens come at once; the consumer holds each one longer than between_tokens_s.
    a = Scripted("a", ["1", "2", "3"], timeouts=Timeouts(between_tokens_s=0.02))
    stream = await make_router(a).open_stream("completion", starter)
    got = []
    async for delta in stream:
        got.append(delta.text)
        await asyncio.sleep(0.05)
    assert got == ["1", "2", "3"]


async def test_a_steady_stream_still_ends_at_the_total_limit() -> None:
    # Every gap (0.02 s) is under between_tokens_s, the whole is over total_s.
    a = Dripping("a", gap=0.02, count=50,
                 timeouts=Timeouts(first_token_s=1, between_tokens_s=0.2, total_s=0.15))
    router = make_router(a)
    stream = await router.open_stream("completion", starter)
    got = []
    with pytest.raises(StreamInterrupted, match="total time limit reached"):
        async for delta in stream:
            got.append(delta.text)
    assert got == [str(i) for i in range(len(got))] and len(got) < 50  # cut, in order
    assert router.breakers["a"].consecutive_failures == 1


async def test_closing_a_stream_cancels_the_upstream() -> None:
    a = Scripted("a", ["1", "2"], hang_after=1)
    router = make_router(a)
    stream = await router.open_stream("completion", starter)
    it = aiter(stream)
    assert (await anext(it)).text == "1"
    task = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    assert a.closed == 1
    assert router.breakers["a"].consecutive_failures == 0  # a client leaving is no verdict


async def test_cancel_while_waiting_for_first_token_releases_probe() -> None:
    a = Scripted("a", hang_after=0)
    router = make_router(a)
    task = asyncio.ensure_future(router.open_stream("completion", starter))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a.cancelled == 1 and a.closed == 1
    assert router.breakers["a"].consecutive_failures == 0


async def test_embed_falls_back() -> None:
    a, b = Scripted("a", fail_after=0), Scripted("b")
    vectors, backend, model = await make_router(a, b).embed(["xy", "z"])
    assert (vectors, backend.name, model) == ([[2.0], [1.0]], "b", "e")
