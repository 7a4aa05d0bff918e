"""The primary market: an issuer's offering, its underwriter (the gross spread, and under a firm
commitment the units no one subscribed), subscriptions against cash holds, and the pro-rata
allocation at close that issues the units and pays the issuer (OpenOffering, SubscribeOffering,
CloseOffering). The allocation rule itself is `instruments.allocate`.
"""

from exchange.domain.auction import enter_call
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import CloseOffering, OpenOffering, SubscribeOffering
from exchange.domain.events import (
    Event,
    InstrumentStatusChanged,
    OfferingClosed,
    OfferingOpened,
    OfferingSubscribed,
    OfferingUnderwritten,
    UnitsAllocated,
)
from exchange.domain.fees import fee_of, offering_fee_problem
from exchange.domain.instruments import Offering, allocate
from exchange.domain.limits import MAX_PRICE_TICKS, MAX_QTY
from exchange.domain.market import Market
from exchange.domain.replies import refuse
from exchange.domain.settlement import add_units


def open_offering(market: Market, cmd: OpenOffering) -> list[Event]:
    instrument = market.instruments.get(cmd.symbol)
    if instrument is None:
        return refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
    if instrument.status != "listed":
        return refuse(cmd, Code.BAD_STATUS, "only a listed instrument can be offered")
    if not 0 < cmd.price <= MAX_PRICE_TICKS:
        return refuse(cmd, Code.BAD_PRICE, "price out of range")
    if not 0 < cmd.qty <= MAX_QTY:
        return refuse(cmd, Code.BAD_QTY, "quantity out of range")
    problem = offering_fee_problem(cmd.fee_bps)
    if problem:
        return refuse(cmd, Code.BAD_FEE, problem)
    firm = cmd.commitment == "firm"
    if cmd.underwriter:
        underwriter = market.accounts.get(cmd.underwriter)
        if underwriter is None:
            return refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such underwriter account")
        # The whole issue at the offer price: what a firm underwriter may have to buy.
        commitment = cmd.price * instrument.tick * cmd.qty if firm else 0
        if commitment > underwriter.cash - underwriter.cash_held:
            message = "the underwriter cannot cover the whole issue"
            return refuse(cmd, Code.INSUFFICIENT_FUNDS, message)
        underwriter.cash_held += commitment
    elif cmd.fee_bps or firm:
        return refuse(cmd, Code.BAD_REQUEST, "a fee or a firm commitment needs an underwriter")
    offering_id = market.next_offering
    market.next_offering += 1
    market.offerings[offering_id] = Offering(
        offering_id, cmd.symbol, cmd.price, cmd.qty, cmd.closes_at, cmd.underwriter,
        cmd.fee_bps, cmd.commitment,
    )  # fmt: skip
    instrument.status = "in_offering"
    return [
        OfferingOpened(
            offering_id=offering_id,
            symbol=cmd.symbol,
            price=cmd.price,
            qty=cmd.qty,
            closes_at=cmd.closes_at,
            underwriter=cmd.underwriter,
            fee_bps=cmd.fee_bps,
            commitment=cmd.commitment,
        ),
        InstrumentStatusChanged(symbol=cmd.symbol, status="in_offering"),
    ]


def subscribe_offering(market: Market, cmd: SubscribeOffering) -> list[Event]:
    account = market.accounts.get(cmd.account)
    if account is None:
        return refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
    offering = market.offerings.get(cmd.offering_id)
    if offering is None:
        return refuse(cmd, Code.UNKNOWN_OFFERING, "no such offering", cmd.account)
    if not offering.is_open or (offering.closes_at and cmd.ts > offering.closes_at):
        return refuse(cmd, Code.OFFERING_CLOSED, "the offering is closed", cmd.account)
    if not 0 < cmd.qty <= MAX_QTY:
        return refuse(cmd, Code.BAD_QTY, "quantity out of range", cmd.account)
    cost = offering.price * market.instruments[offering.symbol].tick * cmd.qty
    if cost > account.cash - account.cash_held:
        return refuse(cmd, Code.INSUFFICIENT_FUNDS, "not enough available cash", cmd.account)
    account.cash_held += cost
    subs = offering.subscriptions
    total = subs[cmd.account] = subs.get(cmd.account, 0) + cmd.qty
    return [
        OfferingSubscribed(
            offering_id=cmd.offering_id, account=cmd.account, qty=cmd.qty, total=total
        )
    ]


def close_offering(market: Market, cmd: CloseOffering) -> list[Event]:
    offering = market.offerings.get(cmd.offering_id)
    if offering is None:
        return refuse(cmd, Code.UNKNOWN_OFFERING, "no such offering")
    if not offering.is_open:
        return refuse(cmd, Code.OFFERING_CLOSED, "the offering is closed already")
    instrument = market.instruments[offering.symbol]
    unit_cost = offering.price * instrument.tick
    subscribers = list(offering.subscriptions.items())
    shares = allocate([qty for _, qty in subscribers], offering.qty)
    events: list[Event] = []
    proceeds = 0
    for (account_id, requested), allocated in zip(subscribers, shares, strict=True):
        account = market.accounts[account_id]
        cost = allocated * unit_cost
        account.cash_held -= requested * unit_cost
        account.cash -= cost
        add_units(account.positions, offering.symbol, allocated)
        proceeds += cost
        events.append(
            UnitsAllocated(
                offering_id=offering.offering_id,
                account=account_id,
                requested=requested,
                allocated=allocated,
                cost=cost,
            )
        )
    issued = sum(shares)
    if offering.commitment == "firm":
        # The underwriter's hold for the whole issue goes; it buys what no one subscribed.
        underwriter = market.accounts[offering.underwriter]
        unsold = offering.qty - issued
        cost = unsold * unit_cost
        underwriter.cash_held -= offering.qty * unit_cost
        underwriter.cash -= cost
        add_units(underwriter.positions, offering.symbol, unsold)
        issued += unsold
        proceeds += cost
        events.append(
            OfferingUnderwritten(
                offering_id=offering.offering_id,
                account=offering.underwriter,
                units=unsold,
                cost=cost,
            )
        )
    # The gross spread, a charge like every fee: rounded up, at most the proceeds.
    fee = fee_of(proceeds, offering.fee_bps)
    market.accounts[instrument.issuer].cash += proceeds - fee
    if fee:
        market.accounts[offering.underwriter].cash += fee
    offering.is_open = False
    events.append(
        OfferingClosed(
            offering_id=offering.offering_id,
            symbol=offering.symbol,
            issuer=instrument.issuer,
            issued=issued,
            proceeds=proceeds,
            underwriter=offering.underwriter,
            fee=fee,
        )
    )
    # Secondary trading opens through a call auction, the offering price its reference.
    instrument.reprice(offering.price, instrument.band_pct)
    enter_call(market, instrument, instrument.open_at, "offering", events)
    return events
