"""`mimiverse eval search|fim|ask PATH`: search relevance, what context buys completions,
and whether ask's sources hold what a question is about."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.progress import Progress
from rich.table import Table

from mimiverse.assist.evaluation import evaluate_ask
from mimiverse.backends.registry import build_backend
from mimiverse.cli.common import (
    ConfigOption,
    console,
    err_console,
    existing_dir,
    fail,
    run,
    settings_from,
)
from mimiverse.fim.evaluation import KINDS, FimScores, Kind, build_fim_tasks, score_fim
from mimiverse.fim.retrieval import RepoRetriever
from mimiverse.gateway import Gateway
from mimiverse.index.evaluation import RANKERS, Report, evaluate, throwaway_index
from mimiverse.index.evaluation.embed_cache import CachingRouter, EmbeddingCache
from mimiverse.index.service import CodebaseService

eval_app = typer.Typer(help="Measure quality on real code.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json")]
SampleSeedOption = Annotated[int, typer.Option(help="which functions are sampled")]


@eval_app.command("search")
def eval_search(
    path: Annotated[Path, typer.Argument(help="a Python repository or package folder")],
    limit: Annotated[int, typer.Option(help="docstring queries", min=0, max=5000)] = 200,
    lookups: Annotated[int, typer.Option(
        help="identifier lookups (each also asked as a 'where is ...' phrase)", min=0, max=5000,
    )] = 50,
    seed: SampleSeedOption = 0,
    embed_cache: Annotated[Path | None, typer.Option(
        help="an .npz file that keeps embeddings between runs (keyed by model and text)",
    )] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """MRR@10 and Recall@1/10 of lexical, vector and hybrid search, beside plain BM25 and
    the bare embedding model on the same chunks (docstring -> function, and name lookups)."""
    settings = settings_from(config)
    src = existing_dir(path)

    def step(text: str) -> None:
        if not as_json:
            err_console.print(f"· {text}", highlight=False)

    async def go(workdir: Path) -> Report:
        cache = EmbeddingCache(embed_cache)
        router = CachingRouter(settings, {b.name: build_backend(b) for b in settings.backends},
                               cache)
        try:
            with throwaway_index(settings.index) as index:
                service = CodebaseService(index, router)
                return await evaluate(service, src, limit=limit, lookups=lookups, seed=seed,
                                      on_progress=step, workdir=workdir)
        finally:
            cache.save()
            await router.aclose()

    # The copy is removed here, outside the event loop, so that Ctrl-C (even a second
    # one, while indexing winds down) never leaves it behind.
    workdir = Path(tempfile.mkdtemp(prefix="mimiverse-eval-"))
    try:
        report = run(go(workdir))
    except KeyboardInterrupt:
        raise fail("interrupted") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not report.tasks:
        raise fail(f"no documented Python functions found under {src}")
    model = settings.models.embedding.model
    if as_json:
        print(orjson.dumps({
            "repository": str(src), "queries": len(report.tasks), "chunks": report.chunks,
            "embedding_model": model,
            "kinds": {kind: {"queries": len(next(iter(by.values())).ranks),
                             "rankers": {name: {"mrr@10": s.mrr_at_10,
                                                "recall@1": s.recall_at_1,
                                                "recall@10": s.recall_at_10}
                                         for name, s in by.items()}}
                      for kind, by in report.scores.items()},
        }, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"{src.name}: {len(report.tasks)} queries, {report.chunks} chunks "
                        f"(embeddings: {model})")
    for col in ("queries", "ranker", "MRR@10", "Recall@1", "Recall@10"):
        table.add_column(col)
    for kind, by in report.scores.items():
        for name in RANKERS:
            s = by[name]
            table.add_row(f"{kind} ({len(s.ranks)})", name, f"{s.mrr_at_10:.3f}",
                          f"{s.recall_at_1:.3f}", f"{s.recall_at_10:.3f}")
    console.print(table)


@eval_app.command("fim")
def eval_fim(
    path: Annotated[Path, typer.Argument(help="a repository (any language with a grammar)")],
    limit: Annotated[int, typer.Option(help="tasks of each kind", min=1, max=5000)] = 50,
    seed: Annotated[int, typer.Option(help="which spans are masked")] = 0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Exact match and edit similarity of completions, with and without repository context.

    Masks single lines and multi-line spans inside functions, asks the configured
    completion model for each (greedy), and indexes the repository first (incrementally,
    where `mimiverse index` keeps its index) so the context comes from the real index.
    """
    settings = settings_from(config)
    root = existing_dir(path)

    async def go() -> dict[str, dict[Kind, FimScores]]:
        tasks = build_fim_tasks(root, limit=limit, seed=seed)
        if not tasks:
            raise fail(f"no functions with bodies to mask found under {root}")
        gateway = Gateway(settings)
        service = CodebaseService(settings.index, gateway.router, [str(root)])
        gateway.retriever = RepoRetriever(service, settings.repo_context)
        results: dict[str, dict[Kind, FimScores]] = {}
        try:
            job = await service.start(str(root))
            await job.lexical_done.wait()  # vectors may still be arriving: hybrid uses both
            if job.error:
                raise fail(f"indexing {root} failed: {job.error}")
            with Progress(console=console, transient=True, disable=as_json) as progress:
                for label, use in (("without context", False), ("with context", True)):
                    await gateway.cache.clear()  # each run asks the model afresh
                    bar = progress.add_task(label, total=len(tasks))
                    results[label] = await score_fim(
                        gateway.complete, tasks, repo_context=use,
                        on_done=partial(progress.advance, bar),
                    )
        finally:
            await service.aclose()
            await gateway.aclose()
        return results

    results = run(go())
    model = settings.models.completion.model
    if as_json:
        print(orjson.dumps({
            "repository": str(root), "model": model,
            "runs": {label: {kind: {"tasks": s.tasks, "exact_match": s.exact_match,
                                    "edit_similarity": s.edit_similarity,
                                    "latency_p50_ms": s.latency_p50_ms}
                             for kind, s in by_kind.items()}
                     for label, by_kind in results.items()},
        }, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"{root.name}: fill-in-the-middle with {model}")
    for col in ("span", "context", "tasks", "exact match", "edit similarity", "p50 ms"):
        table.add_column(col)
    for kind in KINDS:
        for label, by_kind in results.items():
            s = by_kind[kind]
            table.add_row(kind + "-line", label, str(s.tasks), f"{s.exact_match:.3f}",
                          f"{s.edit_similarity:.3f}", f"{s.latency_p50_ms:.0f}")
    console.print(table)


@eval_app.command("ask")
def eval_ask(
    path: Annotated[Path, typer.Argument(help="a Python repository or package folder")],
    limit: Annotated[int, typer.Option(help="number of questions", min=1, max=5000)] = 200,
    seed: SampleSeedOption = 0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Recall@5/@10 of ask's sources: does a docstring's question bring its function?

    Runs ask's retrieval and prompt budget as the API does (models.chat.max_prompt_tokens),
    without calling the chat model."""
    settings = settings_from(config)
    src = existing_dir(path)

    async def go() -> None:
        gateway = Gateway(settings)
        try:
            with throwaway_index(settings.index) as index:
                service = CodebaseService(index, gateway.router)
                tasks, scores = await evaluate_ask(gateway, service, src, limit=limit,
                                                   seed=seed)
        finally:
            await gateway.aclose()
        if not tasks:
            raise fail(f"no documented Python functions found under {src}")
        if as_json:
            print(orjson.dumps({
                "repository": str(src), "questions": scores.questions,
                "embedding_model": settings.models.embedding.model,
                "max_prompt_tokens": settings.models.chat.max_prompt_tokens,
                "recall@5": scores.recall_at_5, "recall@10": scores.recall_at_10,
                "sources_median": scores.sources_median,
            }, option=orjson.OPT_INDENT_2).decode())
            return
        table = Table(title=f"{src.name}: {scores.questions} questions "
                            f"(embeddings: {settings.models.embedding.model})")
        for col in ("Recall@5", "Recall@10", "sources per prompt (median)"):
            table.add_column(col)
        table.add_row(f"{scores.recall_at_5:.3f}", f"{scores.recall_at_10:.3f}",
                      f"{scores.sources_median:g}")
        console.print(table)

    run(go())
