"""The engine's whole state as plain msgspec Structs: export, restore and the state hash.

The export is canonical: the same history gives the same bytes on every run and
every PYTHONHASHSEED (lists in creation, id or book-priority order; symbol-keyed
maps sorted), so its SHA-256 is the state hash and snapshots restore to an equal hash.
"""

import hashlib

import msgspec

from exchange.domain.accounts import Account, ClientOrderRecord
from exchange.domain.book import EndedOrder, Order, OrderBook, OrderState
from exchange.domain.commands import (
    InstrumentKind,
    PlaceOrder,
)
from exchange.domain.engine import Engine
from exchange.domain.events import InstrumentStatus, OrderRejected
from exchange.domain.instruments import Instrument, Offering

STATE_VERSION = 1


class ClientOrderState(msgspec.Struct, frozen=True, array_like=True):
    """A used client order id. Exactly one of `open_order_id`, `ended` and `rejection` is set:
    the open order it names, the order as it ended, or how the place was refused."""

    client_order_id: str
    place: PlaceOrder
    open_order_id: int = 0
    ended: EndedOrder | None = None
    rejection: OrderRejected | None = None


class AccountState(msgspec.Struct, frozen=True, array_like=True):
    account: str
    name: str
    api_key_hashes: list[str]
    cash: int
    cash_held: int
    positions: list[tuple[str, int]]
    units_held: list[tuple[str, int]]
    client_orders: list[ClientOrderState]  # oldest first, the order they are forgotten in


class InstrumentState(msgspec.Struct, frozen=True, array_like=True):
    symbol: str
    kind: InstrumentKind
    tick: int
    issuer: str
    status: InstrumentStatus


class OfferingState(msgspec.Struct, frozen=True, array_like=True):
    offering_id: int
    symbol: str
    price: int
    qty: int
    closes_at: int
    is_open: bool
    subscriptions: list[tuple[str, int]]


class BookState(msgspec.Struct, frozen=True, array_like=True):
    """Resting orders of one book in priority order: bids best first, then asks."""

    symbol: str
    orders: list[OrderState]
    # Issue 16: stop orders waiting for their trigger, oldest first, and the last trade price.
    stops: list[OrderState] = msgspec.field(default_factory=list)
    last_price: int = 0


class EngineState(msgspec.Struct, frozen=True):
    version: int
    next_account: int
    next_order: int
    next_trade: int
    next_offering: int
    accounts: list[AccountState]
    instruments: list[InstrumentState]
    offerings: list[OfferingState]
    books: list[BookState]


def export_state(engine: Engine) -> EngineState:
    return EngineState(
        version=STATE_VERSION,
        next_account=engine.next_account,
        next_order=engine.next_order,
        next_trade=engine.next_trade,
        next_offering=engine.next_offering,
        accounts=[_export_account(a) for a in engine.accounts.values()],
        instruments=[
            InstrumentState(i.symbol, i.kind, i.tick, i.issuer, i.status)
            for i in engine.instruments.values()
        ],
        offerings=[
            OfferingState(
                o.offering_id,
                o.symbol,
                o.price,
                o.qty,
                o.closes_at,
                o.is_open,
                list(o.subscriptions.items()),
            )
            for o in engine.offerings.values()
        ],
        books=[_export_book(book) for book in engine.books.values()],
    )


def restore_state(state: EngineState) -> Engine:
    if state.version != STATE_VERSION:
        msg = f"engine state version {state.version}, this build reads {STATE_VERSION}"
        raise ValueError(msg)
    engine = Engine()
    engine.next_account = state.next_account
    engine.next_order = state.next_order
    engine.next_trade = state.next_trade
    engine.next_offering = state.next_offering
    for a in state.accounts:
        account = engine.accounts[a.account] = Account(a.account, a.name)
        account.api_key_hashes = list(a.api_key_hashes)
        account.cash, account.cash_held = a.cash, a.cash_held
        account.positions = dict(a.positions)
        account.units_held = dict(a.units_held)
    for i in state.instruments:
        engine.instruments[i.symbol] = Instrument(i.symbol, i.kind, i.tick, i.issuer, i.status)
        engine.books[i.symbol] = OrderBook(i.symbol)
    for o in state.offerings:
        offering = engine.offerings[o.offering_id] = Offering(
            o.offering_id, o.symbol, o.price, o.qty, o.closes_at
        )
        offering.is_open = o.is_open
        offering.subscriptions = dict(o.subscriptions)
    open_orders: dict[int, Order] = {}
    for b in state.books:
        book = engine.books[b.symbol]
        for s in b.orders:
            order = open_orders[s.order_id] = _restore_order(engine, s)
            (book.bids if order.is_buy else book.asks).rest(order)
        for s in b.stops:
            book.stops.add(open_orders.setdefault(s.order_id, _restore_order(engine, s)))
        book.last_price = b.last_price
    for order_id in sorted(open_orders):
        order = open_orders[order_id]
        order.account.open_orders[order_id] = order
    for a in state.accounts:
        account = engine.accounts[a.account]
        account.client_orders = {
            c.client_order_id: _restore_client_order(engine, open_orders, c)
            for c in a.client_orders
        }
        account.client_order_ids.extend(account.client_orders)
    return engine


def encode_state(state: EngineState) -> bytes:
    return msgspec.msgpack.encode(state)


def decode_state(data: bytes) -> EngineState:
    return msgspec.msgpack.decode(data, type=EngineState)


def state_hash(engine: Engine) -> str:
    return hashlib.sha256(encode_state(export_state(engine))).hexdigest()


def _export_order(o: Order) -> OrderState:
    return o.state()


def _export_book(book: OrderBook) -> BookState:
    return BookState(
        book.symbol,
        [
            _export_order(o)
            for side in (book.bids, book.asks)
            for level in side.levels_best_first()
            for o in level.orders()
        ],
        [_export_order(o) for o in book.stops.orders.values()],
        book.last_price,
    )


def _export_account(a: Account) -> AccountState:
    return AccountState(
        a.account_id,
        a.name,
        list(a.api_key_hashes),
        a.cash,
        a.cash_held,
        sorted((s, n) for s, n in a.positions.items() if n),
        sorted((s, n) for s, n in a.units_held.items() if n),
        [_export_client_order(cid, a.client_orders[cid]) for cid in a.client_order_ids],
    )


def _export_client_order(cid: str, record: ClientOrderRecord) -> ClientOrderState:
    place, outcome = record
    if isinstance(outcome, OrderRejected):
        return ClientOrderState(cid, place, rejection=outcome)
    if isinstance(outcome, EndedOrder):
        return ClientOrderState(cid, place, ended=outcome)
    return ClientOrderState(cid, place, open_order_id=outcome.order_id)


def _restore_order(engine: Engine, s: OrderState) -> Order:
    return Order(
        s.order_id, engine.accounts[s.account], s.client_order_id, s.symbol, s.side,
        s.side == "buy", s.type, s.tif, s.price, s.qty, s.remaining, s.post_only, s.stp, s.ts,
        s.status, None, s.trigger_price, s.display_qty, s.shown, s.budget,
    )


def _restore_client_order(
    engine: Engine, open_orders: dict[int, Order], c: ClientOrderState
) -> ClientOrderRecord:
    if c.rejection is not None:
        return (c.place, c.rejection)
    if c.ended is not None:
        return (c.place, c.ended)
    return (c.place, open_orders[c.open_order_id])
