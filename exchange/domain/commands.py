"""Commands: the only inputs that change the exchange's state.

Each is a frozen, tagged msgspec Struct; one schema serves the wire between the
gateway and the sequencer, the journal and the tests. `ts` (nanoseconds since
the epoch) is stamped by the sequencer: the core never reads a clock.
Prices are integer ticks of the instrument, cash is in minor units (see limits).
"""

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from exchange.domain.limits import (
    MAX_BAND_PCT,
    MAX_CASH,
    MAX_ID_LENGTH,
    MAX_INTERRUPTION_S,
    MAX_NAME_LENGTH,
    MAX_OFFERING_FEE_BPS,
    MAX_OFFERING_QTY,
    MAX_PRICE_TICKS,
    MAX_QTY,
    MAX_TICK,
    MAX_TRADE_FEE_BPS,
    SYMBOL_PATTERN,
)

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market", "stop", "stop_limit"]
TimeInForce = Literal["gtc", "ioc", "fok", "gtd", "day"]
SelfTradePrevention = Literal["cancel_newest", "cancel_oldest", "cancel_both"]
InstrumentKind = Literal["share", "bond", "fund"]
TradingStatus = Literal["trading", "halted", "pre_open", "closed"]
Commitment = Literal["firm", "best_efforts"]

AccountId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
ClientOrderId = Annotated[str, Meta(max_length=MAX_ID_LENGTH)]
Symbol = Annotated[str, Meta(pattern=SYMBOL_PATTERN)]
Name = Annotated[str, Meta(max_length=MAX_NAME_LENGTH)]
Qty = Annotated[int, Meta(gt=0, le=MAX_QTY)]
PriceTicks = Annotated[int, Meta(ge=0, le=MAX_PRICE_TICKS)]
Cash = Annotated[int, Meta(gt=0, le=MAX_CASH)]
CashCap = Annotated[int, Meta(ge=0, le=MAX_CASH)]
Tick = Annotated[int, Meta(gt=0, le=MAX_TICK)]
Timestamp = Annotated[int, Meta(ge=0)]
EntityId = Annotated[int, Meta(ge=0)]
# A fee rate in basis points; negative only for a maker rebate (fees.py checks the pair).
FeeBps = Annotated[int, Meta(ge=-MAX_TRADE_FEE_BPS, le=MAX_TRADE_FEE_BPS)]
OptionalAccountId = Annotated[str, Meta(max_length=MAX_ID_LENGTH)]


class _Command(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    gc=False,
    array_like=True,
    tag_field="cmd",
    tag=True,
    forbid_unknown_fields=True,
):
    """Commands are encoded as arrays (tag first, then the fields in order): compact and
    fast in the journal. A new field may only be added last, with a default."""

    ts: Timestamp = 0


# --- accounts and money --------------------------------------------------------------------


class CreateAccount(_Command, frozen=True, kw_only=True, gc=False):
    """Open an account; the engine assigns its id. Only a hash of the API key is kept."""

    name: Name
    api_key_hash: Annotated[str, Meta(max_length=128)] = ""


class AddApiKey(_Command, frozen=True, kw_only=True, gc=False):
    account: AccountId
    api_key_hash: Annotated[str, Meta(min_length=1, max_length=128)]


class DepositCash(_Command, frozen=True, kw_only=True, gc=False):
    account: AccountId
    amount: Cash


class WithdrawCash(_Command, frozen=True, kw_only=True, gc=False):
    account: AccountId
    amount: Cash


class DepositUnits(_Command, frozen=True, kw_only=True, gc=False):
    account: AccountId
    symbol: Symbol
    qty: Qty


class WithdrawUnits(_Command, frozen=True, kw_only=True, gc=False):
    account: AccountId
    symbol: Symbol
    qty: Qty


# --- instruments and the primary market ---------------------------------------------------


class ListInstrument(_Command, frozen=True, kw_only=True, gc=False):
    """List an instrument for an issuer account; `tick` is cash minor units per price tick."""

    symbol: Symbol
    kind: InstrumentKind
    tick: Tick
    issuer: AccountId
    maker_bps: FeeBps = 0
    taker_bps: FeeBps = 0


class SetInstrumentStatus(_Command, frozen=True, kw_only=True, gc=False):
    symbol: Symbol
    status: TradingStatus


