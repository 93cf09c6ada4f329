from mimiverse.routing.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_then_half_opens_for_one_probe() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failures=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure("boom")
    assert b.state == "closed"
    b.record_failure("boom")
    assert b.state == "open"
    assert not b.allow()
    assert b.cooldown_left() == 10
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.1
    assert b.state == "half-open"
    assert b.allow()          # the single probe
    assert not b.allow()      # nobody else while it runs
    b.record_failure("still down")
    assert b.state == "open"  # a failed probe re-opens for a full cooldown
    assert b.cooldown_left() == 10
    clock.now += 10
    assert b.allow()
    b.record_success()
    assert b.state == "closed"
    assert b.consecutive_failures == 0
    assert b.allow() and b.allow()


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failures=2, cooldown_s=5, clock=FakeClock())
    b.record_failure("x")
    b.record_success()
    b.record_failure("y")
    assert b.state == "closed"
    assert b.last_error == "y"


def test_released_probe_lets_another_request_probe() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failures=1, cooldown_s=1, clock=clock)
    b.record_failure("x")
    clock.now += 1
    assert b.allow()
    b.release_probe()
    assert b.allow()
