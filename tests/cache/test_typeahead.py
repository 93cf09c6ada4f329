"""Type-ahead reuse: the table of exact answers, then bounds and sharing through Redis."""

from __future__ import annotations

import pytest

from mimiverse.cache.keys import cache_key
from mimiverse.cache.memory import MemoryCache
from mimiverse.cache.redis import RedisCache
from mimiverse.cache.typeahead import TypeaheadIndex
from tests.support.redis_server import RedisServer

PARAMS = cache_key("completion-params", model="qwen2.5-coder:1.5b", temperature=0, max_tokens=64)
OTHER_PARAMS = cache_key(
    "completion-params", model="qwen2.5-coder:7b", temperature=0, max_tokens=64
)
PREFIX = "import os\n\ndef add(a, b):\n    ret"
SUFFIX = "\n\nprint(add(1, 2))\n"
COMPLETION = "urn a + b\n\ndef sub(a, b):\n    return a - b"

# (case, prefix, suffix, params, expected lookup) after remembering (PREFIX, SUFFIX, COMPLETION).
TABLE: list[tuple[str, str, str, str, str | None]] = [
    ("nothing typed: the whole completion", PREFIX, SUFFIX, PARAMS, COMPLETION),
    ("one char typed", PREFIX + "u", SUFFIX, PARAMS,
     "rn a + b\n\ndef sub(a, b):\n    return a - b"),
    ("a word typed", PREFIX + "urn a", SUFFIX, PARAMS,
     " + b\n\ndef sub(a, b):\n    return a - b"),
    ("all but the last char", PREFIX + COMPLETION[:-1], SUFFIX, PARAMS, "b"),
    ("the whole completion typed: nothing left", PREFIX + COMPLETION, SUFFIX, PARAMS, None),
    ("typed past the completion", PREFIX + COMPLETION + "\n", SUFFIX, PARAMS, None),
    ("first typed char diverges", PREFIX + "x", SUFFIX, PARAMS, None),
    ("a later typed char diverges", PREFIX + "urn a - ", SUFFIX, PARAMS, None),
    ("different suffix", PREFIX + "u", SUFFIX + "# end\n", PARAMS, None),
    ("different params", PREFIX + "u", SUFFIX, OTHER_PARAMS, None),
    ("typed across one newline", PREFIX + "urn a + b\n", SUFFIX, PARAMS,
     "\ndef sub(a, b):\n    return a - b"),
    ("typed across two newlines", PREFIX + "urn a + b\n\ndef s", SUFFIX, PARAMS,
     "ub(a, b):\n    return a - b"),
    ("typed across three newlines", PREFIX + "urn a + b\n\ndef sub(a, b):\n    re", SUFFIX,
     PARAMS, "turn a - b"),
    ("a char deleted instead of typed", PREFIX[:-1], SUFFIX, PARAMS, None),
    ("an earlier line differs", PREFIX.replace("os", "sys") + "u", SUFFIX, PARAMS, None),
    ("the current line differs before the cursor", PREFIX.replace("ret", "rex") + "u",
     SUFFIX, PARAMS, None),
]


