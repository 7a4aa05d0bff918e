"""The engine's whole state as plain msgspec Structs: export, restore and the state hash.

The export is canonical: the same history gives the same bytes on every run and
every PYTHONHASHSEED (lists in creation, id or book-priority order; symbol-keyed
maps sorted), so its SHA-256 is the state hash and snapshots restore to an equal hash.

State added after the first release (fees, underwriting, market phases; stops, icebergs and
the last trade price) lives in EngineState fields that default to empty and are left out
when empty (msgspec encodes an array-like Struct's defaults, a map's it can omit): a state
that has none encodes, and hashes, as it did, so snapshots written before still restore and
check. Market phases leave an instrument out while its phase state is all defaults (no
reference price: it never traded or uncrossed, nor came out of an offering; no rules), and
an order without an expiry.
"""

import hashlib

import msgspec

from exchange.domain.accounts import Account, ClientOrderRecord
from exchange.domain.book import Order, OrderBook
from exchange.domain.commands import (
    Commitment,
    InstrumentKind,
    PlaceOrder,
)
from exchange.domain.engine import Engine
from exchange.domain.events import InstrumentStatus, OrderRejected
from exchange.domain.instruments import Instrument, Offering
from exchange.domain.limits import DEFAULT_INTERRUPTION_S
from exchange.domain.market import CLOSE_SESSION, END_AUCTION, EXPIRE_ORDER
from exchange.domain.order_values import EndedOrder, OrderState

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


class FeeRates(msgspec.Struct, frozen=True, array_like=True):
    """Non-zero fee rates of an instrument (by symbol) or of a resting order (by id)."""

    key: str
    maker_bps: int
    taker_bps: int


class Underwriting(msgspec.Struct, frozen=True, array_like=True):
    """An offering's underwriter, gross spread and commitment (offerings without one: none)."""

    offering_id: int
    underwriter: str
    fee_bps: int
    commitment: Commitment


class PhaseState(msgspec.Struct, frozen=True, array_like=True):
    """An instrument's market-phase state (market_phases.py), when any differs from a new
    instrument's: its reference price, band, interruption and schedule."""

    symbol: str
    ref: int
    band_pct: int
    interruption_s: int
    open_at: int
    close_at: int


class OrderExpiry(msgspec.Struct, frozen=True, array_like=True):
    """A resting gtd order's expiry (ns)."""

    order_id: int
    expire_at: int


class BookState(msgspec.Struct, frozen=True, array_like=True):
    """Resting orders of one book in priority order: bids best first, then asks."""

    symbol: str
    orders: list[OrderState]


class BookStops(msgspec.Struct, frozen=True, array_like=True):
    """Stop orders of one book waiting for their trigger, oldest first (books without: none)."""

    symbol: str
    orders: list[OrderState]


class OrderExtras(msgspec.Struct, frozen=True, array_like=True):
    """An open order's stop and iceberg fields, when any is not zero (docs/ENGINE.md)."""

    order_id: int
    trigger_price: int
    display_qty: int
    shown: int
    budget: int


class EngineState(msgspec.Struct, frozen=True, omit_defaults=True):
    version: int
    next_account: int
    next_order: int
    next_trade: int
    next_offering: int
    accounts: list[AccountState]
    instruments: list[InstrumentState]
    offerings: list[OfferingState]
    books: list[BookState]
    # Left out when empty (the module's docstring): in instrument, then order id order.
    instrument_fees: list[FeeRates] = msgspec.field(default_factory=list)
    order_fees: list[FeeRates] = msgspec.field(default_factory=list)
    underwriting: list[Underwriting] = msgspec.field(default_factory=list)
    # Market phases, left out likewise: in instrument, then order id order.
    phases: list[PhaseState] = msgspec.field(default_factory=list)
    order_expiry: list[OrderExpiry] = msgspec.field(default_factory=list)
    # Issue 16, left out when empty too: waiting stops by book (in book order), the last
    # trade price of each book that has traded, and the open orders' stop/iceberg fields.
    stops: list[BookStops] = msgspec.field(default_factory=list)
    last_prices: list[tuple[str, int]] = msgspec.field(default_factory=list)
    order_extras: list[OrderExtras] = msgspec.field(default_factory=list)


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
        instrument_fees=[
            FeeRates(i.symbol, i.maker_bps, i.taker_bps)
            for i in engine.instruments.values()
            if i.maker_bps or i.taker_bps
        ],
        order_fees=[
            FeeRates(str(o.order_id), o.maker_bps, o.taker_bps)
            for o in sorted(_open_orders(engine), key=lambda o: o.order_id)
            if o.maker_bps or o.taker_bps
        ],
        underwriting=[
            Underwriting(o.offering_id, o.underwriter, o.fee_bps, o.commitment)
            for o in engine.offerings.values()
            if o.underwriter
        ],
        phases=[
            PhaseState(
                i.symbol, i.ref, i.band_pct, i.interruption_s, i.open_at, i.close_at
            )
            for i in engine.instruments.values()
            if (i.ref, i.band_pct, i.interruption_s, i.open_at, i.close_at) != _NO_PHASE_STATE
        ],
        order_expiry=[
            OrderExpiry(o.order_id, o.expire_at)
            for o in sorted(_open_orders(engine), key=lambda o: o.order_id)
            if o.expire_at
        ],
        stops=[
            BookStops(b.symbol, [o.state() for o in b.stops.orders.values()])
            for b in engine.books.values()
            if b.stops.orders
        ],
        last_prices=[(b.symbol, b.last_price) for b in engine.books.values() if b.last_price],
        order_extras=[
            OrderExtras(o.order_id, o.trigger_price, o.display_qty, o.shown, o.budget)
            for o in sorted(_open_orders(engine), key=lambda o: o.order_id)
            if o.trigger_price or o.display_qty or o.budget
        ],
    )


