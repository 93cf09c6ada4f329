"""What ask, explain and debug take from the index: matches, definitions, callers, files.

Definitions and callers are found with the codebase service's own lexical search (a
definition is a chunk whose symbol is the name; a caller is a chunk that calls it), so
they come from the same index, with the same team scoping, as every search. Files are
read only when the index lists them (a path outside the indexed root, or one the walker
skipped such as `.env`, is never read), and secrets are redacted as indexing does.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from mimiverse.errors import InvalidRequest
from mimiverse.index.chunker import chunk_file
from mimiverse.index.filetypes import detect_language
from mimiverse.index.model import Chunk, SearchFilter, StoredChunk
from mimiverse.index.redaction import redact
from mimiverse.index.service import CodebaseService, Job
from mimiverse.index.walker import SourceFile, SourceText, read_source

Role = Literal["match", "definition", "selection", "enclosing", "caller", "frame"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
# Words of the languages themselves and their commonest built-ins: never worth a lookup.
_NOT_NAMES = frozenset(
    {
        "and", "as", "assert", "async", "await", "break", "case", "catch", "class", "const",
        "continue", "def", "default", "defer", "del", "elif", "else", "enum", "except",
        "export", "extends", "false", "final", "finally", "for", "from", "func", "function",
        "if", "impl", "implements", "import", "in", "interface", "is", "lambda", "let",
        "match", "mod", "mut", "new", "nil", "None", "not", "null", "or", "package", "pass",
        "private", "protected", "pub", "public", "raise", "return", "self", "static",
        "struct", "super", "switch", "this", "throw", "throws", "true", "True", "False",
        "try", "type", "typeof", "use", "var", "void", "while", "with", "yield", "int",
        "str", "string", "bool", "float", "char", "long", "unsigned", "print", "len",
        "range", "list", "dict", "set", "tuple", "console", "log", "undefined", "Self",
        "String", "Vec", "Option", "Some", "Result", "Ok", "Err", "err", "fmt", "println",
    }
)  # fmt: skip
_DEFINITION_KINDS = frozenset({"function", "method", "class"})
ENCLOSING_LINES = 120


class NotInRepository(InvalidRequest):
    """404: the path names no indexed file of the repository (outside it, or skipped)."""

    status_code = 404


@dataclass(frozen=True, slots=True)
class Source:
    """A piece of code put into a prompt; what the answer's `sources` list."""

    path: str  # relative to the repository root
    start_line: int
    end_line: int
    symbol: str | None
    role: Role
    text: str
    language: str | None = None
    line: int | None = None  # a frame's own line

    @classmethod
    def of(cls, chunk: StoredChunk, role: Role) -> Source:
        return cls(chunk.path, chunk.start_line, chunk.end_line, chunk.symbol, role,
                   chunk.text, chunk.language)

    def overlaps(self, other: Source) -> bool:
        return self.path == other.path and not (
            self.end_line < other.start_line or other.end_line < self.start_line)

    def public(self) -> dict[str, object]:
        return {"path": self.path, "start_line": self.start_line, "end_line": self.end_line,
                "symbol": self.symbol, "role": self.role, "line": self.line}


def names_used(code: str, limit: int) -> list[str]:
    """Identifiers of `code` worth looking up, in order of first use, each once."""
    found: dict[str, None] = {}
    for word in _IDENTIFIER.findall(code):
        if word not in _NOT_NAMES and word.lower() not in _NOT_NAMES:
            found[word] = None
            if len(found) >= limit:
                break
    return list(found)


def short_name(symbol: str | None) -> str | None:
    """`Cart.total` -> `total`; Java's `com.shop.Cart.lambda$total$0` -> `total`."""
    if not symbol:
        return None
    last = symbol.rsplit(".", 1)[-1].rsplit("::", 1)[-1]
    if last.startswith("lambda$"):
        last = last.split("$")[1]
    return last or None


