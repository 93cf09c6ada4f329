"""Index a docstring-free copy of a codebase, run every task, score each ranking.

Rankings scored: the service's three modes (lexical, vector, hybrid) and the two plain
baselines of baselines.py on the same chunks. A hit counts when it is in the target's
file and overlaps the target's lines; MRR@10 and Recall@1/10 per query kind.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mimiverse.config import IndexSettings
from mimiverse.index.evaluation.baselines import Dense, PlainBM25
from mimiverse.index.evaluation.tasks import KINDS, Kind, Task, build_tasks
from mimiverse.index.model import SearchFilter
from mimiverse.index.service import CodebaseService, Mode
from mimiverse.index.store import sqlite_path

MODES: tuple[Mode, ...] = ("lexical", "vector", "hybrid")
BASELINES = ("bm25", "dense")
RANKERS: tuple[str, ...] = (*BASELINES, *MODES)
_EMBED_BATCH = 256


@dataclass(slots=True)
class Scores:
    mrr_at_10: float = 0.0
    recall_at_1: float = 0.0
    recall_at_10: float = 0.0
    ranks: list[int | None] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    tasks: list[Task]
    chunks: int
    # {query kind: {ranker: scores}}; rankers are MODES and BASELINES
    scores: dict[Kind, dict[str, Scores]]
    took_ms: dict[Mode, list[float]] = field(default_factory=dict)  # the service's, per query


def score(ranks: Sequence[int | None]) -> Scores:
    n = len(ranks) or 1
    return Scores(
        mrr_at_10=round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 4),
        recall_at_1=round(sum(1 for r in ranks if r == 1) / n, 4),
        recall_at_10=round(sum(1 for r in ranks if r is not None and r <= 10) / n, 4),
        ranks=list(ranks),
    )


@dataclass(frozen=True, slots=True)
class _Span:
    path: str
    start_line: int
    end_line: int


def _rank(task: Task, found: Sequence[_Span]) -> int | None:
    for i, c in enumerate(found[:10], start=1):
        if c.path == task.path and c.start_line <= task.end_line and c.end_line >= task.start_line:
            return i
    return None


def _indexed_chunks(db: Path) -> list[tuple[_Span, str]]:
    """Every chunk of the evaluation's own SQLite index (`throwaway_index`), with its text."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT path, start_line, end_line, text FROM chunks ORDER BY id")
        return [(_Span(r[0], r[1], r[2]), r[3]) for r in rows]


async def evaluate(
    service: CodebaseService, src: Path, *, limit: int = 200, lookups: int = 50,
    seed: int = 0, on_progress: Callable[[str], None] | None = None,
    workdir: Path | None = None,
) -> Report:
    """Index a docstring-free copy of `src` with `service` (on a `throwaway_index`) and
    score each mode and baseline; `service.router` embeds the baselines' chunks too.

    The copy goes to `workdir` (the caller then removes it, even when interrupted) or to
    a temporary folder removed here."""
    say = on_progress or (lambda _: None)
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="mimiverse-eval-"))
    try:
        copy = workdir / src.name
        tasks = build_tasks(src, copy, limit=limit, lookups=lookups, seed=seed)
        say(f"indexing {len(tasks)} queries' codebase")
        job = await service.start(str(copy))
        await service.wait(job.root)
        if job.error or job.embedding_error:
            raise RuntimeError(job.error or job.embedding_error)
        rankings: dict[str, list[list[_Span]]] = {}
        took: dict[Mode, list[float]] = {}
        for mode in MODES:
            say(f"searching ({mode})")
            rankings[mode], took[mode] = [], []
            for task in tasks:
                result = await service.search(task.query, limit=10, mode=mode,
                                              where=SearchFilter(), repo=str(copy))
                took[mode].append(result.took_ms)
                rankings[mode].append([_Span(h.chunk.path, h.chunk.start_line,
                                             h.chunk.end_line) for h in result.hits])
        say("baselines")
        chunks = _indexed_chunks(sqlite_path(service.settings, job.root))
        spans = [s for s, _ in chunks]
        texts = [t for _, t in chunks]
        bm25 = PlainBM25(texts)
        rankings["bm25"] = [[spans[i] for i in bm25.search(t.query, 10)] for t in tasks]
        vectors: list[list[float]] = []
        for start in range(0, len(texts), _EMBED_BATCH):
            vectors += (await service.router.embed(texts[start : start + _EMBED_BATCH]))[0]
        dense = Dense(vectors)
        queries = (await service.router.embed([t.query for t in tasks]))[0] if tasks else []
        rankings["dense"] = [[spans[i] for i in dense.search(q, 10)] for q in queries]
        scores: dict[Kind, dict[str, Scores]] = {}
        for kind in KINDS:
            picked = [i for i, t in enumerate(tasks) if t.kind == kind]
            if picked:
                scores[kind] = {name: score([_rank(tasks[i], ranked[i]) for i in picked])
                                for name, ranked in rankings.items()}
        return Report(tasks, len(chunks), scores, took)
    finally:
        await service.aclose()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def throwaway_index(settings: IndexSettings) -> Iterator[IndexSettings]:
    """`settings` for an evaluation's temporary copies: a SQLite index in a temporary data
    folder (removed after), whatever store is configured, allowed the temporary folder."""
    data = tempfile.mkdtemp(prefix="mimiverse-eval-data-")
    try:
        yield settings.model_copy(update={"store": "sqlite", "data_dir": data,
                                          "allowed_roots": [tempfile.gettempdir()]})
    finally:
        shutil.rmtree(data, ignore_errors=True)


def pooled(reports: Sequence[Report]) -> dict[Kind, dict[str, Scores]]:
    """Each kind's scores over the queries of all reports together."""
    out: dict[Kind, dict[str, Scores]] = {}
    for kind in KINDS:
        for name in RANKERS:
            ranks = [r for rep in reports if name in rep.scores.get(kind, {})
                     for r in rep.scores[kind][name].ranks]
            if ranks:
                out.setdefault(kind, {})[name] = score(ranks)
    return out
