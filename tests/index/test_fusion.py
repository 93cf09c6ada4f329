import pytest

from mimiverse.index.fusion import cap_per_key, fuse


def test_rrf_rewards_agreement_between_signals() -> None:
    fused = fuse({"lexical": [(1, 9.0), (2, 5.0), (3, 1.0)], "vector": [(3, 0.9), (2, 0.8)]})
    # 3: 1/63 + 1/61 = 0.032266 edges out 2: 1/62 + 1/62 = 0.032258; 1 has one signal
    assert [f.id for f in fused] == [3, 2, 1]
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 62 + 1 / 62)
    assert fused[2].score == pytest.approx(1 / 61)
    assert fused[1].signals == {"lexical": {"rank": 2, "score": 5.0},
                                "vector": {"rank": 2, "score": 0.8}}


def test_weights_and_k() -> None:
    ranked = {"lexical": [(1, 1.0)], "vector": [(2, 1.0)]}
    assert [f.id for f in fuse(ranked, weights={"lexical": 1.0, "vector": 2.0})] == [2, 1]
    assert fuse(ranked, k=1)[0].score == pytest.approx(0.5)


def test_ties_break_by_best_rank_then_id() -> None:
    fused = fuse({"a": [(5, 1.0), (4, 1.0)], "b": [(4, 1.0), (5, 1.0)]})
    assert [f.id for f in fused] == [4, 5]  # equal scores, equal best rank: lower id first


def test_cap_per_file_keeps_order() -> None:
    fused = fuse({"lexical": [(i, 1.0) for i in range(6)]})
    files = {0: "a", 1: "a", 2: "b", 3: "a", 4: "b", 5: "c"}
    assert [f.id for f in cap_per_key(fused, files.__getitem__, 2)] == [0, 1, 2, 4, 5]