class OpenOffering(_Command, frozen=True, kw_only=True, gc=False):
    """Offer `qty` new units at a fixed price; subscriptions close at `closes_at` (0: none).
    An `underwriter` account takes `fee_bps` of the gross proceeds and, under a `firm`
    commitment, buys every unit not subscribed (no underwriter: no fee, best efforts)."""

    symbol: Symbol
    price: PriceTicks
    qty: Annotated[int, Meta(gt=0, le=MAX_OFFERING_QTY)]
    closes_at: Timestamp = 0
    underwriter: OptionalAccountId = ""
    fee_bps: Annotated[int, Meta(ge=0, le=MAX_OFFERING_FEE_BPS)] = 0
    commitment: Commitment = "best_efforts"


class SubscribeOffering(_Command, frozen=True, kw_only=True, gc=False):
    account: AccountId
    offering_id: EntityId
    qty: Qty


class CloseOffering(_Command, frozen=True, kw_only=True, gc=False):
    offering_id: EntityId


class SetInstrumentFees(_Command, frozen=True, kw_only=True, gc=False):
    """The fee rates of orders placed from now on (docs/ENGINE.md, "Fees")."""

    symbol: Symbol
    maker_bps: FeeBps
    taker_bps: FeeBps


# --- the secondary market -----------------------------------------------------------------


class PlaceOrder(_Command, frozen=True, kw_only=True, gc=False):
    """A new order. `price` is 0 for a market order; `max_notional` (0: none) caps a market buy
    (and is a stop buy's budget, held from entry)."""

    account: AccountId
    client_order_id: ClientOrderId = ""
    symbol: Symbol
    side: Side
    type: OrderType = "limit"
    price: PriceTicks = 0
    qty: Qty
    tif: TimeInForce = "gtc"
    post_only: bool = False
    stp: SelfTradePrevention = "cancel_newest"
    max_notional: CashCap = 0
    expire_at: Timestamp = 0  # a gtd order's expiry, ns (sequenced time); 0 for any other tif
    # Stop orders (issue 16): the trade price that triggers a stop or stop_limit (0: none).
    trigger_price: PriceTicks = 0
    # Iceberg (issue 16): the most of the order the book shows at once (0: all of it).
    display_qty: Annotated[int, Meta(ge=0, le=MAX_QTY)] = 0


class CancelOrder(_Command, frozen=True, kw_only=True, gc=False):
    """Cancel by `order_id`, or by `client_order_id` when `order_id` is 0."""

    account: AccountId
    order_id: EntityId = 0
    client_order_id: ClientOrderId = ""


class CancelAll(_Command, frozen=True, kw_only=True, gc=False):
    """Cancel every open order of the account, or only those in `symbol`."""

    account: AccountId
    symbol: Annotated[str, Meta(max_length=16)] = ""


class ReplaceOrder(_Command, frozen=True, kw_only=True, gc=False):
    """Change an open order: `qty` is the new total quantity, `price` the new price (0: keep)."""

    account: AccountId
    order_id: EntityId
    qty: Annotated[int, Meta(ge=0, le=MAX_QTY)] = 0
    price: PriceTicks = 0


# --- market phases (exchange/domain/market_phases.py) ---------------------------------------

# -1 in a SetTradingRules field keeps the instrument's current value.
KEEP = -1


class SetTradingRules(_Command, frozen=True, kw_only=True, gc=False):
    """An instrument's price band (percent of the reference price, 0: none), the length of a
    volatility interruption, and its schedule: `open_at` uncrosses the call auction, `close_at`
    closes the session (ns of sequenced time, 0: none). A field left at KEEP is not changed."""

    symbol: Symbol
    band_pct: Annotated[int, Meta(ge=KEEP, le=MAX_BAND_PCT)] = KEEP
    interruption_s: Annotated[int, Meta(ge=KEEP, le=MAX_INTERRUPTION_S)] = KEEP
    open_at: Annotated[int, Meta(ge=KEEP)] = KEEP
    close_at: Annotated[int, Meta(ge=KEEP)] = KEEP


class Uncross(_Command, frozen=True, kw_only=True, gc=False):
    """End the instrument's call auction now: uncross, then trade continuously."""

    symbol: Symbol


class Timer(_Command, frozen=True, kw_only=True, gc=False):
    """The sequencer's own command, sent when a deadline the engine reported (Engine.
    next_deadline) has passed: everything due at `ts` happens (expiries, auctions, closes)."""


Command = (
    CreateAccount
    | AddApiKey
    | DepositCash
    | WithdrawCash
    | DepositUnits
    | WithdrawUnits
    | ListInstrument
    | SetInstrumentStatus
    | OpenOffering
    | SubscribeOffering
    | CloseOffering
    | PlaceOrder
    | CancelOrder
    | CancelAll
    | ReplaceOrder
    | SetTradingRules
    | Uncross
    | Timer
    | SetInstrumentFees
)
