"""A small HTTP/1.1 load generator: closed loop for machines without wrk, or open loop.

    python bench/loadgen.py URL PATH HEAD [--tail TAIL] [--seconds S] [--connections C]
    python bench/loadgen.py URL PATH HEAD --rate R [--connections C] [--drain S] ...

Closed loop (the default): each of C keep-alive connections POSTs a JSON body and reads
the whole answer (Content-Length or chunked) before sending the next.

Open loop (--rate R): request i is due at start + i / R for S seconds, whatever happened
to the ones before it, and goes out on the first idle keep-alive connection; a connection
is opened only when all are busy, up to C. Its latency runs from when it was due to the end
of its answer, so waiting for a connection counts: a slow server cannot hold the generator
back and hide its own queueing (coordinated omission). After S seconds, answers still on
the way get --drain seconds; requests not answered by then count as errors.

The body is HEAD, or with --tail HEAD + n + TAIL where n counts requests. Prints one
`BENCH_JSON {...}` line, like bench/wrk_post.lua. Raw asyncio streams (uvloop when
installed) keep its own CPU cost low; the benchmarks still measure that cost and report it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
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
    return {"requests": len(latencies), "seconds": elapsed, "errors": errors[0],
            "p50_us": _pct_us(latencies, 0.5), "p99_us": _pct_us(latencies, 0.99)}


def _pct_us(sorted_seconds: list[float], q: float) -> int:
    """The q-quantile (0-1) of sorted durations in seconds, as whole microseconds."""
    if not sorted_seconds:
        return 0
    return int(sorted_seconds[min(len(sorted_seconds) - 1, int(len(sorted_seconds) * q))] * 1e6)


# -- open loop: a fixed arrival rate -----------------------------------------------------

MIN_TICK_S = 0.001  # the scheduler sleeps at least this long: no busy-wait between sends
WARM_CONNECTIONS = 2  # opened before the clock starts, so the first requests find one


class OpenLoop:
    """Requests due on a fixed schedule, each sent on the first idle keep-alive connection.

    One worker task per connection takes due times from a queue. A worker is added only
    when every open connection is busy (or connecting), so the count follows the load.
    """

    def __init__(self, host: str, port: int, path: str, head: str, tail: str | None,
                 max_connections: int) -> None:
        self.host, self.port, self.path = host, port, path
        self.head, self.tail = head, tail
        self.fixed = _request(f"{host}:{port}", path, head.encode()) if tail is None else None
        self.counter = Counter()
        self.max_connections = max_connections
        self.due: asyncio.Queue[float] = asyncio.Queue()
        self.workers: list[asyncio.Task[None]] = []
        self.idle = 0  # workers waiting for (or connecting to take) a due request
        self.in_flight = 0
        self.latencies: list[float] = []
        self.lags: list[float] = []  # how late the scheduler itself handed each one over
        self.errors = 0
        self.refused = 0  # 429s: turned away by the server's limits, not failures

    def body(self) -> bytes:
        if self.fixed is not None:
            return self.fixed
        text = f"{self.head}{self.counter.next()}{self.tail}"
        return _request(f"{self.host}:{self.port}", self.path, text.encode())

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    def add_worker(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None,
                   ) -> None:
        self.idle += 1  # idle from birth: a burst must not open a connection per request
        self.workers.append(asyncio.create_task(self._worker(conn)))

    def submit(self, due: float) -> None:
        self.lags.append(time.perf_counter() - due)
        self.due.put_nowait(due)
        if self.due.qsize() > self.idle and len(self.workers) < self.max_connections:
            self.add_worker()

    async def _worker(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
                      ) -> None:
        try:
            reader, writer = conn or await self.connect()
            while True:
                due = await self.due.get()
                self.idle -= 1
                self.in_flight += 1
                try:
                    if reader.at_eof():  # closed by the server while idle (keep-alive timeout)
                        writer.close()
                        reader, writer = await self.connect()
                    writer.write(self.body())
                    status = await _read_response(reader)
                except (OSError, EOFError, ValueError):
                    self.errors += 1
                    writer.close()
                    reader, writer = await self.connect()
                else:
                    if status == 429:
                        self.refused += 1  # latencies are of the requests let in
                    else:
                        self.latencies.append(time.perf_counter() - due)
                        self.errors += status >= 400
                finally:
                    self.in_flight -= 1
                    self.idle += 1
                    self.due.task_done()
        finally:
            self.idle -= 1

    async def close(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)


async def _send_on_schedule(load: OpenLoop, start: float, rate: float, total: int) -> None:
    """Hand request i over at start + i / rate: all those due on each wake-up, then sleep."""
    sent = 0
    while sent < total:
        due_by_now = math.floor((time.perf_counter() - start) * rate) + 1
        while sent < min(total, due_by_now):
            load.submit(start + sent / rate)
            sent += 1
        if sent < total:
            wait = start + sent / rate - time.perf_counter()
            await asyncio.sleep(max(wait, MIN_TICK_S))


async def _drain(load: OpenLoop, seconds: float) -> int:
    """Wait up to `seconds` for answers still on the way; return how many never came."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(load.due.join(), seconds)
    return load.due.qsize() + load.in_flight


async def run_open_loop(url: str, path: str, head: str, tail: str | None, seconds: float,
                        rate: float, connections: int, drain: float) -> dict[str, object]:
    parts = urlsplit(url)
    load = OpenLoop(parts.hostname or "127.0.0.1", parts.port or 80, path, head, tail,
                    connections)
    warm = await asyncio.gather(*(load.connect()
                                  for _ in range(min(WARM_CONNECTIONS, connections))))
    for conn in warm:
        load.add_worker(conn)
    total = max(1, round(seconds * rate))
    start = time.perf_counter() + MIN_TICK_S
    await _send_on_schedule(load, start, rate, total)
    unfinished = await _drain(load, drain)
    await load.close()
    latencies = sorted(load.latencies)
    lags = sorted(load.lags)
    return {"requests": len(latencies), "seconds": total / rate, "sent": total,
            "rate": rate, "errors": load.errors + unfinished, "unfinished": unfinished,
            "refused": load.refused,
            "p50_us": _pct_us(latencies, 0.5), "p90_us": _pct_us(latencies, 0.9),
            "p99_us": _pct_us(latencies, 0.99), "max_us": _pct_us(latencies, 1.0),
            "lag_p99_us": _pct_us(lags, 0.99), "connections": len(load.workers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("path")
    parser.add_argument("head")
    parser.add_argument("--tail", default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8,
                        help="closed loop: the clients; open loop: the most it opens")
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop: requests per second, sent on schedule")
    parser.add_argument("--drain", type=float, default=2.0,
                        help="open loop: seconds to wait for the last answers")
    opts = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if opts.rate is None:
        report = runner(run(opts.url, opts.path, opts.head, opts.tail, opts.seconds,
                            opts.connections))
    else:
        report = runner(run_open_loop(opts.url, opts.path, opts.head, opts.tail,
                                      opts.seconds, opts.rate, opts.connections, opts.drain))
    print("BENCH_JSON " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
