"""Events: what the engine says happened, in the order it happened.

Frozen, tagged msgspec Structs, journaled beside the command that produced them
and published to read models and clients only after they are durable. Prices are
integer ticks, cash is in minor units, quantities are units.
"""

from typing import Literal

import msgspec

from exchange.domain.commands import InstrumentKind, OrderType, Side, TimeInForce

OrderStatus = Literal["open", "filled", "cancelled", "expired", "self_trade", "replaced_out"]
DoneReason = Literal["cancelled", "expired", "self_trade", "replaced_out"]
InstrumentStatus = Literal["listed", "in_offering", "trading", "halted", "pre_open", "closed"]


class _Event(
    msgspec.Struct, frozen=True, gc=False, array_like=True, tag_field="event", tag=True
):
    """Fields are positional so the hot path can build events cheaply; events hold only
    scalars, so the garbage collector never needs to track them (gc=False). Encoded as
    arrays, like commands: a new field may only be added last, with a default."""


# --- accounts and money --------------------------------------------------------------------


class AccountCreated(_Event, frozen=True, gc=False):
    account: str
    name: str
    api_key_hash: str


class ApiKeyAdded(_Event, frozen=True, gc=False):
    account: str
    api_key_hash: str


class CashDeposited(_Event, frozen=True, gc=False):
    account: str
    amount: int
    balance: int


class CashWithdrawn(_Event, frozen=True, gc=False):
    account: str
    amount: int
    balance: int


class UnitsDeposited(_Event, frozen=True, gc=False):
    account: str
    symbol: str
    qty: int
    position: int


class UnitsWithdrawn(_Event, frozen=True, gc=False):
    account: str
    symbol: str
    qty: int
    position: int


# --- instruments and the primary market ---------------------------------------------------


class InstrumentListed(_Event, frozen=True, gc=False):
    symbol: str
    kind: InstrumentKind
    tick: int
    issuer: str
    maker_bps: int = 0
    taker_bps: int = 0


class InstrumentStatusChanged(_Event, frozen=True, gc=False):
    """`open_at`: when a `pre_open` call auction uncrosses (0: when the admin says);
    `reason`: what moved it (docs/ENGINE.md, "Market phases"; "" for an admin's change)."""

    symbol: str
    status: InstrumentStatus
    open_at: int = 0
    reason: str = ""


class OfferingOpened(_Event, frozen=True, gc=False):
    """Under a `firm` commitment the underwriter's cash for the whole issue is now held."""

    offering_id: int
    symbol: str
    price: int
    qty: int
    closes_at: int
    underwriter: str = ""
    fee_bps: int = 0
    commitment: str = "best_efforts"


class OfferingSubscribed(_Event, frozen=True, gc=False):
    """One subscription; `total` is everything this account has subscribed in the offering."""

    offering_id: int
    account: str
    qty: int
    total: int


class UnitsAllocated(_Event, frozen=True, gc=False):
    """At the close: what one subscriber asked for, received and paid."""

    offering_id: int
    account: str
    requested: int
    allocated: int
    cost: int


class OfferingUnderwritten(_Event, frozen=True, gc=False):
    """At a firm offering's close, after the allocations: the underwriter's hold for the
    whole issue is released and it buys the `units` not subscribed for `cost`."""

    offering_id: int
    account: str
    units: int
    cost: int


class OfferingClosed(_Event, frozen=True, gc=False):
    """`proceeds` is the gross (every unit issued at the offer price); the issuer receives
    `proceeds - fee`, the `underwriter` the `fee`."""

    offering_id: int
    symbol: str
    issuer: str
    issued: int
    proceeds: int
    underwriter: str = ""
    fee: int = 0


# --- the secondary market -----------------------------------------------------------------


