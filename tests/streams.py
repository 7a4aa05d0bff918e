"""Seeded streams of mixed commands: every kind of command, for replay and determinism tests."""

import random

import msgspec

from exchange.domain.commands import (
    KEEP,
    CancelAll,
    CancelOrder,
    CloseOffering,
    Command,
    CreateAccount,
    DepositCash,
    DepositUnits,
    ListInstrument,
    OpenOffering,
    OrderType,
    PlaceOrder,
    ReplaceOrder,
    SetInstrumentFees,
    SetInstrumentStatus,
    SetTradingRules,
    Side,
    SubscribeOffering,
    Timer,
    TradingStatus,
    Uncross,
    WithdrawCash,
)
from exchange.domain.engine import Engine

SYMBOLS = ("ACME", "BOND.A", "FUND-1")
# Trading fees (maker, taker bps) each instrument is listed with: FUND-1 pays makers a rebate.
LISTED_FEES = ((0, 0), (0, 0), (-3, 7))
ACCOUNTS = 8
START_TS = 1_700_000_000_000_000_000


def mixed_stream(seed: int, count: int, *, timed: bool = False) -> list[Command]:
    """`count` commands after a fixed set-up: trading on three instruments (one reached
    through an underwritten offering, one with fees), with every order type, cancels,
    replaces, halts and fee changes mixed in. `timed` adds market phases with deadlines:
    gtd orders, auctions (FUND-1's with fees), bands, session closes and the Timer commands
    a sequencer would send (for engines fed directly; a sequencer sends its own Timers, so
    a stream fed to one stays untimed)."""
    rng = random.Random(seed)
    ts = START_TS
    out: list[Command] = [CreateAccount(name=f"trader-{i}") for i in range(1, ACCOUNTS + 1)]
    accounts = [f"A{i}" for i in range(1, ACCOUNTS + 1)]
    out.extend(DepositCash(account=account, amount=50_000_000) for account in accounts)
    out.extend(
        ListInstrument(symbol=symbol, kind="share", tick=1 + 4 * n, issuer="A1",
                       maker_bps=maker_bps, taker_bps=taker_bps)
        for n, (symbol, (maker_bps, taker_bps)) in enumerate(zip(SYMBOLS, LISTED_FEES, strict=True))
    )  # fmt: skip
    # Undersubscribed (7 subscriptions of at most 2,000): the firm underwriter takes the rest.
    out.append(OpenOffering(symbol="ACME", price=1000, qty=15_000, underwriter=accounts[-1],
                            fee_bps=650, commitment="firm"))
    out.extend(
        SubscribeOffering(account=account, offering_id=1, qty=rng.randint(100, 2000))
        for account in accounts[1:]
    )
    out.append(CloseOffering(offering_id=1))
    out.append(Uncross(symbol="ACME"))  # its opening auction, with no orders yet
    for symbol in SYMBOLS[1:]:
        out.append(SetInstrumentStatus(symbol=symbol, status="trading"))
        out.extend(DepositUnits(account=a, symbol=symbol, qty=10_000) for a in accounts)
    # A private engine is the generator's oracle, so cancels and replaces can name orders
    # that are really open; the stream stays a pure function of the seed.
    oracle = Engine()
    stamped: list[Command] = []
    for i in range(len(out) + count):
        if i < len(out):
            command = out[i]
        elif timed and rng.random() < 0.12:
            command = _phase_command(rng, accounts, ts)  # ts: the previous command's
        else:
            command = _random_command(rng, oracle, accounts, i)
        ts += rng.randint(1, 1_000_000)
        stamped.append(_with_ts(command, ts))
        oracle.apply(stamped[-1])
    return stamped


