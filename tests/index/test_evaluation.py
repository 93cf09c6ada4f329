from pathlib import Path

import numpy as np
import pytest

from mimiverse.index.evaluation import Task, build_tasks, pooled, score
from mimiverse.index.evaluation.baselines import Dense, PlainBM25
from mimiverse.index.evaluation.embed_cache import EmbeddingCache
from mimiverse.index.evaluation.runner import Report

SOURCE = '''"""Module docstring."""


class Parser:
    """Parses things."""

    def parse_header_links(self, value):
        """Return a list of parsed link headers, as dicts.

        More words.
        """
        return [value]

    def get(self):
        """Get it."""
        return 1


def parse_header_links():
    return None


def _encode_multipart_body(fields):
    """Encode fields as a multipart body."""
    return fields
'''


def test_tasks_of_each_kind_from_a_docstring_free_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text(SOURCE)
    (src / "pkg" / "broken.py").write_text("def (:\n")
    tasks = build_tasks(src, dst, limit=10, lookups=10)
    assert tasks == [
        Task("Return a list of parsed link headers, as dicts.", "pkg/mod.py", 7, 12),
        Task("Encode fields as a multipart body.", "pkg/mod.py", 23, 25),
        # parse_header_links is defined twice: a lookup by name has no single answer.
        Task("_encode_multipart_body", "pkg/mod.py", 23, 25, "identifier"),
        Task("where is encode multipart body handled", "pkg/mod.py", 23, 25, "phrase"),
    ]
    copied = (dst / "pkg" / "mod.py").read_text()
    assert "docstring" not in copied and "parsed link" not in copied and "Get it" not in copied
    assert copied.count("\n") == SOURCE.count("\n")  # line numbers kept
    assert not (dst / "pkg" / "broken.py").exists()
    assert build_tasks(src, tmp_path / "again", limit=1, lookups=0, seed=3)[0].kind == "docstring"


def test_scores_and_pooling() -> None:
    s = score([1, 2, None, 11])
    assert (s.mrr_at_10, s.recall_at_1, s.recall_at_10) == (0.375, 0.25, 0.5)
    a = Report([], 0, {"docstring": {"hybrid": score([1, None])}})
    b = Report([], 0, {"docstring": {"hybrid": score([2, 2])}})
    assert pooled([a, b])["docstring"]["hybrid"].mrr_at_10 == pytest.approx(0.5)


def test_plain_bm25_and_dense_baselines() -> None:
    texts = ["def parse_url(text): return split(text)", "def render(page): return page",
             "class Url: scheme = 'http'"]
    bm25 = PlainBM25(texts)
    assert bm25.search("parse a url", 10) == [0, 2]  # only chunks that share a term
    assert bm25.search("render the page", 10) == [1]
    assert bm25.search("nothing shared", 10) == []
    dense = Dense([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert dense.search([0.0, 1.0], 2) == [1, 2]
    assert dense.search([1.0, 0.1], 3) == [0, 2, 1]


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "e.npz"
    cache = EmbeddingCache(path)
    assert cache.get("m", ["a", "b"]) == [None, None]
    cache.put("m", ["a", "b"], [[1.0, 2.0], [3.0, 4.0]])
    cache.save()
    again = EmbeddingCache(path)
    a, b, other = again.get("m", ["a", "b", "c"])
    assert a is not None and b is not None and other is None
    assert np.array_equal(a, np.array([1.0, 2.0], np.float32)) and b[1] == 4.0
    assert again.get("another model", ["a"]) == [None]  # the model is part of the key
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickle inside
        assert data["keys"].dtype == np.dtype("S16") and data["vectors"].shape == (2, 2)
