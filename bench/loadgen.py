"""A small closed-loop HTTP/1.1 load generator, for machines without wrk.

    python bench/loadgen.py URL PATH HEAD [--tail TAIL] [--seconds S] [--connections C]

Each of C keep-alive connections POSTs a JSON body and reads the whole answer
(Content-Length or chunked) before sending the next. The body is HEAD, or with --tail
HEAD + n + TAIL where n counts requests. Prints one `BENCH_JSON {...}` line, like
bench/wrk_post.lua. Raw asyncio streams (uvloop when installed) keep its own CPU cost
low; the benchmarks still measure that cost and report it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def _request(host: str, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str, port: int, path: str, head: str, tail: str | None, until: float,
    counter: Counter, latencies: list[float], errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    fixed = _request(f"{host}:{port}", path, head.encode()) if tail is None else None
    try:
        while time.perf_counter() < until:
            data = fixed or _request(f"{host}:{port}", path,
                                     f"{head}{counter.next()}{tail}".encode())
            started = time.perf_counter()
            writer.write(data)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                errors[0] += 1
    finally:
        writer.close()


async def run(url: str, path: str, head: str, tail: str | None, seconds: float,
              connections: int) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counter = Counter()
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    until = started + seconds
    results = await asyncio.gather(
        *(_connection(host, port, path, head, tail, until, counter, latencies, errors)
          for _ in range(connections)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - started
    errors[0] += sum(1 for r in results if isinstance(r, BaseException))
    latencies.sort()

    def pct(q: float) -> int:
        if not latencies:
            return 0
        return int(latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e6)

    return {"requests": len(latencies), "seconds": elapsed, "errors": errors[0],
            "p50_us": pct(0.5), "p99_us": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("path")
    parser.add_argument("head")
    parser.add_argument("--tail", default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    opts = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    report = runner(run(opts.url, opts.path, opts.head, opts.tail, opts.seconds,
                        opts.connections))
    print("BENCH_JSON " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
