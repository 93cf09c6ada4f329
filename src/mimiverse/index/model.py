"""The records that flow between walker, chunker, stores and search."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a file: a function, method, class, merged neighbours, or a line window."""

    path: str  # relative to the repository root, POSIX separators
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    text: str
    language: str | None = None
    symbol: str | None = None  # e.g. "Parser.parse" for a method
    kind: str = "window"  # function | method | class | block | window


@dataclass(frozen=True, slots=True)
class FileState:
    """What the index remembers of a file to decide, cheaply, whether it changed."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class SearchFilter:
    # gitignore-like: `*`/`?` stay within a folder, `**/` spans folders, a glob without `/`
    # matches at any depth, a leading `/` anchors at the root. e.g. "src/**/*.py"
    path_glob: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class StoredChunk:
    id: int
    path: str
    start_line: int
    end_line: int
    text: str
    language: str | None
    symbol: str | None
    kind: str


@dataclass(slots=True)
class Hit:
    """One search result, with each signal's rank and score so a user can see why."""

    chunk: StoredChunk
    score: float
    signals: dict[str, dict[str, float]] = field(default_factory=dict)  # "lexical": {rank, score}
