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
`BENCH_JSON {...}` line, like bench/wrk_post.lua. Each connection is an asyncio Protocol
that parses answers straight from its buffer (no task, queue or stream reader per request;
uvloop when installed): its own CPU is what the benchmarks share the machine with, and
they still measure and report it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit


def _request(host: str, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    size: int  # bytes of `buf` it takes, head and body
    last: bool  # the server said Connection: close


def _answer_end(buf: bytearray) -> Answer | None:
    """The first whole answer in `buf`, or None while it is partial."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    status = int(buf[9:12])
    length = 0
    chunked = last = False
    for line in bytes(buf[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            last = True
    at = head_end + 4
    if not chunked:
        return Answer(status, at + length, last) if len(buf) >= at + length else None
    while True:  # chunks: size line, data, CRLF; the last has size 0
        line_end = buf.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buf[at:line_end]).split(b";")[0], 16)
        at = line_end + 2 + size + 2
        if len(buf) < at:
            return None
        if size == 0:
            return Answer(status, at, last)


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; `done(conn, status)` is called
    with each whole answer, `lost(conn)` when the server closes it. After an answer with
    Connection: close, `last` is set and the connection takes no more requests."""

    def __init__(self, done: Callable[[Connection, int], None],
                 lost: Callable[[Connection], None]) -> None:
        self.done, self.lost = done, lost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.due = 0.0  # when the request on the way was due (open loop) or sent
        self.last = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, due: float) -> None:
        self.due = due
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        answer = _answer_end(self.buf)
        if answer is not None:
            del self.buf[:answer.size]
            if answer.last:
                self.retire()
            self.done(self, answer.status)

    def retire(self) -> None:
        """Close it from this side; its closing is then no loss."""
        self.last = True
        self.lost = lambda conn: None
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lost(self)


class Load:
    """What both loops share: the bodies, the connections, and what came back."""

    def __init__(self, url: str, path: str, head: str, tail: str | None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path, self.head, self.tail = path, head, tail
        self.fixed = _request(self.authority, path, head.encode()) if tail is None else None
        self.n = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.refused = 0  # 429s: turned away by the server's limits, not failures

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def body(self) -> bytes:
        if self.fixed is not None:
            return self.fixed
        self.n += 1
        return _request(self.authority, self.path, f"{self.head}{self.n}{self.tail}".encode())

    def record(self, conn: Connection, status: int) -> None:
        if status == 429:
            self.refused += 1  # latencies are of the requests let in
            return
        self.latencies.append(time.perf_counter() - conn.due)
        self.errors += status >= 400

    async def connect(self, done: Callable[[Connection, int], None],
                      lost: Callable[[Connection], None]) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Connection(done, lost),
                                               self.host, self.port)
        return conn


# -- closed loop: C clients, each sending its next request when the last is answered ------


