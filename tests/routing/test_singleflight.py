"""Single-flight: one call per key in flight, shared results and errors, cancellation rules."""

from __future__ import annotations

import asyncio

import pytest

from mimiverse.routing.singleflight import SingleFlight


class Upstream:
    """A factory whose calls block until released, recording starts and cancellations."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return f"answer-{self.calls}"


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_identical_calls_share_one_factory_call() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    waiters = [asyncio.create_task(flight.do("k", upstream)) for _ in range(20)]
    await settle()
    assert "k" in flight and len(flight) == 1
    upstream.release.set()
    assert await asyncio.gather(*waiters) == ["answer-1"] * 20
    assert upstream.calls == 1
    assert len(flight) == 0


async def test_different_keys_do_not_share() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    upstream.release.set()
    results = await asyncio.gather(flight.do("a", upstream), flight.do("b", upstream))
    assert sorted(results) == ["answer-1", "answer-2"]
    assert upstream.calls == 2


async def test_a_call_after_the_previous_one_ended_starts_afresh() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    upstream.release.set()
    assert await flight.do("k", upstream) == "answer-1"
    assert await flight.do("k", upstream) == "answer-2"


async def test_the_exception_goes_to_every_waiter_and_frees_the_key() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    upstream.error = RuntimeError("backend down")
    waiters = [asyncio.create_task(flight.do("k", upstream)) for _ in range(5)]
    await settle()
    upstream.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "backend down" for r in results)
    assert upstream.calls == 1
    assert "k" not in flight
    upstream.error = None
    assert await flight.do("k", upstream) == "answer-2"


async def test_a_factory_that_raises_before_awaiting_reaches_every_waiter() -> None:
    flight: SingleFlight[int] = SingleFlight()

    def broken() -> asyncio.Future[int]:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        await flight.do("k", broken)
    assert len(flight) == 0


async def test_one_cancelled_waiter_does_not_cancel_the_call_for_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    leaver = asyncio.create_task(flight.do("k", upstream))
    stayers = [asyncio.create_task(flight.do("k", upstream)) for _ in range(3)]
    await upstream.started.wait()
    leaver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaver
    await settle()
    assert upstream.cancelled == 0
    upstream.release.set()
    assert await asyncio.gather(*stayers) == ["answer-1"] * 3
    assert (upstream.calls, upstream.cancelled) == (1, 0)


async def test_when_every_waiter_is_gone_the_call_is_cancelled() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    waiters = [asyncio.create_task(flight.do("k", upstream)) for _ in range(3)]
    await upstream.started.wait()
    for w in waiters:
        w.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    await settle()
    assert (upstream.calls, upstream.cancelled) == (1, 1)
    assert len(flight) == 0


async def test_a_caller_arriving_after_everyone_left_gets_a_fresh_call() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flight.do("k", upstream)
    # Straight away, before the abandoned call has even seen its cancellation: the key
    # must already be free, or this caller would join a call that is being cancelled.
    async def release_soon() -> None:
        await settle()
        upstream.release.set()

    releaser = asyncio.create_task(release_soon())
    assert await flight.do("k", upstream) == "answer-2"
    await releaser
    assert (upstream.calls, upstream.cancelled) == (2, 1)


async def test_a_waiter_timing_out_leaves_the_others_their_answer() -> None:
    flight: SingleFlight[str] = SingleFlight()
    upstream = Upstream()
    patient = asyncio.create_task(flight.do("k", upstream))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flight.do("k", upstream)
    upstream.release.set()
    assert await patient == "answer-1"
    assert upstream.cancelled == 0
