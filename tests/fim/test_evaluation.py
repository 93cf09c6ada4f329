"""`eval fim`: masked tasks, scoring, and what context changes, with exact figures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mimiverse.backends.base import Backend, Delta, GenerateRequest
from mimiverse.cli.main import app
from mimiverse.config import BackendSettings, load_settings
from mimiverse.fim.evaluation import (
    MULTI_LINES,
    FimTask,
    build_fim_tasks,
    edit_similarity,
    exact_match,
    score_fim,
)
from mimiverse.fim.retrieval import RepoRetriever
from mimiverse.gateway import Gateway
from mimiverse.index.service import CodebaseService
from tests.cli.test_cli import write_config
from tests.servers.harness import ServerHandle
from tests.support.embedder import BowEmbedder

ORDERS = '''def order_total(order, tax_table):
    subtotal = sum(item.price * item.quantity for item in order.items)
    discount = order.coupon.amount if order.coupon else 0
    taxed = (subtotal - discount) * (1 + tax_table[order.region])
    return round(taxed, 2)
'''
# The same logic under another name in another file: context the model can use.
QUOTES = ORDERS.replace("order_total(order", "quote_total(order")


def make_repo(root: Path) -> Path:
    (root / "shop").mkdir(parents=True)
    (root / "shop/orders.py").write_text(ORDERS)
    (root / "shop/quotes.py").write_text(QUOTES)
    return root


def test_tasks_are_holes_in_function_bodies(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    tasks = build_fim_tasks(root, limit=10, seed=3)
    assert sorted((t.path, t.kind) for t in tasks) == [
        ("shop/orders.py", "multi"), ("shop/orders.py", "single"),
        ("shop/quotes.py", "multi"), ("shop/quotes.py", "single"),
    ]
    for task in tasks:
        source = (root / task.path).read_text()
        assert task.prefix + task.expected + task.suffix == source
        assert task.expected == task.expected.strip()  # from the first non-blank character
        assert "def " not in task.expected  # never the header line
        lines = task.expected.count("\n") + 1
        assert lines == 1 if task.kind == "single" else 2 <= lines <= MULTI_LINES
    assert build_fim_tasks(root, limit=10, seed=3) == tasks  # the seed decides
    assert len(build_fim_tasks(root, limit=1, seed=3)) == 2  # one of each kind


PARAGRAPHS = '''def report(rows):
    total = 0
    for row in rows:
        total += row.amount

    average = total / len(rows)
    return total, average
'''


def test_multi_line_holes_end_at_a_blank_line(tmp_path: Path) -> None:
    (tmp_path / "report.py").write_text(PARAGRAPHS)
    holes = {t.expected for seed in range(20)
             for t in build_fim_tasks(tmp_path, limit=5, seed=seed) if t.kind == "multi"}
    # A paragraph, as rule 7 ends an answer: never across the blank line.
    assert holes == {
        "total = 0\n    for row in rows:\n        total += row.amount",
        "for row in rows:\n        total += row.amount",
        "average = total / len(rows)\n    return total, average",
    }


SINGLE = FimTask("a.py", "single", "x = (\n    ", "\n)", "compute(a, b)")
MULTI = FimTask("a.py", "multi", "def f():\n    ", "\n", "a = 1\n    return a")


def test_exact_match_and_edit_similarity() -> None:
    assert exact_match(SINGLE, "compute(a, b)  \nmore lines ignored")
    assert not exact_match(SINGLE, "compute(a, c)")
    # The code as it reads in the file: a line indented deeper than the cursor is not it.
    assert not exact_match(SINGLE, "    compute(a, b)")
    assert not exact_match(SINGLE, "\ncompute(a, b)")  # single-line: the first line only
    assert not exact_match(MULTI, "    a = 1\n    return a")
    assert not exact_match(MULTI, "a = 1\n        return a")
    assert not exact_match(MULTI, "a = 1\n\n    return a")  # a blank line inside is not
    # Blank lines around the span and trailing blanks do not change the code.
    assert exact_match(MULTI, "\n    a = 1\n    return a\n\n")
    assert exact_match(MULTI, "a = 1\t\n    return a   ")
    assert edit_similarity(SINGLE, "compute(a, b)\nextra") == 1.0
    # Indel distance 2 over 26 characters, as CrossCodeEval's fuzz.ratio counts it.
    assert edit_similarity(SINGLE, "compute(a, c)") == pytest.approx(24 / 26)
    assert exact_match(MULTI, "a = 1   \n    return a\n")
    assert not exact_match(MULTI, "a = 1\n")
    assert edit_similarity(MULTI, "") == 0.0


class ContextOracle(Backend):
    """Answers a FIM prompt from the repository context in it, if any: finds the line
    before the hole in a context file and returns what follows it up to the line that
    starts the suffix. Without context it answers `pass`."""

    kind = "oracle"
    tasks = frozenset({"completion"})

    def __init__(self) -> None:
        super().__init__(BackendSettings(name="oracle", kind="openai", url="http://127.0.0.1:9"))

    async def stream_generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        yield Delta(self.answer(request.prompt), finish_reason="stop")

    @staticmethod
    def answer(prompt: str) -> str:
        head, fim = prompt.rsplit("<|fim_prefix|>", 1)
        prefix, rest = fim.split("<|fim_suffix|>", 1)
        suffix = rest.removesuffix("<|fim_middle|>")
        before = prefix.rsplit("\n", 2)[-2].strip()
        after = suffix.lstrip("\n").split("\n", 1)[0].strip()
        for block in head.split("<|file_sep|>")[1:-1]:
            lines = block.split("\n")[1:]
            stripped = [line.strip() for line in lines]
            if before in stripped:
                start = stripped.index(before) + 1
                end = stripped.index(after, start) if after in stripped[start:] else start + 1
                return "\n".join(lines[start:end]).strip()
        return "pass"


async def test_context_turns_misses_into_exact_matches(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    settings = load_settings(
        None,
        backends=[{"name": "oracle", "kind": "openai", "url": "http://127.0.0.1:9"},
                  {"name": "bow", "kind": "openai", "url": "http://127.0.0.1:9"}],
        models={"completion": {"model": "qwen2.5-coder:7b", "backends": ["oracle"]},
                "chat": {"model": "c", "backends": ["oracle"]},
                "embedding": {"model": "bow", "backends": ["bow"]}},
        index={"data_dir": str(tmp_path / "data"), "allowed_roots": [str(tmp_path)]},
    )
    gateway = Gateway(settings, {"oracle": ContextOracle(), "bow": BowEmbedder()})
    service = CodebaseService(settings.index, gateway.router)
    gateway.retriever = RepoRetriever(service, settings.repo_context)
    try:
        await service.wait((await service.start(str(root))).root)
        # A seed whose holes do not start right below the header: the oracle finds a hole
        # by the line above it, and the two files' headers differ.
        tasks = build_fim_tasks(root, limit=10, seed=5)
        without = await score_fim(gateway.complete, tasks, repo_context=False)
        with_context = await score_fim(gateway.complete, tasks, repo_context=True)
    finally:
        await service.aclose()
        await gateway.aclose()
    for kind in ("single", "multi"):
        assert (without[kind].tasks, without[kind].exact_match) == (2, 0.0)
        assert (with_context[kind].tasks, with_context[kind].exact_match) == (2, 1.0)
        assert with_context[kind].edit_similarity == 1.0
        assert without[kind].edit_similarity < 0.5


def test_eval_fim_command(tmp_path: Path, ollama_server: ServerHandle) -> None:
    root = make_repo(tmp_path / "repo")
    config = write_config(tmp_path, ollama_server.url,
                          extra=f'[index]\ndata_dir = "{tmp_path / "data"}"\n')
    result = CliRunner().invoke(app, ["eval", "fim", str(root), "--json", "--seed", "3",
                                      "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "qwen2.5-coder:1.5b"
    runs = report["runs"]
    assert set(runs) == {"without context", "with context"}
    for by_kind in runs.values():
        assert {k: v["tasks"] for k, v in by_kind.items()} == {"single": 2, "multi": 2}
        # The test server answers a hash of the prompt: never the masked code.
        assert all(v["exact_match"] == 0.0 for v in by_kind.values())
    # Each task asked once per run: the cache is cleared between the two.
    assert ollama_server.behaviour.requests["/api/generate"] == 8

    table = CliRunner().invoke(app, ["eval", "fim", str(root), "--seed", "3",
                                     "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert "single-line" in table.stdout and "with context" in table.stdout


def test_eval_fim_on_a_folder_without_functions(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/readme.md").write_text("# nothing to complete\n")
    result = CliRunner().invoke(app, ["eval", "fim", str(tmp_path / "docs")])
    assert result.exit_code == 1
    assert "no functions with bodies to mask" in result.output
