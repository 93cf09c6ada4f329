"""`eval fim`: what repository context buys on a user's own code.

Spans inside functions of a repository are masked, one per task: a single line of code
(from its first non-blank character to its end) or a line of code and the rest of its
paragraph, 2 to 4 lines (from the first one's indentation): up to where its block ends or
a blank line comes, as the post-processor's rule 7 ends a multi-line answer. Comments and
docstrings are never masked: they measure prose, not code. The completion model fills
each hole twice, with and without repository context, through the same gateway as every
editor request.

Scores: exact match compares the code as it reads in the file, the cursor's indentation
included (so an answer indented one level too deep is a miss): trailing blanks of each
line and blank lines around the span are ignored, nothing else; single-line tasks are
scored on the answer's first line. Edit similarity is rapidfuzz's normalised indel
similarity of the stripped texts, as CrossCodeEval reports it.

The repository is indexed as is: the hole's own file never reaches the prompt as
context (matches inside the file's visible window are always dropped), so the answer
cannot leak from the index; other files that repeat the code may help, as they would
for a user.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rapidfuzz import fuzz

from mimiverse.gateway import Answer, FimInput
from mimiverse.index.chunker import chunk_file
from mimiverse.index.walker import SourceText, read_source, walk

Kind = Literal["single", "multi"]
KINDS: tuple[Kind, ...] = ("single", "multi")
MULTI_LINES = 4  # lines a multi-line hole spans at most


@dataclass(frozen=True, slots=True)
class FimTask:
    path: str  # relative to the repository root
    kind: Kind
    prefix: str
    suffix: str
    expected: str


@dataclass(slots=True)
class FimScores:
    tasks: int = 0
    exact_match: float = 0.0
    edit_similarity: float = 0.0
    latency_p50_ms: float = 0.0
    results: list[tuple[bool, float]] = field(default_factory=list)


def _lines_of_functions(path: str, text: str, language: str | None) -> list[tuple[int, int]]:
    """0-based (first body line, last line) of each function or method of 4+ lines."""
    spans = []
    for chunk in chunk_file(path, text, language):
        if chunk.kind in ("function", "method") and chunk.end_line - chunk.start_line >= 3:
            spans.append((chunk.start_line, chunk.end_line - 1))  # skip the header line
    return spans


_COMMENT_LEADS = ("#", "//", "/*", "*", '"""', "'''")


def _code_lines(lines: list[str], first: int, last: int) -> list[int]:
    """Body lines that are code: not comments, not inside a docstring or block string,
    at least 4 characters. A completion inside prose measures prose, not code."""
    code = []
    in_string = False
    for i in range(first, last + 1):
        stripped = lines[i].strip()
        quotes = stripped.count('"""') + stripped.count("'''")
        if in_string or stripped.startswith(_COMMENT_LEADS):
            in_string = in_string != (quotes % 2 == 1)
            continue
        in_string = quotes % 2 == 1
        if len(stripped) >= 4 and not in_string:
            code.append(i)
    return code


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_end(lines: list[str], j: int, last: int) -> int | None:
    """The last line of the paragraph line j starts, when it ends (a dedent, a blank line
    or the function's end) within MULTI_LINES lines from j; None otherwise."""
    end = j
    for k in range(j + 1, last + 1):
        if not lines[k].strip():
            break  # where a developer's paragraph (and rule 7's answer) ends
        if lines[k].lstrip().startswith(_COMMENT_LEADS):
            continue  # a trailing comment is not code to complete
        if _indent(lines[k]) < _indent(lines[j]):
            break
        end = k
        if end - j + 1 > MULTI_LINES:
            return None
    return end


