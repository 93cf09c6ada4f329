"""Cache hits end to end over HTTP on loopback: memory and Redis.

    python bench/cache_latency.py               # about 45 s on 2 cores
    python bench/cache_latency.py --write-docs

Starts the OpenAI-compatible test server, a throwaway `redis-server` (no persistence) and
two `mimiverse serve` processes, one with `[cache] kind = "memory"`, one with
`kind = "redis"`. One deterministic FIM request (temperature 0) is sent once to fill each
cache, then repeated: interleaved sequential hits on both (and GET /health/live, the floor
any request pays for HTTP, uvicorn and FastAPI), then C concurrent clients per cache kind.
`bench/gateway_overhead.py` runs this too.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from typing import Any

import benchlib as bl

BUDGET_MEMORY_P50_MS = 2.0
BUDGET_REDIS_P50_MS = 3.0
LABELS = {"memory": '`kind = "memory"`', "redis": '`kind = "redis"`',
          "floor": "floor: `GET /health/live`"}


def measure_latency(gateways: dict[str, bl.Proc], body: dict[str, Any], *,
                    requests: int, warmup: int) -> dict[str, Any]:
    """Interleaved sequential cache hits on each gateway, plus the /health/live floor."""
    import httpx

    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    clients = {name: httpx.Client(base_url=g.url, trust_env=False, timeout=10)
               for name, g in gateways.items()}
    floor_client = httpx.Client(base_url=gateways["memory"].url, trust_env=False, timeout=10)
    times: dict[str, list[float]] = {name: [] for name in [*gateways, "floor"]}
    try:
        for client in clients.values():  # fill the cache; later answers must be hits
            client.post("/api/ai/fim", content=raw, headers=headers).raise_for_status()

        def hit(name: str) -> float:
            started = time.perf_counter_ns()
            response = clients[name].post("/api/ai/fim", content=raw, headers=headers)
            elapsed = (time.perf_counter_ns() - started) / 1e6
            if response.status_code != 200 or response.json().get("cached") is not True:
                raise RuntimeError(f"{name}: expected a cache hit, got {response.text[:200]}")
            return elapsed

        def floor(_: str) -> float:
            started = time.perf_counter_ns()
            response = floor_client.get("/health/live")
            elapsed = (time.perf_counter_ns() - started) / 1e6
            response.raise_for_status()
            return elapsed

        calls = [(name, hit) for name in gateways] + [("floor", floor)]
        with bl.gc_paused():
            for i in range(warmup + requests):
                k = i % len(calls)  # rotate who goes first
                for name, call in calls[k:] + calls[:k]:
                    elapsed = call(name)
                    if i >= warmup:
                        times[name].append(elapsed)
    finally:
        for client in [*clients.values(), floor_client]:
            client.close()
    return {"requests": requests, "warmup": warmup,
            **{name: bl.pcts(values) for name, values in times.items()}}


def measure_throughput(gateways: dict[str, bl.Proc], body: dict[str, Any], *, generator: str,
                       seconds: float, rounds: int, connections: int,
                       redis: bl.Proc | None) -> dict[str, Any]:
    watch = [*gateways.values(), *([redis] if redis else [])]
    for name, g in gateways.items():  # warm-up, not reported
        bl.run_load(generator, g.url, "/api/ai/fim", body, target=name, seconds=1,
                    connections=connections, watch=watch)
    runs: list[bl.LoadResult] = []
    names = list(gateways)
    for r in range(rounds):
        for name in names if r % 2 == 0 else list(reversed(names)):
            runs.append(bl.run_load(generator, gateways[name].url, "/api/ai/fim", body,
                                    target=name, seconds=seconds, connections=connections,
                                    watch=watch))
    out = bl.summarize_runs(runs, names)
    out.update(generator=generator, seconds=seconds, rounds=rounds, connections=connections,
               process={name: g.name for name, g in gateways.items()})
    return out


def run(stack: bl.Stack, backend: bl.Proc, *, requests: int, generator: str, seconds: float,
        rounds: int, connections: int, memory_gateway: bl.Proc | None = None,
        warmup: int = 200) -> dict[str, Any]:
    redis = stack.redis()
    gateways = {
        "memory": memory_gateway or stack.gateway(backend.url, name="gateway-memory"),
        "redis": stack.gateway(backend.url, cache="redis", redis_url=redis.url,
                               name="gateway-redis"),
    }
    body = bl.fim_body(bl.prefix_for(secrets.token_hex(4), "cached"), temperature=0.0)
    latency = measure_latency(gateways, body, requests=requests, warmup=warmup)
    throughput = measure_throughput(gateways, body, generator=generator, seconds=seconds,
                                    rounds=rounds, connections=connections, redis=redis)
    return {"latency": latency, "throughput": throughput}


def budgets(c: dict[str, Any]) -> list[tuple[str, str, bool]]:
    lat = c["latency"]
    return [
        (f"memory cache hit p50 ≤ {BUDGET_MEMORY_P50_MS:g} ms", f"{lat['memory']['p50']:.2f} ms",
         lat["memory"]["p50"] <= BUDGET_MEMORY_P50_MS),
        (f"Redis cache hit p50 ≤ {BUDGET_REDIS_P50_MS:g} ms", f"{lat['redis']['p50']:.2f} ms",
         lat["redis"]["p50"] <= BUDGET_REDIS_P50_MS),
    ]


def report(c: dict[str, Any]) -> str:
    lat, t = c["latency"], c["throughput"]
    rows = [[LABELS[name], bl.fmt_ms(lat[name]["p50"]), bl.fmt_ms(lat[name]["p90"]),
             bl.fmt_ms(lat[name]["p99"])] for name in ("memory", "redis", "floor")]
    return "\n".join([
        f"The same FIM request (temperature 0) after one request that fills the cache: "
        f"{lat['requests']} sequential hits per cache kind after {lat['warmup']} warm-up, "
        "interleaved with each other and with the floor, one keep-alive client each:", "",
        bl.table(["cache hit, sequential (ms)", "p50", "p90", "p99"], rows), "",
        f"Cached throughput, {t['connections']} concurrent keep-alive clients "
        f"({bl.generator_label(t['generator'])}), {t['rounds']} interleaved rounds of "
        f"{t['seconds']:g} s per kind (medians):", "",
        bl.throughput_table(t, {"memory": LABELS["memory"], "redis": LABELS["redis"]},
                            t["connections"]), "",
        " ".join(f"{LABELS[k]}: " + bl.ceiling_text(t[k], t["process"][k])
                 for k in ("memory", "redis")), "",
        bl.budget_lines(budgets(c)),
    ])


def main() -> None:
    bl.ensure_venv()
    parser = argparse.ArgumentParser(description="Cache-hit latency and throughput, memory "
                                                 "and Redis (see the module docstring).")
    parser.add_argument("--requests", type=int, default=3000, help="timed hits per kind")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=6.0, help="per throughput run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--write-docs", action="store_true",
                        help="update the cache section of docs/benchmarks.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when a budget fails")
    opts = parser.parse_args()
    generator = bl.loadgen_name(opts.loadgen)
    results: dict[str, Any] = {"machine": bl.machine(), "command": bl.command_line(),
                               "revision": bl.revision()}
    with bl.Stack() as stack:
        backend = stack.backend()
        results["cache"] = run(stack, backend, requests=opts.requests, generator=generator,
                               seconds=opts.seconds, rounds=opts.rounds,
                               connections=opts.connections, warmup=opts.warmup)
    text = report(results["cache"]) + bl.stamp(results)
    print(text)
    if opts.write_docs:
        machine = bl.machine_report(results["machine"])
        print(f"updated {bl.write_docs({'cache': text, 'machine': machine})}")
    if opts.check and not all(ok for _, _, ok in budgets(results["cache"])):
        sys.exit(1)


if __name__ == "__main__":
    main()
