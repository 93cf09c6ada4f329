"""Embedded embedding throughput: all-MiniLM-L6-v2 on ~180-token code chunks, ONNX vs torch.

    python bench/embed_throughput.py                # about 1 min on 2 cores
    python bench/embed_throughput.py --write-docs   # also update docs/benchmarks.md

Needs the embed extra (`pip install -e '.[embed]'`). The chunks are windows of this
repository's own Python source, cut at line ends once they reach ~180 tokens of the
model's own tokenizer. Each engine is measured through `SentenceTransformersBackend`, the
way the indexer calls it: `embed_batch` with 32 chunks per call (throughput, chunks/s per
run), and with one chunk per call (latency, p50 per run); the figures are medians over
the runs. The ONNX export is timed once, into a fresh temporary cache folder.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
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
Engine = Literal["onnx", "torch"]
ENGINES: tuple[Engine, ...] = ("onnx", "torch")
PACKAGES = ("torch", "sentence-transformers", "transformers", "onnxruntime", "optimum-onnx")


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
    mean = sum(lengths) / len(lengths)
    return list(islice(cycle(chunks), count)), mean


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which runnable tasks waited for a CPU (Linux PSI)."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


async def throughput(
    backend: SentenceTransformersBackend, chunks: list[str], batch: int
) -> tuple[float, float]:
    """(chunks/s, CPU cores this process used meanwhile) for one pass over `chunks`."""
    cpu, started = time.process_time(), time.perf_counter()
    for i in range(0, len(chunks), batch):
        await backend.embed_batch("bench", chunks[i:i + batch])
    wall = time.perf_counter() - started
    return len(chunks) / wall, (time.process_time() - cpu) / wall


async def latency(backend: SentenceTransformersBackend, chunks: list[str]) -> float:
    """Median milliseconds of one-chunk calls."""
    times: list[float] = []
    for text in chunks:
        started = time.perf_counter()
        await backend.embed_batch("bench", [text])
        times.append((time.perf_counter() - started) * 1000)
    return bl.median(times)


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    from mimiverse.backends.sentence_transformers import SentenceTransformersBackend
    from mimiverse.config import BackendSettings

    settings = BackendSettings(name="bench", kind="sentence-transformers",
                               model_path=opts.model_path, n_threads=opts.threads)
    backends: dict[Engine, SentenceTransformersBackend] = {}
    load_s: dict[Engine, float] = {}
    with tempfile.TemporaryDirectory(prefix="mimiverse-onnx-") as cache:
        try:
            for engine in ENGINES:
                backend = SentenceTransformersBackend(
                    settings, engine=engine, onnx_cache_dir=cache, batch_size=opts.batch)
                backends[engine] = backend
                started = time.perf_counter()
                await backend.check_health()  # loads; for ONNX, exports into `cache` first
                load_s[engine] = time.perf_counter() - started
            first = backends[ENGINES[0]]
            assert first.model_folder is not None
            chunks, mean_tokens = code_chunks(first.model_folder / "tokenizer.json",
                                              count=opts.chunks, tokens=opts.tokens)
            rates: dict[Engine, list[tuple[float, float]]] = {e: [] for e in ENGINES}
            p50s: dict[Engine, list[float]] = {e: [] for e in ENGINES}
            for backend in backends.values():  # warm up: first-run allocations
                await backend.embed_batch("bench", chunks[:opts.batch])
            pressure = [cpu_pressure()]
            for _ in range(opts.runs):  # engines interleaved, so both see the same machine
                for engine, backend in backends.items():
                    rates[engine].append(await throughput(backend, chunks, opts.batch))
                    p50s[engine].append(await latency(backend, chunks[:opts.singles]))
            pressure.append(cpu_pressure())
            threads, model = first.threads, first.model_name
        finally:
            for backend in backends.values():
                await backend.aclose()
    engines = {
        engine: {
            "chunks_per_s": bl.median([r for r, _ in rates[engine]]),
            "chunks_per_s_runs": [round(r, 1) for r, _ in rates[engine]],
            "cores": bl.median([c for _, c in rates[engine]]),
            "chunks_per_cpu_s": bl.median([r / c for r, c in rates[engine] if c > 0]),
            "batch1_p50_ms": bl.median(p50s[engine]),
            "batch1_p50_ms_runs": [round(v, 2) for v in p50s[engine]],
            "load_s": load_s[engine],
        }
        for engine in ENGINES
    }
    return {"engines": engines, "mean_tokens": mean_tokens, "threads": threads,
            "model": model, "cpu_pressure_pct": pressure}


def report(r: dict[str, Any], opts: argparse.Namespace) -> str:
    rows = []
    for engine in ENGINES:
        e = r["engines"][engine]
        rows.append([
            engine, f"{e['chunks_per_s']:.1f}",
            " / ".join(f"{v:.0f}" for v in e["chunks_per_s_runs"]),
            f"{e['cores']:.2f}", f"{e['chunks_per_cpu_s']:.1f}",
            f"{e['batch1_p50_ms']:.1f}", f"{e['load_s']:.1f}",
        ])
    pressure = " → ".join("n/a" if p is None else f"{p:.0f}%" for p in r["cpu_pressure_pct"])
    onnx, torch = r["engines"]["onnx"]["chunks_per_s"], r["engines"]["torch"]["chunks_per_s"]
    return "\n".join([
        f"### Embedded embeddings ({r['model']}, {r['threads']} threads)", "",
        f"{opts.chunks} code chunks of this repository's source, {r['mean_tokens']:.0f} "
        f"tokens on average; `embed_batch` with {opts.batch} chunks per call, and with one "
        f"chunk per call ({opts.singles} calls per run); medians over {opts.runs} runs. "
        "Load time includes the first ONNX export (into an empty cache folder).", "",
        bl.table(["engine", f"chunks/s (batch {opts.batch})", "runs", "cores used",
                  "chunks per CPU-s", "batch-1 p50 ms", "load s"], rows), "",
        f"ONNX is {onnx / torch:.2f}x torch. CPU pressure from other processes (PSI some "
        f"avg10, start → end): {pressure}; where it is high, the chunks per CPU-second "
        "column is the steadier comparison.", "",
        bl.budget_lines([("embedded embedding ≥ 60 chunks/s (ONNX)", f"{onnx:.0f} chunks/s",
                          onnx >= BUDGET_ONNX_CHUNKS_PER_S)]),
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
    parser = argparse.ArgumentParser(description="Embedded embedding throughput, ONNX vs "
                                                 "torch (see the module docstring).")
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
    parser.add_argument("--check", action="store_true", help="exit 1 when the budget fails")
    opts = parser.parse_args()
    results = asyncio.run(run(opts))
    results.update(machine=bl.machine(), command=bl.command_line(), versions=versions())
    text = report(results, opts) + bl.stamp(results)
    print(text)
    if opts.write_docs:
        print(f"updated {bl.write_docs({'embed': text})}")
    if opts.check and results["engines"]["onnx"]["chunks_per_s"] < BUDGET_ONNX_CHUNKS_PER_S:
        sys.exit(1)


if __name__ == "__main__":
    main()
