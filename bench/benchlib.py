"""Plumbing shared by the benchmarks: processes, configs, load generators, statistics.

Only the standard library is imported at module level, so a script can re-execute itself
under the project's virtual environment (`ensure_venv`) before anything else is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The request every benchmark sends: what an editor asks for in the middle of a line.
MODEL = "test-model"
FAMILY = "qwen2.5-coder"
SUFFIX = "\n\nprint(total)\n"
MAX_TOKENS = 64
UNCACHED_TEMPERATURE = 0.2  # > 0 and no seed: never cached, never shared in flight
MAX_PROMPT_TOKENS = 2048  # [models.completion] max_prompt_tokens: the default, left as is


def ensure_venv() -> None:
    """Re-run this script with the project's virtualenv Python when started with another."""
    python = VENV / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(python, [str(python), *sys.argv])


def python_exe() -> str:
    python = VENV / "bin" / "python"
    return str(python) if python.exists() else sys.executable


def mimiverse_exe() -> str:
    exe = VENV / "bin" / "mimiverse"
    if exe.exists():
        return str(exe)
    found = shutil.which("mimiverse")
    if found is None:
        raise SystemExit("the `mimiverse` command is not installed: run `make install` first")
    return found


CONTEXT_LINE = "    total = total + compute(items[index], factor=2.5)  # running sum\n"


def prefix_for(tag: str, n: int | str, context_bytes: int = 0) -> str:
    """A prefix unique to (tag, n), so no two benchmark requests share a prompt; with
    `context_bytes`, about that much more code before the cursor, as an editor sends."""
    body = CONTEXT_LINE * (context_bytes // len(CONTEXT_LINE))
    # The unique part sits at the cursor: it survives any trimming of the prefix's head.
    head = "import math\n\n\ndef area(items, index):\n    total = 0\n"
    return f"{head}{body}    total_{tag}_{n} = "


def fim_body(prefix: str, *, temperature: float) -> dict[str, Any]:
    """The body of our POST /api/ai/fim."""
    return {"prefix": prefix, "suffix": SUFFIX, "max_tokens": MAX_TOKENS,
            "temperature": temperature}


def gateway_prompt(prefix: str) -> tuple[str, tuple[str, ...]]:
    """The prompt and stop strings the gateway sends upstream for a FIM request with this
    prefix and SUFFIX: trimmed to the prompt budget and rendered by the family's template."""
    from mimiverse.fim.prompt import trim_to_budget
    from mimiverse.fim.templates import template_for

    template = template_for(MODEL, FAMILY)
    kept_prefix, kept_suffix = trim_to_budget(prefix, SUFFIX, MAX_PROMPT_TOKENS)
    return template.render(kept_prefix, kept_suffix), tuple(template.stop)


def completions_body(prompt: str, stop: Sequence[str], *, temperature: float) -> dict[str, Any]:
    """What the gateway's OpenAI backend sends upstream for a FIM request (streaming)."""
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": temperature,
            "stream": True, "stream_options": {"include_usage": True}, "stop": list(stop),
            "prompt": prompt}


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, all its threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants alive now (from /proc/<pid>/task/<tid>/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                queue += [int(c) for c in (task / "children").read_text().split()]
    return found


def machine_jiffies() -> tuple[int, int, int]:
    """(process time, interrupt time, total) in jiffies over all CPUs, from /proc/stat.

    Process time is user + nice + system; interrupt time (irq + softirq) is mostly the
    kernel moving loopback packets, charged to no process. Steal counts in the total only.
    """
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], v[5] + v[6], sum(v[:8])