def _random_command(rng: random.Random, oracle: Engine, accounts: list[str], i: int) -> Command:
    account = rng.choice(accounts)
    symbol = rng.choice(SYMBOLS)
    open_ids = list(oracle.accounts[account].open_orders)
    recent = rng.choice(open_ids) if open_ids and rng.random() < 0.9 else rng.randint(1, i)
    roll = rng.random()
    if roll < 0.55:
        kind = rng.random()
        if kind < 0.2:  # issue 16: stops and icebergs, so every test of this stream covers them
            return _stop_or_iceberg(rng, oracle, account, symbol, kind, i)
        order_type: OrderType = "market" if rng.random() < 0.1 else "limit"
        return PlaceOrder(
            account=account,
            client_order_id=f"c{rng.randint(0, i)}" if rng.random() < 0.7 else "",
            symbol=symbol,
            side=rng.choice(("buy", "sell")),
            type=order_type,
            price=0 if order_type == "market" else rng.randint(95, 105),
            qty=rng.randint(1, 50),
            tif=rng.choice(("gtc", "gtc", "ioc", "fok")),
            stp=rng.choice(("cancel_newest", "cancel_oldest", "cancel_both")),
        )
    if roll < 0.75:
        return CancelOrder(account=account, order_id=recent)
    if roll < 0.9:
        return ReplaceOrder(
            account=account,
            order_id=recent,
            qty=rng.choice((0, rng.randint(1, 60))),
            price=rng.choice((0, rng.randint(95, 105))),
        )
    if roll < 0.95:
        return CancelAll(account=account, symbol=rng.choice(("", symbol)))
    if roll < 0.955:
        status: TradingStatus = "halted" if rng.random() < 0.3 else "trading"
        return SetInstrumentStatus(symbol=symbol, status=status)
    if roll < 0.958:
        return SetInstrumentFees(
            symbol=symbol, maker_bps=rng.choice((-5, 0, 5)), taker_bps=rng.choice((5, 10, 30))
        )
    return WithdrawCash(account=account, amount=rng.randint(1, 1_000_000))


def _stop_or_iceberg(
    rng: random.Random, oracle: Engine, account: str, symbol: str, kind: float, i: int
) -> PlaceOrder:
    """A stop (triggers a few ticks beyond the last trade, mostly), a stop-limit, or an
    iceberg showing part of its qty."""
    side: Side = rng.choice(("buy", "sell"))
    qty = rng.randint(1, 50)
    cid = f"c{rng.randint(0, i)}" if rng.random() < 0.7 else ""
    if kind < 0.12:
        last = oracle.books[symbol].last_price or 100
        away = rng.randint(-1, 4)  # -1: the last trade already reached it (BAD_TRIGGER)
        trigger = max(1, last + away if side == "buy" else last - away)
        stop_type: OrderType = "stop" if kind < 0.06 else "stop_limit"
        return PlaceOrder(
            account=account, client_order_id=cid, symbol=symbol, side=side, type=stop_type,
            price=0 if stop_type == "stop" else rng.randint(95, 105), qty=qty,
            tif=rng.choice(("gtc", "ioc", "fok")), trigger_price=trigger,
            max_notional=rng.randint(1_000, 100_000) if side == "buy" and stop_type == "stop"
            else 0,
            display_qty=rng.randint(1, qty) if stop_type == "stop_limit" and rng.random() < 0.3
            else 0,
        )  # fmt: skip
    return PlaceOrder(
        account=account, client_order_id=cid, symbol=symbol, side=side,
        price=rng.randint(95, 105), qty=qty, display_qty=rng.randint(1, qty),
        stp=rng.choice(("cancel_newest", "cancel_oldest", "cancel_both")),
    )  # fmt: skip
def _phase_command(rng: random.Random, accounts: list[str], ts: int) -> Command:
    """A command of market phases, its times a few commands (of ~0.5 ms each) away."""
    symbol = rng.choice(SYMBOLS)
    roll = rng.random()
    soon = ts + rng.randint(-1_000_000, 20_000_000)  # sometimes already past
    if roll < 0.4:
        return Timer()  # what is due happens (a sequencer sends one only then)
    if roll < 0.7:
        side: Side = rng.choice(("buy", "sell"))
        qty = rng.randint(1, 50)
        kind = rng.random()  # a third: a gtd/day iceberg or stop-limit (issue 16 with phases)
        return PlaceOrder(
            account=rng.choice(accounts), symbol=symbol, side=side,
            type="stop_limit" if kind < 0.15 else "limit", price=rng.randint(95, 105),
            qty=qty, tif=rng.choice(("gtd", "gtd", "day")),
            expire_at=0 if rng.random() < 0.3 else soon,
            trigger_price=rng.randint(95, 105) if kind < 0.15 else 0,
            display_qty=rng.randint(1, qty) if 0.1 < kind < 0.33 else 0,
        )  # fmt: skip
    if roll < 0.85:
        return SetTradingRules(
            symbol=symbol, band_pct=rng.choice((KEEP, 0, 3, 10)),
            interruption_s=rng.choice((KEEP, 0)), open_at=rng.choice((KEEP, 0, soon)),
            close_at=rng.choice((KEEP, KEEP, 0, soon)),
        )  # fmt: skip
    if roll < 0.93:
        return Uncross(symbol=symbol)
    status: TradingStatus = rng.choice(("pre_open", "closed", "trading", "halted"))
    return SetInstrumentStatus(symbol=symbol, status=status)


def _with_ts(command: Command, ts: int) -> Command:
    return msgspec.structs.replace(command, ts=ts)
