"""Fusing the lexical and vector rankings into one list.

Two methods:
- `score` (the default): a convex combination of each signal's min-max normalised
  scores, Σ weight_s · (score - lowest_s) / (highest_s - lowest_s) over the candidates
  each signal returned (a chunk a signal did not return counts 0 for it). A chunk that
  one signal finds far ahead of its other candidates keeps that lead, where reciprocal
  ranks would flatten it: on the project's evaluation, RRF buried chunks that the vector
  ranked first under chunks ranked moderately by both (docs/benchmarks.md).
- `rrf`: reciprocal rank fusion, Σ weight_s / (k + rank_s), which needs no scores.

Ties break by the best single rank, then by id, so the order is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Method = Literal["score", "rrf"]


@dataclass(slots=True)
class Fused:
    id: int
    score: float
    signals: dict[str, dict[str, float]] = field(default_factory=dict)


def normalised(items: Sequence[tuple[int, float]]) -> list[float]:
    """Scores mapped onto [0, 1] by the list's own range (a list of one scores 1)."""
    if not items:
        return []
    high, low = items[0][1], items[-1][1]
    high, low = max(high, low), min(high, low)
    if high - low <= 1e-12:
        return [1.0] * len(items)
    return [(s - low) / (high - low) for _, s in items]


def fuse(
    ranked: Mapping[str, Sequence[tuple[int, float]]],
    *,
    method: Method = "score",
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[Fused]:
    """Fuse {signal: [(id, score), ...best first]} into one list, best first."""
    fused: dict[int, Fused] = {}
    best_rank: dict[int, int] = {}
    for signal, items in ranked.items():
        weight = 1.0 if weights is None else weights.get(signal, 1.0)
        if method == "rrf":
            parts = [1 / (k + rank) for rank in range(1, len(items) + 1)]
        else:
            parts = normalised(items)
        for rank, ((item, score), part) in enumerate(zip(items, parts, strict=True), start=1):
            entry = fused.setdefault(item, Fused(item, 0.0))
            entry.score += weight * part
            entry.signals[signal] = {"rank": rank, "score": score}
            best_rank[item] = min(best_rank.get(item, rank), rank)
    return sorted(fused.values(), key=lambda f: (-f.score, best_rank[f.id], f.id))