@dataclass(eq=False)
class Proc:
    """A server process of the benchmark, stopped with its stack."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        """CPU time of the process and its live children (`serve --workers N`)."""
        return sum(cpu_seconds(pid) for pid in process_tree(self.pid))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _http_ok(port: int, path: str) -> bool:
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(request)
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _redis_ok(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Stack:
    """The processes of one benchmark run, in a temporary directory, stopped on exit."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mimiverse-bench-")
        self.dir = Path(self._tmp.name)
        self.procs: list[Proc] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self._tmp.cleanup()

    def _spawn(self, name: str, cmd: Sequence[str], url: str, ready: Any,
               startup_s: float = 30.0, cpus: Sequence[int] | None = None) -> Proc:
        log = self.dir / f"{name}.log"
        pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
        with open(log, "wb") as out:
            popen = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=pin)
        proc = Proc(name, popen, log, url)
        self.procs.append(proc)
        deadline = time.monotonic() + startup_s
        while not ready():
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {' '.join(cmd)}\n{proc.tail()}")
            time.sleep(0.05)
        return proc

    def backend(self, *args: str, name: str = "backend") -> Proc:
        """The OpenAI-compatible test server, as its own process (`args`: its options,
        e.g. --delay-s 0.01)."""
        port = free_port()
        cmd = [python_exe(), "-m", "tests.servers.openai_server", "--host", HOST,
               "--port", str(port), *args]
        return self._spawn(name, cmd, f"http://{HOST}:{port}",
                           lambda: _http_ok(port, "/health"))

    def fixed_upstream(self, name: str = "upstream") -> Proc:
        """nginx answering every POST /v1/completions with the same short SSE completion:
        an OpenAI-compatible model server that costs almost no CPU (about 0.01 ms per
        answer), as a model server on a machine of its own would cost this one nothing.
        Needs nginx (apt-get install nginx-light)."""
        exe = shutil.which("nginx")
        if exe is None:
            raise SystemExit("nginx is not installed (apt-get install nginx-light), or use "
                             "--upstream test-server")
        port = free_port()
        conf = self.dir / f"{name}.conf"
        conf.write_text(nginx_config(port, self.dir / name), encoding="utf-8")
        (self.dir / name).mkdir()
        cmd = [exe, "-p", str(self.dir / name), "-c", str(conf), "-e", "stderr"]
        return self._spawn(name, cmd, f"http://{HOST}:{port}",
                           lambda: _http_ok(port, "/health"))

    def redis(self) -> Proc:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        port = free_port()
        cmd = [exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
               "--dir", str(self.dir)]
        return self._spawn("redis", cmd, f"redis://{HOST}:{port}/0", lambda: _redis_ok(port))

    def gateway(self, backend_url: str, *, cache: str = "memory",
                redis_url: str | None = None, name: str = "gateway", extra: str = "",
                args: Sequence[str] = (), config_text: str | None = None,
                cpus: Sequence[int] | None = None) -> Proc:
        """`mimiverse serve --config FILE [args]`: the real CLI entry, as its own process;
        `extra`: more TOML tables for its config file; `config_text`: the whole file
        instead (its [server] port is set here); `cpus`: the only CPUs it and its workers
        may run on."""
        port = free_port()
        config = self.dir / f"{name}.toml"
        text = (gateway_config(port, backend_url, cache=cache, redis_url=redis_url) + extra
                if config_text is None else
                f'[server]\nhost = "{HOST}"\nport = {port}\nlog_level = "warning"\n'
                + config_text)
        config.write_text(text, encoding="utf-8")
        cmd = [mimiverse_exe(), "serve", "--config", str(config), *args]
        return self._spawn(name, cmd, f"http://{HOST}:{port}",
                           lambda: _http_ok(port, "/health/live"), cpus=cpus)


def fixed_completion_sse(words: Sequence[str] = ("<rep", "ly:", "fixed>")) -> str:
    """An OpenAI streamed completion of `words`, with usage on the last event."""
    def event(text: str, finish: str | None, **extra: Any) -> str:
        data = {"id": "cmpl-fixed", "object": "text_completion", "created": 1700000000,
                "model": MODEL, "choices": [{"text": text, "index": 0, "logprobs": None,
                                             "finish_reason": finish}], **extra}
        return "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"

    usage = {"prompt_tokens": 8, "completion_tokens": len(words),
             "total_tokens": 8 + len(words)}
    return ("".join(event(w, None) for w in words) + event("", "stop", usage=usage)
            + "data: [DONE]\n\n")


