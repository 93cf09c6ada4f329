"""Cache keys: equal inputs hash alike, any answer-changing difference does not."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
import pytest

from mimiverse.cache.keys import KEY_VERSION, cache_key, is_deterministic


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


BASE: dict[str, object] = {
    "model": "qwen2.5-coder:1.5b",
    "family": "qwen2.5-coder",
    "prompt": "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "temperature": 0.0,
    "seed": None,
    "max_tokens": 64,
    "stop": ("\n\n", "<|endoftext|>"),
}


def test_is_sha256_hex_of_the_canonical_json() -> None:
    expected = hashlib.sha256(
        orjson.dumps({"parts": {"a": 1}, "task": "completion", "v": KEY_VERSION})
    ).hexdigest()
    assert cache_key("completion", a=1) == expected


def test_equal_inputs_in_other_spellings_share_a_key() -> None:
    key = cache_key("completion", **BASE)
    reordered = dict(reversed(list(BASE.items())))
    assert cache_key("completion", **reordered) == key
    assert cache_key("completion", **{**BASE, "temperature": 0}) == key
    assert cache_key("completion", **{**BASE, "stop": ["\n\n", "<|endoftext|>"]}) == key


@pytest.mark.parametrize(
    ("field", "value"),
    [("model", "qwen2.5-coder:7b"), ("family", "starcoder2"), ("prompt", "x"),
     ("temperature", 0.2), ("seed", 7), ("max_tokens", 65), ("stop", ("\n",)),
     ("stop", ("<|endoftext|>", "\n\n"))],
)
def test_anything_that_changes_the_answer_changes_the_key(field: str, value: object) -> None:
    assert cache_key("completion", **{**BASE, field: value}) != cache_key("completion", **BASE)


def test_the_task_is_part_of_the_key_and_cannot_be_shadowed() -> None:
    assert cache_key("chat", x=1) != cache_key("completion", x=1)
    assert cache_key("chat", v=2, parts={}) != cache_key("chat")


def test_messages_as_dataclasses_or_dicts_hash_alike() -> None:
    as_dataclasses = (Message("system", "be brief"), Message("user", "hi"))
    as_dicts = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert cache_key("chat", messages=as_dataclasses) == cache_key("chat", messages=as_dicts)
    swapped = (Message("user", "hi"), Message("system", "be brief"))
    assert cache_key("chat", messages=swapped) != cache_key("chat", messages=as_dataclasses)


def test_sets_are_order_free_and_odd_floats_are_allowed() -> None:
    assert cache_key("t", s={"b", "a"}) == cache_key("t", s=frozenset(["a", "b"]))
    assert cache_key("t", x=float("nan")) != cache_key("t", x=None)
    # A whole float too big for a 64-bit integer (a client's keep_alive: 5.5e39 seconds).
    assert cache_key("t", x=5.5e39) != cache_key("t", x=5.5e38)
    with pytest.raises(TypeError):
        cache_key("t", x=object())


@pytest.mark.parametrize(
    ("temperature", "seed", "cache_seeded", "expected"),
    [(0.0, None, True, True), (0.0, None, False, True), (0.7, None, True, False),
     (0.7, 42, True, True), (0.7, 42, False, False), (0.0, 42, False, True)],
)
def test_is_deterministic(
    temperature: float, seed: int | None, cache_seeded: bool, expected: bool
) -> None:
    assert is_deterministic(temperature, seed, cache_seeded) is expected
