"""What the gateway costs on top of calling the model server directly.

    python bench/gateway_overhead.py            # everything, about 2 minutes on 2 cores
    python bench/gateway_overhead.py --write-docs --json /tmp/bench.json

Starts the OpenAI-compatible test server (tests/servers/openai_server.py) and
`mimiverse serve --config FILE` as processes of their own, then measures:

1. Latency overhead: interleaved pairs of the same uncached FIM request, (i) straight to the
   test server's streaming /v1/completions with the exact prompt, stops and max_tokens the
   gateway sends, read to [DONE], and (ii) through POST /api/ai/fim. One keep-alive client
   each; p50/p90/p99 of each side and of the per-pair difference.
2. Throughput: C concurrent keep-alive clients (wrk when installed, else bench/loadgen.py)
   on /api/ai/fim, uncached, and the same load straight at the test server, in interleaved
   rounds; with the CPU used meanwhile by the gateway, the test server and the generator.
3. Cache hits (bench/cache_latency.py): memory and Redis, latency and throughput.
4. Chat with tools (bench/chat_tools.py): gateway CPU per streamed chat request, plain and
   with an editor agent's nine tools.

All of them share the machine's cores: figures are medians over interleaved runs, and the
CPU shares say which process was the limit.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl
import cache_latency
import chat_tools

BUDGET_P50_MS = 1.0
BUDGET_P99_MS = 5.0
BUDGET_RPS = 1500.0
MARK = "@N@"


def _sse_text(raw: bytes) -> str:
    """The completion text of an OpenAI /v1/completions event stream."""
    parts: list[str] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                parts.append(choice.get("text") or "")
    return "".join(parts)


def measure_overhead(backend: bl.Proc, gateway: bl.Proc, *, pairs: int, warmup: int,
                     context_bytes: int = 0, blocks: int = 4) -> dict[str, Any]:
    """Interleaved direct / gateway pairs of the same uncached FIM request."""
    import httpx

    tag = secrets.token_hex(4)
    headers = {"Content-Type": "application/json"}
    direct_ms: list[float] = []
    gateway_ms: list[float] = []
    mismatches = 0
    with httpx.Client(base_url=backend.url, trust_env=False, timeout=10) as direct, \
            httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as gw, \
            bl.gc_paused():

        def call_direct(body: bytes) -> tuple[float, str]:
            started = time.perf_counter_ns()
            with direct.stream("POST", "/v1/completions", content=body,
                               headers=headers) as response:
                raw = b"".join(response.iter_raw())
            elapsed = (time.perf_counter_ns() - started) / 1e6
            if response.status_code != 200 or not raw.rstrip().endswith(b"data: [DONE]"):
                raise RuntimeError(f"direct call failed: {response.status_code} {raw[-200:]!r}")
            return elapsed, _sse_text(raw)

        def call_gateway(body: bytes) -> tuple[float, str]:
            started = time.perf_counter_ns()
            response = gw.post("/api/ai/fim", content=body, headers=headers)
            elapsed = (time.perf_counter_ns() - started) / 1e6
            answer = response.json()
            if response.status_code != 200 or answer.get("cached") is not False:
                raise RuntimeError(f"gateway call failed: {response.status_code} {answer}")
            return elapsed, str(answer["completion"])

        for i in range(warmup + pairs):
            prefix = bl.prefix_for(tag, i, context_bytes)
            prompt, stop = bl.gateway_prompt(prefix)
            d_body = json.dumps(bl.completions_body(
                prompt, stop, temperature=bl.UNCACHED_TEMPERATURE)).encode()
            g_body = json.dumps(bl.fim_body(prefix, temperature=bl.UNCACHED_TEMPERATURE)).encode()
            if i % 2:  # alternate who goes first, so neither side always follows the other
                (d, d_text), (g, g_text) = call_direct(d_body), call_gateway(g_body)
            else:
                (g, g_text), (d, d_text) = call_gateway(g_body), call_direct(d_body)
            # The test server answers a hash of the prompt: equal texts, equal prompts.
            mismatches += d_text != g_text
            if i >= warmup:
                direct_ms.append(d)
                gateway_ms.append(g)
    diff = [g - d for g, d in zip(gateway_ms, direct_ms, strict=True)]
    d_p, g_p = bl.pcts(direct_ms), bl.pcts(gateway_ms)
    size = max(len(diff) // blocks, 1)
    block_p50 = [
        bl.median(gateway_ms[k:k + size]) - bl.median(direct_ms[k:k + size])
        for k in range(0, len(diff) - size + 1, size)
    ]
    return {
        "pairs": pairs, "warmup": warmup, "mismatches": mismatches,
        "direct": d_p, "gateway": g_p, "difference": bl.pcts(diff),
        "overhead_p50": g_p["p50"] - d_p["p50"], "overhead_p99": g_p["p99"] - d_p["p99"],
        "overhead_p50_blocks": block_p50,
    }


def measure_throughput(backend: bl.Proc, gateway: bl.Proc, *, generator: str, seconds: float,
                       rounds: int, connections: int, context_bytes: int = 0) -> dict[str, Any]:
    """Uncached FIM through the gateway vs the same load at the test server, interleaved."""
    tag = secrets.token_hex(4)
    prompt, stop = bl.gateway_prompt(bl.prefix_for(tag + "d", MARK, context_bytes))
    targets = {
        "direct": (backend.url, "/v1/completions", bl.completions_body(
            prompt, stop, temperature=bl.UNCACHED_TEMPERATURE)),
        "gateway": (gateway.url, "/api/ai/fim", bl.fim_body(
            bl.prefix_for(tag + "g", MARK, context_bytes),
            temperature=bl.UNCACHED_TEMPERATURE)),
    }
    watch = [gateway, backend]
    for name, (url, path, body) in targets.items():  # warm-up, not reported
        bl.run_load(generator, url, path, body, target=name, seconds=1,
                    connections=connections, watch=watch, marker=MARK)
    runs: list[bl.LoadResult] = []
    for r in range(rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            url, path, body = targets[name]
            runs.append(bl.run_load(generator, url, path, body, target=name, seconds=seconds,
                                    connections=connections, watch=watch, marker=MARK))
    return bl.summarize_runs(runs, list(targets))


# -- report ----------------------------------------------------------------------------


def overhead_table(o: dict[str, Any]) -> str:
    rows = []
    for name in ("direct", "gateway", "difference"):
        p = o[name]
        label = {"direct": "direct to test server", "gateway": "through gateway",
                 "difference": "per-pair difference"}[name]
        rows.append([label, bl.fmt_ms(p["p50"]), bl.fmt_ms(p["p90"]), bl.fmt_ms(p["p99"])])
    rows.append(["**overhead** (gateway − direct)", f"**{o['overhead_p50']:.2f}**", "",
                 f"**{o['overhead_p99']:.2f}**"])
    return bl.table(["uncached FIM, sequential (ms)", "p50", "p90", "p99"], rows)


def overhead_budgets(o: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [
        (f"gateway overhead p50 ≤ {BUDGET_P50_MS:g} ms", f"{o['overhead_p50']:.2f} ms",
         o["overhead_p50"] <= BUDGET_P50_MS),
        (f"gateway overhead p99 ≤ {BUDGET_P99_MS:g} ms", f"{o['overhead_p99']:.2f} ms",
         o["overhead_p99"] <= BUDGET_P99_MS),
    ]


def throughput_budgets(t: dict[str, Any]) -> list[tuple[str, str, bool]]:
    rps = t["gateway"]["rps"]
    return [(f"uncached FIM ≥ {BUDGET_RPS:,.0f} req/s at {t['connections']} clients",
             f"{rps:,.0f} req/s", rps >= BUDGET_RPS)]


def budgets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []
    if results.get("overhead"):
        out += overhead_budgets(results["overhead"])
    if results.get("throughput"):
        out += throughput_budgets(results["throughput"])
    if results.get("cache"):
        out += cache_latency.budgets(results["cache"])
    if results.get("chat"):
        out += chat_tools.budgets(results["chat"])
    return out


def overhead_report(o: dict[str, Any]) -> str:
    blocks = ", ".join(f"{v:.2f}" for v in o["overhead_p50_blocks"])
    return "\n".join([
        f"Uncached FIM (`temperature` {bl.UNCACHED_TEMPERATURE}, a new prefix of "
        f"{o['prefix_bytes']:,} bytes every request), {o['pairs']} interleaved pairs after "
        f"{o['warmup']} warm-up pairs, one sequential keep-alive client per side:", "",
        overhead_table(o), "",
        f"Overhead p50 in each quarter of the run: {blocks} ms. Answers that differed "
        f"between the two sides (a sign the prompts differ): {o['mismatches']}.", "",
        bl.budget_lines(overhead_budgets(o)),
    ])


def throughput_report(t: dict[str, Any]) -> str:
    ratio = t["gateway"]["rps"] / t["direct"]["rps"]
    return "\n".join([
        f"Uncached FIM (prefixes of {t['prefix_bytes']:,} bytes), {t['connections']} "
        f"concurrent keep-alive clients ({bl.generator_label(t['generator'])}), "
        f"{t['rounds']} interleaved rounds of {t['seconds']:g} s per target; "
        "CPU cores used = CPU seconds / wall seconds of each process during the runs "
        "(medians):", "",
        bl.throughput_table(t, {"direct": "test server alone (streamed /v1/completions)",
                             "gateway": "gateway (`/api/ai/fim`)"}, t["connections"]), "",
        f"Gateway throughput / test server alone: {ratio:.2f}. "
        + bl.ceiling_text(t["gateway"], "gateway"), "",
        bl.budget_lines(throughput_budgets(t)),
    ])


def sections(results: dict[str, Any]) -> dict[str, str]:
    """Markdown per measured part, each stamped with when and how it was produced."""
    stamp = bl.stamp(results)
    out: dict[str, str] = {}
    if results.get("overhead"):
        out["overhead"] = overhead_report(results["overhead"]) + stamp
    if results.get("throughput"):
        out["throughput"] = throughput_report(results["throughput"]) + stamp
    if results.get("cache"):
        out["cache"] = cache_latency.report(results["cache"]) + stamp
    if results.get("chat"):
        out["chat"] = chat_tools.report(results["chat"]) + stamp
    out["machine"] = bl.machine_report(results["machine"])
    return out


def main() -> None:
    bl.ensure_venv()
    parser = argparse.ArgumentParser(
        description="Gateway overhead, throughput and cache-hit benchmarks (see docstring).")
    parser.add_argument("--pairs", type=int, default=2000, help="timed latency pairs")
    parser.add_argument("--warmup", type=int, default=200, help="untimed pairs first")
    parser.add_argument("--seconds", type=float, default=6.0, help="per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--prefix-kb", type=float, default=0.0,
                        help="add this much code before the cursor (editors send 1-6 KB; "
                             "the default keeps prompts tiny to isolate fixed costs)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk when installed, else bench/loadgen.py")
    parser.add_argument("--cache-requests", type=int, default=3000,
                        help="timed cache hits per cache kind")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("overhead", "throughput", "cache", "chat"),
                        help="repeatable")
    parser.add_argument("--chat-requests", type=int, default=200,
                        help="sequential chat requests per block and kind")
    parser.add_argument("--chat-blocks", type=int, default=10, help="blocks per kind")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--write-docs", action="store_true",
                        help="update the generated sections of docs/benchmarks.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when a budget fails")
    opts = parser.parse_args()
    generator = bl.loadgen_name(opts.loadgen)
    context = int(opts.prefix_kb * 1024)
    started = time.monotonic()
    results: dict[str, Any] = {"machine": bl.machine(), "command": bl.command_line(),
                               "revision": bl.revision()}
    with bl.Stack() as stack:
        backend = stack.backend()
        gateway = stack.gateway(backend.url)
        if "overhead" not in opts.skip:
            print(f"latency: {opts.warmup} + {opts.pairs} interleaved pairs ...", flush=True)
            results["overhead"] = measure_overhead(backend, gateway, pairs=opts.pairs,
                                                   warmup=opts.warmup, context_bytes=context)
            results["overhead"]["prefix_bytes"] = len(bl.prefix_for("x" * 8, 0, context))
        if "throughput" not in opts.skip:
            print(f"throughput: {opts.rounds} rounds x 2 targets x {opts.seconds:g} s "
                  f"({generator}) ...", flush=True)
            t = measure_throughput(backend, gateway, generator=generator, seconds=opts.seconds,
                                   rounds=opts.rounds, connections=opts.connections,
                                   context_bytes=context)
            t.update(generator=generator, seconds=opts.seconds, rounds=opts.rounds,
                     connections=opts.connections,
                     prefix_bytes=len(bl.prefix_for("x" * 8, "1", context)))
            results["throughput"] = t
        if "cache" not in opts.skip:
            print("cache hits: memory and Redis ...", flush=True)
            results["cache"] = cache_latency.run(
                stack, backend, requests=opts.cache_requests, generator=generator,
                seconds=opts.seconds, rounds=opts.rounds, connections=opts.connections,
                memory_gateway=gateway)
        if "chat" not in opts.skip:
            print(f"chat: {opts.chat_blocks} x {opts.chat_requests} requests per kind ...",
                  flush=True)
            results["chat"] = chat_tools.measure(gateway, requests=opts.chat_requests,
                                                 blocks=opts.chat_blocks)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    parts = sections(results)
    print()
    for name in ("overhead", "throughput", "cache", "chat"):
        if name in parts:
            print(f"## {name}\n\n{parts[name]}")
    print(bl.table(["budget", "measured", "holds"],
                   [[b, m, bl.verdict(ok)] for b, m, ok in budgets(results)]))
    print(f"\n({results['elapsed_s']:.0f} s)")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if opts.write_docs:
        print(f"updated {bl.write_docs(parts)}")
    if results.get("overhead", {}).get("mismatches"):
        print("ERROR: the direct and gateway prompts differ; the comparison is not fair")
        sys.exit(2)
    if opts.check and not all(ok for _, _, ok in budgets(results)):
        sys.exit(1)


if __name__ == "__main__":
    main()
