"""Scaling: 1 against 2 workers, and balancing between three model servers.

    python bench/scale_test.py                      # both parts, 3 repeats (~8 minutes)
    python bench/scale_test.py --part workers --repeats 5 --write-docs

Workers: `mimiverse serve --workers N` (N = 1, 2; memory cache, primed on every worker)
in front of the OpenAI-compatible test server, each as a process of its own. For cache
hits and uncached FIM, the sustained rate at p99 <= --p99-ms is searched exactly as
bench/load_test.py does (open loop, bench/loadgen.py). Each repeat starts fresh processes;
the table gives the median of the repeats and the ratio of the medians. Then one window
at a fixed --cpu-rate gives the gateway's CPU per answer, all workers together.

Balancing: three test servers, two answering after --delay-s per token and one after ten
times that, behind one gateway whose completion route balances with each strategy in
turn; 8 closed-loop clients (bench/loadgen.py --connections 8) send uncached FIM for
--seconds. Shares are what each server counted (its /_control/stats); p50/p99 are the
clients'. Budget: least-busy sends the slow server at most 15 % of the requests.
"""

from __future__ import annotations

import argparse
import secrets
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx

import benchlib as bl
import load_test as lt

STRATEGIES = ("ordered", "least-busy", "latency")
SERVERS = ("fast-1", "fast-2", "slow")
SLOW_FACTOR = 10
CLIENTS = 8


# -- workers ---------------------------------------------------------------------------


def run_workers(workers: int, opts: argparse.Namespace) -> dict[str, float]:
    plan = lt.SearchPlan(start=opts.start_rate, min_rate=10, max_rate=20000, precision=0.1,
                         max_trials=opts.max_trials)
    rates: dict[str, float] = {}
    with bl.Stack() as stack:
        backend = stack.backend()
        gateway = stack.gateway(backend.url, args=["--workers", str(workers)],
                                name=f"gateway-{workers}w")
        for case in ("cached", "uncached"):
            print(f"{workers} worker(s), {case}:", flush=True)
            found = lt.run_case(case, gateway, backend, plan, opts)
            rates[case] = found["sustained_rps"]
            rates[f"{case}_cpu_ms"] = cpu_per_answer(case, gateway, backend, opts)
    return rates


def cpu_per_answer(case: str, gateway: bl.Proc, backend: bl.Proc,
                   opts: argparse.Namespace) -> float:
    """The gateway's CPU ms per answer (all workers together) at the same offered rate for
    1 and 2 workers: what a busy machine changes far less than the sustained rate."""
    body = lt.cached_body(gateway) if case == "cached" else lt.uncached_body(
        secrets.token_hex(4))
    result = bl.run_load("python", gateway.url, lt.FIM_PATH, body, target=case,
                         seconds=opts.seconds, connections=opts.connections,
                         watch=[gateway, backend], marker=lt.MARK, rate=opts.cpu_rate)
    return 1000 * result.cores[gateway.name] / result.rps if result.rps else 0.0


def workers_table(runs: dict[int, list[dict[str, float]]], p99_ms: float) -> str:
    rows = []
    for case in ("cached", "uncached"):
        one = median(r[case] for r in runs[1])
        two = median(r[case] for r in runs[2])
        rows.append([lt.CASES[case], f"{one:,.0f}", f"{two:,.0f}",
                     f"{two / one:.2f}x" if one else "-",
                     " / ".join(f"{r[case]:,.0f}" for r in runs[1]),
                     " / ".join(f"{r[case]:,.0f}" for r in runs[2])])
    cpu = [[lt.CASES[case], *(bl.fmt_ms(median(r[f"{case}_cpu_ms"] for r in runs[n]))
                              for n in (1, 2))] for case in ("cached", "uncached")]
    return (f"Sustained req/s at p99 <= {p99_ms:g} ms (median of {len(runs[1])} runs):\n\n"
            + bl.table(["case", "1 worker", "2 workers", "ratio", "runs, 1 worker",
                        "runs, 2 workers"], rows)
            + "\n\nGateway CPU per answer at the same offered rate (ms, all workers "
            "together, median):\n\n"
            + bl.table(["case", "1 worker", "2 workers"], cpu))


# -- balancing -------------------------------------------------------------------------


def balanced_config(urls: dict[str, str], strategy: str) -> str:
    names = ", ".join(f'"{n}"' for n in SERVERS)
    backends = "".join(f'[[backends]]\nname = "{n}"\nkind = "openai"\nurl = "{urls[n]}"\n\n'
                       for n in SERVERS)
    return (backends
            + f'[models.completion]\nmodel = "{bl.MODEL}"\nfamily = "{bl.FAMILY}"\n'
            f'backends = [{names}]\nbalance = "{strategy}"\n\n'
            f'[models.chat]\nmodel = "{bl.MODEL}"\nbackends = [{names}]\n\n'
            f'[models.embedding]\nmodel = "test-embed"\nbackends = [{names}]\n')


