"""A short scripted session on the in-process engine: an offering, its opening auction, then
secondary trading.

What `make run` shows until the network gateway exists. It prints each command's
events as a person would read them, then the book and the balances.
"""

import time
from collections.abc import Callable

import msgspec

from exchange.domain.commands import (
    CloseOffering,
    Command,
    CreateAccount,
    DepositCash,
    ListInstrument,
    OpenOffering,
    PlaceOrder,
    SubscribeOffering,
    Uncross,
)
from exchange.domain.engine import Engine
from exchange.domain.events import Event, OrderAccepted, OrderRejected, TradeExecuted
from exchange.domain.money import format_cash, format_price, parse_cash, parse_price, tick_size_of

TICK_SIZE = tick_size_of(1)


def _price(text: str) -> int:
    return parse_price(text, TICK_SIZE)


def _describe(event: Event) -> str:
    if isinstance(event, TradeExecuted):
        return (
            f"TRADE  {event.symbol} {event.qty} @ {format_price(event.price, TICK_SIZE)}"
            f"  aggressor={event.aggressor}"
            f"  maker #{event.maker_order_id} ({event.maker_account})"
            f"  taker #{event.taker_order_id} ({event.taker_account})"
            f"  fees maker {format_cash(event.maker_fee)} taker {format_cash(event.taker_fee)}"
        )
    if isinstance(event, OrderAccepted):
        price = format_price(event.price, TICK_SIZE) if event.type == "limit" else "market"
        return (
            f"accepted #{event.order_id} {event.account} {event.side} {event.qty}"
            f" {event.symbol} @ {price} {event.tif}"
        )
    if isinstance(event, OrderRejected):
        return f"rejected {event.account}: {event.code} ({event.message})"
    return repr(event)


def run(say: Callable[[str], None] = print) -> Engine:
    engine = Engine()
    clock = time.time_ns

    def do(command: Command) -> list[Event]:
        events = engine.apply(msgspec.structs.replace(command, ts=clock()))
        for event in events:
            say("  " + _describe(event))
        return events

    say("== primary market: ACME offers 1,000 new shares at 10.00, underwritten by a bank")
    for name in ("acme-issuer", "alice", "bob", "carol", "acme-bank"):
        do(CreateAccount(name=name))
    for account in ("A2", "A3", "A4", "A5"):
        do(DepositCash(account=account, amount=parse_cash("50000.00")))
    say("== ACME trades with fees: makers get a 0.02% rebate, takers pay 0.10%")
    do(ListInstrument(symbol="ACME", kind="share", tick=1, issuer="A1", maker_bps=-2,
                      taker_bps=10))
    say("== a firm commitment: the bank's 10,000.00 is held; its gross spread is 7%")
    do(OpenOffering(symbol="ACME", price=_price("10.00"), qty=1000, underwriter="A5",
                    fee_bps=700, commitment="firm"))
    do(SubscribeOffering(account="A2", offering_id=1, qty=900))
    do(SubscribeOffering(account="A3", offering_id=1, qty=600))
    do(SubscribeOffering(account="A4", offering_id=1, qty=300))
    say("== oversubscribed 1,800 for 1,000: allocated pro rata, the proceeds less the bank's"
        " 700.00 to the issuer")
    do(CloseOffering(offering_id=1))

    say("== opening auction: orders rest, an indicative price is published, then one uncross")
    do(PlaceOrder(account="A2", client_order_id="a0", symbol="ACME", side="sell",
                  price=_price("10.10"), qty=100))
    do(PlaceOrder(account="A4", client_order_id="c0", symbol="ACME", side="buy",
                  price=_price("10.30"), qty=80))
    do(Uncross(symbol="ACME"))

    say("== secondary market: investors trade with each other")
    do(PlaceOrder(account="A2", client_order_id="a1", symbol="ACME", side="sell",
                  price=_price("10.50"), qty=200))
    do(PlaceOrder(account="A3", client_order_id="b1", symbol="ACME", side="sell",
                  price=_price("10.40"), qty=100))
    do(PlaceOrder(account="A4", client_order_id="c1", symbol="ACME", side="buy",
                  price=_price("10.45"), qty=150))
    do(PlaceOrder(account="A4", client_order_id="c2", symbol="ACME", side="buy",
                  type="market", qty=60))
    do(PlaceOrder(account="A3", client_order_id="b2", symbol="ACME", side="buy",
                  price=_price("99999.00"), qty=100))

    bids, asks = engine.book("ACME")
    say("== book ACME")
    for price, qty in reversed(asks):
        say(f"  ask {format_price(price, TICK_SIZE):>8} x {qty}")
    for price, qty in bids:
        say(f"  bid {format_price(price, TICK_SIZE):>8} x {qty}")
    say("== balances (cash incl. held / held / positions)")
    for account_id, holder in engine.accounts.items():
        cash, held, positions, _ = engine.balances(account_id)
        say(f"  {account_id} {holder.name:<12} {format_cash(cash):>10}"
            f" {format_cash(held):>9} {positions}")
    say(f"== state hash {engine.state_hash()}")
    return engine

