"""Orders as plain values: what a snapshot stores of a resting order and what is remembered
of an ended one. msgspec Structs, so this module is left out of the compiled core (mypyc
builds Structs' classes without their class keywords: docs/ENGINE.md, "Compiled core")."""

import msgspec

from exchange.domain.commands import OrderType, SelfTradePrevention, Side, TimeInForce
from exchange.domain.events import OrderStatus


class OrderState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A resting order as plain values, as a snapshot stores it (its fee rates, a gtd order's
    expiry and its stop and iceberg fields, when not zero, are kept apart: state.FeeRates,
    state.OrderExpiry, state.OrderExtras)."""

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
    post_only: bool
    stp: SelfTradePrevention
    ts: int
    status: OrderStatus


class EndedOrder(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What is remembered of an ended order for resends of its client order id; the rest
    is in the place that created it. Plain values, so the garbage collector skips it."""

    order_id: int
    price: int
    qty: int
    remaining: int
    status: OrderStatus
