"""Index stores behind one interface: SQLite (laptop) and PostgreSQL + pgvector (team).

Also the few rules both stores must apply identically, so one test suite holds for both:
- `index_terms`: what the full-text index sees for a chunk (its text, path and symbol,
  tokenised by the same code-aware tokenizer the search side uses for queries);
- `glob_regex`: what `SearchFilter.path_glob` means (gitignore-like, see its docstring).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mimiverse.errors import CodeIndexError
from mimiverse.index.model import Chunk, IndexTerms

if TYPE_CHECKING:
    from mimiverse.config import IndexSettings
    from mimiverse.index.store.base import IndexStore

Tokenizer = Callable[[str], list[str]]


def default_tokenizer() -> Tokenizer:
    # Imported on use: the stores do not need the tokenizer to read or search.
    from mimiverse.index.tokenize import tokens

    return tokens


# Terms rarer than this are "selective": they pick the candidates BM25 ranks. Commoner
# ones only add to the scores of those candidates (see `split_terms`).
SELECTIVE_MIN_DF = 1000
SELECTIVE_FRACTION = 0.02
BM25_K1 = 1.2
BM25_B = 0.75


def index_terms(
    chunk: Chunk, tokenize: Tokenizer, path_terms: list[str] | None = None
) -> list[str]:
    """The terms a chunk is found by: its text's, then its path's and symbol's tokens.

    Path and symbol tokens make a search for a file or function name find it even when
    the name is not in the body. A tokenizer's terms never contain whitespace (stores
    keep them joined by spaces). `path_terms`: `tokenize(chunk.path)`, if already known.
    """
    terms = tokenize(chunk.text)
    terms += tokenize(chunk.path) if path_terms is None else path_terms
    if chunk.symbol:
        terms += tokenize(chunk.symbol)
    return terms


def chunk_terms(chunk: Chunk, tokenize: Tokenizer) -> IndexTerms:
    """The chunk's `index_terms`: those computed ahead (`Chunk.terms`), else tokenised now."""
    if chunk.terms is not None:
        return chunk.terms
    return IndexTerms.of(index_terms(chunk, tokenize))


def pending_migrations(what: str, version: int,
                       migrations: Sequence[Sequence[str]]) -> list[str]:
    """The statements that bring `what` (an index at schema `version`) up to the last of
    `migrations`; an index newer than this code is refused, never downgraded."""
    if version > len(migrations):
        raise CodeIndexError(
            f"{what} has schema version {version}, newer than this "
            f"mimiverse understands ({len(migrations)}); upgrade mimiverse"
        )
    return [statement for step in migrations[version:] for statement in step]


def bm25_idf(chunks: float, df: float) -> float:
    """FTS5's IDF: terms in more than half the chunks get (almost) no weight."""
    idf = math.log((chunks - df + 0.5) / (df + 0.5))
    return idf if idf > 0 else 1e-6


def split_terms(df: dict[str, int], chunks: int) -> tuple[list[str], list[str]]:
    """(selective, common) query terms, each list rarest first.

    BM25 work grows with the number of chunks a term matches, and a term in most chunks
    costs the most while weighing the least. So only selective terms choose candidates;
    common terms add their weight to those candidates. A chunk that matches only common
    terms is not returned (its BM25 score would be a small fraction of any selective
    match). If every term is common, the rarest one selects.
    """
    present = sorted((t for t in df if df[t] > 0), key=lambda t: (df[t], t))
    cutoff = max(SELECTIVE_MIN_DF, chunks * SELECTIVE_FRACTION)
    selective = [t for t in present if df[t] <= cutoff] or present[:1]
    return selective, present[len(selective) :]


