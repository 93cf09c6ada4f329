"""Embedding paths side by side: in-process, Triton (CPU) and the Ollama protocol.

    python bench/embed_paths.py                # about 2 min on 2 cores
    python bench/embed_paths.py --write-docs   # also update docs/benchmarks.md

The same model everywhere (all-MiniLM-L6-v2, fp32 ONNX: the one `triton prepare` exports;
the int8 default is measured in-process too, for reference), on ~180-token chunks of this
repository's source, each path through the backend class the router would use:

- embedded: `SentenceTransformersBackend` in this process;
- triton: `TritonBackend` (HTTP, KServe v2) -> a real tritonserver (pytriton's, CPU)
  running the repository `mimiverse triton prepare` writes: its tokenizer model.py, then
  its ONNX encoder on onnxruntime, in pytriton's Python backend (there is no onnxruntime
  backend in pytriton's server; a GPU tritonserver runs the encoder natively);
- ollama: `OllamaBackend` -> a loopback server in its own process speaking Ollama's
  /api/embed, backed by the same embedded model.

Per path: throughput of `embed_batch` with 32 chunks per call (chunks/s), and latency per
call with 1 chunk and with 32 chunks (p50, p90), the paths interleaved round by round so
each sees the same machine. Needs the embed and triton extras and `make install-triton`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib as bl

MODEL = "all-MiniLM-L6-v2"
PATHS = ("embedded-int8", "embedded", "triton", "ollama")


def serve_ollama(port: int) -> None:
    """The Ollama-protocol server: POST /api/embed {"model", "input"} -> {"embeddings"}."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from mimiverse.backends.sentence_transformers import SentenceTransformersBackend
    from mimiverse.config import BackendSettings

    backend = SentenceTransformersBackend(
        BackendSettings(name="embedded", kind="sentence-transformers"), engine="onnx")

    async def embed(request: Request) -> JSONResponse:
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = await backend.embed_batch(body["model"], texts)
        return JSONResponse({"model": body["model"], "embeddings": vectors})

    async def version(request: Request) -> JSONResponse:
        return JSONResponse({"version": "0.0.0-bench"})

    app = Starlette(routes=[Route("/api/embed", embed, methods=["POST"]),
                            Route("/api/version", version)])
    uvicorn.run(app, host=bl.HOST, port=port, log_level="warning", access_log=False)


def wait_http(url: str, ok: Callable[[], bool], process: subprocess.Popen[bytes],
              within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while not ok():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.1)