def served(server: bl.Proc) -> int:
    stats = httpx.get(f"{server.url}/_control/stats", trust_env=False, timeout=10).json()
    count: int = stats["requests"].get("/v1/completions", 0)
    return count


def run_strategy(strategy: str, opts: argparse.Namespace) -> dict[str, Any]:
    with bl.Stack() as stack:
        servers = {
            n: stack.backend("--delay-s", f"{opts.delay_s * (SLOW_FACTOR if n == 'slow' else 1):g}",
                             name=n)
            for n in SERVERS
        }
        gateway = stack.gateway("", name=f"gateway-{strategy}", config_text=balanced_config(
            {n: p.url for n, p in servers.items()}, strategy))
        body = lt.uncached_body(secrets.token_hex(4))
        result = bl.run_load("python", gateway.url, lt.FIM_PATH, body, target=strategy,
                             seconds=opts.seconds, connections=CLIENTS,
                             watch=[gateway, *servers.values()], marker=lt.MARK)
        counts = {n: served(p) for n, p in servers.items()}
    total = sum(counts.values()) or 1
    return {"share": {n: counts[n] / total for n in SERVERS}, "requests": result.requests,
            "errors": result.errors, "p50_ms": result.latency_p50_ms,
            "p99_ms": result.latency_p99_ms, "rps": result.rps}


def strategies_table(runs: dict[str, list[dict[str, Any]]], opts: argparse.Namespace) -> str:
    rows = []
    for strategy in STRATEGIES:
        rs = runs[strategy]
        rows.append([strategy, *(f"{100 * median(r['share'][n] for r in rs):.1f} %"
                                 for n in SERVERS),
                     f"{median(r['rps'] for r in rs):,.0f}",
                     bl.fmt_ms(median(r["p50_ms"] for r in rs)),
                     bl.fmt_ms(median(r["p99_ms"] for r in rs)),
                     str(sum(r["errors"] for r in rs))])
    slow = median(r["share"]["slow"] for r in runs["least-busy"])
    return (f"Three test servers ({opts.delay_s * 1000:g} ms per token; `slow`: "
            f"{SLOW_FACTOR}x), {CLIENTS} closed-loop clients, uncached FIM, "
            f"{opts.seconds:g} s per run, median of {len(runs['ordered'])} runs:\n\n"
            + bl.table(["balance", *(f"share {n}" for n in SERVERS), "req/s", "p50 ms",
                        "p99 ms", "errors"], rows)
            + "\n\n" + bl.budget_lines([(
                "least-busy: the slow server's share", f"{100 * slow:.1f} % (<= 15 %)",
                slow <= 0.15)]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Workers and balancing (see the docstring).")
    parser.add_argument("--part", action="append", choices=("workers", "balance"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=3.0, help="each window or run")
    parser.add_argument("--start-rate", type=float, default=400.0)
    parser.add_argument("--max-trials", type=int, default=9)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pause", type=float, default=0.5)
    parser.add_argument("--delay-s", type=float, default=0.002, help="fast servers, per token")
    parser.add_argument("--cpu-rate", type=float, default=300.0,
                        help="req/s of the window that measures CPU per answer")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-docs", action="store_true")
    return parser.parse_args()


def main() -> None:
    bl.ensure_venv()
    opts = parse_args()
    parts = opts.part or ["workers", "balance"]
    started = time.monotonic()
    results: dict[str, Any] = {"machine": bl.machine(), "command": bl.command_line(),
                               "revision": bl.revision()}
    sections: dict[str, str] = {}
    if "workers" in parts:
        runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for _ in range(opts.repeats):
            for workers in (1, 2):
                runs[workers].append(run_workers(workers, opts))
        results["workers"] = runs
        sections["scale-workers"] = workers_table(runs, opts.p99_ms)
    if "balance" in parts:
        by_strategy: dict[str, list[dict[str, Any]]] = {s: [] for s in STRATEGIES}
        for _ in range(opts.repeats):
            for strategy in STRATEGIES:
                by_strategy[strategy].append(run_strategy(strategy, opts))
        results["balance"] = by_strategy
        sections["scale-balance"] = strategies_table(by_strategy, opts)
    bl.publish(results, sections, started, opts.json, opts.write_docs)


if __name__ == "__main__":
    main()
