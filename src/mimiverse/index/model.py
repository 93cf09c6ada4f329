"""The records that flow between walker, chunker, stores and search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class IndexTerms(NamedTuple):
    """A chunk's index terms (see `store.index_terms`), in the forms the stores use."""

    joined: str  # every term in order, repeats kept, separated by single spaces
    distinct: str  # each term once, space-separated: what document frequencies count
    total: int  # how many terms `joined` holds

    @classmethod
    def of(cls, terms: list[str]) -> IndexTerms:
        return cls(" ".join(terms), " ".join(dict.fromkeys(terms)), len(terms))


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
    # Its index terms when computed ahead (by indexing workers, with the store's own
    # tokenizer); None: the store tokenises. Not part of the chunk's identity.
    terms: IndexTerms | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[type[Chunk], tuple[object, ...]]:
        # Pickled as constructor arguments: loads in half the time of the dataclass's
        # field-by-field __setstate__ (indexing workers send every chunk).
        return (Chunk, (self.path, self.start_line, self.end_line, self.text, self.language,
                        self.symbol, self.kind, self.terms))


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
