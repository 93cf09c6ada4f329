"""Adaptive FIM prompt budgets: configured per backend, or learned from prompt speed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mimiverse.backends.base import Backend, Delta, GenerateRequest, PromptSpeed
from mimiverse.backends.llamacpp import LlamaCppBackend
from mimiverse.backends.ollama import OllamaBackend
from mimiverse.config import BackendSettings, load_settings
from mimiverse.fim.prompt import estimate_tokens
from mimiverse.gateway import FimInput, Gateway
from tests.servers.behaviour import split_tokens
from tests.servers.harness import ServerHandle
from tests.support.fixtures import tiny_gguf as tiny_gguf
from tests.support.tiny_gguf import TinyModelInfo


def test_budget_is_speed_times_target_in_steps_with_a_dead_band() -> None:
    speed = PromptSpeed(target_s=1.5)
    assert speed.budget is None
    speed.observe(10, 0.01)  # too few tokens to say anything
    assert speed.budget is None
    speed.observe(600, 2.0)  # 300 tokens/s -> 450 -> 384 in steps of 128
    assert (speed.tokens_per_s, speed.budget) == (300.0, 384)
    speed.observe(700, 2.0)  # 0.7*300 + 0.3*350 = 315/s -> 472 -> 384: same step
    assert speed.budget == 384
    speed.observe(400, 0.5)  # 0.7*315 + 0.3*800 = 460.5/s -> 690 -> 640: > 25 % off
    assert speed.budget == 640
    slow = PromptSpeed(target_s=1.0)
    slow.observe(100, 10.0)  # 10 tokens/s: never below the floor
    assert slow.budget == PromptSpeed.FLOOR


class Fixed(Backend):
    """A completion backend that keeps prompts and has a configured prompt cap."""

    kind = "fixed"
    tasks = frozenset({"completion"})

    def __init__(self, cap: int | None) -> None:
        super().__init__(BackendSettings(name="fixed", kind="openai", url="http://127.0.0.1:9",
                                         max_prompt_tokens=cap))
        self.prompts: list[str] = []

    async def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        self.prompts.append(request.prompt)
        yield Delta("x", finish_reason="stop")


@pytest.mark.parametrize(("cap", "expected"), [(None, 2048), (256, 256), (4096, 2048)])
async def test_the_first_backend_of_the_route_caps_the_prompt(
    cap: int | None, expected: int
) -> None:
    settings = load_settings(None, backends=[
        {"name": "fixed", "kind": "openai", "url": "http://127.0.0.1:9"},
    ], models={"completion": {"model": "qwen2.5-coder:1.5b", "backends": ["fixed"]},
               "chat": {"model": "c", "backends": ["fixed"]},
               "embedding": {"model": "e", "backends": ["fixed"]}})
    backend = Fixed(cap)
    gateway = Gateway(settings, {"fixed": backend})
    try:
        assert gateway.prompt_budget() == expected
        prefix = "".join(f"line_{i} = {i}\n" for i in range(3000))
        await gateway.complete(FimInput(prefix, "", repo_context=False))
        body = backend.prompts[-1].removeprefix("<|fim_prefix|>").split("<|fim_suffix|>")[0]
        assert expected * 0.9 < estimate_tokens(body) <= expected  # whole lines, snapped
    finally:
        await gateway.aclose()


async def test_llamacpp_learns_its_prompt_speed_from_what_it_really_reads(
    tiny_gguf: TinyModelInfo, tmp_path: Path
) -> None:
    backend = LlamaCppBackend(BackendSettings(name="tiny", kind="llamacpp",
                                              model_path=str(tiny_gguf.path)))
    assert backend.prompt_speed is not None and backend.prompt_speed.target_s == 1.5
    prompt = "<|fim_prefix|>" + "value = compute(value)\n" * 40 + "<|fim_suffix|><|fim_middle|>"
    try:
        async for _ in backend.stream_generate(GenerateRequest("m", prompt, max_tokens=2)):
            pass
        first = backend.prompt_speed.tokens_per_s
        assert first is not None and first > 0
        budget = backend.prompt_budget()
        assert budget is not None and budget % PromptSpeed.STEP == 0
        # The same prompt again: llama.cpp reuses its cache and reads almost nothing,
        # which says nothing about speed, so the estimate is left alone.
        async for _ in backend.stream_generate(GenerateRequest("m", prompt, max_tokens=2)):
            pass
        assert backend.prompt_speed.tokens_per_s == first
    finally:
        await backend.aclose()


async def test_ollama_learns_from_prompt_eval_count_and_duration(
    ollama_server: ServerHandle,
) -> None:
    backend = OllamaBackend(BackendSettings(name="o", kind="ollama", url=ollama_server.url,
                                            target_prompt_s=0.5))
    prompt = "word " * 100
    try:
        async for _ in backend.stream_generate(GenerateRequest("test-model", prompt)):
            pass
        # The test server reports every prompt as read in 1 ms.
        assert backend.prompt_speed is not None
        assert backend.prompt_speed.tokens_per_s == len(split_tokens(prompt)) / 0.001
    finally:
        await backend.aclose()


def test_budgets_are_off_for_backends_that_report_no_timing() -> None:
    from mimiverse.backends.openai import OpenAIBackend

    backend = OpenAIBackend(BackendSettings(name="v", kind="openai", url="http://127.0.0.1:9"))
    assert backend.prompt_speed is None and backend.prompt_budget() is None