class ClosedLoop(Load):
    def __init__(self, url: str, path: str, head: str, tail: str | None, until: float) -> None:
        super().__init__(url, path, head, tail)
        self.until = until
        self.open = 0  # clients still sending
        self.tasks: set[asyncio.Task[None]] = set()
        self.finished = asyncio.get_running_loop().create_future()

    def done(self, conn: Connection, status: int) -> None:
        self.record(conn, status)
        if time.perf_counter() >= self.until:
            self.close(conn)
        elif conn.last:  # the client goes on, on a new connection
            task = asyncio.get_running_loop().create_task(self._reopen())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            conn.send(self.body(), time.perf_counter())

    async def _reopen(self) -> None:
        try:
            conn = await self.connect(self.done, self.lost)
        except OSError:
            self.errors += 1
            self._client_ended()
            return
        conn.send(self.body(), time.perf_counter())

    def lost(self, conn: Connection) -> None:
        """Closed by the server with a request on the way: it failed, and so did the client."""
        self.errors += 1
        self._client_ended()

    def close(self, conn: Connection) -> None:
        conn.retire()
        self._client_ended()

    def _client_ended(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.finished.done():
            self.finished.set_result(None)


async def run(url: str, path: str, head: str, tail: str | None, seconds: float,
              connections: int) -> dict[str, object]:
    started = time.perf_counter()
    load = ClosedLoop(url, path, head, tail, started + seconds)
    conns = await asyncio.gather(*(load.connect(load.done, load.lost)
                                   for _ in range(connections)), return_exceptions=True)
    load.errors += sum(1 for c in conns if isinstance(c, BaseException))
    for conn in conns:
        if isinstance(conn, Connection):
            load.open += 1
            conn.send(load.body(), time.perf_counter())
    if load.open:
        await load.finished
    elapsed = time.perf_counter() - started
    latencies = sorted(load.latencies)
    return {"requests": len(latencies), "seconds": elapsed, "errors": load.errors,
            "p50_us": _pct_us(latencies, 0.5), "p99_us": _pct_us(latencies, 0.99)}


def _pct_us(sorted_seconds: list[float], q: float) -> int:
    """The q-quantile (0-1) of sorted durations in seconds, as whole microseconds."""
    if not sorted_seconds:
        return 0
    return int(sorted_seconds[min(len(sorted_seconds) - 1, int(len(sorted_seconds) * q))] * 1e6)


# -- open loop: a fixed arrival rate -----------------------------------------------------

MIN_TICK_S = 0.001  # the scheduler sleeps at least this long: no busy-wait between sends
WARM_CONNECTIONS = 2  # opened before the clock starts, so the first requests find one


class OpenLoop(Load):
    """Requests due on a fixed schedule, each sent on the first idle keep-alive connection.

    A request finding every connection busy waits in `waiting` (its latency still runs
    from when it was due); a connection is opened only when more are waiting than are
    being opened, up to `max_connections`.
    """

    def __init__(self, url: str, path: str, head: str, tail: str | None,
                 max_connections: int) -> None:
        super().__init__(url, path, head, tail)
        self.max_connections = max_connections
        self.conns: list[Connection] = []
        self.idle: list[Connection] = []
        self.waiting: collections.deque[float] = collections.deque()
        self.connecting = 0
        self.opened = 0
        self.in_flight = 0
        self.lags: list[float] = []  # how late the scheduler itself handed each one over
        self.tasks: set[asyncio.Task[None]] = set()
        self.quiet = asyncio.Event()  # nothing waiting or in flight

    def submit(self, due: float) -> None:
        self.lags.append(time.perf_counter() - due)
        self.in_flight += 1
        self.quiet.clear()
        if self.idle:
            self.idle.pop().send(self.body(), due)
            return
        self.waiting.append(due)
        self._open_for_waiting()

    def _open_for_waiting(self) -> None:
        if (len(self.waiting) > self.connecting
                and self.opened + self.connecting < self.max_connections):
            self.connecting += 1
            task = asyncio.get_running_loop().create_task(self._open())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _open(self) -> None:
        try:
            conn = await self.connect(self.done, self.lost)
        except OSError:
            return  # the request it was for waits on: served later, or counted unfinished
        finally:
            self.connecting -= 1
        self.opened += 1
        self.conns.append(conn)
        self._next(conn)

    def add(self, conn: Connection) -> None:
        self.opened += 1
        self.conns.append(conn)
        self.idle.append(conn)

    def _next(self, conn: Connection) -> None:
        if conn.last:
            self.opened -= 1
            self._open_for_waiting()
        elif self.waiting:
            conn.send(self.body(), self.waiting.popleft())
        else:
            self.idle.append(conn)

    def done(self, conn: Connection, status: int) -> None:
        self.record(conn, status)
        self._finished_one()
        self._next(conn)

    def lost(self, conn: Connection) -> None:
        """Closed by the server: a request on it fails; open another when one waits."""
        self.opened -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        else:
            self.errors += 1
            self._finished_one()
        self._open_for_waiting()

    def _finished_one(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.quiet.set()

    def close(self) -> None:
        for conn in self.conns:
            conn.retire()
        for task in self.tasks:
            task.cancel()


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
        await asyncio.wait_for(load.quiet.wait(), seconds)
    return load.in_flight


async def run_open_loop(url: str, path: str, head: str, tail: str | None, seconds: float,
                        rate: float, connections: int, drain: float) -> dict[str, object]:
    load = OpenLoop(url, path, head, tail, connections)
    warm = await asyncio.gather(*(load.connect(load.done, load.lost)
                                  for _ in range(min(WARM_CONNECTIONS, connections))))
    for conn in warm:
        load.add(conn)
    total = max(1, round(seconds * rate))
    start = time.perf_counter() + MIN_TICK_S
    await _send_on_schedule(load, start, rate, total)
    unfinished = await _drain(load, drain)
    load.close()
    latencies = sorted(load.latencies)
    lags = sorted(load.lags)
    return {"requests": len(latencies), "seconds": total / rate, "sent": total,
            "rate": rate, "errors": load.errors + unfinished, "unfinished": unfinished,
            "refused": load.refused,
            "p50_us": _pct_us(latencies, 0.5), "p90_us": _pct_us(latencies, 0.9),
            "p99_us": _pct_us(latencies, 0.99), "max_us": _pct_us(latencies, 1.0),
            "lag_p99_us": _pct_us(lags, 0.99), "connections": len(load.conns)}


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
