import pytest

from mimiverse.index.fusion import fuse, normalised


def test_rrf_rewards_agreement_between_signals() -> None:
    fused = fuse({"lexical": [(1, 9.0), (2, 5.0), (3, 1.0)], "vector": [(3, 0.9), (2, 0.8)]},
                 method="rrf")
    # 3: 1/63 + 1/61 = 0.032266 edges out 2: 1/62 + 1/62 = 0.032258; 1 has one signal
    assert [f.id for f in fused] == [3, 2, 1]
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 62 + 1 / 62)
    assert fused[2].score == pytest.approx(1 / 61)
    assert fused[1].signals == {"lexical": {"rank": 2, "score": 5.0},
                                "vector": {"rank": 2, "score": 0.8}}


def test_scores_are_normalised_by_each_lists_range() -> None:
    assert normalised([(1, 9.0), (2, 5.0), (3, 1.0)]) == [1.0, 0.5, 0.0]
    assert normalised([(1, 0.4)]) == [1.0]  # one candidate: as sure as a signal gets
    assert normalised([(1, 0.4), (2, 0.4)]) == [1.0, 1.0]
    assert normalised([]) == []


def test_score_fusion_adds_weighted_normalised_scores() -> None:
    fused = fuse({"lexical": [(1, 9.0), (2, 5.0), (3, 1.0)], "vector": [(3, 0.9), (2, 0.8),
                                                                          (4, 0.4)]},
                 weights={"lexical": 1.0, "vector": 2.0})
    # 2: 0.5 + 2 * 0.8; 3: 0 + 2 * 1.0; 1: 1.0; 4: 0
    assert [(f.id, round(f.score, 6)) for f in fused] == [(2, 2.1), (3, 2.0), (1, 1.0),
                                                          (4, 0.0)]


def _one_signal_finds(strong: str, weak: str) -> dict[str, list[tuple[int, float]]]:
    """`strong` ranks 42 first, far ahead of the rest; `weak` lacks 42 and ranks 7, 8, 9
    moderately (10th to 12th), as `strong` does (2nd to 4th)."""
    return {
        strong: [(42, 0.81), (7, 0.55), (8, 0.54), (9, 0.53)]
        + [(100 + i, 0.50 - i / 400) for i in range(40)],
        weak: [(200 + i, 15.0 - i / 2) for i in range(9)] + [(7, 9.0), (8, 8.9), (9, 8.8)]
        + [(300 + i, 8.0 - i / 10) for i in range(30)],
    }


@pytest.mark.parametrize(("strong", "weak"), [("vector", "lexical"), ("lexical", "vector")])
def test_a_chunk_only_one_signal_finds_keeps_its_lead(strong: str, weak: str) -> None:
    ranked = _one_signal_finds(strong, weak)
    ids = [f.id for f in fuse(ranked)]
    assert ids.index(42) < 2 and ids.index(42) < min(ids.index(7), ids.index(8), ids.index(9))
    # Reciprocal ranks see 42 as rank 1 of one list, and 7 as ranks 2 and 10 of two:
    # agreement on mediocre chunks outweighs one signal's clear answer.
    assert [f.id for f in fuse(ranked, method="rrf")][:4] == [7, 8, 9, 42]


def test_weights_and_k() -> None:
    ranked = {"lexical": [(1, 1.0)], "vector": [(2, 1.0)]}
    for method in ("score", "rrf"):
        fused = fuse(ranked, method=method, weights={"lexical": 1.0, "vector": 2.0})
        assert [f.id for f in fused] == [2, 1]
    assert fuse(ranked, method="rrf", k=1)[0].score == pytest.approx(0.5)


def test_ties_break_by_best_rank_then_id() -> None:
    fused = fuse({"a": [(5, 1.0), (4, 1.0)], "b": [(4, 1.0), (5, 1.0)]}, method="rrf")
    assert [f.id for f in fused] == [4, 5]  # equal scores, equal best rank: lower id first
    fused = fuse({"a": [(5, 2.0), (4, 1.0)], "b": [(4, 2.0), (5, 1.0)]})
    assert [f.id for f in fused] == [4, 5]
