"""Search tasks made from a real Python codebase, and the copy they are searched in.

Three kinds of query, each with one function as its answer:
- `docstring` (CodeSearchNet-style): the first sentence of the function's docstring;
- `identifier`: the function's name as typed (`parse_header_links`), for names defined
  once in the codebase; calls and imports of it elsewhere are the distractors;
- `phrase`: that name as words in a question, "where is parse header links handled".

The indexed copy has every docstring blanked out (line numbers kept), so a docstring
query never finds its own words, and an identifier query never finds prose about it.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mimiverse.index.tokenize import tokens
from mimiverse.index.walker import iter_files

Kind = Literal["docstring", "identifier", "phrase"]
KINDS: tuple[Kind, ...] = ("docstring", "identifier", "phrase")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n\s*\n")


@dataclass(frozen=True, slots=True)
class Task:
    query: str
    path: str
    start_line: int
    end_line: int
    kind: Kind = "docstring"


def first_sentence(docstring: str) -> str:
    text = docstring.strip()
    return " ".join(_SENTENCE_END.split(text, maxsplit=1)[0].split())


def python_files(root: Path) -> list[Path]:
    """The Python files `mimiverse index` would take: .gitignore'd folders (virtualenvs,
    build output) and vendored or generated code left out."""
    return sorted(f.abs_path for f in iter_files(root) if f.language == "python")


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    query: str | None  # the docstring's first sentence, if it has one
    start: int
    end: int


def blank_docstrings(source: str) -> tuple[str, list[_Function]]:
    """(source with every docstring's lines blanked, the functions it defines)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    found: list[_Function] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                          | ast.Module):
            continue
        doc = node.body[0] if node.body else None
        query = None
        if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str) and doc.end_lineno is not None):
            for i in range(doc.lineno - 1, doc.end_lineno):
                lines[i] = "\n"
            query = first_sentence(doc.value.value)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            found.append(_Function(node.name, query, start, node.end_lineno))
    return "".join(lines), found


def _lookup_worthy(name: str) -> bool:
    """A name someone would search for: not a dunder, at least two words or 8 letters."""
    core = name.strip("_")
    return not name.startswith("__") and (len(tokens(core)) >= 3 or len(core) >= 8)


def build_tasks(
    src: Path, dst: Path, *, limit: int, lookups: int = 0, seed: int = 0
) -> list[Task]:
    """Copy src's Python files to dst with docstrings blanked; return up to `limit`
    docstring tasks and up to `lookups` tasks of each lookup kind (identifier, phrase)."""
    docstring: list[Task] = []
    functions: list[tuple[str, _Function]] = []
    defined: Counter[str] = Counter()
    for path in python_files(src):
        rel = path.relative_to(src).as_posix()
        try:
            blanked, found = blank_docstrings(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(blanked, encoding="utf-8")
        for f in found:
            defined[f.name] += 1
            functions.append((rel, f))
            if f.query is not None and len(f.query.split()) >= 3:
                # "Return it." says too little to search for
                docstring.append(Task(f.query, rel, f.start, f.end))
    rng = random.Random(seed)
    rng.shuffle(docstring)
    unique = [(rel, f) for rel, f in functions if defined[f.name] == 1 and _lookup_worthy(f.name)]
    rng.shuffle(unique)
    lookup: list[Task] = []
    for rel, f in unique[:lookups]:
        lookup.append(Task(f.name, rel, f.start, f.end, "identifier"))
        words = " ".join(part for part in tokens(f.name.strip("_"))[1:]) or f.name
        lookup.append(Task(f"where is {words} handled", rel, f.start, f.end, "phrase"))
    return sorted(docstring[:limit] + lookup, key=lambda t: (t.kind, t.path, t.start_line))