@pytest.mark.parametrize(
    ("prefix", "suffix", "params", "expected"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
async def test_lookup_table(prefix: str, suffix: str, params: str, expected: str | None) -> None:
    index = TypeaheadIndex(MemoryCache())
    await index.remember(PARAMS, PREFIX, SUFFIX, COMPLETION)
    assert await index.lookup(params, prefix, suffix) == expected


async def test_typed_text_with_more_newlines_than_anchors_is_not_found() -> None:
    index = TypeaheadIndex(MemoryCache(), max_anchors=2)
    await index.remember(PARAMS, PREFIX, SUFFIX, COMPLETION)
    assert await index.lookup(PARAMS, PREFIX + "urn a + b\n", SUFFIX) == COMPLETION[10:]
    assert await index.lookup(PARAMS, PREFIX + "urn a + b\n\n", SUFFIX) is None


async def test_a_prefix_without_newlines_works() -> None:
    index = TypeaheadIndex(MemoryCache())
    await index.remember(PARAMS, "x = ", "", "compute(1)\ny = 2")
    assert await index.lookup(PARAMS, "x = comp", "") == "ute(1)\ny = 2"
    assert await index.lookup(PARAMS, "x = compute(1)\ny", "") == " = 2"


async def test_the_longest_remembered_prefix_wins() -> None:
    index = TypeaheadIndex(MemoryCache())
    await index.remember(PARAMS, "    ret", SUFFIX, "urn a + b")
    await index.remember(PARAMS, "    return", SUFFIX, " a * b")  # the later, longer context
    assert await index.lookup(PARAMS, "    return a", SUFFIX) == " * b"
    assert await index.lookup(PARAMS, "    retu", SUFFIX) == "rn a + b"
    # Where the longer one doesn't continue, a shorter one still may.
    assert await index.lookup(PARAMS, "    return a +", SUFFIX) == " b"


async def test_records_keep_the_newest_few_per_line() -> None:
    index = TypeaheadIndex(MemoryCache(), max_items=2)
    for tail in ("a", "ab", "abc"):
        await index.remember(PARAMS, "line\n" + tail, "", tail.upper())
    assert await index.lookup(PARAMS, "line\na", "") is None  # the oldest was dropped
    assert await index.lookup(PARAMS, "line\nab", "") == "AB"
    assert await index.lookup(PARAMS, "line\nabc", "") == "ABC"
    # Remembering the same prefix again replaces its pair rather than duplicating it.
    await index.remember(PARAMS, "line\nab", "", "xy")
    await index.remember(PARAMS, "line\nab", "", "XY")
    assert await index.lookup(PARAMS, "line\nabX", "") == "Y"
    assert await index.lookup(PARAMS, "line\nabc", "") == "ABC"
    await index.remember(PARAMS, "line\nabcd", "", "Q")  # now abc is the oldest: dropped
    assert await index.lookup(PARAMS, "line\nabc", "") is None
    assert await index.lookup(PARAMS, "line\nabcd", "") == "Q"


async def test_empty_completions_and_huge_lines_are_not_remembered() -> None:
    cache = MemoryCache()
    index = TypeaheadIndex(cache, max_tail_chars=10)
    await index.remember(PARAMS, "a\nshort", "", "")
    await index.remember(PARAMS, "a\n" + "x" * 11, "", "y")
    assert len(cache) == 0
    await index.remember(PARAMS, "a\n" + "x" * 10, "", "y")
    assert len(cache) == 1


async def test_lookups_count_in_the_index_not_in_the_cache_hit_rate() -> None:
    cache = MemoryCache()
    index = TypeaheadIndex(cache)
    await index.remember(PARAMS, PREFIX, SUFFIX, COMPLETION)
    assert await index.lookup(PARAMS, PREFIX + "u", SUFFIX) is not None
    assert await index.lookup(PARAMS, PREFIX + "x\n\n\n", SUFFIX) is None
    assert (index.lookups, index.hits) == (2, 1)
    stats = await cache.stats()
    assert (stats.hits, stats.misses) == (0, 0)


async def test_a_malformed_record_is_ignored_and_then_replaced() -> None:
    cache = MemoryCache()
    index = TypeaheadIndex(cache)
    await index.remember(PARAMS, "ab", "", "cd")
    (key,) = list(cache._entries)
    await cache.set(key, {"v": 1, "items": [["a"], [1, 2], "x", ["ab", None]]})
    assert await index.lookup(PARAMS, "ab", "") is None
    await cache.set(key, {"v": 99, "items": [["ab", "cd"]]})  # another format version
    assert await index.lookup(PARAMS, "ab", "") is None
    await index.remember(PARAMS, "ab", "", "cd")
    assert await index.lookup(PARAMS, "abc", "") == "d"


async def test_replicas_share_records_through_redis(redis_server: RedisServer) -> None:
    replica_a = RedisCache(redis_server.url)
    replica_b = RedisCache(redis_server.url)
    try:
        await TypeaheadIndex(replica_a).remember(PARAMS, PREFIX, SUFFIX, COMPLETION)
        index_b = TypeaheadIndex(replica_b)
        assert await index_b.lookup(PARAMS, PREFIX + "urn a + b\n", SUFFIX) == COMPLETION[10:]
        assert await index_b.lookup(OTHER_PARAMS, PREFIX + "u", SUFFIX) is None
    finally:
        await replica_a.aclose()
        await replica_b.aclose()


async def test_records_expire_with_their_ttl(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url)
    try:
        index = TypeaheadIndex(cache, ttl_s=0.2)
        await index.remember(PARAMS, PREFIX, SUFFIX, COMPLETION)
        assert await index.lookup(PARAMS, PREFIX + "u", SUFFIX) is not None
        (name,) = [k async for k in cache._client.scan_iter(match="mimiverse:cache:*")]
        assert 0 < await cache._client.pttl(name) <= 200
    finally:
        await cache.aclose()
