"""Two ways to embed llama.cpp, on the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M model.

    python bench/llama_engines.py --xllamacpp-python /path/to/venv/bin/python --write-docs

- llama-cpp-python (the `llamacpp` extra; compiled by pip from source), in this venv;
- xllamacpp (prebuilt CPU wheels of llama.cpp's own server code), in the venv given by
  `--xllamacpp-python` (install it there: `pip install xllamacpp==2026.10.11549`), so the
  project's venv keeps one engine.

Each engine runs in its own process (so its peak RSS is its own) and measures, with
greedy sampling and all of this process's CPUs:

- load: constructing the engine until the model is ready (pages warm: the file was read
  just before);
- prompt: a ~500-token FIM prompt (the model's own FIM tokens) read from an empty KV
  cache, until its first token (median of `--runs`);
- generate: tokens/s over `--gen` tokens after the prompt (median of `--runs`);
- typing: the same prompt with 8 more characters at the cursor, right after the cold one:
  the time to the first token when the engine reuses its KV cache for the common prefix;
- two at once: two different prompts sent together, each `--gen` tokens: wall time until
  both are done (llama-cpp-python has one context, so they run one after the other);
- peak RSS of the process.

The model comes from the PyPI data wheels (bench/fim_quality.py's `fetch_model`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PREFIX_LINES = 36


def fim_prompt(variant: int, typed: str = "") -> str:
    """A Qwen2.5-Coder FIM prompt of about 500 tokens; `variant` changes its first line."""
    body = "".join(
        f"def scale_{variant}_{i}(values, factor={i}):\n"
        f"    total = sum(v * factor for v in values)\n"
        f"    return total / max(len(values), 1)\n\n" for i in range(PREFIX_LINES // 3)
    )
    prefix = f"# module {variant}\nimport math\n\n{body}def norm(values):\n    {typed}"
    suffix = "\n\nprint(norm([3.0, 4.0]))\n"
    return f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"


# -- workers: one per engine, each in its own process --------------------------------


class LlamaCppPython:
    name = "llama-cpp-python"
    extra_buffers = True

    def __init__(self, model: str, threads: int, n_ctx: int) -> None:
        import llama_cpp
        from llama_cpp import Llama

        from mimiverse.backends.llamacpp_load import extra_buffers

        self.version = llama_cpp.__version__
        with extra_buffers(self.extra_buffers):
            self.llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads,
                             n_threads_batch=threads, verbose=False)

    def count_tokens(self, prompt: str) -> int:
        return len(self.llm.tokenize(prompt.encode(), add_bos=False, special=True))

    def run(self, prompt: str, n: int, *, cold: bool) -> tuple[float, float, int]:
        """(seconds to the first token, seconds for the rest, tokens made)."""
        llm = self.llm
        if cold:
            llm.reset()
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        started = time.perf_counter()
        first = 0.0
        made = 0
        # generate() reuses the longest common prefix of what the context already holds.
        for _ in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
            made += 1
            if made == 1:
                first = time.perf_counter() - started
            if made >= n:
                break
        return first, time.perf_counter() - started - first, made

    def two_at_once(self, prompts: list[str], n: int) -> float:
        started = time.perf_counter()
        for p in prompts:  # one context: one after the other
            self.run(p, n, cold=True)
        return time.perf_counter() - started


class LlamaCppPythonNoExtra(LlamaCppPython):
    """As Mimiverse loads it on AMX CPUs: no extra weight buffers (no repacking, no AMX)."""

    name = "llama-cpp-python, extra buffers off"
    extra_buffers = False


class XLlamaCpp:
    name = "xllamacpp"

    def __init__(self, model: str, threads: int, n_ctx: int) -> None:
        import xllamacpp

        self.version = xllamacpp.__version__
        params = xllamacpp.CommonParams()
        params.model.path = model
        params.n_parallel = 2  # two slots, continuous batching
        params.n_ctx = n_ctx * 2  # each slot gets n_ctx
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        self.server = xllamacpp.Server(params)

    def _complete(self, prompt: str, n: int, *, cache: bool) -> dict[str, Any]:
        answer: dict[str, Any] = self.server.handle_completions({
            "prompt": prompt, "n_predict": n, "temperature": 0, "top_k": 1,
            "ignore_eos": True, "cache_prompt": cache,
        })
        return answer

    def count_tokens(self, prompt: str) -> int:
        return int(self._complete(prompt, 1, cache=False)["usage"]["prompt_tokens"])

    def run(self, prompt: str, n: int, *, cold: bool) -> tuple[float, float, int]:
        started = time.perf_counter()
        answer = self._complete(prompt, n, cache=not cold)
        wall = time.perf_counter() - started
        t = answer["timings"]
        # The server's own split of the wall time: prompt (and first token), then the rest.
        first = wall - t["predicted_ms"] / 1000 * (t["predicted_n"] - 1) / t["predicted_n"]
        return first, wall - first, int(t["predicted_n"])

    def two_at_once(self, prompts: list[str], n: int) -> float:
        started = time.perf_counter()
        threads = [threading.Thread(target=self._complete, args=(p, n), kwargs={"cache": False})
                   for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started


ENGINES: dict[str, Any] = {"llama-cpp-python": LlamaCppPython,
                           "llama-cpp-python-noextra": LlamaCppPythonNoExtra,
                           "xllamacpp": XLlamaCpp}


def worker(opts: argparse.Namespace) -> dict[str, Any]:
    engine_cls = ENGINES[opts.worker]
    Path(opts.model).read_bytes()  # warm the page cache: load time is the engine's own
    started = time.perf_counter()
    engine = engine_cls(opts.model, opts.threads, opts.n_ctx)
    load_s = time.perf_counter() - started
    prompt_tokens = engine.count_tokens(fim_prompt(0))
    engine.run(fim_prompt(99), 2, cold=True)  # first decode: buffers, repacking
    firsts, gens = [], []
    for i in range(opts.runs):
        first, rest, made = engine.run(fim_prompt(i), opts.gen, cold=True)
        firsts.append(first)
        gens.append((made - 1) / rest)
    engine.run(fim_prompt(0), 2, cold=True)
    typing = [engine.run(fim_prompt(0, typed="x" * k), 2, cold=False)[0]
              for k in range(1, opts.runs + 1)]
    both = [engine.two_at_once([fim_prompt(10 + 2 * i), fim_prompt(11 + 2 * i)], opts.gen)
            for i in range(opts.runs)]
    return {
        "engine": engine.name, "version": engine.version, "load_s": load_s,
        "prompt_tokens": prompt_tokens,
        "first_token_s": statistics.median(firsts),
        "prompt_tok_s": prompt_tokens / statistics.median(firsts),
        "gen_tok_s": statistics.median(gens),
        "typing_first_token_s": statistics.median(typing),
        "two_at_once_s": statistics.median(both),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# -- driver ---------------------------------------------------------------------------


def run_engine(python: str, engine: str, opts: argparse.Namespace) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--worker", engine, "--model", opts.model,
           "--runs", str(opts.runs), "--gen", str(opts.gen), "--threads", str(opts.threads),
           "--n-ctx", str(opts.n_ctx)]
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip()[-1500:]
        return {"engine": engine, "error": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    merged = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, float):
            merged[key] = statistics.median(r[key] for r in ok)
    merged["rounds"] = len(ok)
    return merged


def report(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    sys.path.insert(0, str(BENCH))
    import benchlib as bl

    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["engine"], "failed", "", "", "", "", "", ""])
            continue
        rows.append([
            f"{r['engine']} {r['version']}", f"{r['load_s']:.2f}",
            f"{r['first_token_s']:.2f} ({r['prompt_tok_s']:.0f} tok/s)",
            f"{r['gen_tok_s']:.1f}", f"{r['typing_first_token_s']:.2f}",
            f"{r['two_at_once_s']:.2f}", f"{r['peak_rss_mb']:.0f}",
        ])
    m = bl.machine()
    text = "\n".join([
        f"Qwen2.5-Coder-0.5B-Instruct Q4_K_M, greedy, {opts.threads} threads, a "
        f"~{results[0].get('prompt_tokens', '?')}-token FIM prompt, {opts.gen} tokens "
        f"generated; medians of {opts.runs} runs in each of {opts.rounds} rounds (engines "
        f"taking turns). {m['nproc']} CPUs ({m['cpu']}), shared with other jobs while "
        "measured: compare within a column, not with other pages.",
        "",
        bl.table(["engine", "load s", "cold prompt: first token s", "generate tok/s",
                  "typing: first token s", f"two at once, {opts.gen} tokens each: s",
                  "peak RSS MB"], rows),
    ])
    return text + bl.stamp({"command": bl.command_line(), "revision": bl.revision()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=list(ENGINES))
    parser.add_argument("--model", default="")
    parser.add_argument("--xllamacpp-python", default="", help="a venv's python with xllamacpp")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="turns each engine takes")
    parser.add_argument("--gen", type=int, default=32)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--write-docs", action="store_true")
    opts = parser.parse_args()
    if opts.worker:
        print(json.dumps(worker(opts)))
        return
    if not opts.model:
        sys.path.insert(0, str(BENCH))
        from fim_quality import fetch_model

        found = fetch_model(Path.home() / ".cache" / "mimiverse" / "models")
        if found is None:
            return
        opts.model = str(found)
    engines = [(sys.executable, "llama-cpp-python"),
               (sys.executable, "llama-cpp-python-noextra")]
    if opts.xllamacpp_python:
        engines.append((opts.xllamacpp_python, "xllamacpp"))
    # Engines take turns, round after round, so a busy spell of the machine does not
    # land on one engine only; each figure is the median over the rounds.
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for _, name in engines}
    for _ in range(opts.rounds):
        for python, name in engines:
            rounds[name].append(run_engine(python, name, opts))
    results = [_median_of(runs) for runs in rounds.values()]
    for r in results:
        print(json.dumps(r))
    text = report(results, opts)
    print(text)
    if opts.write_docs:
        sys.path.insert(0, str(BENCH))
        import benchlib as bl

        bl.write_docs({"llama-engines": text})


if __name__ == "__main__":
    main()
