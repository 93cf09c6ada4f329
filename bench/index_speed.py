"""Indexing speed on real code: time until searchable, no-change re-index, embedding rate.

Repositories are made of real Python files copied from the installed packages (the
virtualenv's site-packages), so chunking and tokenising see real code.

    python bench/index_speed.py [--files 1000] [--reindex-files 10000] [--embed-files 150]
                                [--write-docs]

Budgets (docs/ARCHITECTURE.md): a 1,000-file repository lexically searchable <= 2 s after
`index` starts; a no-change re-index of 10,000 files <= 1 s; the rest of indexing never
waits for embeddings (the embedded model runs after the lexical pass).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl

bl.ensure_venv()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402


def real_files(count: int) -> list[Path]:
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in site.rglob("*.py") if p.is_file() and p.stat().st_size > 200)
    if len(files) < count:
        raise SystemExit(f"only {len(files)} Python files under {site}; asked for {count}")
    step = len(files) / count  # spread over all packages, not the first few
    return [files[int(i * step)] for i in range(count)]


def make_repo(root: Path, files: list[Path]) -> None:
    for i, src in enumerate(files):
        dst = root / f"d{i % 50:02d}" / f"{i:05d}_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def time_to_searchable(root: Path) -> dict[str, float]:
    """Seconds from start until the first file, and all files, are lexically searchable."""
    from mimiverse.config import IndexSettings
    from mimiverse.index.indexer import Indexer
    from mimiverse.index.model import SearchFilter
    from mimiverse.index.store.sqlite import SqliteStore

    settings = IndexSettings()
    db = root.parent / f"{root.name}-index.db"  # never inside the indexed folder
    store = SqliteStore(db)
    probe = SqliteStore(db)
    started = time.perf_counter()
    first: list[float] = []
    done = threading.Event()

    def watch() -> None:
        repo = probe.repo_id(str(root.resolve()))
        while not done.is_set():
            if probe.search_lexical(repo, ["import"], 1, SearchFilter()):
                first.append(time.perf_counter() - started)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    cpu = _cpu_s()
    watcher.start()
    report = Indexer(store, root, settings).run()
    total = time.perf_counter() - started
    cpu = _cpu_s() - cpu  # this process and its (finished) workers
    done.set()
    watcher.join()
    store.close()
    probe.close()
    return {"first_s": first[0] if first else total, "all_s": total, "cpu_s": cpu,
            "files": report.files, "chunks": report.chunks}


def _cpu_s() -> float:
    own, workers = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                    resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def reindex_unchanged(root: Path, runs: int) -> list[float]:
    from mimiverse.config import IndexSettings
    from mimiverse.index.indexer import Indexer
    from mimiverse.index.store.sqlite import SqliteStore

    store = SqliteStore(root.parent / f"{root.name}-index.db")
    indexer = Indexer(store, root, IndexSettings())
    indexer.run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        report = indexer.run()
        times.append(time.perf_counter() - started)
        assert report.indexed == 0, report
    store.close()
    return times


async def embed_rate(root: Path) -> dict[str, Any]:
    """Full indexing with the embedded sentence-transformers model: lexical, then vectors."""
    from mimiverse.backends.registry import build_backend
    from mimiverse.config import load_settings
    from mimiverse.index.service import CodebaseService
    from mimiverse.routing.router import Router

    settings = load_settings(
        None,
        backends=[{"name": "embedded", "kind": "sentence-transformers"}],
        models={"completion": {"model": "m", "family": "qwen2.5-coder",
                               "backends": ["embedded"]},
                "chat": {"model": "m", "backends": ["embedded"]},
                "embedding": {"model": "all-MiniLM-L6-v2", "backends": ["embedded"]}},
        index={"data_dir": str(root.parent / "data")},  # the bench's folder, not the user's
    )
    router = Router(settings, {b.name: build_backend(b) for b in settings.backends})
    await router.embed(["warm up the model"])  # load time is not indexing time
    service = CodebaseService(settings.index, router, [str(root)])
    started = time.perf_counter()
    job = await service.start(str(root))
    await job.lexical_done.wait()
    lexical_s = time.perf_counter() - started
    await service.wait(job.root)
    total = time.perf_counter() - started
    stats = job.store.stats(job.repo)
    await service.aclose()
    await router.aclose()
    return {"lexical_s": lexical_s, "total_s": total, "chunks": stats.chunks,
            "embedding_s": total - lexical_s,
            "chunks_per_s": stats.chunks / max(total - lexical_s, 1e-9),
            "error": job.embedding_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--reindex-files", type=int, default=10000)
    parser.add_argument("--embed-files", type=int, default=150)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mimiverse-bench-index-"))
    try:
        pool = real_files(max(opts.files, opts.reindex_files, opts.embed_files))
        searchable = []
        for run in range(opts.runs):
            repo = work / f"small{run}"
            make_repo(repo, pool[: opts.files])
            searchable.append(time_to_searchable(repo))
        big = work / "big"
        make_repo(big, pool[: opts.reindex_files])
        reindex = reindex_unchanged(big, opts.runs + 2)
        embed: dict[str, Any] | None = None
        if opts.embed_files:
            repo = work / "embed"
            make_repo(repo, pool[: opts.embed_files])
            try:
                embed = asyncio.run(embed_rate(repo))
            except Exception as exc:
                embed = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first = bl.median([s["first_s"] for s in searchable])
    whole = bl.median([s["all_s"] for s in searchable])
    cpu = bl.median([s["cpu_s"] for s in searchable])
    noop = bl.median(reindex)
    rows = [
        [f"{opts.files} files ({searchable[0]['chunks']} chunks): first file searchable",
         f"{first * 1000:.0f} ms", ""],
        [f"{opts.files} files: all lexically searchable", f"{whole:.2f} s",
         bl.verdict(whole <= 2.0) + " (≤ 2 s)"],
        [f"{opts.files} files: CPU time of the indexer and its workers", f"{cpu:.2f} s", ""],
        [f"re-index of {opts.reindex_files} unchanged files", f"{noop:.2f} s",
         bl.verdict(noop <= 1.0) + " (≤ 1 s)"],
    ]
    if embed and "chunks_per_s" in embed:
        rows.append([f"{opts.embed_files} files, {embed['chunks']} chunks: lexical pass, then "
                     f"embedded all-MiniLM-L6-v2", f"{embed['lexical_s']:.2f} s + "
                     f"{embed['embedding_s']:.1f} s = {embed['chunks_per_s']:.0f} chunks/s",
                     ""])
    elif embed:
        rows.append(["embedded embedder", f"not measured: {embed['error']}", ""])
    text = bl.table(["what (median of runs)", "measured", "budget"], rows)
    results = {"command": bl.command_line(), "revision": bl.revision()}
    text += bl.stamp(results)
    print(text)
    if opts.write_docs:
        print(f"updated {bl.write_docs({'index': text})}")


if __name__ == "__main__":
    main()
