"""`eval search`: CodeSearchNet-style relevance of lexical, vector and hybrid search.

From a Python repository: every function with a docstring gives one task; the query is the
docstring's first sentence, the target is the function. The indexed copy has docstrings
blanked out (line numbers kept), so the answer is never a copy of the query. A hit counts
when it is in the target's file and overlaps the target's lines.
"""

from __future__ import annotations

import ast
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mimiverse.config import IndexSettings
from mimiverse.index.model import SearchFilter
from mimiverse.index.service import CodebaseService, Mode
from mimiverse.index.walker import iter_files

MODES: tuple[Mode, ...] = ("lexical", "vector", "hybrid")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n\s*\n")


@dataclass(frozen=True, slots=True)
class Task:
    query: str
    path: str
    start_line: int
    end_line: int


@dataclass(slots=True)
class Scores:
    mrr_at_10: float = 0.0
    recall_at_1: float = 0.0
    recall_at_10: float = 0.0
    ranks: list[int | None] = field(default_factory=list)


def first_sentence(docstring: str) -> str:
    text = docstring.strip()
    return " ".join(_SENTENCE_END.split(text, maxsplit=1)[0].split())


def _python_files(root: Path) -> list[Path]:
    """The Python files `mimiverse index` would take: .gitignore'd folders (virtualenvs,
    build output) and vendored or generated code left out."""
    return sorted(f.abs_path for f in iter_files(root) if f.language == "python")


def blank_docstrings(source: str) -> tuple[str, list[tuple[str, int, int]]]:
    """(source with every docstring's lines blanked, [(query, start, end) per function])."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    found: list[tuple[str, int, int]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                          | ast.Module):
            continue
        doc = node.body[0] if node.body else None
        if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str) and doc.end_lineno is not None):
            continue
        for i in range(doc.lineno - 1, doc.end_lineno):
            lines[i] = "\n"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            query = first_sentence(doc.value.value)
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            found.append((query, start, node.end_lineno))
    return "".join(lines), found


def build_tasks(src: Path, dst: Path, *, limit: int, seed: int = 0) -> list[Task]:
    """Copy src's Python files to dst with docstrings blanked; return up to `limit` tasks."""
    tasks: list[Task] = []
    for path in _python_files(src):
        rel = path.relative_to(src)
        try:
            blanked, functions = blank_docstrings(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(blanked, encoding="utf-8")
        for query, start, end in functions:
            if len(query.split()) >= 3:  # "Return it." says too little to search for
                tasks.append(Task(query, rel.as_posix(), start, end))
    random.Random(seed).shuffle(tasks)
    return sorted(tasks[:limit], key=lambda t: (t.path, t.start_line))


def score(ranks: Sequence[int | None]) -> Scores:
    n = len(ranks) or 1
    return Scores(
        mrr_at_10=round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 4),
        recall_at_1=round(sum(1 for r in ranks if r == 1) / n, 4),
        recall_at_10=round(sum(1 for r in ranks if r is not None and r <= 10) / n, 4),
        ranks=list(ranks),
    )


async def evaluate(
    service: CodebaseService, src: Path, *, limit: int = 200, seed: int = 0,
    modes: Sequence[Mode] = MODES, workdir: Path | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> tuple[list[Task], dict[Mode, Scores]]:
    """Index a docstring-free copy of `src` with `service` and score each mode.

    The copy goes to `workdir` (the caller then removes it, even when interrupted) or to
    a temporary folder removed here. `on_step` hears what is being done."""
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="mimiverse-eval-"))
    try:
        copy = workdir / src.name
        tasks = build_tasks(src, copy, limit=limit, seed=seed)
        on_step(f"{len(tasks)} queries; indexing a docstring-free copy (lexical, then vectors)")
        job = await service.start(str(copy))
        await service.wait(job.root)
        if job.error:
            raise RuntimeError(job.error)
        results: dict[Mode, Scores] = {}
        for mode in modes:
            on_step(f"searching: {mode}")
            ranks: list[int | None] = []
            for task in tasks:
                found = await service.search(task.query, limit=10, mode=mode,
                                             where=SearchFilter(), repo=str(copy))
                rank = None
                for i, hit in enumerate(found.hits, start=1):
                    c = hit.chunk
                    if (c.path == task.path and c.start_line <= task.end_line
                            and c.end_line >= task.start_line):
                        rank = i
                        break
                ranks.append(rank)
            results[mode] = score(ranks)
        return tasks, results
    finally:
        await service.aclose()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def eval_settings(settings: IndexSettings) -> IndexSettings:
    """A throwaway SQLite index inside the temporary copy, whatever the configured store."""
    return settings.model_copy(update={"store": "sqlite", "path": ".mimiverse/eval.db",
                                       "allowed_roots": []})