def nginx_config(port: int, prefix: Path) -> str:
    """nginx in the foreground, one worker, nothing logged, `fixed_completion_sse` for
    every POST /v1/completions (the request body is read and dropped)."""
    body = json.dumps(fixed_completion_sse())  # a double-quoted string nginx reads back
    return (
        "daemon off;\nworker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\nerror_log stderr warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n  keepalive_requests 1000000;\n"
        f"  client_body_temp_path {prefix};\n"
        f"  server {{\n    listen {HOST}:{port};\n"
        "    location = /health { return 200 'ok'; }\n"
        "    location = /v1/completions { default_type text/event-stream; "
        f"return 200 {body}; }}\n"
        "    location / { return 404; }\n  }\n}\n"
    )


def gateway_config(port: int, backend_url: str, *, cache: str = "memory",
                   redis_url: str | None = None) -> str:
    lines = [
        "[server]", f'host = "{HOST}"', f"port = {port}", 'log_level = "warning"', "",
        "[[backends]]", 'name = "bench"', 'kind = "openai"', f'url = "{backend_url}"', "",
        "[models.completion]", f'model = "{MODEL}"', f'family = "{FAMILY}"',
        'backends = ["bench"]', "",
        "[models.chat]", f'model = "{MODEL}"', 'backends = ["bench"]', "",
        "[models.embedding]", 'model = "test-embed"', 'backends = ["bench"]', "",
        "[cache]", f'kind = "{cache}"',
    ]
    if redis_url is not None:
        lines.append(f'url = "{redis_url}"')
    return "\n".join(lines) + "\n"


# -- statistics ------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def pcts(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{q:g}": percentile(ordered, q) for q in qs}


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


# -- load generators -------------------------------------------------------------------


@dataclass
class LoadResult:
    """One timed run of a load generator against one URL, and who used the CPU meanwhile."""

    target: str
    generator: str
    connections: int
    seconds: float
    requests: int
    errors: int
    rps: float
    latency_p50_ms: float
    latency_p99_ms: float
    cores: dict[str, float] = field(default_factory=dict)  # process -> CPU s per wall s
    other_cores: float = 0.0  # processes we did not start (other work on the machine)
    irq_cores: float = 0.0  # interrupts and softirqs: mostly loopback networking
    # Open loop only (bench/loadgen.py --rate): what was offered, and the generator's state.
    offered_rps: float = 0.0
    latency_p90_ms: float = 0.0
    schedule_lag_p99_ms: float = 0.0  # how late the generator itself handed requests over
    unfinished: int = 0  # not answered by the end of the drain (counted in errors too)
    refused: int = 0  # 429s (the server's limits); not in requests, errors or latencies

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def loadgen_name(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --loadgen python")
    return choice


def generator_label(generator: str) -> str:
    return "wrk, one thread" if generator == "wrk" else "bench/loadgen.py, one asyncio loop"


def split_body(body: dict[str, Any], marker: str) -> tuple[str, str | None]:
    """The JSON of `body` cut at `marker` (head, tail); (json, None) without the marker."""
    text = json.dumps(body, separators=(",", ":"))
    if marker not in text:
        return text, None
    head, tail = text.split(marker)
    return head, tail


def run_load(
    generator: str,
    url: str,
    path: str,
    body: dict[str, Any],
    *,
    target: str,
    seconds: float,
    connections: int,
    watch: Sequence[Proc],
    marker: str = "@N@",
    rate: float | None = None,
) -> LoadResult:
    """POST `body` over `connections` keep-alive connections for `seconds`.

    Where `marker` appears in the body it is replaced by a request counter, so every request
    differs; otherwise every request is the same bytes. CPU time of `watch` and of the
    generator itself is measured over the run. With `rate`, open loop: `rate` requests per
    second on schedule over at most `connections` (bench/loadgen.py only; wrk has no such
    mode), and `connections` in the result is how many it opened.
    """
    head, tail = split_body(body, marker)
    if rate is not None and generator != "python":
        raise ValueError("an open-loop run (rate) needs the python load generator")
    if generator == "wrk":
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s",
               "-s", str(BENCH / "wrk_post.lua"), url, "--", path, head]
    else:
        cmd = [python_exe(), str(BENCH / "loadgen.py"), url, path, head,
               "--seconds", f"{seconds:g}", "--connections", str(connections)]
        if rate is not None:
            cmd.append(f"--rate={rate:g}")
    if tail is not None:
        cmd.append(tail if generator == "wrk" else f"--tail={tail}")
    before = {p.name: p.cpu() for p in watch}
    proc0, irq0, total0 = machine_jiffies()
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(popen.pid, 0)
        popen.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        proc1, irq1, total1 = machine_jiffies()
        after = {p.name: p.cpu() for p in watch}
        out.seek(0)
        text = out.read().decode(errors="replace")
    if popen.returncode != 0:
        raise RuntimeError(f"{generator} failed ({popen.returncode}): {' '.join(cmd)}\n{text}")
    report = _report_of(text)
    cores = {name: (after[name] - before[name]) / wall for name in before}
    cores["wrk" if generator == "wrk" else "loadgen.py"] = (
        (usage.ru_utime + usage.ru_stime) / wall)
    nproc = os.cpu_count() or 1  # /proc/stat counts every CPU, whatever this may run on
    span = max(total1 - total0, 1)
    all_processes = nproc * (proc1 - proc0) / span
    return LoadResult(
        target=target, generator=generator,
        connections=report.get("connections", connections),
        seconds=report["seconds"], requests=report["requests"], errors=report["errors"],
        rps=report["requests"] / report["seconds"],
        latency_p50_ms=report["p50_us"] / 1000, latency_p99_ms=report["p99_us"] / 1000,
        cores=cores, other_cores=max(0.0, all_processes - sum(cores.values())),
        irq_cores=nproc * (irq1 - irq0) / span,
        offered_rps=report.get("rate", 0.0),
        latency_p90_ms=report.get("p90_us", 0) / 1000,
        schedule_lag_p99_ms=report.get("lag_p99_us", 0) / 1000,
        unfinished=report.get("unfinished", 0),
        refused=report.get("refused", 0),
    )


