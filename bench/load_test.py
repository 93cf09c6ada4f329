"""Sustained requests/s at a fixed p99, open loop: FIM cache hits and uncached FIM.

    python bench/load_test.py                    # about 1.5 minutes on 2 cores
    python bench/load_test.py --seconds 2        # shorter windows: quicker, noisier
    python bench/load_test.py --p99-ms 20 --write-docs

Starts the OpenAI-compatible test server (tests/servers/openai_server.py, which answers at
once) and `mimiverse serve --config FILE` (memory cache) as processes of their own, and
drives POST /api/ai/fim from a third: `bench/loadgen.py --rate R`, one asyncio loop on raw
keep-alive connections. Open loop: request i is due at i / R seconds whatever happened to
the ones before it, and its latency runs from when it was due, so a server that falls
behind shows its queueing in the latency instead of slowing the generator down.

Two cases, one after the other on the same gateway:

- cache hits: one deterministic FIM request (temperature 0) is sent once to fill the
  memory cache (and checked to come back `cached`), then the same body at every request;
- uncached: `temperature` 0.2 and a prefix that is new for every request, so neither the
  cache nor single-flight can answer; every request costs one call of the test server.

Then an overload: twice the sustained uncached rate (or --overload-rate), offered for one
window to the gateway with its default limits and to a second gateway with tight ones
(`[limits] max_concurrent = 4, max_queue = 4`). The first lets everything queue, so the
latency of every request grows with the backlog; the second turns the excess away at once
with 429 and keeps the latency of the requests it lets in.

For each case the rate is searched: start at --start-rate, double while a window of
--seconds passes, then bisect between the highest rate that passed and the lowest that
failed until they are within --precision. A window passes when every request is answered
with 2xx (none still pending --drain seconds after the last was due) and p99 <= --p99-ms.
The sustained rate is the highest that passed.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as bl

FIM_PATH = "/api/ai/fim"
MARK = "@N@"
CASES = {"cached": "cache hits (memory)", "uncached": "uncached FIM (test server)"}
TIGHT_LIMITS = {"max_concurrent": 4, "max_queue": 4, "queue_timeout_s": 1}


@dataclass
class Trial:
    """One window at one offered rate, and whether it kept the target."""

    rate: float
    result: bl.LoadResult
    passed: bool


@dataclass
class SearchPlan:
    """How the rate search steps: from where, how far, and when to stop."""

    start: float
    min_rate: float
    max_rate: float
    precision: float  # stop bisecting once failed / passed <= 1 + precision
    max_trials: int


def window_passes(result: bl.LoadResult, p99_ms: float) -> bool:
    return result.requests > 0 and result.errors == 0 and result.latency_p99_ms <= p99_ms


def next_rate(passed: float | None, failed: float | None, plan: SearchPlan) -> float | None:
    """Double up from a pass, halve down from a fail, bisect between; None when done."""
    if failed is None:
        assert passed is not None
        return min(passed * 2, plan.max_rate) if passed < plan.max_rate else None
    if passed is None:
        lower = round(failed / 2)
        return lower if lower >= plan.min_rate else None
    if failed / passed <= 1 + plan.precision:
        return None
    middle = round((passed + failed) / 2)
    return middle if passed < middle < failed else None


def search_rate(measure: Callable[[float], bl.LoadResult], plan: SearchPlan,
                p99_ms: float) -> list[Trial]:
    """The trials of one case, in the order run."""
    trials: list[Trial] = []
    passed: float | None = None
    failed: float | None = None
    rate: float | None = plan.start
    while rate is not None and len(trials) < plan.max_trials:
        result = measure(rate)
        ok = window_passes(result, p99_ms)
        trials.append(Trial(rate, result, ok))
        print(f"  {rate:7.0f} req/s offered: {trial_line(result)} -> "
              f"{'pass' if ok else 'FAIL'}", flush=True)
        if ok:
            passed = rate if passed is None else max(passed, rate)
        else:
            failed = rate if failed is None else min(failed, rate)
        rate = next_rate(passed, failed, plan)
    return trials


def trial_line(r: bl.LoadResult) -> str:
    return (f"{r.rps:.0f} answered/s, p50 {r.latency_p50_ms:.1f} / p90 {r.latency_p90_ms:.1f}"
            f" / p99 {r.latency_p99_ms:.1f} ms, {r.errors} errors, "
            f"{r.connections} connections")


# -- the two cases -----------------------------------------------------------------------


def cached_body(gateway: bl.Proc) -> dict[str, Any]:
    """A temperature-0 FIM body, sent until its answer is a memory-cache hit, each time
    on a new connection (with several workers, each has its own memory cache: they take
    the connections in turn, so a run of hits means most of them hold it)."""
    import httpx

    body = bl.fim_body(bl.prefix_for(secrets.token_hex(4), "cached"), temperature=0.0)
    hits = 0
    for _ in range(40):
        answer = httpx.post(f"{gateway.url}{FIM_PATH}", json=body, trust_env=False, timeout=10)
        if answer.status_code != 200:
            raise RuntimeError(f"expected a cache hit, got {answer.status_code} "
                               f"{answer.text[:200]}")
        hits = hits + 1 if answer.json().get("cached") is True else 0
        if hits == 8:
            return body
    raise RuntimeError("the answer never came from the cache 8 times in a row")


def check_uncached(gateway: bl.Proc, body: dict[str, Any]) -> None:
    """Send a temperature > 0 body twice: neither answer may come from the cache."""
    import httpx

    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client:
        for _ in range(2):
            answer = client.post(FIM_PATH, json=body)
            if answer.status_code != 200 or answer.json().get("cached") is not False:
                raise RuntimeError(f"expected an uncached answer, got {answer.text[:200]}")


def uncached_body(tag: str, n: str = MARK) -> dict[str, Any]:
    """A FIM body, temperature > 0; with MARK the generator numbers each request's prefix."""
    return bl.fim_body(bl.prefix_for(tag, n), temperature=bl.UNCACHED_TEMPERATURE)


