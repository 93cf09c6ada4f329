"""An index never mixes vector spaces: when the embedding task falls back (say from Triton)
to a backend whose vectors have another dimension, they are refused, not stored."""

from __future__ import annotations

from pathlib import Path

from mimiverse.config import load_settings
from mimiverse.index.service import CodebaseService
from mimiverse.routing.router import Router
from tests.support.embedder import BowEmbedder


async def test_vectors_of_another_dimension_are_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None,
        backends=[{"name": n, "kind": "openai", "url": "http://127.0.0.1:9"}
                  for n in ("primary", "other")],
        models={
            "completion": {"model": "m", "family": "qwen2.5-coder", "backends": ["primary"]},
            "chat": {"model": "m", "backends": ["primary"]},
            "embedding": {"model": "minilm", "backends": ["primary", "other"]},
        },
    )
    primary, other = BowEmbedder("primary", dim=64), BowEmbedder("other", dim=32)
    root = tmp_path / "repo"
    service = CodebaseService(settings.index, Router(settings, {"primary": primary,
                                                                "other": other}), [str(root)])
    root.mkdir()
    (root / "a.py").write_text("def load_config(path):\n    return open(path).read()\n")
    try:
        job = await service.start(str(root))
        await service.wait(job.root)
        stats = job.store.stats(job.repo)
        assert (stats.embedding_model, stats.embedding_dim) == ("minilm", 64)
        assert stats.pending_embeddings == 0 and job.embedding_error is None

        # The primary goes down; the fallback answers with 32-dimensional vectors.
        primary.down = True
        (root / "b.py").write_text("def save_config(path, text):\n    open(path, 'w')\n")
        await service.start(str(root))
        await service.wait(job.root)
        assert other.calls == 1
        assert job.embedding_error == (
            "backend 'other' returned 32-dimensional vectors for model 'minilm', but this "
            "index holds 64-dimensional ones: it serves another model under that name; "
            "nothing was stored (point models.embedding at backends that serve the same "
            "model, or rename the model to re-embed the index)"
        )
        stats = job.store.stats(job.repo)
        assert stats.pending_embeddings == 1 and stats.embedding_dim == 64

        # Back to the primary: the pending chunk is embedded in the index's space.
        primary.down = False
        await service.embed_pending(job)
        assert job.embedding_error is None
        assert job.store.stats(job.repo).pending_embeddings == 0
    finally:
        await service.aclose()
