"""Latency that repository context adds to a completion, on a 10,000-chunk index.

    python bench/context_latency.py --write-docs      # about 2 min on 2 cores

The index holds real code: installed packages' Python files, copied until the index has
`--chunks` chunks. Vectors for the chunks are random unit vectors written straight into
the store (embedding 10,000 chunks would take minutes and does not change what a search
costs); every query is embedded for real by the default embedded model (int8 ONNX
all-MiniLM-L6-v2), as a completion request does it.

Cursors are real: the holes `eval fim` masks in those files. For each cursor, the time to
plan the prompt (`Gateway.plan_fim`: query, search, selection, rendering) is measured with
context and without, back to back, and the difference is the added latency. "cold" asks
the index every time (region cache off); "typing" asks again after each of 5 typed
characters in the same region, as an editor does, so the region cache answers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

PACKAGES = ("rich", "pydantic", "aiohttp", "starlette", "fastapi", "httpx", "typer",
            "click", "redis", "psycopg", "uvicorn", "anyio", "jinja2", "yaml")
BUDGET_P50_MS = 15.0
DIM = 384


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    from mimiverse.config import load_settings
    from mimiverse.fim.evaluation import build_fim_tasks
    from mimiverse.fim.retrieval import RepoRetriever
    from mimiverse.gateway import FimInput, Gateway
    from mimiverse.index.service import CodebaseService

    work = Path(tempfile.mkdtemp(prefix="mimiverse-ctx-bench-"))
    root = work / "repo"
    try:
        settings = load_settings(
            None, index={"data_dir": str(work / "data"), "allowed_roots": [str(work)]})
        gateway = Gateway(settings)
        service = CodebaseService(settings.index, gateway.router)
        packages: list[str] = []
        chunks = 0
        for name in PACKAGES:  # add packages until the index is big enough
            packages += bl.copy_packages(root, (name,), skip=("tests",))
            job = await service.start(str(root))
            await job.lexical_done.wait()
            if job.task is not None:
                job.task.cancel()  # the vectors are written below, not embedded
            chunks = (await asyncio.to_thread(job.store.stats, job.repo)).chunks
            if chunks >= opts.chunks:
                break
        store, repo = job.store, job.repo
        rng = random.Random(1)
        model = settings.models.embedding.model
        await asyncio.to_thread(store.set_embedding_model, repo, model, DIM)
        while batch := await asyncio.to_thread(store.pending_embeddings, repo, 2048):
            vectors = []
            for chunk_id, _ in batch:
                v = [rng.gauss(0, 1) for _ in range(DIM)]
                norm = sum(x * x for x in v) ** 0.5
                vectors.append((chunk_id, [x / norm for x in v]))
            await asyncio.to_thread(store.store_embeddings, repo, vectors)
        await gateway.router.embed(["warm up the embedded model"])

        tasks = build_fim_tasks(root, limit=opts.cursors // 2, seed=2)
        results: dict[str, Any] = {"chunks": chunks, "packages": packages,
                                   "cursors": len(tasks), "cases": {}}
        for case, mode, ttl in (("hybrid, cold", "hybrid", 0.0),
                                ("lexical, cold", "lexical", 0.0),
                                ("hybrid, typing", "hybrid", 60.0)):
            context = settings.repo_context.model_copy(update={"mode": mode,
                                                               "cache_ttl_s": ttl})
            gateway.retriever = RepoRetriever(service, context)
            added: list[float] = []
            snippets: list[int] = []
            for task in tasks:
                typed = [""] if ttl == 0 else [task.expected[:k] for k in range(6)]
                for i, text in enumerate(typed):
                    fim = FimInput(task.prefix + text, task.suffix, path=task.path)
                    start = time.perf_counter()
                    plan = await gateway.plan_fim(fim)
                    with_ms = (time.perf_counter() - start) * 1000
                    start = time.perf_counter()
                    gateway.planner.render(fim)
                    without_ms = (time.perf_counter() - start) * 1000
                    if ttl and i == 0:
                        continue  # the first request of a region searches: "cold" has it
                    added.append(with_ms - without_ms)
                    snippets.append(len(plan.context))
            results["cases"][case] = {**bl.pcts(added), "n": len(added),
                                      "snippets": sum(snippets) / max(len(snippets), 1)}
        await service.aclose()
        await gateway.aclose()
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    rows = [[case, c["n"], bl.fmt_ms(c["p50"]), bl.fmt_ms(c["p90"]), bl.fmt_ms(c["p99"]),
             f"{c['snippets']:.1f}"] for case, c in r["cases"].items()]
    typing = r["cases"]["hybrid, typing"]["p50"]
    cold = r["cases"]["hybrid, cold"]["p50"]
    return "\n".join([
        "### Repository context: latency added to a completion",
        "",
        f"{r['chunks']:,} chunks of real code ({', '.join(r['packages'])}), "
        f"{r['cursors']} cursors from `eval fim` holes; added = plan with context − plan "
        "without, per request, in ms.",
        "",
        bl.table(["case", "requests", "p50", "p90", "p99", "snippets in prompt"], rows),
        "",
        bl.budget_lines([
            ("context adds ≤ 15 ms at p50 (cached per file + cursor region)",
             f"typing {bl.fmt_ms(typing)} ms, cold {bl.fmt_ms(cold)} ms",
             typing <= BUDGET_P50_MS and cold <= BUDGET_P50_MS),
        ]),
    ])


def main() -> None:
    bl.ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--cursors", type=int, default=100)
    parser.add_argument("--write-docs", action="store_true",
                        help="update the context section of docs/benchmarks.md")
    opts = parser.parse_args()
    results = asyncio.run(run(opts))
    results.update(command=bl.command_line(), revision=bl.revision())
    text = report(results) + bl.stamp(results)
    print(text)
    if opts.write_docs:
        print(f"updated {bl.write_docs({'context': text})}")


if __name__ == "__main__":
    sys.exit(main())