def run_case(case: str, gateway: bl.Proc, backend: bl.Proc, plan: SearchPlan,
             opts: argparse.Namespace) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    if case == "uncached":
        check_uncached(gateway, uncached_body(tag, "probe"))
    body = cached_body(gateway) if case == "cached" else None
    trial_no = 0

    def measure(rate: float) -> bl.LoadResult:
        nonlocal trial_no
        trial_no += 1
        # A fresh prefix family per window: the generator's counter restarts at 1 each time.
        sent = body or uncached_body(f"{tag}t{trial_no}")
        result = bl.run_load("python", gateway.url, FIM_PATH, sent, target=case,
                             seconds=opts.seconds, connections=opts.connections,
                             watch=[gateway, backend], marker=MARK, rate=rate)
        time.sleep(opts.pause)  # let the gateway finish what a failed window left behind
        return result

    print(f"{CASES[case]}: p99 <= {opts.p99_ms:g} ms, windows of {opts.seconds:g} s",
          flush=True)
    trials = search_rate(measure, plan, opts.p99_ms)
    best = max((t for t in trials if t.passed), key=lambda t: t.rate, default=None)
    return {
        "sustained_rps": best.rate if best else 0.0,
        "sustained": best.result.as_dict() if best else None,
        "trials": [{"rate": t.rate, "passed": t.passed, **t.result.as_dict()}
                   for t in trials],
    }


def run_overload(stack: bl.Stack, gateway: bl.Proc, backend: bl.Proc, rate: float,
                 opts: argparse.Namespace) -> dict[str, Any]:
    limits = "\n[limits]\n" + "".join(f"{k} = {v}\n" for k, v in TIGHT_LIMITS.items())
    limited = stack.gateway(backend.url, name="gateway-limited", extra=limits)
    tag = secrets.token_hex(4)
    print(f"overload: {rate:,.0f} req/s for {opts.seconds:g} s on each gateway", flush=True)
    runs = {}
    for label, target in (("default limits", gateway), ("tight limits", limited)):
        result = bl.run_load("python", target.url, FIM_PATH, uncached_body(f"{tag}{label[0]}"),
                             target=label, seconds=opts.seconds, connections=opts.connections,
                             watch=[target, backend], marker=MARK, rate=rate)
        print(f"  {label}: {trial_line(result)}, {result.refused} refused", flush=True)
        runs[label] = result.as_dict()
        time.sleep(opts.pause)
    return {"rate": rate, "runs": runs}


# -- report ------------------------------------------------------------------------------


def overload_table(overload: dict[str, Any]) -> str:
    rows = []
    for label, r in overload["runs"].items():
        answered = r["requests"] / r["seconds"]
        refused = r["refused"] / r["seconds"]
        rows.append([label, f"{r['offered_rps']:,.0f}", f"{answered:,.0f}", f"{refused:,.0f}",
                     bl.fmt_ms(r["latency_p50_ms"]), bl.fmt_ms(r["latency_p90_ms"]),
                     bl.fmt_ms(r["latency_p99_ms"]), r["errors"]])
    return bl.table(["gateway", "offered req/s", "answered/s", "refused (429)/s",
                     "p50 ms", "p90 ms", "p99 ms", "errors"], rows)


def summary_table(cases: dict[str, Any], p99_ms: float) -> str:
    rows = []
    for case, c in cases.items():
        s = c["sustained"]
        if s is None:
            rows.append([CASES[case], f"none (p99 > {p99_ms:g} ms at the lowest rate)",
                         "", "", "", "", len(c["trials"])])
            continue
        rows.append([CASES[case], f"**{c['sustained_rps']:,.0f}**",
                     bl.fmt_ms(s["latency_p50_ms"]), bl.fmt_ms(s["latency_p90_ms"]),
                     bl.fmt_ms(s["latency_p99_ms"]), s["errors"], len(c["trials"])])
    return bl.table(["case", f"sustained req/s (p99 ≤ {p99_ms:g} ms)", "p50 ms", "p90 ms",
                     "p99 ms", "errors", "windows"], rows)