def _report_of(text: str) -> dict[str, Any]:
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            report: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return report
    raise RuntimeError(f"the load generator printed no report:\n{text}")


def summarize_runs(runs: list[LoadResult], targets: list[str]) -> dict[str, Any]:
    """Medians per target over its runs; CPU as cores used and as CPU ms per request."""
    out: dict[str, Any] = {"runs": [r.as_dict() for r in runs]}
    for name in targets:
        mine = [r for r in runs if r.target == name]
        procs = sorted({p for r in mine for p in r.cores})
        out[name] = {
            "rps": median([r.rps for r in mine]),
            "rps_runs": [round(r.rps) for r in mine],
            "errors": sum(r.errors for r in mine),
            "latency_p50_ms": median([r.latency_p50_ms for r in mine]),
            "latency_p99_ms": median([r.latency_p99_ms for r in mine]),
            "cores": {p: median([r.cores.get(p, 0.0) for r in mine]) for p in procs},
            "cpu_ms_per_request": {
                p: median([1000 * r.cores.get(p, 0.0) / r.rps for r in mine if r.rps])
                for p in procs
            },
            "other_cores": median([r.other_cores for r in mine]),
            "irq_cores": median([r.irq_cores for r in mine]),
        }
    return out


def ceiling_text(summary: dict[str, Any], process: str) -> str:
    """What one core would give the gateway process: its event loop runs on one core."""
    ms = summary["cpu_ms_per_request"].get(process, 0.0)
    if not ms:
        return ""
    return (f"The gateway used {ms:.3f} ms of CPU per request: at most ~{1000 / ms:,.0f} req/s "
            "from the one core its event loop can use, whatever else runs.")


def _listing(values: dict[str, float], digits: int) -> str:
    shown = [(k, v) for k, v in values.items() if round(v, digits) > 0]
    return ", ".join(f"{k} {v:.{digits}f}" for k, v in shown) or "-"


