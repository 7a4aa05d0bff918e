"""Trading fees: the rates' bounds, the rounding of each fill's fee, the hold a buy keeps for
its worst-case fee, the exchange's fee account, and SetInstrumentFees.

Integer arithmetic only: a fee is a whole number of cash minor units. A charge is rounded up
(the account pays at least the exact rate), a rebate down (it gets at most the exact rate)
and never more than the same fill's taker fee, so the fee account gains on every fill.
docs/ENGINE.md, "Fees".
"""

from typing import Final

from exchange.domain.accounts import Account
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import SetInstrumentFees
from exchange.domain.events import AccountCreated, Event, InstrumentFeesSet
from exchange.domain.limits import MAX_OFFERING_FEE_BPS, MAX_TRADE_FEE_BPS
from exchange.domain.market import Market
from exchange.domain.replies import refuse

BPS_PER_UNIT: Final = 10_000  # basis points in one: a fee is value * bps / 10,000
# The account every trading fee is credited to (and every rebate paid from). Engine-made
# account ids are "A1", "A2", ...: this one never collides. It exists from the first time
# an instrument gets a non-zero rate (an AccountCreated event says so).
FEE_ACCOUNT: Final = "FEES"
FEE_ACCOUNT_NAME = "exchange fees"


def fee_of(value: int, bps: int) -> int:
    """The fee on a fill worth `value` minor units: a charge rounded up, a rebate (negative
    bps) rounded towards zero. 10.01 at 25 bps is 0.025025: a fee of 0.03, a rebate of 0.02."""
    if bps >= 0:
        return -(-value * bps // BPS_PER_UNIT)
    return -(value * -bps // BPS_PER_UNIT)


def unit_fee_hold(unit_value: int, taker_bps: int) -> int:
    """What a buy holds per unit for fees, on top of `unit_value` (its price in minor units):
    the taker fee of one unit, rounded up. A fill of q units at this price or better costs
    at most q times this in fees (ceil(q * x) <= q * ceil(x)), whatever its role."""
    return -(-unit_value * taker_bps // BPS_PER_UNIT) if taker_bps > 0 else 0


def buy_hold(price: int, tick: int, qty: int, taker_bps: int) -> int:
    """The cash a limit buy of `qty` at `price` holds: its value and its worst-case fees."""
    unit_value = price * tick
    return qty * (unit_value + unit_fee_hold(unit_value, taker_bps))


def fee_problem(maker_bps: int, taker_bps: int) -> str:
    """Why a pair of trading rates is refused (BAD_FEE), or "" when it is allowed:
    0 <= taker <= MAX_TRADE_FEE_BPS and -taker <= maker <= taker. A maker fee above the
    taker fee is refused because a buy's hold covers the taker fee only; a rebate above it
    because the exchange would pay out more than it takes."""
    if not 0 <= taker_bps <= MAX_TRADE_FEE_BPS:
        return f"taker_bps must be 0 to {MAX_TRADE_FEE_BPS}"
    if not -taker_bps <= maker_bps <= taker_bps:
        return "maker_bps must be between -taker_bps and taker_bps"
    return ""


def offering_fee_problem(fee_bps: int) -> str:
    if not 0 <= fee_bps <= MAX_OFFERING_FEE_BPS:
        return f"fee_bps must be 0 to {MAX_OFFERING_FEE_BPS}"
    return ""


def open_fee_account(market: Market, events: list[Event], maker_bps: int, taker_bps: int) -> None:
    """Create the fee account if it does not exist yet and a rate is not zero (it is made
    before the first non-zero rate takes effect)."""
    if (maker_bps or taker_bps) and FEE_ACCOUNT not in market.accounts:
        market.accounts[FEE_ACCOUNT] = Account(FEE_ACCOUNT, FEE_ACCOUNT_NAME)
        events.append(AccountCreated(account=FEE_ACCOUNT, name=FEE_ACCOUNT_NAME, api_key_hash=""))


def fee_account(market: Market) -> Account:
    """The fee account; only asked for once a fee is due, when it exists."""
    return market.accounts[FEE_ACCOUNT]


def set_fees(market: Market, cmd: SetInstrumentFees) -> list[Event]:
    instrument = market.instruments.get(cmd.symbol)
    if instrument is None:
        return refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
    problem = fee_problem(cmd.maker_bps, cmd.taker_bps)
    if problem:
        return refuse(cmd, Code.BAD_FEE, problem)
    events: list[Event] = []
    open_fee_account(market, events, cmd.maker_bps, cmd.taker_bps)
    instrument.maker_bps, instrument.taker_bps = cmd.maker_bps, cmd.taker_bps
    events.append(
        InstrumentFeesSet(symbol=cmd.symbol, maker_bps=cmd.maker_bps, taker_bps=cmd.taker_bps)
    )
    return events