# A new instrument's (ref, band_pct, interruption_s, open_at, close_at).
_NO_PHASE_STATE = (0, 0, DEFAULT_INTERRUPTION_S, 0, 0)


def _open_orders(engine: Engine) -> list[Order]:
    return [o for a in engine.accounts.values() for o in a.open_orders.values()]


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
    for p in state.phases:
        instrument = engine.instruments[p.symbol]
        instrument.reprice(p.ref, p.band_pct)
        instrument.interruption_s = p.interruption_s
        instrument.open_at, instrument.close_at = p.open_at, p.close_at
        # The deadlines are derived state: rebuilt from the times they come from.
        if p.open_at:
            engine.add_timer(p.open_at, END_AUCTION, 0, p.symbol)
        if p.close_at:
            engine.add_timer(p.close_at, CLOSE_SESSION, 0, p.symbol)
    for o in state.offerings:
        offering = engine.offerings[o.offering_id] = Offering(
            o.offering_id, o.symbol, o.price, o.qty, o.closes_at
        )
        offering.is_open = o.is_open
        offering.subscriptions = dict(o.subscriptions)
    for u in state.underwriting:
        offering = engine.offerings[u.offering_id]
        offering.underwriter, offering.fee_bps, offering.commitment = (
            u.underwriter, u.fee_bps, u.commitment,
        )
    for f in state.instrument_fees:
        instrument = engine.instruments[f.key]
        instrument.maker_bps, instrument.taker_bps = f.maker_bps, f.taker_bps
    open_orders: dict[int, Order] = {}
    # Before the orders rest or wait: an iceberg's level counts what it shows, a stop's
    # place among the stops is by its trigger.
    extras = {x.order_id: x for x in state.order_extras}
    for b in state.books:
        book = engine.books[b.symbol]
        for s in b.orders:
            order = open_orders[s.order_id] = _restore_order(engine, s, extras.get(s.order_id))
            (book.bids if order.is_buy else book.asks).rest(order)
    for bs in state.stops:
        book = engine.books[bs.symbol]
        for s in bs.orders:
            order = open_orders[s.order_id] = _restore_order(engine, s, extras.get(s.order_id))
            book.stops.add(order)
    for symbol, last_price in state.last_prices:
        engine.books[symbol].last_price = last_price
    # After the stops: a waiting stop keeps the rates it was accepted with too.
    for f in state.order_fees:
        order = open_orders[int(f.key)]
        order.maker_bps, order.taker_bps = f.maker_bps, f.taker_bps
    for e in state.order_expiry:
        open_orders[e.order_id].expire_at = e.expire_at
    for order_id in sorted(open_orders):
        order = open_orders[order_id]
        order.account.open_orders[order_id] = order
        if order.expire_at:
            engine.add_timer(order.expire_at, EXPIRE_ORDER, order_id, order.account.account_id)
    for a in state.accounts:
        account = engine.accounts[a.account]
        records = account.client_orders  # accounts.hash_keeping_dict(): filled in place
        for c in a.client_orders:
            records[c.client_order_id] = _restore_client_order(engine, open_orders, c)
        account.client_order_ids.extend(records)
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
    if not isinstance(record, Order):
        place, rejection = record
        return ClientOrderState(cid, place, rejection=rejection)
    assert record.place is not None, "an order with a client order id keeps its place"
    if record.status == "open":
        return ClientOrderState(cid, record.place, open_order_id=record.order_id)
    return ClientOrderState(cid, record.place, ended=record.ended())


def _restore_order(engine: Engine, s: OrderState, x: OrderExtras | None) -> Order:
    order = Order(
        s.order_id, engine.accounts[s.account], s.client_order_id, s.symbol, s.side,
        s.side == "buy", s.type, s.tif, s.price, s.qty, s.remaining, s.post_only, s.stp, s.ts,
        s.status,
    )  # its fee rates, when not zero, come from EngineState.order_fees
    if x is not None:
        order.trigger_price, order.display_qty, order.shown, order.budget = (
            x.trigger_price, x.display_qty, x.shown, x.budget,
        )
    return order


def _restore_client_order(
    engine: Engine, open_orders: dict[int, Order], c: ClientOrderState
) -> ClientOrderRecord:
    place = c.place
    if c.rejection is not None:
        return (place, c.rejection)
    ended = c.ended
    if ended is None:
        order = open_orders[c.open_order_id]
    else:  # an ended order as a record: what the export kept of it, the rest from its place
        order = Order(
            ended.order_id, engine.accounts[place.account], c.client_order_id, place.symbol,
            place.side, place.side == "buy", place.type, place.tif, ended.price, ended.qty,
            ended.remaining, place.post_only, place.stp, place.ts, ended.status,
        )
    order.place = place
    return order
