"""The index's best matches for a cursor, cached per file and cursor region.

Typing moves the cursor a few characters at a time: asking the index again for every
keystroke would cost a search (and a query embedding) per completion, so matches are kept
per (repository, file, region of `region_lines` lines) for `cache_ttl_s`. What the prompt
shows of the current file changes with every request, so that filter runs each time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from mimiverse.config import RepoContextSettings
from mimiverse.errors import MimiverseError
from mimiverse.fim.context import (
    Cursor,
    clip_to_lines,
    cursor_identifiers,
    cursor_query,
    overlaps_visible,
    select,
    shared_identifiers,
)
from mimiverse.fim.prompt import trim_to_budget
from mimiverse.fim.templates import ContextFile, FimTemplate
from mimiverse.index.model import StoredChunk
from mimiverse.index.service import CodebaseService, Job

log = logging.getLogger("mimiverse.fim")

_CACHE_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class Matches:
    repo_name: str
    path: str | None  # the current file, relative to the repository root
    files: list[ContextFile]  # best first


class RepoRetriever:
    def __init__(self, service: CodebaseService, settings: RepoContextSettings) -> None:
        self.service = service
        self.settings = settings
        # (root, file or query digest, region) -> (expiry, chunks best first)
        self._regions: OrderedDict[tuple[str, str, int], tuple[float, list[StoredChunk]]] = (
            OrderedDict()
        )

    def has_repositories(self) -> bool:
        """Whether any indexed repository is open to the request's principal."""
        return bool(self.service.visible_jobs())

    def locate(self, path: str | None) -> tuple[Job, str | None] | None:
        """The indexed repository a file belongs to, and its path relative to that root.

        An absolute path picks the repository containing it; a relative path (or none)
        means the only repository indexed here, if there is exactly one. Only the
        repositories the request's team may use count. Paths are only compared as text:
        nothing is read from disk.
        """
        jobs = self.service.visible_jobs()
        if path is not None and path.startswith("/"):
            normal = PurePosixPath(posixpath.normpath(path))
            for root, job in jobs.items():
                if normal.is_relative_to(root.as_posix()):
                    return job, normal.relative_to(root.as_posix()).as_posix()
            return None
        if len(jobs) != 1:
            return None
        job = next(iter(jobs.values()))
        if path is None:
            return job, None
        relative = posixpath.normpath(path.replace("\\", "/"))
        if relative == ".." or relative.startswith("../"):
            return None  # names a file outside the repository
        return job, relative

    async def matches(
        self, path: str | None, prefix: str, visible_prefix: str, visible_suffix: str
    ) -> Matches | None:
        """Best matches for the cursor at the end of `prefix`, minus what the prompt shows
        (`visible_prefix`/`visible_suffix`: the parts of the file it keeps). None when no
        indexed repository holds the file or the index did not answer in time."""
        found = self.locate(path)
        if found is None:
            return None
        job, relative = found
        line = prefix.count("\n") + 1
        cursor = Cursor(
            path=relative, line=line,
            first_visible=line - visible_prefix.count("\n"),
            last_visible=line + visible_suffix.count("\n"),
            visible_text=visible_prefix + visible_suffix,
        )
        identifiers = cursor_identifiers(visible_prefix, visible_suffix)
        query = cursor_query(visible_prefix, visible_suffix, identifiers)
        chunks = await self._search(job, relative, line, query)
        if chunks is None:
            return None
        # Rank alone says nothing absolute (a small repository ranks everything): a match
        # must also use enough of the names the code around the cursor uses.
        minimum = self.settings.min_shared_identifiers
        files = [
            ContextFile(c.path, c.text) for c in chunks
            if not overlaps_visible(cursor, c.path, c.start_line, c.end_line, c.text)
            and shared_identifiers(c.text, identifiers) >= minimum
        ]
        return Matches(job.root.name, relative, files)

    async def _search(
        self, job: Job, relative: str | None, line: int, query: str
    ) -> list[StoredChunk] | None:
        where = relative if relative is not None else "?" + _digest(query)
        key = (job.root.as_posix(), where, line // self.settings.region_lines)
        now = time.monotonic()
        cached = self._regions.get(key)
        if cached is not None and cached[0] > now:
            self._regions.move_to_end(key)
            return cached[1]
        try:
            result = await asyncio.wait_for(
                self.service.search(query, limit=self.settings.candidates,
                                    mode=self.settings.mode, repo=str(job.root)),
                self.settings.timeout_ms / 1000,
            )
        except TimeoutError:
            log.info("repository context skipped: the index took over %.0f ms",
                     self.settings.timeout_ms)
            return None
        except MimiverseError as exc:  # index not ready, store failure: complete without
            log.info("repository context skipped: %s", exc)
            return None
        chunks = [hit.chunk for hit in result.hits]
        self._regions[key] = (now + self.settings.cache_ttl_s, chunks)
        self._regions.move_to_end(key)
        while len(self._regions) > _CACHE_ENTRIES:
            self._regions.popitem(last=False)
        return chunks


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class PromptContext:
    files: list[ContextFile]  # in prompt order
    tokens: int  # what they cost, headers included
    repo_name: str | None  # the repository the file is in, when it is indexed here
    path: str | None  # the file's name for the prompt (relative to that repository)


async def prompt_context(
    retriever: RepoRetriever | None, settings: RepoContextSettings, template: FimTemplate,
    *, prefix: str, suffix: str, path: str | None, snippets: Sequence[ContextFile],
    total: int, count: Callable[[str], int],
) -> PromptContext:
    """Snippets for a prompt of `total` tokens, within the context budget: the client's,
    then (with a retriever) the index's best matches, placed best last, next to the file."""
    budget = settings.budget(total)
    matches = None
    if retriever is not None:
        # What the prompt can show of the file at most: matches inside it are dropped.
        shown = trim_to_budget(prefix, suffix, total)
        matches = await retriever.matches(path, prefix, *shown)
    clip = budget * 8  # characters: no snippet longer than the budget could ever fit
    client = [ContextFile(s.path, clip_to_lines(s.text, clip)) for s in snippets]
    found = matches.files if matches is not None else []
    repo_name = matches.repo_name if matches is not None else None
    if matches is not None:
        path = matches.path
    chosen, used = select(
        [*client, *found], budget=budget, count=count, block=template.context_block,
        max_per_file=settings.max_per_file, max_items=settings.max_snippets,
        overhead=count(template.context_overhead(path, repo_name)),
    )
    from_client = [c for c in chosen if c in client]
    from_index = [c for c in chosen if c not in client]
    return PromptContext([*from_client, *reversed(from_index)], used, repo_name, path)
