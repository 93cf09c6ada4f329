"""Index, search ranking and repository-context (FIM snippets) settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mimiverse.config.base import StrictModel


def default_data_dir() -> str:
    """Mimiverse's per-user data folder: $XDG_DATA_HOME/mimiverse, else
    ~/.local/share/mimiverse (the platform's equivalent on macOS and Windows)."""
    import platformdirs

    return platformdirs.user_data_dir("mimiverse", appauthor=False)


class IndexSettings(StrictModel):
    store: Literal["sqlite", "postgres"] = "sqlite"
    # Never inside the indexed folder: what a repository holds must not decide what its
    # index says, and indexing must not write into folders it only reads.
    data_dir: str = Field(default_factory=default_data_dir,
                          description="sqlite: one index per repository under indexes/")
    url: str | None = Field(None, description="postgres: postgresql://user@host/db")
    max_file_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    embed_batch: int = Field(32, ge=1, le=1024)
    # Hybrid ranking (index/fusion.py, index/ranking.py; measured by bench/search_quality.py).
    fusion: Literal["score", "rrf"] = Field(
        "score", description="score: min-max normalised scores, weighted; rrf: reciprocal ranks"
    )
    rrf_k: int = Field(60, ge=1, le=1000, description="rrf only")
    lexical_weight: float = Field(1.0, ge=0, le=10)
    vector_weight: float = Field(1.3, ge=0, le=10)
    symbol_boost: float = Field(1.0, ge=0, le=10, description="query names the definition")
    path_boost: float = Field(0.25, ge=0, le=10, description="query terms in the file's path")
    test_file_weight: float = Field(
        0.7, ge=0, le=1, description="score factor of test files unless the query is about tests"
    )
    max_hits_per_file: int | None = Field(None, ge=1, le=100, description="None: no cap")
    # POST /api/codebase/index only accepts repositories under these folders. Unset: the
    # `serve --repo` folders and the home folder of the user the server runs as; a server
    # that binds beyond loopback must set them.
    allowed_roots: list[str] = Field(default_factory=list, max_length=256)
    # PostgreSQL: index jobs are rows every replica sees. A runner renews its lease every
    # third of `job_lease_s`; a job whose lease ran out (its replica died) is taken over.
    job_lease_s: float = Field(30.0, ge=0.5, le=3600)
    job_poll_s: float = Field(1.0, gt=0, le=60, description="how often replicas look for jobs")

    @model_validator(mode="after")
    def _postgres_needs_url(self) -> IndexSettings:
        if self.store == "postgres" and not self.url:
            raise ValueError("store = 'postgres' needs url = 'postgresql://...'")
        return self


class RepoContextSettings(StrictModel):
    """Repository snippets put into completion prompts (repository-aware FIM)."""

    enabled: bool = Field(True, description="add the index's best matches to FIM prompts")
    share: float = Field(0.25, ge=0, le=0.75, description="of models.completion.max_prompt_tokens")
    max_tokens: int | None = Field(None, ge=0, le=65536, description="absolute budget; wins")
    max_per_file: int = Field(2, ge=1, le=20)
    max_snippets: int = Field(6, ge=1, le=50)
    candidates: int = Field(20, ge=1, le=100, description="matches asked of the index")
    mode: Literal["hybrid", "lexical"] = "hybrid"
    min_shared_identifiers: int = Field(
        2, ge=0, le=20, description="names a match must share with the code at the cursor"
    )
    # Completions wait this long for the index at most, then go ahead without context.
    timeout_ms: float = Field(150.0, gt=0, le=10_000)
    region_lines: int = Field(16, ge=1, le=1000, description="cursor region matches are cached by")
    cache_ttl_s: float = Field(60.0, ge=0, le=3600)

    def budget(self, max_prompt_tokens: int) -> int:
        if self.max_tokens is not None:
            return min(self.max_tokens, max_prompt_tokens // 2)
        return int(max_prompt_tokens * self.share)