def glob_regex(glob: str) -> str:
    """Translate a path glob into a regex that Python `re` and PostgreSQL read alike.

    Semantics (gitignore-like, over the POSIX relative path):
    - `*` and `?` never cross a `/`; `[abc]`, `[!abc]` are character classes;
    - `**/` is zero or more directories, a trailing `/**` everything below, `**` anything;
    - a glob without `/` (a trailing one aside) matches at any depth: `*.py` any Python
      file, `src/` everything below any directory named src;
    - any other glob is anchored at the root: `src/*.py`, `/src/` (a leading `/` or `./`
      only anchors); a trailing `/` means everything below.
    """
    g = glob.strip()
    while g.startswith("./"):
        g = g[2:]
    anywhere = "/" not in g.rstrip("/")
    g = g.lstrip("/")
    if g.endswith("/"):
        g += "**"
    # `^` and `$` rather than `\A`, `\Z`: PostgreSQL's planner reads a literal prefix
    # after `^` (paths hold no newlines, so Python's `$` is as strict here).
    out: list[str] = ["^", "(?:.*/)?" if anywhere and g else ""]
    i = 0
    while i < len(g):
        c = g[i]
        if c == "*":
            j = i
            while j < len(g) and g[j] == "*":
                j += 1
            if j - i >= 2 and j < len(g) and g[j] == "/":
                out.append("(?:.*/)?")
                j += 1
            else:
                out.append(".*" if j - i >= 2 else "[^/]*")
            i = j
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[" and (end := _class_end(g, i)) > 0:
            out.append(_class_regex(g[i + 1 : end]))
            i = end
        else:
            out.append(_literal(c))
        i += 1
    out.append("$")
    return "".join(out)


def _class_end(g: str, start: int) -> int:
    """Index of the `]` closing the class opened at `start`, or -1 if it is a literal `[`."""
    i = start + 1
    if i < len(g) and g[i] in "!^":
        i += 1
    if i < len(g) and g[i] == "]":  # a leading `]` is a member, as in fnmatch
        i += 1
    end = g.find("]", i)
    return end


def _class_regex(body: str) -> str:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    # Escape what is special inside a class in either dialect; keep `-` for ranges.
    members = "".join("\\" + c if c in "\\[]^" else c for c in body)
    # A negated class must still not cross directories, like `*` and `?`.
    return f"[^/{members}]" if negate else f"[{members}]"


def _literal(c: str) -> str:
    # A backslash before a non-alphanumeric ASCII character means that character in RE2,
    # Python and PostgreSQL regexes; other characters go in a class of their own (RE2
    # refuses a backslash before them); alphanumerics pass as they are.
    if c.isalnum() or c in "_/":
        return c
    return "\\" + c if c.isascii() else f"[{c}]"


class PathPattern(Protocol):
    def search(self, text: str) -> object | None: ...


@lru_cache(maxsize=256)
def compiled_glob(glob: str) -> PathPattern:
    """The glob's regex, compiled by RE2: a client's glob (`*a*a*a*a*b`) must not make a
    backtracking engine take polynomial-to-exponential time in a path's length."""
    import re2

    pattern: PathPattern = re2.compile(glob_regex(glob))
    return pattern


def sqlite_path(settings: IndexSettings, root: Path) -> Path:
    """Where the SQLite index of the repository at `root` lives: its own folder under
    `data_dir`, named by the root's last part (for people) and a hash of the whole path.

    Indexes once kept in `<root>/.mimiverse/` are not adopted: a repository can ship such
    a folder, and an index it wrote would put its words into search results and prompts.
    They are rebuilt here; the old folder is left alone (and never walked)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", root.name)[:48] or "root"
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
    return Path(settings.data_dir).expanduser() / "indexes" / f"{name}-{digest}" / "index.db"


def open_store(settings: IndexSettings, root: Path) -> IndexStore:
    """The configured store for the repository at `root`."""
    if settings.store == "postgres":
        # Imported on use: psycopg is only needed by teams that run PostgreSQL.
        from mimiverse.index.store.postgres import PostgresStore

        if not settings.url:  # the settings validator already refuses this
            raise ValueError("index.store = 'postgres' needs index.url")
        return PostgresStore(settings.url)
    from mimiverse.index.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(settings, root))