def trials_table(case: str, trials: list[dict[str, Any]]) -> str:
    rows = []
    for t in trials:
        cores = t["cores"]
        rows.append([
            f"{t['rate']:,.0f}", f"{t['rps']:,.0f}", bl.fmt_ms(t["latency_p50_ms"]),
            bl.fmt_ms(t["latency_p90_ms"]), bl.fmt_ms(t["latency_p99_ms"]), t["errors"],
            t["connections"], bl.fmt_ms(t["schedule_lag_p99_ms"]),
            f"{cores.get('gateway', 0.0):.2f} / {cores.get('backend', 0.0):.2f} / "
            f"{cores.get('loadgen.py', 0.0):.2f} / {t['other_cores']:.2f}",
            "pass" if t["passed"] else "**fail**",
        ])
    return bl.table([f"{case}: offered req/s", "answered/s", "p50", "p90", "p99", "errors",
                     "conns", "lag p99", "cores: gateway / backend / loadgen / others",
                     "verdict"], rows)


def report(results: dict[str, Any]) -> str:
    o = results["options"]
    parts = [
        f"Open loop on POST {FIM_PATH} (`bench/loadgen.py --rate`, one asyncio loop, up to "
        f"{o['connections']} keep-alive connections opened as the load needs them); each "
        f"window offers a fixed rate for {o['seconds']:g} s, latency counted from when each "
        f"request was due; a window passes with p99 ≤ {o['p99_ms']:g} ms, every answer 2xx "
        f"and none pending {o['drain']:g} s after the last was due. Rates from "
        f"{o['start_rate']:g} req/s, doubled while passing, then bisected to "
        f"{o['precision']:.0%}. Cache hits: one temperature-0 request repeated after it "
        "filled the memory cache; uncached: `temperature` 0.2 and a new prefix every "
        "request, answered by the test server.", "",
        summary_table(results["cases"], o["p99_ms"]), "",
        "Every window tried, in order (ms; conns: connections the generator opened; lag: how "
        "late the generator itself sent; cores: CPU seconds per wall second of each "
        "process, `others` being work the benchmark did not start):", "",
    ]
    for case, c in results["cases"].items():
        parts += [trials_table(CASES[case], c["trials"]), ""]
    overload = results.get("overload")
    if overload:
        limits = ", ".join(f"{k} = {v}" for k, v in TIGHT_LIMITS.items())
        parts += [
            f"Overload: {overload['rate']:,.0f} req/s of uncached FIM for {o['seconds']:g} s, "
            "to the gateway with its default limits (per client: 64 in flight, 256 queued) "
            f"and to one with `[limits] {limits}`; latencies are of the answered requests "
            "(2xx), counted from when each was due:", "",
            overload_table(overload), "",
        ]
    return "\n".join(parts).rstrip()


# -- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Sustained req/s at a fixed p99, open loop "
                                                 "(see the module docstring).")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="the latency target")
    parser.add_argument("--seconds", type=float, default=4.0, help="each window's length")
    parser.add_argument("--start-rate", type=float, default=100.0, help="req/s of window 1")
    parser.add_argument("--min-rate", type=float, default=10.0)
    parser.add_argument("--max-rate", type=float, default=20000.0)
    parser.add_argument("--precision", type=float, default=0.1,
                        help="stop when the lowest failing rate is within this of the "
                             "highest passing one")
    parser.add_argument("--max-trials", type=int, default=12, help="windows per case")
    parser.add_argument("--connections", type=int, default=64,
                        help="the most keep-alive connections the generator opens")
    parser.add_argument("--drain", type=float, default=2.0,
                        help="seconds allowed for the last answers after a window")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between windows")
    parser.add_argument("--case", action="append", choices=tuple(CASES),
                        help="repeatable; default both")
    parser.add_argument("--overload-rate", type=float, default=None,
                        help="req/s of the overload window (default: twice the sustained "
                             "uncached rate); 0 skips it")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--write-docs", action="store_true",
                        help="update the load section of docs/benchmarks.md")
    return parser.parse_args()


def main() -> None:
    bl.ensure_venv()
    opts = parse_args()
    plan = SearchPlan(start=opts.start_rate, min_rate=opts.min_rate, max_rate=opts.max_rate,
                      precision=opts.precision, max_trials=opts.max_trials)
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": bl.machine(), "command": bl.command_line(), "revision": bl.revision(),
        "options": {k: v for k, v in vars(opts).items() if k not in ("json", "write_docs")},
        "cases": {},
    }
    with bl.Stack() as stack:
        backend = stack.backend()
        gateway = stack.gateway(backend.url)
        for case in opts.case or list(CASES):
            results["cases"][case] = run_case(case, gateway, backend, plan, opts)
        uncached = results["cases"].get("uncached", {}).get("sustained_rps", 0.0)
        overload_rate = opts.overload_rate if opts.overload_rate is not None else 2 * uncached
        if overload_rate:
            results["overload"] = run_overload(stack, gateway, backend, overload_rate, opts)
    bl.publish(results, {"load": report(results)}, started, opts.json, opts.write_docs)


if __name__ == "__main__":
    main()
