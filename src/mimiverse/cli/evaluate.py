"""`mimiverse eval search PATH`: how well each search mode finds functions by their docs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from mimiverse.backends.registry import build_backend
from mimiverse.cli.common import ConfigOption, console, fail, run, settings_from
from mimiverse.index.evaluation import eval_settings, evaluate
from mimiverse.index.service import CodebaseService
from mimiverse.routing.router import Router

eval_app = typer.Typer(help="Measure quality on real code.", no_args_is_help=True)


@eval_app.command("search")
def eval_search(
    path: Annotated[Path, typer.Argument(help="a Python repository or package folder")],
    limit: Annotated[int, typer.Option(help="number of queries", min=1, max=5000)] = 200,
    seed: Annotated[int, typer.Option(help="which functions are sampled")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
) -> None:
    """MRR@10 and Recall@1/10 of lexical, vector and hybrid search (docstring -> function)."""
    settings = settings_from(config)
    src = path.resolve()
    if not src.is_dir():
        raise fail(f"{path} is not a directory")

    async def go() -> None:
        router = Router(settings, {b.name: build_backend(b) for b in settings.backends})
        service = CodebaseService(eval_settings(settings.index), router)
        try:
            tasks, results = await evaluate(service, src, limit=limit, seed=seed)
        finally:
            await router.aclose()
        if not tasks:
            raise fail(f"no documented Python functions found under {src}")
        if as_json:
            print(orjson.dumps({
                "repository": str(src), "queries": len(tasks),
                "embedding_model": settings.models.embedding.model,
                "modes": {m: {"mrr@10": s.mrr_at_10, "recall@1": s.recall_at_1,
                              "recall@10": s.recall_at_10} for m, s in results.items()},
            }, option=orjson.OPT_INDENT_2).decode())
            return
        table = Table(title=f"{src.name}: {len(tasks)} queries "
                            f"(embeddings: {settings.models.embedding.model})")
        for col in ("mode", "MRR@10", "Recall@1", "Recall@10"):
            table.add_column(col)
        for mode, s in results.items():
            table.add_row(mode, f"{s.mrr_at_10:.3f}", f"{s.recall_at_1:.3f}",
                          f"{s.recall_at_10:.3f}")
        console.print(table)

    run(go())
