"""LlamaCppBackend against real llama.cpp, in-process, on the tiny random-weight model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (mimiverse[llamacpp])")

from llama_cpp import Llama

from mimiverse.backends.base import ChatMessage, ChatRequest, Delta, GenerateRequest, PromptSpeed
from mimiverse.backends.llamacpp import LlamaCppBackend
from mimiverse.errors import BackendRejected, BackendUnavailable, Unsupported
from tests.llamacpp.conftest import FIM_PROMPT, llamacpp_settings
from tests.support.tiny_gguf import TinyModelInfo

PRINTABLE_ASCII = {chr(c) for c in range(0x20, 0x7F)}


def fim(
    max_tokens: int = 32,
    *,
    stop: tuple[str, ...] = (),
    temperature: float = 0.0,
    seed: int | None = None,
    top_p: float | None = None,
) -> GenerateRequest:
    return GenerateRequest(
        model="tiny", prompt=FIM_PROMPT, max_tokens=max_tokens, stop=stop,
        temperature=temperature, seed=seed, top_p=top_p,
    )


async def collect(stream: AsyncIterator[Delta]) -> tuple[str, list[Delta]]:
    deltas = [d async for d in stream]
    return "".join(d.text for d in deltas), deltas


@pytest.fixture(scope="module")
def llm(tiny_gguf: TinyModelInfo) -> Iterator[Llama]:
    """llama-cpp-python used directly: the reference our streaming loop must agree with."""
    model = Llama(str(tiny_gguf.path), n_ctx=2048, verbose=False)
    yield model
    model.close()


async def test_fim_prompt_becomes_single_special_tokens(
    backend: LlamaCppBackend, tiny_gguf: TinyModelInfo
) -> None:
    ids = await backend.tokenize(FIM_PROMPT)
    fim_ids = [tiny_gguf.fim_prefix_id, tiny_gguf.fim_suffix_id, tiny_gguf.fim_middle_id]
    specials = set(tiny_gguf.token_ids.values())
    # Exactly the three FIM ids, each once, in prefix-suffix-middle order; no BOS added.
    assert [i for i in ids if i in specials] == fim_ids
    assert ids[0] == tiny_gguf.fim_prefix_id
    assert ids[-1] == tiny_gguf.fim_middle_id
    # Without special parsing the same text would be spelled out byte by byte.
    plain = await backend.tokenize("def add(a, b):\n    return ")
    suffix_at = ids.index(tiny_gguf.fim_suffix_id)
    assert ids[1:suffix_at] == plain


async def test_greedy_generation_is_deterministic_printable_ascii(
    backend: LlamaCppBackend, tiny_gguf: TinyModelInfo
) -> None:
    first, deltas = await collect(backend.stream_generate(fim(48)))
    second, _ = await collect(backend.stream_generate(fim(48)))
    fresh = LlamaCppBackend(llamacpp_settings(tiny_gguf.path, name="fresh"))
    try:
        third, _ = await collect(fresh.stream_generate(fim(48)))
    finally:
        await fresh.aclose()
    assert first == second == third
    assert first and set(first) <= PRINTABLE_ASCII
    final = deltas[-1]
    assert final.finish_reason == "length"  # EOS is unreachable in the tiny model
    assert final.prompt_tokens == len(await backend.tokenize(FIM_PROMPT))
    assert final.completion_tokens == 48
    token_ids = [i for d in deltas for i in d.token_ids]
    assert len(token_ids) == 48
    assert set(token_ids) <= tiny_gguf.printable_ids


async def test_stream_matches_llama_cpp_python_non_streamed(
    backend: LlamaCppBackend, llm: Llama
) -> None:
    text, deltas = await collect(backend.stream_generate(fim(40)))
    reference = llm.create_completion(FIM_PROMPT, max_tokens=40, temperature=0.0)
    assert text == reference["choices"][0]["text"]
    assert len(deltas) > 2  # it really streamed
    token_ids = [i for d in deltas for i in d.token_ids]
    assert llm.detokenize(token_ids).decode() == text


@pytest.mark.parametrize("max_tokens", [1, 7])
async def test_max_tokens_is_honoured(backend: LlamaCppBackend, max_tokens: int) -> None:
    _, deltas = await collect(backend.stream_generate(fim(max_tokens)))
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == max_tokens
    assert sum(len(d.token_ids) for d in deltas) == max_tokens


async def test_stop_string_ends_generation_without_it(backend: LlamaCppBackend) -> None:
    reference, _ = await collect(backend.stream_generate(fim(64)))
    stop = reference[20:23]
    expected = reference[: reference.index(stop)]
    text, deltas = await collect(backend.stream_generate(fim(64, stop=("\x00never", stop))))
    assert text == expected
    assert stop not in text
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens is not None
    assert deltas[-1].completion_tokens < 64


async def test_a_special_stop_token_ends_generation_by_its_id(tmp_path: Path) -> None:
    # This model says `x`, then <|fim_prefix|> (which decodes to no text), then `y`...
    from tests.support.tiny_gguf import write_tiny_gguf

    info = write_tiny_gguf(tmp_path / "scripted.gguf", script={
        "<|fim_middle|>": "x", "x": "<|fim_prefix|>", "<|fim_prefix|>": "y",
    })
    backend = LlamaCppBackend(llamacpp_settings(info.path))
    try:
        text, deltas = await collect(backend.stream_generate(fim(8)))
        assert text.startswith("xy")  # no stop asked: the special token passes unseen
        text, deltas = await collect(backend.stream_generate(fim(8, stop=("<|fim_prefix|>",))))
        assert text == "x"
        assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("stop", 1)
    finally:
        await backend.aclose()


async def test_forgetting_the_prompt_cache_rereads_the_whole_prompt(
    backend: LlamaCppBackend,
) -> None:
    # A prompt long enough for the prompt speed to be measured (32+ tokens read).
    prompt = FIM_PROMPT + " # padding" * 20
    await collect(backend.stream_generate(GenerateRequest("m", prompt, max_tokens=2)))
    assert backend.prompt_speed is not None
    first = backend.prompt_speed.tokens_per_s
    await collect(backend.stream_generate(GenerateRequest("m", prompt, max_tokens=2)))
    assert backend.prompt_speed.tokens_per_s == first  # cached: nothing measured
    await backend.forget_prompt_cache()
    await collect(backend.stream_generate(GenerateRequest("m", prompt, max_tokens=2)))
    assert backend.prompt_speed.tokens_per_s != first  # read again, measured again


async def test_seeded_sampling_is_reproducible(backend: LlamaCppBackend) -> None:
    sampled = fim(32, temperature=1.5, seed=1234, top_p=0.9)
    first, _ = await collect(backend.stream_generate(sampled))
    second, _ = await collect(backend.stream_generate(sampled))
    assert first == second
    assert set(first) <= PRINTABLE_ASCII


async def test_closing_the_stream_stops_the_worker(backend: LlamaCppBackend) -> None:
    max_tokens = 1500  # seconds of work if nothing stopped it
    stream = backend.stream_generate(fim(max_tokens))
    async for delta in stream:
        if delta.token_ids:
            break
    started = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    assert time.perf_counter() - started < 1.0
    assert not backend.generating
    stats = backend.last_generation
    assert stats is not None
    assert stats.finish_reason == "cancelled"
    assert stats.completion_tokens is not None
    # The worker outruns this consumer (~5k tokens/s), so some tokens were queued unread
    # before the close; what matters is that it stopped long before max_tokens.
    assert stats.completion_tokens < 200
    # The model is left usable, and the KV cache it kept does not change the answer.
    again, _ = await collect(backend.stream_generate(fim(16)))
    fresh = LlamaCppBackend(llamacpp_settings(backend.model_path, name="fresh"))
    try:
        reference, _ = await collect(fresh.stream_generate(fim(16)))
    finally:
        await fresh.aclose()
    assert again == reference


async def test_cancelling_the_consumer_task_stops_the_worker(backend: LlamaCppBackend) -> None:
    first_token = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.stream_generate(fim(1500)):
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), timeout=5)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 1.0
    assert not backend.generating
    stats = backend.last_generation
    assert stats is not None and stats.finish_reason == "cancelled"
    assert stats.completion_tokens is not None and stats.completion_tokens < 200


async def test_closing_the_backend_mid_stream_ends_it_with_an_error(
    tiny_gguf: TinyModelInfo,
) -> None:
    b = LlamaCppBackend(llamacpp_settings(tiny_gguf.path))
    stream = b.stream_generate(fim(1500))
    await anext(stream)
    await b.aclose()
    assert not b.generating
    with pytest.raises(BackendUnavailable, match="closed during the generation"):
        async for _ in stream:
            pass


async def test_concurrent_requests_run_one_at_a_time(backend: LlamaCppBackend) -> None:
    alone, _ = await collect(backend.stream_generate(fim(24)))
    results = await asyncio.gather(
        *(collect(backend.stream_generate(fim(24))) for _ in range(3))
    )
    assert [text for text, _ in results] == [alone] * 3


async def test_chat_uses_the_gguf_chat_template(backend: LlamaCppBackend, llm: Llama) -> None:
    messages = (ChatMessage("system", "You write Python."), ChatMessage("user", "add two ints"))
    request = ChatRequest(model="tiny", messages=messages, max_tokens=12)
    text, deltas = await collect(backend.stream_chat(request))
    again, _ = await collect(backend.stream_chat(request))
    assert text == again
    assert text and set(text) <= PRINTABLE_ASCII
    assert deltas[-1].finish_reason == "length"
    reference = llm.create_chat_completion(
        [{"role": m.role, "content": m.content} for m in messages],  # type: ignore[misc]
        max_tokens=12,
        temperature=0.0,
    )
    assert text == reference["choices"][0]["message"]["content"]  # type: ignore[index]


async def test_prompt_longer_than_the_context_is_rejected(tiny_gguf: TinyModelInfo) -> None:
    small = LlamaCppBackend(llamacpp_settings(tiny_gguf.path, n_ctx=256))
    try:
        with pytest.raises(BackendRejected, match="context window is 256"):
            await collect(small.stream_generate(GenerateRequest(model="tiny", prompt="x" * 300)))
    finally:
        await small.aclose()


async def test_chat_longer_than_the_context_is_rejected(tiny_gguf: TinyModelInfo) -> None:
    small = LlamaCppBackend(llamacpp_settings(tiny_gguf.path, n_ctx=256))
    request = ChatRequest(model="tiny", messages=(ChatMessage("user", "x" * 300),))
    try:
        with pytest.raises(BackendRejected, match="context window"):
            await collect(small.stream_chat(request))
    finally:
        await small.aclose()


async def test_missing_model_file_is_unavailable_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.gguf"
    b = LlamaCppBackend(llamacpp_settings(missing))
    try:
        with pytest.raises(BackendUnavailable, match=str(missing)) as info:
            await collect(b.stream_generate(fim()))
        assert info.value.backend == "tiny"
        with pytest.raises(BackendUnavailable, match=str(missing)):
            await b.check_health()
        assert await b.list_models() == ["model"]  # the name needs no loading
    finally:
        await b.aclose()


async def test_corrupt_gguf_is_unavailable_naming_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    b = LlamaCppBackend(llamacpp_settings(bad))
    try:
        with pytest.raises(BackendUnavailable, match=f"cannot load GGUF model {bad}"):
            await b.check_health()
    finally:
        await b.aclose()


async def test_list_models_and_health(backend: LlamaCppBackend) -> None:
    assert await backend.list_models() == ["tiny-coder"]
    await backend.check_health()


async def test_closed_backend_refuses_work(tiny_gguf: TinyModelInfo) -> None:
    b = LlamaCppBackend(llamacpp_settings(tiny_gguf.path))
    await collect(b.stream_generate(fim(2)))
    await b.aclose()
    await b.aclose()  # idempotent
    with pytest.raises(BackendUnavailable, match="closed"):
        await collect(b.stream_generate(fim(2)))


async def test_embeddings_from_a_pooling_gguf(tiny_embed_gguf: TinyModelInfo) -> None:
    b = LlamaCppBackend(llamacpp_settings(tiny_embed_gguf.path))
    try:
        texts = ["def add(a, b):", "SELECT 1", "def add(a, b):"]
        vectors = await b.embed_batch("tiny-embed", texts)
        assert len(vectors) == 3
        assert all(len(v) == 64 for v in vectors)
        assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in vectors)
        # Same text, same vector up to float noise from its place in the batch.
        assert sum(x * y for x, y in zip(vectors[0], vectors[2], strict=True)) > 0.9999
        assert sum(x * y for x, y in zip(vectors[0], vectors[1], strict=True)) < 0.99
        assert await b.embed_batch("tiny-embed", []) == []
    finally:
        await b.aclose()


async def test_embeddings_refused_for_a_model_without_pooling(backend: LlamaCppBackend) -> None:
    with pytest.raises(Unsupported, match="no pooling type"):
        await backend.embed_batch("tiny", ["x"])


async def test_warming_up_loads_the_model_and_measures_the_prompt_speed(
    backend: LlamaCppBackend,
) -> None:
    assert backend.prompt_speed is not None and backend.prompt_speed.tokens_per_s is None
    assert backend.prompt_budget() is None  # unmeasured: the route's ceiling would apply
    await backend.warm_up()
    assert backend.count_tokens("x = 1") is not None  # loaded
    speed = backend.prompt_speed.tokens_per_s
    assert speed is not None and speed > 0
    budget = backend.prompt_budget()
    assert budget is not None and budget >= PromptSpeed.FLOOR
    # The probe leaves nothing in the KV cache: the first real prompt is read whole and
    # answers as it would have without the probe.
    fresh = LlamaCppBackend(llamacpp_settings(backend.model_path))
    try:
        assert await collect(backend.stream_generate(fim(4))) == \
            await collect(fresh.stream_generate(fim(4)))
    finally:
        await fresh.aclose()
    measured = backend.prompt_speed.tokens_per_s
    await backend.warm_up()  # loaded and measured: no second probe
    assert backend.prompt_speed.tokens_per_s == measured