class OrderAccepted(_Event, frozen=True, gc=False):
    """A new order entered the book or its matching. `resent` marks the answer to a resend of a
    known client order id: then `remaining` and `status` give the order's current state and
    nothing changed."""

    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    remaining: int
    status: OrderStatus
    post_only: bool
    ts: int
    resent: bool = False
    expire_at: int = 0  # a gtd order's
    trigger_price: int = 0  # a stop's trigger (issue 16)
    display_qty: int = 0  # an iceberg's displayed size (issue 16)
    budget: int = 0  # a stop buy's budget (its max_notional), held while it waits


class OrderRejected(_Event, frozen=True, gc=False):
    """A place, cancel, cancel-all or replace was refused; nothing changed."""

    account: str
    code: str
    message: str
    client_order_id: str = ""
    order_id: int = 0


class Rejected(_Event, frozen=True, gc=False):
    """Any other command was refused; nothing changed. `command` is the command's tag."""

    command: str
    code: str
    message: str
    account: str = ""


class TradeExecuted(_Event, frozen=True, gc=False):
    trade_id: int
    symbol: str
    price: int
    qty: int
    aggressor: Side
    maker_order_id: int
    maker_account: str
    maker_remaining: int
    taker_order_id: int
    taker_account: str
    taker_remaining: int
    ts: int
    # Cash each side paid the exchange's fee account (a negative maker fee is a rebate).
    maker_fee: int = 0
    taker_fee: int = 0


class OrderCancelled(_Event, frozen=True, gc=False):
    """An order left the book (or its matching) without filling its remainder."""

    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    price: int
    remaining: int
    reason: DoneReason


class OrderReplaced(_Event, frozen=True, gc=False):
    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    price: int
    qty: int
    remaining: int
    kept_priority: bool


# --- market phases -----------------------------------------------------------------------


class TradingRulesSet(_Event, frozen=True, gc=False):
    symbol: str
    band_pct: int
    interruption_s: int
    open_at: int
    close_at: int


class AuctionIndicative(_Event, frozen=True, gc=False):
    """A call auction's book changed: where it would uncross now (price 0 and qty 0: it
    would not trade), and the unmatched quantity at that price and its side ("" if none)."""

    symbol: str
    price: int
    qty: int
    imbalance_side: str
    imbalance_qty: int


class AuctionUncrossed(_Event, frozen=True, gc=False):
    """A call auction ended: `qty` units trade at `price` (the TradeExecuted events follow)."""

    symbol: str
    price: int
    qty: int


# --- fees --------------------------------------------------------------------------------


class InstrumentFeesSet(_Event, frozen=True, gc=False):
    """The fee rates of orders placed from now on."""

    symbol: str
    maker_bps: int
    taker_bps: int


# --- stop and iceberg orders (issue 16) ----------------------------------------------------


class OrderTriggered(_Event, frozen=True, gc=False):
    """A stop order's trigger was reached: from here it is a taker of `type` (`market` for a
    stop, `limit` for a stop-limit); its trades and end follow."""

    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    price: int
    remaining: int
    trigger_price: int
    ts: int


class OrderRefreshed(_Event, frozen=True, gc=False):
    """An iceberg's displayed part was used up: it shows `shown` more (of `remaining`) and
    went to the back of its price level."""

    order_id: int
    account: str
    symbol: str
    side: Side
    price: int
    shown: int
    remaining: int


Event = (
    AccountCreated
    | ApiKeyAdded
    | CashDeposited
    | CashWithdrawn
    | UnitsDeposited
    | UnitsWithdrawn
    | InstrumentListed
    | InstrumentStatusChanged
    | OfferingOpened
    | OfferingSubscribed
    | UnitsAllocated
    | OfferingClosed
    | OrderAccepted
    | OrderRejected
    | Rejected
    | TradeExecuted
    | OrderCancelled
    | OrderReplaced
    | TradingRulesSet
    | AuctionIndicative
    | AuctionUncrossed
    | InstrumentFeesSet
    | OfferingUnderwritten
    | OrderTriggered
    | OrderRefreshed
)
