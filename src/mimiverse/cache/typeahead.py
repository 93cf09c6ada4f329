"""Type-ahead reuse: serve the rest of a completion the user is typing out, without a model.

After a completion `C` for (prefix `P`, suffix `S`), the editor asks again as the user types.
If the new prefix is `P + typed` where `C` starts with `typed` (same suffix, same model and
parameters), the answer is `C[len(typed):]`, which is what the model would most likely say.

Records live in a `Cache`, so with Redis every replica sees them. A record is keyed by
(params, suffix, prefix up to the start of its current line) and holds a few recent
(rest of that line, completion) pairs, newest first. A lookup tries the new prefix's
current line start and a few earlier ones, so typed text may span newlines. Updates are
read-modify-write: two replicas writing one record at once may drop a pair, which costs a
model call later, never a wrong answer (a match always checks the full prefix).
"""

from __future__ import annotations

import hashlib
from typing import Any

from mimiverse.cache.base import Cache
from mimiverse.cache.keys import cache_key

_RECORD_VERSION = 1


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _line_starts(prefix: str, limit: int) -> list[int]:
    """Up to `limit` offsets just after a newline (or 0), from the last line backwards."""
    starts: list[int] = []
    end = len(prefix)
    while len(starts) < limit:
        start = prefix.rfind("\n", 0, end) + 1
        starts.append(start)
        if start == 0:
            break
        end = start - 1  # search before this newline next
    return starts


def _anchor_digests(prefix: str, starts: list[int]) -> dict[int, str]:
    """SHA-256 of prefix[:start] for each start, hashing the prefix once (it may be long)."""
    digests: dict[int, str] = {}
    hasher = hashlib.sha256()
    done = 0
    for start in sorted(starts):
        hasher.update(prefix[done:start].encode("utf-8", "surrogatepass"))
        done = start
        digests[start] = hasher.copy().hexdigest()
    return digests


def _pairs(record: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The (line tail, completion) pairs of a record; anything malformed is skipped."""
    if record is None or record.get("v") != _RECORD_VERSION:
        return []
    items = record.get("items")
    if not isinstance(items, list):
        return []
    return [
        (item[0], item[1])
        for item in items
        if isinstance(item, list) and len(item) == 2
        and isinstance(item[0], str) and isinstance(item[1], str)
    ]


class TypeaheadIndex:
    def __init__(
        self,
        cache: Cache,
        *,
        ttl_s: float = 600.0,
        max_items: int = 8,
        max_anchors: int = 4,
        max_tail_chars: int = 4000,
    ) -> None:
        self.cache = cache
        self.ttl_s = ttl_s
        self.max_items = max_items
        # How many line starts a lookup tries: typed text may contain max_anchors - 1 newlines.
        self.max_anchors = max_anchors
        # A huge current line (minified code) would bloat every record: not remembered.
        self.max_tail_chars = max_tail_chars
        self.lookups = 0
        self.hits = 0

    @staticmethod
    def _record_key(params_key: str, suffix_digest: str, anchor_digest: str) -> str:
        return cache_key("typeahead", params=params_key, suffix=suffix_digest, anchor=anchor_digest)

    async def remember(self, params_key: str, prefix: str, suffix: str, completion: str) -> None:
        """Record that `completion` answered (prefix, suffix) under `params_key`."""
        if not completion:
            return
        start = prefix.rfind("\n") + 1
        tail = prefix[start:]
        if len(tail) > self.max_tail_chars:
            return
        key = self._record_key(params_key, _digest(suffix), _digest(prefix[:start]))
        pairs = [p for p in _pairs(await self.cache.get(key, count=False)) if p[0] != tail]
        pairs.insert(0, (tail, completion))
        record = {"v": _RECORD_VERSION, "items": [list(p) for p in pairs[: self.max_items]]}
        await self.cache.set(key, record, self.ttl_s)

    async def lookup(self, params_key: str, prefix: str, suffix: str) -> str | None:
        """The rest of a remembered completion that `prefix` has typed into, or None."""
        self.lookups += 1
        suffix_digest = _digest(suffix)
        starts = _line_starts(prefix, self.max_anchors)
        digests = _anchor_digests(prefix, starts)
        for start in starts:  # nearest line start first: the likeliest match
            key = self._record_key(params_key, suffix_digest, digests[start])
            rest = prefix[start:]
            best: str | None = None
            best_tail = -1
            for tail, completion in _pairs(await self.cache.get(key, count=False)):
                # Prefer the longest remembered prefix: the most context, the least typed.
                if len(tail) <= best_tail or not rest.startswith(tail):
                    continue
                typed = rest[len(tail):]
                if len(typed) < len(completion) and completion.startswith(typed):
                    best, best_tail = completion[len(typed):], len(tail)
            if best is not None:
                self.hits += 1
                return best
        return None
