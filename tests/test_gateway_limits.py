"""The rate limits' token bucket and refusal count, on a clock the test moves."""

from gateway.limits import (
    ACCOUNT_RATE_PER_S,
    REFUSAL_WINDOW_S,
    REFUSALS_BEFORE_CLOSE,
    Refusals,
    TokenBucket,
    account_rate,
)


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
    refusals = Refusals(clock)
    for _ in range(REFUSALS_BEFORE_CLOSE - 1):
        refusals.note()
    assert not refusals.abusive
    clock.now += 11.0
    refusals.note()  # a new window starts counting from one
    assert refusals.count == 1
    assert not refusals.abusive
    for _ in range(REFUSALS_BEFORE_CLOSE - 1):
        refusals.note()
    assert refusals.abusive


def test_the_account_rate_defaults_to_its_constant_but_never_below_one_connection() -> None:
    assert account_rate(2_000.0, None) == ACCOUNT_RATE_PER_S
    assert account_rate(100_000.0, None) == 100_000.0  # a benchmark's --rate-limit
    assert account_rate(2_000.0, 300.0) == 300.0  # as the operator set it


def test_an_abusive_address_is_forgiven_a_window_after_it_became_abusive() -> None:
    """The 429 at upgrade checks `abusive` without noting refusals (none come through):
    the lockout must end by the clock alone, or an address stays shut out for good."""
    clock = Clock()
    refusals = Refusals(clock)
    clock.now += 9.0  # late in the window: the lockout still lasts a whole window
    for _ in range(REFUSALS_BEFORE_CLOSE):
        refusals.note()
    assert refusals.abusive
    clock.now += REFUSAL_WINDOW_S
    assert refusals.abusive, "a whole window from the refusal that crossed the bound"
    clock.now += 0.5
    assert not refusals.abusive
    refusals.note()
    assert (refusals.count, refusals.abusive) == (1, False)
