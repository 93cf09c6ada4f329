"""Embedded embedding throughput: all-MiniLM-L6-v2 on ~180-token code chunks, per variant.

    python bench/embed_throughput.py                # about 2 min on 2 cores
    python bench/embed_throughput.py --write-docs   # also update docs/benchmarks.md

Needs the embed extra (`pip install -e '.[embed]'`). The chunks are windows of this
repository's own Python source, cut at line ends once they reach ~180 tokens of the
model's own tokenizer. Each variant is measured through `SentenceTransformersBackend`, the
way the indexer calls it: `embed_batch` with 32 chunks per call (throughput, chunks/s per
run), and with one chunk per call (latency, p50 per run); the figures are medians over
the runs, with the variants interleaved so that each sees the same machine. Variants:

- onnx-int8: the `<model>-int8` name (SmoothQuant + dynamic int8, ONNX, per-text replicas);
- onnx: the `<model>` name on ONNX fp32 (per-text replicas);
- torch: the `<model>` name on torch fp32 (padded batches), the reference for the cosines.

The ONNX export and the int8 build are timed once, into a fresh temporary cache folder.
Other work on the machine skews the wall-clock figures: the load averages and CPU pressure
are reported, and the chunks per CPU-second column is the steadier comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import os
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import benchlib as bl

if TYPE_CHECKING:
    from mimiverse.backends.sentence_transformers import SentenceTransformersBackend

BUDGET_ONNX_CHUNKS_PER_S = 60.0
Variant = Literal["onnx-int8", "onnx", "torch"]
VARIANTS: tuple[Variant, ...] = ("onnx-int8", "onnx", "torch")
BUDGET_VARIANT: Variant = "onnx-int8"
PACKAGES = ("torch", "sentence-transformers", "transformers", "onnxruntime", "onnx",
            "optimum-onnx")


def code_chunks(tokenizer_file: Path, *, count: int, tokens: int) -> tuple[list[str], float]:
    """`count` chunks of this repository's Python source, each ~`tokens` tokens long, and
    their mean length in tokens (without [CLS]/[SEP])."""
    tokenizers = importlib.import_module("tokenizers")  # from the embed extra
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    # The file pads and truncates to 128 tokens; the model itself reads up to 256.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    chunks: list[str] = []
    lengths: list[int] = []
    for path in sorted((bl.ROOT / "src").rglob("*.py")):
        lines: list[str] = []
        size = 0
        for line in path.read_text(encoding="utf-8").splitlines():
            lines.append(line)
            size += len(tokenizer.encode(line, add_special_tokens=False).ids)
            if size >= tokens:
                text = "\n".join(lines)
                chunks.append(text)
                lengths.append(len(tokenizer.encode(text, add_special_tokens=False).ids))
                lines, size = [], 0
    if not chunks:
        raise SystemExit("no source files to cut chunks from")
    mean = sum(lengths[:count]) / len(lengths[:count])
    return list(islice(cycle(chunks), count)), mean


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which runnable tasks waited for a CPU (Linux PSI)."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def load_average() -> float | None:
    """The 1-minute load average, as `uptime` shows it."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def throughput(
    backend: SentenceTransformersBackend, model: str, chunks: list[str], batch: int
) -> tuple[float, float]:
    """(chunks/s, CPU cores this process used meanwhile) for one pass over `chunks`."""
    cpu, started = time.process_time(), time.perf_counter()
    for i in range(0, len(chunks), batch):
        await backend.embed_batch(model, chunks[i:i + batch])
    wall = time.perf_counter() - started
    return len(chunks) / wall, (time.process_time() - cpu) / wall


