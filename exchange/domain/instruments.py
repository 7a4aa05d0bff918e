"""Instruments and their primary-market offerings, and the pro-rata allocation rule.

Pure data and one pure function; the engine decides when they change.
"""

from exchange.domain.commands import Commitment, InstrumentKind
from exchange.domain.events import InstrumentStatus
from exchange.domain.limits import DEFAULT_INTERRUPTION_S, MAX_PRICE_TICKS


class Instrument:
    __slots__ = (
        "band_pct", "close_at", "high", "interruption_s", "issuer", "kind", "low", "maker_bps",
        "open_at", "ref", "status", "symbol", "taker_bps", "tick",
    )  # fmt: skip

    def __init__(
        self,
        symbol: str,
        kind: InstrumentKind,
        tick: int,
        issuer: str,
        status: InstrumentStatus,
        maker_bps: int = 0,
        taker_bps: int = 0,
    ) -> None:
        self.symbol = symbol
        self.kind = kind
        self.tick = tick  # cash minor units per price tick
        self.issuer = issuer
        self.status = status
        # Market phases (market_phases.py): the reference price (the last uncross or trade
        # price, the offering price before either; 0: none), the band around it in percent
        # (0: none), a volatility interruption's length, and the schedule (ns, 0: none).
        self.ref = 0
        self.band_pct = 0
        # The band's lowest and highest price (ticks): kept with ref and band_pct (reprice),
        # as every order reads them.
        self.low = 0
        self.high = MAX_PRICE_TICKS
        self.interruption_s = DEFAULT_INTERRUPTION_S
        self.open_at = 0
        self.close_at = 0
        # The fee rates an order placed now keeps for its life (fees.py).
        self.maker_bps = maker_bps
        self.taker_bps = taker_bps

    def reprice(self, ref: int, band_pct: int) -> None:
        """A new reference price or band, and the band's prices: every price when there
        is no band or no reference yet."""
        self.ref, self.band_pct = ref, band_pct
        if not ref or not band_pct:
            self.low, self.high = 0, MAX_PRICE_TICKS
            return
        self.low = -(-ref * (100 - band_pct) // 100)  # rounded up: a price below it is out
        self.high = ref * (100 + band_pct) // 100


def band_limits(instrument: Instrument) -> tuple[int, int]:
    """The lowest and highest price (ticks) within the instrument's band."""
    return instrument.low, instrument.high


class Offering:
    __slots__ = (
        "closes_at",
        "commitment",
        "fee_bps",
        "is_open",
        "offering_id",
        "price",
        "qty",
        "subscriptions",
        "symbol",
        "underwriter",
    )

    def __init__(
        self,
        offering_id: int,
        symbol: str,
        price: int,
        qty: int,
        closes_at: int,
        underwriter: str = "",
        fee_bps: int = 0,
        commitment: Commitment = "best_efforts",
    ) -> None:
        self.offering_id = offering_id
        self.symbol = symbol
        self.price = price
        self.qty = qty
        self.closes_at = closes_at
        self.underwriter = underwriter  # "" when none (then no fee, best efforts)
        self.fee_bps = fee_bps
        self.commitment: Commitment = commitment
        self.is_open = True
        # Units requested per account, in the order of each account's first subscription.
        self.subscriptions: dict[str, int] = {}


def allocate(requests: list[int], offered: int) -> list[int]:
    """Whole units per request. Everyone gets what they asked when it fits; otherwise pro
    rata rounded down, and the units left over go one each to the largest remainders,
    ties to the earlier request."""
    total = sum(requests)
    if total <= offered:
        return list(requests)
    shares = [r * offered // total for r in requests]
    left_over = offered - sum(shares)
    by_remainder = sorted(range(len(requests)), key=lambda i: (-(requests[i] * offered % total), i))
    for i in by_remainder[:left_over]:
        shares[i] += 1
    return shares
