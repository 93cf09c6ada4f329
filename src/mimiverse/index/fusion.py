"""Reciprocal rank fusion of ranked lists, with a cap on hits per file.

RRF scores each item by Σ weight_s / (k + rank_s) over the signals s that ranked it
(rank 1-based). It needs no score calibration between BM25 and cosine, which is why
hybrid search uses it; k = 60 is the customary constant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class Fused:
    id: int
    score: float
    signals: dict[str, dict[str, float]] = field(default_factory=dict)


def fuse(
    ranked: Mapping[str, Sequence[tuple[int, float]]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[Fused]:
    """Fuse {signal: [(id, score), ...best first]} into one list, best first.

    Ties break by the best single rank, then by id, so the order is deterministic.
    """
    fused: dict[int, Fused] = {}
    best_rank: dict[int, int] = {}
    for signal, items in ranked.items():
        weight = 1.0 if weights is None else weights.get(signal, 1.0)
        for rank, (item, score) in enumerate(items, start=1):
            entry = fused.setdefault(item, Fused(item, 0.0))
            entry.score += weight / (k + rank)
            entry.signals[signal] = {"rank": rank, "score": score}
            best_rank[item] = min(best_rank.get(item, rank), rank)
    return sorted(fused.values(), key=lambda f: (-f.score, best_rank[f.id], f.id))


def cap_per_key(items: Sequence[Fused], key: Callable[[int], str], limit: int) -> list[Fused]:
    """Keep at most `limit` items per key (e.g. per file), preserving order."""
    seen: dict[str, int] = {}
    kept = []
    for item in items:
        k = key(item.id)
        if seen.get(k, 0) < limit:
            seen[k] = seen.get(k, 0) + 1
            kept.append(item)
    return kept