def locate(service: CodebaseService, repo: str | None, path: str | None
           ) -> tuple[Job, str | None]:
    """The repository asked for (or the one an absolute `path` lies in, or the first
    indexed) and `path` relative to its root. Only paths are compared: nothing is read."""
    if repo is None and path is not None and path.startswith("/"):
        normal = PurePosixPath(posixpath.normpath(path))
        for root, job in service.visible_jobs().items():
            if normal.is_relative_to(root.as_posix()):
                return job, normal.relative_to(root.as_posix()).as_posix()
    job = service.job_for(repo)
    if path is None:
        return job, None
    if path.startswith("/"):
        normal = PurePosixPath(posixpath.normpath(path))
        if not normal.is_relative_to(job.root.as_posix()):
            raise NotInRepository(f"path {path!r} is not inside the repository {job.root}")
        return job, normal.relative_to(job.root.as_posix()).as_posix()
    relative = posixpath.normpath(path.replace("\\", "/"))
    if relative == ".." or relative.startswith("../") or "\x00" in relative:
        raise NotInRepository(f"path {path!r} must stay inside the repository")
    return job, relative


async def indexed_paths(job: Job) -> set[str]:
    states = await asyncio.to_thread(job.store.file_states, job.repo)
    return set(states)


async def read_indexed(job: Job, relative: str, max_bytes: int) -> str | None:
    """The file's text with secrets redacted, when the index lists it; else None."""
    if relative not in await indexed_paths(job):
        return None

    def read() -> str | None:
        full = (job.root / relative).resolve()
        if not full.is_relative_to(job.root):  # a symlink swapped in since indexing
            return None
        found = read_source(_source_file(full, relative), max_file_bytes=max_bytes)
        if not isinstance(found, SourceText):
            return None
        return redact(found.text, relative, detect_language(relative)).text

    return await asyncio.to_thread(read)


def _source_file(full: Path, relative: str) -> SourceFile:
    return SourceFile(relative, full, 0, 0, detect_language(relative))


def enclosing(relative: str, text: str, start: int, end: int) -> Source | None:
    """The innermost definition around lines start..end of the file (fresh from disk)."""
    language = detect_language(relative)
    # Fresh pieces, not the index's chunks: those merge small neighbours into one.
    chunks = [c for c in _pieces(relative, text, language)
              if c.kind in _DEFINITION_KINDS and c.start_line <= start and end <= c.end_line]
    if not chunks:
        return None
    best = min(chunks, key=lambda c: c.end_line - c.start_line)
    return Source(relative, best.start_line, best.end_line, best.symbol, "enclosing",
                  best.text, language)


def lines_of(text: str, start: int, end: int) -> str:
    return "\n".join(text.split("\n")[start - 1 : end])


async def definitions(service: CodebaseService, job: Job, names: Sequence[str],
                      language: str | None, per_name: int = 2) -> list[Source]:
    """Chunks that define each name (symbol `name` or `Owner.name`), names in order; in
    `language` when known (a name in a Go trace means Go code, not a Python namesake)."""
    where = SearchFilter(language=language)

    async def lookup(name: str) -> list[Source]:
        result = await service.search(name, limit=20, mode="lexical", repo=str(job.root),
                                      where=where)
        chunks = [h.chunk for h in result.hits]

        def narrow() -> list[Source]:  # parsing holds the GIL: off the event loop
            return [_narrowed(c, name) for c in chunks if _defines(c, name)][:per_name]

        return await asyncio.to_thread(narrow)

    found = await asyncio.gather(*(lookup(n) for n in names))
    return dedupe(s for sources in found for s in sources)


def _defines(chunk: StoredChunk, name: str) -> bool:
    """Whether the chunk is a definition of `name`: its symbol, or a line that defines it
    (small definitions are merged into chunks named after a neighbour, or no name)."""
    if chunk.kind in _DEFINITION_KINDS and short_name(chunk.symbol) == name:
        return True
    return _definition_line(name).search(chunk.text) is not None