def http_status(url: str) -> int | None:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class Servers:
    """The Triton and Ollama-protocol servers, each in its own process group."""

    def __init__(self, workdir: Path, repo: Any) -> None:
        self.workdir, self.repo = workdir, repo
        self.procs: list[subprocess.Popen[bytes]] = []
        ports = [bl.free_port() for _ in range(4)]
        self.ports = ports
        self.triton_url = f"http://{bl.HOST}:{ports[0]}"
        self.ollama_url = f"http://{bl.HOST}:{ports[3]}"

    def __enter__(self) -> Servers:
        triton_python = bl.ROOT / ".venv-triton" / "bin" / "python"
        if not triton_python.is_file():
            raise SystemExit("no .venv-triton: run `make install-triton` first")
        p = self.ports
        with open(self.workdir / "servers.log", "ab") as log:
            try:
                triton = self._spawn(log, [
                    str(triton_python), str(bl.ROOT / "tests/tritonserver/serve_embedder.py"),
                    "--http-port", str(p[0]), "--grpc-port", str(p[1]),
                    "--metrics-port", str(p[2]), "--repo", str(self.repo.root),
                    "--repo-model", MODEL, "--repo-dim", str(self.repo.dimension),
                    "--max-batch", "32"])
                ollama = self._spawn(log, [sys.executable, __file__, "--serve-ollama",
                                           str(p[3])])
                wait_http(self.triton_url, lambda: http_status(
                    f"{self.triton_url}/v2/models/{MODEL}/ready") == 200, triton)
                wait_http(self.ollama_url, lambda: http_status(
                    f"{self.ollama_url}/api/version") == 200, ollama)
            except BaseException:
                self.__exit__()
                raise
        return self

    def _spawn(self, log: Any, cmd: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.procs.append(process)
        return process

    def __exit__(self, *exc: object) -> None:
        for process in self.procs:
            with_group_signal(process)


async def measure(opts: argparse.Namespace, servers: Servers,
                  chunks: list[str]) -> dict[str, Any]:
    from mimiverse.backends.base import Backend
    from mimiverse.backends.ollama import OllamaBackend
    from mimiverse.backends.sentence_transformers import SentenceTransformersBackend
    from mimiverse.backends.triton import TritonBackend
    from mimiverse.config import BackendSettings

    embedded = SentenceTransformersBackend(
        BackendSettings(name="embedded", kind="sentence-transformers"), engine="onnx")
    paths: dict[str, tuple[Backend, str]] = {
        "embedded-int8": (embedded, MODEL + "-int8"),
        "embedded": (embedded, MODEL),
        "triton": (TritonBackend(BackendSettings(
            name="triton", kind="triton", url=servers.triton_url,
            triton={"model": MODEL})), MODEL),
        "ollama": (OllamaBackend(BackendSettings(
            name="ollama", kind="ollama", url=servers.ollama_url)), MODEL),
    }
    samples: dict[str, dict[str, list[float]]] = {p: {"b32": [], "b1": []} for p in PATHS}
    cosines: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    try:
        warm = {path: await paths[path][0].embed_batch(paths[path][1], chunks[:32])
                for path in PATHS}  # loads, exports, first-request costs
        for path in PATHS:
            cosines[path] = min(_cosine(a, b) for a, b in zip(
                warm[path], warm["embedded"], strict=True))
        for r in range(opts.rounds):
            batch = [chunks[(r * 32 + i) % len(chunks)] for i in range(32)]
            for path in PATHS:
                backend, model = paths[path]
                started = time.perf_counter()
                await backend.embed_batch(model, batch)
                samples[path]["b32"].append(time.perf_counter() - started)
                for text in batch[:opts.singles]:
                    started = time.perf_counter()
                    await backend.embed_batch(model, [text])
                    samples[path]["b1"].append(time.perf_counter() - started)
    finally:
        for backend, _ in paths.values():
            await backend.aclose()
    return {"samples": samples, "cosines": cosines, "rounds": opts.rounds,
            "load": (load_before, os.getloadavg()[0]),
            "singles": opts.singles, "command": bl.command_line(),
            "revision": bl.revision(), "nproc": len(os.sched_getaffinity(0))}


def with_group_signal(process: subprocess.Popen[bytes]) -> None:
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # pytriton stops tritonserver itself
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    with contextlib.suppress(ProcessLookupError):  # stubs that outlived their server
        os.killpg(process.pid, signal.SIGKILL)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


def report(r: dict[str, Any]) -> str:
    rows = []
    for path in PATHS:
        b32 = sorted(r["samples"][path]["b32"])
        b1 = sorted(r["samples"][path]["b1"])
        rate = 32 * len(b32) / sum(b32)
        rows.append([
            path, f"{rate:.1f}",
            bl.fmt_ms(bl.percentile(b1, 50) * 1000), bl.fmt_ms(bl.percentile(b1, 90) * 1000),
            bl.fmt_ms(bl.percentile(b32, 50) * 1000), bl.fmt_ms(bl.percentile(b32, 90) * 1000),
            f"{r['cosines'][path]:.4f}",
        ])
    head = (
        f"### Embedding paths (all-MiniLM-L6-v2, {r['nproc']} CPUs, everything on them)\n\n"
        f"Code chunks of this repository, {r['mean_tokens']:.0f} tokens on average; "
        f"{r['rounds']} rounds, each: one call with 32 chunks and {r['singles']} calls "
        "with 1 chunk per path, the paths interleaved. `embedded` and `embedded-int8`: "
        "`SentenceTransformersBackend` in-process (fp32 / int8 ONNX); `triton`: "
        "`TritonBackend` over HTTP to a CPU tritonserver (pytriton) running the "
        "`mimiverse triton prepare` repository (tokenizer model.py + ONNX encoder on "
        "onnxruntime, max_batch 32); `ollama`: `OllamaBackend` to a loopback server "
        "speaking /api/embed in its own process, backed by the fp32 embedded model. "
        "Cosine: the lowest over 32 chunks against the in-process fp32 vectors.\n\n"
    )
    table = bl.table(["path", "chunks/s (batch 32)", "batch-1 p50 ms", "batch-1 p90 ms",
                      "batch-32 p50 ms", "batch-32 p90 ms", "min cosine vs embedded"], rows)
    load = (f"\n\nLoad average (1 min, start → end): {r['load'][0]:.2f} → {r['load'][1]:.2f}: "
            "other work on these CPUs lowers every row alike; compare rows, not runs.")
    return head + table + load + bl.stamp(r)


def main() -> None:
    bl.ensure_venv()
    parser = argparse.ArgumentParser(description="Embedding paths side by side")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--singles", type=int, default=8, help="batch-1 calls per round")
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--serve-ollama", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    sys.path.insert(0, str(bl.BENCH))
    if opts.serve_ollama:
        serve_ollama(opts.serve_ollama)
        return
    from embed_throughput import code_chunks
    from mimiverse.cli.triton import embedding_model_config, export_folder
    from mimiverse.config import load_settings
    from mimiverse.triton_repo import prepare

    export, _ = asyncio.run(export_folder(embedding_model_config(load_settings(None))))
    chunks, mean_tokens = code_chunks(export / "tokenizer.json", count=opts.chunks, tokens=180)
    with tempfile.TemporaryDirectory(prefix="mimiverse-embed-paths-") as tmp:
        repo = prepare(export, Path(tmp) / "repo", MODEL, max_batch=32, device="cpu")
        with Servers(Path(tmp), repo) as servers:
            results = asyncio.run(measure(opts, servers, chunks))
    results["mean_tokens"] = mean_tokens
    text = report(results)
    print(text)
    if opts.write_docs:
        print(f"updated {bl.write_docs({'embed-paths': text})}")


if __name__ == "__main__":
    main()
