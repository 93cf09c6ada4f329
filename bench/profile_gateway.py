"""Where the gateway's time goes under load: py-spy on `mimiverse serve` while wrk drives it.

    pip install py-spy                              # once; any environment on PATH will do
    python bench/profile_gateway.py                 # uncached FIM, 10 s of samples
    python bench/profile_gateway.py --scenario cached --top 40

Starts the test server and the gateway as in bench/gateway_overhead.py, loads the gateway
with 8 keep-alive clients, records the gateway process with `py-spy record --threads
--format raw`, and prints the busiest functions of its event-loop thread: by own time
(where the CPU actually is) and by inclusive time (which call paths cost most). The raw
file (collapsed stacks) is kept for flamegraph.pl or speedscope.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import benchlib as bl

_SITE = re.compile(r"\s*\((?:/[^)]*?)(site-packages/|src/|lib/python3\.\d+/)")


def _frame(frame: str, lines: bool) -> str:
    """`func (path:line)` shortened to `func (package/module.py)`."""
    frame = _SITE.sub(" (", frame)
    return frame if lines else re.sub(r":\d+\)$", ")", frame)


def hotspots(raw: Path, *, thread: str = "MainThread", lines: bool = False,
             top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or thread not in frames[0]:
            continue
        n = int(count)
        total += n
        names = [_frame(f, lines) for f in frames[1:]]
        if not names:
            continue
        own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    if not total:
        return f"no samples of thread {thread!r} in {raw}"
    out = [f"{total} samples of the {thread} thread", "", "own time:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    out += ["", "inclusive time (frames under which the CPU was):"]
    # Frames in every sample (the server's main loop and what started it) say nothing.
    below = [(name, n) for name, n in inclusive.most_common() if n < total]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in below[:top * 2]]
    return "\n".join(out)


def main() -> None:
    bl.ensure_venv()
    parser = argparse.ArgumentParser(description="Profile the gateway under load with py-spy.")
    parser.add_argument("--scenario", choices=("uncached", "cached"), default="uncached")
    parser.add_argument("--seconds", type=float, default=10.0, help="of samples")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--py-spy", default=None, help="py-spy executable (default: PATH)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mimiverse-gateway.pyspy.txt"))
    parser.add_argument("--lines", action="store_true", help="keep line numbers apart")
    parser.add_argument("--top", type=int, default=25)
    opts = parser.parse_args()
    pyspy = opts.py_spy or shutil.which("py-spy") or str(bl.VENV / "bin" / "py-spy")
    if not Path(pyspy).exists() and shutil.which(pyspy) is None:
        raise SystemExit("py-spy not found: `pip install py-spy`, or pass --py-spy PATH")
    generator = bl.loadgen_name(opts.loadgen)
    uncached = opts.scenario == "uncached"
    body = bl.fim_body(bl.prefix_for(secrets.token_hex(4), "@N@" if uncached else "cached"),
                       temperature=bl.UNCACHED_TEMPERATURE if uncached else 0.0)
    with bl.Stack() as stack:
        backend = stack.backend()
        gateway = stack.gateway(backend.url)
        bl.run_load(generator, gateway.url, "/api/ai/fim", body, target="warm-up", seconds=1,
                    connections=opts.connections, watch=[gateway])
        load_s = opts.seconds + 4  # the load outlasts the recording on both ends
        head, tail = bl.split_body(body, "@N@")
        if generator == "wrk":
            cmd = ["wrk", "-t1", f"-c{opts.connections}", f"-d{load_s:g}s",
                   "-s", str(bl.BENCH / "wrk_post.lua"), gateway.url, "--", "/api/ai/fim", head]
            cmd += [tail] if tail is not None else []
        else:
            cmd = [bl.python_exe(), str(bl.BENCH / "loadgen.py"), gateway.url, "/api/ai/fim",
                   head, "--seconds", f"{load_s:g}", "--connections", str(opts.connections)]
            cmd += [f"--tail={tail}"] if tail is not None else []
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        time.sleep(2)
        record = subprocess.run(
            [pyspy, "record", "--pid", str(gateway.pid), "--duration", f"{opts.seconds:g}",
             "--rate", str(opts.rate), "--threads", "--format", "raw",
             "--output", str(opts.out)],
            capture_output=True, text=True, check=False,
        )
        output, _ = load.communicate()
    if record.returncode != 0:
        raise SystemExit(f"py-spy failed ({record.returncode}): {record.stderr.strip()}\n"
                         "(it needs ptrace: run as root or with CAP_SYS_PTRACE)")
    report = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON")), "")
    print(f"load ({generator}, {opts.connections} connections, {opts.scenario}): {report}")
    print(f"raw stacks: {opts.out}\n")
    print(hotspots(opts.out, lines=opts.lines, top=opts.top))


if __name__ == "__main__":
    main()