async def latency(backend: SentenceTransformersBackend, model: str, chunks: list[str]) -> float:
    """Median milliseconds of one-chunk calls."""
    times: list[float] = []
    for text in chunks:
        started = time.perf_counter()
        await backend.embed_batch(model, [text])
        times.append((time.perf_counter() - started) * 1000)
    return bl.median(times)


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    from mimiverse.backends.sentence_transformers import SentenceTransformersBackend
    from mimiverse.config import BackendSettings

    settings = BackendSettings(name="bench", kind="sentence-transformers",
                               model_path=opts.model_path, n_threads=opts.threads)
    backends: dict[Variant, SentenceTransformersBackend] = {}
    models: dict[Variant, str] = {}
    load_s: dict[Variant, float] = {}
    with tempfile.TemporaryDirectory(prefix="mimiverse-onnx-") as cache:
        try:
            # fp32 ONNX first: its load includes the export, int8's the quantisation.
            for variant in ("onnx", "onnx-int8", "torch"):
                backend = SentenceTransformersBackend(
                    settings, engine="torch" if variant == "torch" else "onnx",
                    onnx_cache_dir=cache, batch_size=opts.batch)
                backends[variant] = backend
                models[variant] = (backend.int8_model_name if variant == "onnx-int8"
                                   else backend.model_name)
                started = time.perf_counter()
                await backend.embed_batch(models[variant], ["load"])
                load_s[variant] = time.perf_counter() - started
            folder = backends["onnx"].model_folder
            assert folder is not None
            chunks, mean_tokens = code_chunks(folder / "tokenizer.json",
                                              count=opts.chunks, tokens=opts.tokens)
            for variant in VARIANTS:  # warm up: first-run allocations
                await backends[variant].embed_batch(models[variant], chunks[:opts.batch])
            rates: dict[Variant, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
            p50s: dict[Variant, list[float]] = {v: [] for v in VARIANTS}
            pressure, loads = [cpu_pressure()], [load_average()]
            for _ in range(opts.runs):
                for variant in VARIANTS:
                    backend, model = backends[variant], models[variant]
                    rates[variant].append(await throughput(backend, model, chunks, opts.batch))
                    p50s[variant].append(await latency(backend, model, chunks[:opts.singles]))
            pressure.append(cpu_pressure())
            loads.append(load_average())
            # Quality: each variant against torch fp32, on every distinct chunk.
            unique = list(dict.fromkeys(chunks))
            vectors = {v: await backends[v].embed_batch(models[v], unique) for v in VARIANTS}
            cosines = {v: [cosine(a, b) for a, b in zip(vectors[v], vectors["torch"],
                                                         strict=True)] for v in VARIANTS}
            threads, replicas = backends["onnx"].threads, backends["onnx"].replicas
        finally:
            for backend in backends.values():
                await backend.aclose()
    variants = {
        v: {
            "model": models[v],
            "chunks_per_s": bl.median([r for r, _ in rates[v]]),
            "chunks_per_s_runs": [round(r, 1) for r, _ in rates[v]],
            "cores": bl.median([c for _, c in rates[v]]),
            "chunks_per_cpu_s": bl.median([r / c for r, c in rates[v] if c > 0]),
            "batch1_p50_ms": bl.median(p50s[v]),
            "batch1_p50_ms_runs": [round(x, 2) for x in p50s[v]],
            "load_s": load_s[v],
            "cosine_min": min(cosines[v]),
            "cosine_mean": sum(cosines[v]) / len(cosines[v]),
            "cosine_below_0_99": sum(c < 0.99 for c in cosines[v]),
        }
        for v in VARIANTS
    }
    return {"variants": variants, "mean_tokens": mean_tokens, "threads": threads,
            "replicas": replicas, "distinct_chunks": len(unique),
            "cpu_pressure_pct": pressure, "load_average_1m": loads}


def report(r: dict[str, Any], opts: argparse.Namespace) -> str:
    rows = []
    for variant in VARIANTS:
        e = r["variants"][variant]
        rows.append([
            variant, f"`{e['model']}`", f"{e['chunks_per_s']:.1f}",
            " / ".join(f"{v:.0f}" for v in e["chunks_per_s_runs"]),
            f"{e['cores']:.2f}", f"{e['chunks_per_cpu_s']:.1f}",
            f"{e['batch1_p50_ms']:.1f}", f"{e['load_s']:.1f}",
            f"{e['cosine_min']:.4f} / {e['cosine_mean']:.4f}",
        ])

    def series(values: list[float | None], unit: str) -> str:
        return " → ".join("n/a" if v is None else f"{v:.{0 if unit else 2}f}{unit}"
                          for v in values)

    best = r["variants"][BUDGET_VARIANT]
    fp32 = r["variants"]["onnx"]
    return "\n".join([
        f"### Embedded embeddings ({r['variants']['onnx']['model']}, {r['threads']} threads, "
        f"{r['replicas']} ONNX replicas)", "",
        f"{opts.chunks} code chunks of this repository's source, {r['mean_tokens']:.0f} "
        f"tokens on average; `embed_batch` with {opts.batch} chunks per call, and with one "
        f"chunk per call ({opts.singles} calls per run); medians over {opts.runs} runs. "
        "Load time includes the ONNX export (onnx) and the int8 build from it (onnx-int8), "
        "into an empty cache folder. Cosine: against torch fp32, over "
        f"{r['distinct_chunks']} distinct chunks (min / mean).", "",
        bl.table(["variant", "model name", f"chunks/s (batch {opts.batch})", "runs",
                  "cores used", "chunks per CPU-s", "batch-1 p50 ms", "load s",
                  "cosine vs torch"], rows), "",
        f"Load average (1 min, start → end): {series(r['load_average_1m'], '')}; CPU "
        f"pressure from other processes (PSI some avg10): {series(r['cpu_pressure_pct'], '%')}"
        "; where they are high, the chunks per CPU-second column is the steadier comparison.",
        "",
        bl.budget_lines([
            (f"embedded embedding ≥ 60 chunks/s (ONNX int8, `{best['model']}`)",
             f"{best['chunks_per_s']:.0f} chunks/s",
             best["chunks_per_s"] >= BUDGET_ONNX_CHUNKS_PER_S),
            (f"embedded embedding ≥ 60 chunks/s (ONNX fp32, `{fp32['model']}`)",
             f"{fp32['chunks_per_s']:.0f} chunks/s",
             fp32["chunks_per_s"] >= BUDGET_ONNX_CHUNKS_PER_S),
        ]),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
    ])


def versions() -> dict[str, str]:
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in PACKAGES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def main() -> None:
    bl.ensure_venv()
    parser = argparse.ArgumentParser(description="Embedded embedding throughput per variant "
                                                 "(see the module docstring).")
    parser.add_argument("--chunks", type=int, default=320, help="chunks per throughput run")
    parser.add_argument("--tokens", type=int, default=180, help="target tokens per chunk")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--singles", type=int, default=40, help="batch-1 calls per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: every CPU")
    parser.add_argument("--model-path", default=None,
                        help="a sentence-transformers folder (default: packaged MiniLM)")
    parser.add_argument("--write-docs", action="store_true",
                        help="update the embed section of docs/benchmarks.md")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 when {BUDGET_VARIANT} misses the budget")
    opts = parser.parse_args()
    results = asyncio.run(run(opts))
    results.update(machine=bl.machine(), command=bl.command_line(), versions=versions())
    text = report(results, opts) + bl.stamp(results)
    print(text)
    if opts.write_docs:
        print(f"updated {bl.write_docs({'embed': text})}")
    budget = results["variants"][BUDGET_VARIANT]["chunks_per_s"]
    if opts.check and budget < BUDGET_ONNX_CHUNKS_PER_S:
        sys.exit(1)


if __name__ == "__main__":
    main()