def _narrowed(chunk: StoredChunk, name: str) -> Source:
    """The lines of the chunk that define `name`: the index merges small definitions
    into one chunk, and the prompt needs only the one asked for."""
    source = replace(Source.of(chunk, "definition"), symbol=name)
    if chunk.kind in _DEFINITION_KINDS and short_name(chunk.symbol) == name:
        return source
    own = [p for p in _pieces(chunk.path, chunk.text, chunk.language)
           if p.kind in _DEFINITION_KINDS and short_name(p.symbol) == name]
    if not own:
        return source  # e.g. a method of a class cut in half: the chunk as it is
    offset = chunk.start_line - 1
    return replace(source, start_line=own[0].start_line + offset,
                   end_line=own[0].end_line + offset, text=own[0].text)


def _definition_line(name: str) -> re.Pattern[str]:
    word = re.escape(name)
    return re.compile(
        # def / function / func (with Go's receiver) / fn / class and kin, then the name
        r"^[ \t]*(?:(?:export|pub(?:\([a-z]+\))?|async|default|abstract|public|private"
        r"|protected|static|final)\s+)*(?:def|function\*?|func(?:\s*\([^)]*\))?|fn|class"
        r"|struct|interface|trait|enum|type)\s+" + word + r"\b"
        # `const name = (...) =>` / `= function`
        r"|^[ \t]*(?:export\s+)?(?:const|let|var)\s+" + word + r"\s*=\s*(?:async\s*)?"
        r"(?:function\b|\([^)]*\)\s*=>|[A-Za-z_]\w*\s*=>)",
        re.M,
    )


async def callers(service: CodebaseService, job: Job, name: str, language: str | None,
                  limit: int = 5) -> list[Source]:
    """Chunks (in `language` when known) that call `name`: its name followed by an
    opening parenthesis, outside its own definitions."""
    call = re.compile(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"\s*\(")
    result = await service.search(name, limit=30, mode="lexical", repo=str(job.root),
                                  where=SearchFilter(language=language))
    chunks = [h.chunk for h in result.hits
              if short_name(h.chunk.symbol) != name and call.search(h.chunk.text)]

    def narrow() -> list[Source]:  # parsing holds the GIL: off the event loop
        found = [_calling(c, name, call) for c in chunks]
        return [s for s in found if s is not None][:limit]

    return await asyncio.to_thread(narrow)


def _calling(chunk: StoredChunk, name: str, call: re.Pattern[str]) -> Source | None:
    """The definition inside the chunk that calls `name` (a chunk may hold several)."""
    pieces = [p for p in _pieces(chunk.path, chunk.text, chunk.language)
              if p.kind in _DEFINITION_KINDS and short_name(p.symbol) != name]
    for piece in pieces:
        if call.search(piece.text):
            offset = chunk.start_line - 1
            return Source(chunk.path, piece.start_line + offset, piece.end_line + offset,
                          piece.symbol, "caller", piece.text, chunk.language)
    if _definition_line(name).search(chunk.text):
        return None  # only its own definition matched
    return Source.of(chunk, "caller")


def _pieces(path: str, text: str, language: str | None) -> list[Chunk]:
    """Every definition a piece of its own, whole up to ENCLOSING_LINES."""
    return chunk_file(path, text, language, max_chunk_lines=ENCLOSING_LINES,
                      max_chunk_chars=ENCLOSING_LINES * 80, min_chunk_lines=1)


def dedupe(sources: Iterable[Source], shown: Sequence[Source] = ()) -> list[Source]:
    """Each piece of code once: later sources overlapping an earlier one are dropped."""
    kept: list[Source] = list(shown)
    for source in sources:
        if not any(source.overlaps(k) for k in kept):
            kept.append(source)
    return kept[len(shown):]
