"""`eval ask`: how often ask's sources hold the function a question is about.

The task set is `eval search`'s (index/evaluation/tasks.py): each documented Python function
gives a question (its docstring's first sentence) and the indexed copy has its docstrings
blanked. Each question goes through `Assistant.ask` exactly as the API runs it (hybrid
matches, the chat model's prompt budget); the chat model is not called, only the sources
its prompt would show are scored. A source counts when it is in the function's file and
overlaps its lines; recall@k: the share of questions with one among the first k sources.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from mimiverse.assist.service import Assistant, Question
from mimiverse.gateway import Gateway
from mimiverse.index.evaluation import Task, build_tasks
from mimiverse.index.service import CodebaseService


@dataclass(frozen=True, slots=True)
class AskScores:
    questions: int
    recall_at_5: float
    recall_at_10: float
    sources_median: float  # sources per prompt
    ranks: tuple[int | None, ...]  # per question: the first source holding the function


def rank_of(task: Task, sources: list[tuple[str, int, int]]) -> int | None:
    for i, (path, start, end) in enumerate(sources, start=1):
        if path == task.path and start <= task.end_line and end >= task.start_line:
            return i
    return None


async def evaluate_ask(gateway: Gateway, service: CodebaseService, src: Path, *,
                       limit: int = 200, seed: int = 0) -> tuple[list[Task], AskScores]:
    workdir = Path(tempfile.mkdtemp(prefix="mimiverse-eval-ask-"))
    try:
        copy = workdir / src.name
        tasks = build_tasks(src, copy, limit=limit, seed=seed)
        if not tasks:
            return tasks, AskScores(0, 0.0, 0.0, 0.0, ())
        job = await service.start(str(copy))
        await service.wait(job.root)  # lexical and vectors: ask's search is hybrid
        if job.error:
            raise RuntimeError(job.error)
        assistant = Assistant(gateway, service)
        ranks: list[int | None] = []
        counts: list[int] = []
        for task in tasks:
            prompt = await assistant.ask(Question(task.query, repo=str(copy)))
            found = [(s.path, s.start_line, s.end_line) for s in prompt.sources]
            ranks.append(rank_of(task, found))
            counts.append(len(found))
    finally:
        await service.aclose()
        shutil.rmtree(workdir, ignore_errors=True)
    n = len(tasks) or 1
    return tasks, AskScores(
        questions=len(tasks),
        recall_at_5=round(sum(1 for r in ranks if r is not None and r <= 5) / n, 4),
        recall_at_10=round(sum(1 for r in ranks if r is not None and r <= 10) / n, 4),
        sources_median=float(median(counts)) if counts else 0.0,
        ranks=tuple(ranks),
    )
