"""The per-connection token bucket, on a clock the test moves."""

from gateway.limits import REFUSALS_BEFORE_CLOSE, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_requests_are_refused_until_tokens_refill() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10.0, burst=5.0, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.15  # one and a half tokens back
    assert bucket.take()
    assert not bucket.take()


def test_repeated_refusals_mark_the_connection_abusive_and_a_quiet_window_forgives() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=clock)
    bucket.take()
    for _ in range(REFUSALS_BEFORE_CLOSE - 1):
        assert not bucket.take()
    assert not bucket.abusive
    clock.now += 11.0
    bucket.take()  # refilled: allowed
    assert not bucket.take()  # a new window starts counting from one
    assert bucket.refusals == 1
    assert not bucket.abusive
