"""The interface every index store implements; one shared test suite runs against each.

Stores are synchronous: the indexer runs in a worker thread and the search service calls
them through `asyncio.to_thread`, so neither blocks the event loop.

Invariants every store keeps:
- a file's chunks are replaced atomically (old chunks and their vectors go in the same
  transaction that adds the new ones), so a crash never leaves a file half-indexed;
- a file's FileState is written in that same transaction, so the next run knows exactly
  which files are done;
- vectors are tied to the embedding model recorded for the repository: changing the model
  drops every vector (they are re-embedded) instead of mixing spaces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from mimiverse.index.model import Chunk, FileState, SearchFilter, StoredChunk
from mimiverse.index.store import Tokenizer


@dataclass(frozen=True, slots=True)
class RepoStats:
    files: int
    chunks: int
    pending_embeddings: int
    embedding_model: str | None
    embedding_dim: int | None


class IndexStore(ABC):
    kind: str = ""

    @abstractmethod
    def repo_id(self, root: str) -> int:
        """The id of the repository at absolute `root`, created on first use."""

    @abstractmethod
    def writer_lock(self, repo: int, *, wait: bool = True) -> AbstractContextManager[None]:
        """One writer per repository at a time; with wait=False raise IndexLocked at once."""

    @abstractmethod
    def file_states(self, repo: int) -> dict[str, FileState]:
        """Every indexed file of the repository, by relative path."""

    @abstractmethod
    def tokenizer(self) -> Tokenizer:
        """The tokenizer this store indexes with; `Chunk.terms` computed ahead must use it."""

    @abstractmethod
    def replace_files(self, repo: int, files: Sequence[tuple[FileState, Sequence[Chunk]]]) -> None:
        """Replace these files' chunks (and drop their vectors), all in one transaction.

        A chunk's `terms`, when given, are stored as its index terms without tokenising.
        """

    @abstractmethod
    def refresh_file_states(self, repo: int, states: Sequence[FileState]) -> None:
        """Update size/mtime of files whose content (sha256) did not change; chunks stay."""

    @abstractmethod
    def delete_files(self, repo: int, paths: Sequence[str]) -> None:
        """Forget these files, their chunks and vectors, in one transaction."""

    @abstractmethod
    def set_embedding_model(self, repo: int, model: str, dim: int) -> bool:
        """Record the model; a different one than recorded drops all vectors (returns True)."""

    @abstractmethod
    def pending_embeddings(self, repo: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` (chunk id, text) pairs that have no vector yet."""

    @abstractmethod
    def store_embeddings(self, repo: int, vectors: Sequence[tuple[int, Sequence[float]]]) -> None:
        """Save vectors (of the recorded model's dimension); ids deleted meanwhile are ignored."""

    @abstractmethod
    def search_lexical(
        self, repo: int, terms: Sequence[str], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        """BM25-ranked (chunk id, score), best first, over code-aware `terms` (OR)."""

    @abstractmethod
    def search_vector(
        self, repo: int, vector: Sequence[float], limit: int, where: SearchFilter
    ) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity), best first, over chunks that have vectors."""

    @abstractmethod
    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """The stored chunks with these ids."""

    @abstractmethod
    def stats(self, repo: int) -> RepoStats: ...

    @abstractmethod
    def check_integrity(self, repo: int) -> list[str]:
        """Problems found (chunks without a file, vectors without a chunk, ...); [] if none."""

    @abstractmethod
    def close(self) -> None: ...


def batched(items: Sequence[tuple[int, str]], size: int) -> Iterator[Sequence[tuple[int, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