def _holes(text: str, first: int, last: int, rng: random.Random,
           multi_rng: random.Random) -> list[FimTask]:
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    body = _code_lines(lines, first, last)
    if not body:
        return []
    tasks = []
    i = rng.choice(body)
    start = offsets[i] + _indent(lines[i])
    end = offsets[i] + len(lines[i])
    tasks.append(FimTask("", "single", text[:start], text[end:], text[start:end]))
    # Multi-line: from a line of code to where its paragraph ends (as a developer writes
    # the rest of a block), 2 to MULTI_LINES lines. Its own generator, so how multi-line
    # holes are chosen never changes the single-line ones.
    ends = {j: _block_end(lines, j, last) for j in body}
    starts = [j for j, stop in ends.items() if stop is not None and stop > j]
    if starts:
        j = multi_rng.choice(starts)
        stop = ends[j]
        assert stop is not None
        start = offsets[j] + _indent(lines[j])
        end = offsets[stop] + len(lines[stop])
        tasks.append(FimTask("", "multi", text[:start], text[end:], text[start:end]))
    return tasks


def build_fim_tasks(root: Path, *, limit: int, seed: int = 0) -> list[FimTask]:
    """Up to `limit` tasks of each kind from functions of the repository at `root`, sampled
    with `seed`: at most one hole of each kind per function."""
    rng = random.Random(seed)
    multi_rng = random.Random(f"{seed}:multi")
    found: dict[Kind, list[FimTask]] = {"single": [], "multi": []}
    for file in walk(root).files:
        source = read_source(file)
        if not isinstance(source, SourceText) or file.language is None:
            continue
        for first, last in _lines_of_functions(file.path, source.text, file.language):
            for task in _holes(source.text, first, last, rng, multi_rng):
                found[task.kind].append(
                    FimTask(file.path, task.kind, task.prefix, task.suffix, task.expected)
                )
    chosen: list[FimTask] = []
    for kind in KINDS:
        (rng if kind == "single" else multi_rng).shuffle(found[kind])
        chosen.extend(found[kind][:limit])
    return chosen


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip()


def _as_written(task: FimTask, text: str) -> list[str]:
    """The span's lines as they read in the file (the cursor's line begins with what the
    prefix has on it), without trailing blanks or blank lines around them."""
    lines = [line.rstrip() for line in (task.prefix[task.prefix.rfind("\n") + 1 :]
                                        + text).split("\n")]
    first = next((i for i, line in enumerate(lines) if line), len(lines))
    last = next((i for i in range(len(lines) - 1, -1, -1) if lines[i]), -1)
    return lines[first : last + 1]


def exact_match(task: FimTask, completion: str) -> bool:
    if task.kind == "single":
        completion = completion.split("\n", 1)[0]
    return _as_written(task, completion) == _as_written(task, task.expected)


def edit_similarity(task: FimTask, completion: str) -> float:
    got = completion.split("\n", 1)[0] if task.kind == "single" else completion
    return fuzz.ratio(_normal(got), _normal(task.expected)) / 100


Complete = Callable[[FimInput], Awaitable[Answer]]


async def score_fim(
    complete: Complete, tasks: Sequence[FimTask], *, repo_context: bool,
    on_done: Callable[[], None] = lambda: None,
) -> dict[Kind, FimScores]:
    """Ask for every task (greedy) and score the answers per kind."""
    scores: dict[Kind, FimScores] = {kind: FimScores() for kind in KINDS}
    latencies: dict[Kind, list[float]] = {kind: [] for kind in KINDS}
    for task in tasks:
        answer = await complete(FimInput(
            prefix=task.prefix, suffix=task.suffix, path=task.path, temperature=0.0,
            single_line=True if task.kind == "single" else None, repo_context=repo_context,
        ))
        scores[task.kind].results.append(
            (exact_match(task, answer.text), edit_similarity(task, answer.text))
        )
        latencies[task.kind].append(answer.latency_ms)
        on_done()
    for kind, s in scores.items():
        s.tasks = len(s.results)
        if s.tasks:
            s.exact_match = round(sum(em for em, _ in s.results) / s.tasks, 4)
            s.edit_similarity = round(sum(es for _, es in s.results) / s.tasks, 4)
            s.latency_p50_ms = round(statistics.median(latencies[kind]), 1)
    return scores