def throughput_table(t: dict[str, Any], targets: dict[str, str], connections: int) -> str:
    rows = []
    for key, label in targets.items():
        s = t[key]
        rows.append([
            label, f"**{s['rps']:.0f}**", " / ".join(str(v) for v in s["rps_runs"]),
            f"{s['latency_p50_ms']:.1f} / {s['latency_p99_ms']:.1f}", str(s["errors"]),
            _listing({**s["cores"], "irq": s["irq_cores"], "others": s["other_cores"]}, 2),
            _listing({p: ms for p, ms in s["cpu_ms_per_request"].items()
                      if s["cores"].get(p, 0.0) >= 0.01}, 3),  # idle bystanders left out
        ])
    return table([f"{connections} clients", "req/s", "runs", "p50 / p99 ms", "errors",
                  "CPU cores used", "CPU ms per request"], rows)


# -- environment -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    from importlib import metadata

    for dist in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx",
                 "httpcore", "pydantic", "redis"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": _short(_first_line(["wrk", "--version"]), r"^(wrk \S+)"),
        "redis": _short(_first_line(["redis-server", "--version"]), r"v=(\S+)", "redis-server "),
        "packages": versions,
    }


def _short(text: str | None, pattern: str, label: str = "") -> str | None:
    found = re.search(pattern, text or "")
    return label + found.group(1) if found else text


def _first_line(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else None
    return None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No collector pauses in the benchmark client while it times requests."""
    import gc

    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def fmt_ms(value: float) -> str:
    return f"{value:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def budget_lines(items: Sequence[tuple[str, str, bool]]) -> str:
    return "\n".join(f"- Budget {name}: {measured}, holds: {verdict(ok)}."
                     for name, measured, ok in items)


def command_line() -> str:
    """How this benchmark was started, as one would type it in the repository root."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return " ".join(["python", str(script), *sys.argv[1:]])


def revision() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {commit}" + (" + uncommitted changes in src/" if dirty else "")


def stamp(results: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d", time.localtime())
    return (f"\n\n_Measured {when} on {results.get('revision', 'unknown revision')} with "
            f"`{results['command']}`._")


def publish(results: dict[str, Any], sections: dict[str, str], started: float,
            json_path: Path | None, docs: bool) -> None:
    """Stamp each section with the run's command and revision, print them, and keep them
    where asked: the raw results as JSON, the sections in docs/benchmarks.md."""
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    stamped = {name: body + stamp(results) for name, body in sections.items()}
    print("\n\n".join(stamped.values()) + f"\n\n({results['elapsed_s']:.0f} s)")
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if docs:
        print(f"updated {write_docs(stamped)}")


def machine_report(m: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return "\n".join([
        f"- CPUs: {m['nproc']} (`nproc`), {m['cpu']} (from /proc/cpuinfo); "
        f"Linux {m['kernel']}",
        f"- Python {m['python']}; {packages}",
        f"- Load generator: {m['wrk'] or 'wrk not installed: bench/loadgen.py'}; "
        f"{m['redis'] or 'redis-server not installed'}",
        "- Everything (gateway, test server, Redis, load generator, benchmark client) runs "
        "on these same CPUs.",
    ])


def copy_packages(dst: Path, names: Sequence[str], *, skip: Sequence[str] = ()) -> list[str]:
    """Copy installed packages' source folders (real code from PyPI) under `dst`, leaving
    out caches, compiled modules and the folder names in `skip`; returns those copied."""
    import importlib.util

    copied = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        src = Path(next(iter(spec.submodule_search_locations)))
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", *skip)
        shutil.copytree(src, dst / name, ignore=ignore)
        copied.append(name)
    return copied


DOCS = ROOT / "docs" / "benchmarks.md"


def write_docs(sections: dict[str, str], path: Path = DOCS) -> Path:
    """Replace each `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->` block of the page with
    the fresh one (appending blocks the page lacks); everything else is left as written."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    for name, body in sections.items():
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        block = f"{start}\n{body.strip()}\n{end}"
        if start in text and end in text:
            i, j = text.index(start), text.index(end) + len(end)
            text = text[:i] + block + text[j:]
        else:
            text = text.rstrip("\n") + f"\n\n{block}\n"
    path.write_text(text, encoding="utf-8")
    return path
