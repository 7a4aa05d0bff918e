"""Differential test: the engine against the naive reference model, command by command.

This module owns the random command generator and the per-step comparison: after every
command both must have produced the same events (reject messages aside: the rule book
fixes codes, not wording) and hold the same books and balances (the fee account's too), and
the engine's state must satisfy the rule book's invariants (no negative balances or holds,
holds within balances, cash conserved by everything but deposits and withdrawals, with the
fees in the fee account, and units by everything but deposits, withdrawals and offerings).
A failure prints the whole command sequence that led to it, already shrunk by hypothesis.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from exchange.domain.commands import (
    AddApiKey,
    CancelAll,
    CancelOrder,
    CloseOffering,
    Command,
    Commitment,
    CreateAccount,
    DepositCash,
    DepositUnits,
    ListInstrument,
    OpenOffering,
    OrderType,
    PlaceOrder,
    ReplaceOrder,
    SelfTradePrevention,
    SetInstrumentFees,
    SetInstrumentStatus,
    SetTradingRules,
    Side,
    SubscribeOffering,
    TimeInForce,
    Timer,
    TradingStatus,
    Uncross,
    WithdrawCash,
    WithdrawUnits,
)
from exchange.domain.engine import Engine
from exchange.domain.events import (
    AccountCreated,
    CashDeposited,
    CashWithdrawn,
    Event,
    InstrumentListed,
    OfferingOpened,
    OfferingUnderwritten,
    OrderAccepted,
    OrderRejected,
    OrderReplaced,
    Rejected,
    UnitsAllocated,
    UnitsDeposited,
    UnitsWithdrawn,
)
from exchange.domain.limits import (
    MAX_CASH,
    MAX_OFFERING_FEE_BPS,
    MAX_PRICE_TICKS,
    MAX_QTY,
    MAX_TICK,
    MAX_TRADE_FEE_BPS,
)
from tests.reference_model import ReferenceModel

ACCOUNTS = ("A1", "A2", "A3", "A4")
NOBODY = "A99"
TRADED = ("XA", "XB")  # tick 1, and tick 5 (listed through an offering)
NO_SYMBOL = "ZZ"
STEP_NS = 1_000
MAX_NEW_SYMBOLS = 4
MAX_LOG_LINES = 400

accounts = st.sampled_from(ACCOUNTS)
any_account = st.sampled_from((*ACCOUNTS, *ACCOUNTS, NOBODY))
traded = st.sampled_from(TRADED)
sides = st.sampled_from(("buy", "sell"))
prices = st.integers(95, 105)
qtys = st.integers(1, 20)
tifs = st.sampled_from(("gtc", "gtc", "gtc", "ioc", "fok", "gtd", "day"))
# A gtd order's expiry in steps from its place: 0 and below are refused (BAD_EXPIRY).
expiries = st.sampled_from((-1, 0, 1, 2, 5, 20))
stps = st.sampled_from(("cancel_newest", "cancel_oldest", "cancel_both"))
# A cap on a market buy lands on, or one minor unit beside, a whole number of units at a
# price the book is likely to hold, so off-by-one budget errors show.
max_notionals = st.one_of(
    st.just(0),
    st.builds(
        lambda units, price, tick, nudge: max(1, units * price * tick + nudge),
        st.integers(1, 12), prices, st.sampled_from((1, 5)), st.sampled_from((-1, 0, 0, 1)),
    ),
)
# "new" stands for a client order id never used before; c1 and c2 get reused on purpose.
client_ids = st.sampled_from(("", "", "", "new", "new", "c1", "c2"))
picks = st.integers(0, 10_000)


def _normalised(events: Sequence[Event]) -> list[Event]:
    """Reject messages are free text; the rule book fixes only the codes."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, OrderRejected | Rejected):
            out.append(msgspec.structs.replace(event, message=""))
        else:
            out.append(event)
    return out


def _diff(expected: Sequence[object], actual: Sequence[object]) -> str:
    return "\n".join(
        difflib.unified_diff(
            [repr(x) for x in expected],
            [repr(x) for x in actual],
            fromfile="reference",
            tofile="engine",
            lineterm="",
        )
    )


class EngineVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.model = ReferenceModel()
        self.ts = 0
        self.log: list[Command] = []
        self.places: list[PlaceOrder] = []
        self.order_ids: list[int] = []
        self.order_owner: dict[int, str] = {}
        self.order_qty: dict[int, int] = {}
        self.offering_ids: list[int] = []
        self.offering_symbol: dict[int, str] = {}
        self.symbols: list[str] = []
        self.accounts: list[str] = []
        self.new_symbols = 0
        self.cash_total = 0
        self.units_total: dict[str, int] = {}

    # --- the one step every rule takes ----------------------------------------------------

    def _client_id(self, drawn: str) -> str:
        return f"n{self.ts}" if drawn == "new" else drawn

    def _next_ts(self) -> int:
        self.ts += STEP_NS
        return self.ts

    def _history(self) -> str:
        lines = [repr(c) for c in self.log[-MAX_LOG_LINES:]]
        return "commands so far (oldest first):\n  " + "\n  ".join(lines)

    def _run(self, command: Command) -> list[Event]:
        """As the sequencer does: first a Timer when the next deadline has passed."""
        deadline = self.engine.next_deadline()
        assert deadline == self.model.next_deadline(), (
            f"next deadline: engine {deadline}, reference {self.model.next_deadline()}\n"
            f"{self._history()}"
        )
        if deadline is not None and deadline <= command.ts:
            self._apply(Timer(ts=command.ts))
        return self._apply(command)

    def _apply(self, command: Command) -> list[Event]:
        self.log.append(command)
        if isinstance(command, PlaceOrder):
            self.places.append(command)
        try:
            got = self.engine.apply(command)
        except Exception as exc:
            raise AssertionError(f"engine raised {exc!r}\n{self._history()}") from exc
        expected = self.model.apply(command)
        got_n, expected_n = _normalised(got), _normalised(expected)
        assert got_n == expected_n, (
            f"events differ for {command!r}\n{_diff(expected_n, got_n)}\n{self._history()}"
        )
        self._track(expected)
        self._compare_state(command)
        return expected

    def _track(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, AccountCreated):
                self.accounts.append(event.account)
            elif isinstance(event, InstrumentListed):
                self.symbols.append(event.symbol)
            elif isinstance(event, OfferingOpened):
                self.offering_ids.append(event.offering_id)
                self.offering_symbol[event.offering_id] = event.symbol
            elif isinstance(event, OrderAccepted) and not event.resent:
                self.order_ids.append(event.order_id)
                self.order_owner[event.order_id] = event.account
                self.order_qty[event.order_id] = event.qty
            elif isinstance(event, OrderReplaced):
                self.order_qty[event.order_id] = event.qty
            elif isinstance(event, CashDeposited):
                self.cash_total += event.amount
            elif isinstance(event, CashWithdrawn):
                self.cash_total -= event.amount
            elif isinstance(event, UnitsDeposited):
                self.units_total[event.symbol] = self.units_total.get(event.symbol, 0) + event.qty
            elif isinstance(event, UnitsWithdrawn):
                self.units_total[event.symbol] -= event.qty
            elif isinstance(event, UnitsAllocated):
                symbol = self.offering_symbol[event.offering_id]
                self.units_total[symbol] = self.units_total.get(symbol, 0) + event.allocated
            elif isinstance(event, OfferingUnderwritten):
                symbol = self.offering_symbol[event.offering_id]
                self.units_total[symbol] = self.units_total.get(symbol, 0) + event.units

    def _compare_state(self, command: Command) -> None:
        where = f"after {command!r}"
        for symbol in self.symbols:
            expected_book, got_book = self.model.book(symbol), self.engine.book(symbol)
            assert got_book == expected_book, (
                f"book of {symbol} differs {where}\n"
                f"{_diff(list(expected_book), list(got_book))}\n{self._history()}"
            )
            expected_rest, got_rest = self.model.resting(symbol), self.engine.resting(symbol)
            assert got_rest == expected_rest, (
                f"resting orders of {symbol} differ {where}\n"
                f"{_diff(expected_rest, got_rest)}\n{self._history()}"
            )
        cash_sum = 0
        unit_sums: dict[str, int] = {}
        for account in self.accounts:
            expected = self.model.balances(account)
            got = self.engine.balances(account)
            assert got == expected, (
                f"balances of {account} differ {where}: reference {expected}, engine {got}\n"
                f"{self._history()}"
            )
            cash, cash_held, positions, units_held = got
            assert 0 <= cash_held <= cash, f"{account} cash {got} {where}"
            for symbol, held in units_held.items():
                assert 0 <= held <= positions.get(symbol, 0), f"{account} units {got} {where}"
            assert all(q > 0 for q in positions.values()), f"{account} positions {got} {where}"
            cash_sum += cash
            for symbol, qty in positions.items():
                unit_sums[symbol] = unit_sums.get(symbol, 0) + qty
        assert cash_sum == self.cash_total, f"cash not conserved {where}\n{self._history()}"
        expected_units = {s: q for s, q in self.units_total.items() if q}
        assert unit_sums == expected_units, (
            f"units not conserved {where}: {unit_sums} != {expected_units}\n{self._history()}"
        )

    # --- set-up ---------------------------------------------------------------------------

    @initialize()
    def set_up(self) -> None:
        for name in ("alice", "bob", "carol", "dave"):
            self._run(CreateAccount(ts=self._next_ts(), name=name, api_key_hash=f"h-{name}"))
        for account, amount in zip(ACCOUNTS, (1_000_000, 300_000, 100_000, 20_000), strict=True):
            self._run(DepositCash(ts=self._next_ts(), account=account, amount=amount))
        # XA charges fees and pays makers a rebate; XB's offering is underwritten (firm, a
        # 3.33% gross spread that does not divide evenly); XB trades free until set_fees.
        self._run(ListInstrument(ts=self._next_ts(), symbol="XA", kind="share", tick=1,
                                 issuer="A1", maker_bps=-10, taker_bps=25))
        # XA opens through a call auction whose fills pay fees (the older order the maker).
        self._run(SetInstrumentStatus(ts=self._next_ts(), symbol="XA", status="pre_open"))
        # XA: a 5% band once it has traded, interruptions that end at the next command.
        self._run(SetTradingRules(ts=self._next_ts(), symbol="XA", band_pct=5, interruption_s=0))
        for account, qty in zip(ACCOUNTS, (200, 100, 60, 30), strict=True):
            self._run(DepositUnits(ts=self._next_ts(), account=account, symbol="XA", qty=qty))
        for account, side, price, qty in (("A2", "buy", 101, 30), ("A1", "sell", 99, 20),
                                          ("A3", "sell", 100, 15), ("A4", "buy", 100, 10)):
            self._run(PlaceOrder(ts=self._next_ts(), account=account, symbol="XA", side=side,  # type: ignore[arg-type]
                                 price=price, qty=qty))
        self._run(Uncross(ts=self._next_ts(), symbol="XA"))
        self._run(ListInstrument(ts=self._next_ts(), symbol="XB", kind="bond", tick=5,
                                 issuer="A2"))
        self._run(OpenOffering(ts=self._next_ts(), symbol="XB", price=101, qty=200,
                               underwriter="A1", fee_bps=333, commitment="firm"))
        for account, qty in (("A1", 60), ("A3", 40), ("A4", 30)):
            self._run(SubscribeOffering(ts=self._next_ts(), account=account, offering_id=1,
                                        qty=qty))
        self._run(SetTradingRules(ts=self._next_ts(), symbol="XB", band_pct=3))
        self._run(CloseOffering(ts=self._next_ts(), offering_id=1))  # XB: pre_open, ref 100
        self._run(PlaceOrder(ts=self._next_ts(), account="A2", symbol="XB", side="sell",
                             price=101, qty=10))
        self._run(PlaceOrder(ts=self._next_ts(), account="A3", symbol="XB", side="buy",
                             price=102, qty=4))
        self._run(Uncross(ts=self._next_ts(), symbol="XB"))
        self._run(DepositUnits(ts=self._next_ts(), account="A2", symbol="XB", qty=40))

    # --- orders ---------------------------------------------------------------------------

    @rule(account=accounts, symbol=traded, side=sides, price=prices, qty=qtys, tif=tifs,
          post_only=st.sampled_from((False, False, False, True)), stp=stps, cid=client_ids,
          expiry=expiries)
    def place_limit(self, account: str, symbol: str, side: Side, price: int, qty: int,
                    tif: TimeInForce, post_only: bool, stp: SelfTradePrevention,
                    cid: str, expiry: int = 5) -> None:
        ts = self._next_ts()
        expire_at = max(ts + expiry * STEP_NS, 0) if tif == "gtd" else 0
        self._run(PlaceOrder(ts=ts, account=account,
                             client_order_id=self._client_id(cid),
                             symbol=symbol, side=side, type="limit", price=price, qty=qty,
                             tif=tif, post_only=post_only and tif in ("gtc", "gtd", "day"),
                             stp=stp, expire_at=expire_at))

    @rule(account=accounts, symbol=traded, side=sides, qty=qtys, tif=tifs, stp=stps,
          cid=client_ids, max_notional=max_notionals)
    def place_market(self, account: str, symbol: str, side: Side, qty: int, tif: TimeInForce,
                     stp: SelfTradePrevention, cid: str, max_notional: int) -> None:
        self._run(PlaceOrder(ts=self._next_ts(), account=account,
                             client_order_id=self._client_id(cid),
                             symbol=symbol, side=side, type="market", price=0, qty=qty, tif=tif,
                             stp=stp, max_notional=max_notional if side == "buy" else 0))

    # Issue 16: stops a few ticks either side of the last trade (some already reached:
    # BAD_TRIGGER), with every time in force (gtd and day too); icebergs showing part of
    # their qty. Both instruments go through call auctions (set_status, set_rules' open_at,
    # volatility interruptions): stops wait in them, icebergs take part whole.
    @rule(account=accounts, symbol=traded, side=sides, kind=st.sampled_from(("stop", "stop_limit")),
          away=st.integers(-2, 6), price=prices, qty=qtys, tif=tifs, stp=stps, cid=client_ids,
          max_notional=max_notionals, display=st.sampled_from((0, 0, 0, 1, 3)),
          expiry=expiries)
    def place_stop(self, account: str, symbol: str, side: Side, kind: OrderType, away: int,
                   price: int, qty: int, tif: TimeInForce, stp: SelfTradePrevention, cid: str,
                   max_notional: int, display: int, expiry: int = 5) -> None:
        last = self.engine.books[symbol].last_price or 100
        trigger = max(0, last + away if side == "buy" else last - away)
        ts = self._next_ts()
        self._run(PlaceOrder(ts=ts, account=account,
                             client_order_id=self._client_id(cid), symbol=symbol, side=side,
                             type=kind, price=price if kind == "stop_limit" else 0, qty=qty,
                             tif=tif, stp=stp, trigger_price=trigger,
                             max_notional=max_notional if side == "buy" else 0,
                             display_qty=min(display, qty),
                             expire_at=max(ts + expiry * STEP_NS, 0) if tif == "gtd" else 0))

    @rule(account=accounts, symbol=traded, side=sides, price=prices, qty=qtys,
          display=st.integers(0, 14), tif=tifs, stp=stps, cid=client_ids, expiry=expiries)
    def place_iceberg(self, account: str, symbol: str, side: Side, price: int, qty: int,
                      display: int, tif: TimeInForce, stp: SelfTradePrevention,
                      cid: str, expiry: int = 5) -> None:
        ts = self._next_ts()
        self._run(PlaceOrder(ts=ts, account=account,
                             client_order_id=self._client_id(cid), symbol=symbol, side=side,
                             type="limit", price=price, qty=qty, tif=tif, stp=stp,
                             display_qty=display,
                             expire_at=max(ts + expiry * STEP_NS, 0) if tif == "gtd" else 0))

    @rule(account=any_account, symbol=st.sampled_from((*TRADED, NO_SYMBOL, "N1")),
          side=sides, kind=st.sampled_from(("limit", "market")), tif=tifs, cid=client_ids,
          flaw=st.sampled_from(("qty0", "qty_big", "price0", "price_big", "market_price",
                                "post_only", "max_notional", "notional_big", "huge", "none")))
    def place_flawed(self, account: str, symbol: str, side: Side, kind: OrderType,
                     tif: TimeInForce, cid: str, flaw: str) -> None:
        qty, price = 5, 100 if kind == "limit" else 0
        post_only, max_notional = False, 0
        if flaw == "qty0":
            qty = 0
        elif flaw == "qty_big":
            qty = MAX_QTY + 1
        elif flaw == "price0":
            price = 0
        elif flaw == "price_big":
            price = MAX_PRICE_TICKS + 1
        elif flaw == "market_price":
            price = 100
        elif flaw == "post_only":
            post_only = True
        elif flaw == "max_notional":
            max_notional = 1_000
        elif flaw == "notional_big":
            max_notional = MAX_CASH + 1
        elif flaw == "huge":
            qty = 100_000
        self._run(PlaceOrder(ts=self._next_ts(), account=account,
                             client_order_id=self._client_id(cid),
                             symbol=symbol, side=side, type=kind, price=price, qty=qty, tif=tif,
                             post_only=post_only, max_notional=max_notional))

    @rule(pick=picks, change=st.sampled_from(("same", "same", "qty", "price", "tif", "side")))
    def resend(self, pick: int, change: str) -> None:
        sent = [p for p in self.places if p.client_order_id]
        if not sent:
            return
        original = sent[pick % len(sent)]
        command = msgspec.structs.replace(original, ts=self._next_ts())
        if change == "qty":
            command = msgspec.structs.replace(command, qty=command.qty + 1)
        elif change == "price" and command.type == "limit":
            command = msgspec.structs.replace(command, price=command.price + 1)
        elif change == "tif":
            command = msgspec.structs.replace(command, tif="ioc" if command.tif != "ioc" else "gtc")
        elif change == "side":
            command = msgspec.structs.replace(
                command, side="sell" if command.side == "buy" else "buy"
            )
        self._run(command)

    # --- cancel and replace ---------------------------------------------------------------

    def _pick_order(self, pick: int) -> int:
        if not self.order_ids or pick % 10 == 9:
            return 999_999
        return self.order_ids[pick % len(self.order_ids)]

    def _pick_resting(self, pick: int) -> tuple[int, str, str, int, int] | None:
        rows = [row for symbol in self.symbols for row in self.model.resting(symbol)]
        return rows[pick % len(rows)] if rows else None

    @rule(pick=picks, owner=st.booleans(), other=accounts)
    def cancel(self, pick: int, owner: bool, other: str) -> None:
        row = self._pick_resting(pick) if pick % 3 else None
        order_id = row[0] if row is not None else self._pick_order(pick)
        account = self.order_owner.get(order_id, other) if owner else other
        if pick % 17 == 0:
            order_id = 0
        self._run(CancelOrder(ts=self._next_ts(), account=account, order_id=order_id))

    @rule(account=any_account, cid=client_ids)
    def cancel_by_client_id(self, account: str, cid: str) -> None:
        if cid == "new":  # the latest client order id this account placed with, if any
            used = [p.client_order_id for p in self.places
                    if p.account == account and p.client_order_id]
            cid = used[-1] if used else "never-used"
        self._run(CancelOrder(ts=self._next_ts(), account=account, client_order_id=cid))

    @rule(account=any_account, symbol=st.sampled_from(("", "", *TRADED, NO_SYMBOL)))
    def cancel_all(self, account: str, symbol: str) -> None:
        self._run(CancelAll(ts=self._next_ts(), account=account, symbol=symbol))

    @rule(pick=picks, owner=st.sampled_from((True, True, True, False)), other=any_account,
          qty_change=st.sampled_from(("keep", "delta", "delta", "absolute", "big")),
          delta=st.integers(-4, 6),
          price=st.sampled_from((0, 0, 95, 98, 99, 100, 101, 102, 105, MAX_PRICE_TICKS + 1)))
    def replace(self, pick: int, owner: bool, other: str, qty_change: str, delta: int,
                price: int) -> None:
        row = self._pick_resting(pick) if pick % 4 else None
        if row is not None:
            order_id, remaining = row[0], row[4]
        else:
            order_id, remaining = self._pick_order(pick), 0
        account = self.order_owner.get(order_id, other) if owner else other
        total = self.order_qty.get(order_id, 5)
        filled = total - remaining if row is not None else 0
        qty = 0
        if qty_change == "delta":
            qty = max(filled + remaining + delta, 0)
        elif qty_change == "absolute":
            qty = max(filled + delta, 0)  # delta <= 0: at or below what filled
        elif qty_change == "big":
            qty = 5_000
        self._run(ReplaceOrder(ts=self._next_ts(), account=account, order_id=order_id, qty=qty,
                               price=price))

    # Hypothesis picks rules uniformly: these duplicates weight the run towards trading.
    @rule(account=accounts, symbol=traded, side=sides, price=prices, qty=qtys, tif=tifs,
          post_only=st.sampled_from((False, False, False, True)), stp=stps, cid=client_ids)
    def place_limit_more(self, account: str, symbol: str, side: Side, price: int, qty: int,
                         tif: TimeInForce, post_only: bool, stp: SelfTradePrevention,
                         cid: str) -> None:
        self.place_limit(account, symbol, side, price, qty, tif, post_only, stp, cid)

    @rule(account=accounts, symbol=traded, side=sides, price=prices, qty=qtys, tif=tifs,
          post_only=st.sampled_from((False, False, False, True)), stp=stps, cid=client_ids)
    def place_limit_again(self, account: str, symbol: str, side: Side, price: int, qty: int,
                          tif: TimeInForce, post_only: bool, stp: SelfTradePrevention,
                          cid: str) -> None:
        self.place_limit(account, symbol, side, price, qty, tif, post_only, stp, cid)

    @rule(account=accounts, symbol=traded, side=sides, qty=qtys, tif=tifs, stp=stps,
          cid=client_ids, max_notional=max_notionals)
    def place_market_more(self, account: str, symbol: str, side: Side, qty: int,
                          tif: TimeInForce, stp: SelfTradePrevention, cid: str,
                          max_notional: int) -> None:
        self.place_market(account, symbol, side, qty, tif, stp, cid, max_notional)

    @rule(pick=picks, qty_change=st.sampled_from(("keep", "delta", "delta", "absolute", "big")),
          delta=st.integers(-4, 6), price=st.sampled_from((0, 0, 95, 98, 99, 100, 101, 102, 105)))
    def replace_own(self, pick: int, qty_change: str, delta: int, price: int) -> None:
        self.replace(pick | 1, True, "A1", qty_change, delta, price)

    # --- money ----------------------------------------------------------------------------

    def _available_cash(self, account: str) -> int:
        if account not in self.accounts:
            return 0
        cash, held, _, _ = self.model.balances(account)
        return cash - held

    def _available_units(self, account: str, symbol: str) -> int:
        if account not in self.accounts:
            return 0
        _, _, positions, held = self.model.balances(account)
        return positions.get(symbol, 0) - held.get(symbol, 0)

    @rule(action=st.sampled_from(("deposit_cash", "withdraw_cash", "deposit_units",
                                  "withdraw_units", "add_api_key")),
          account=any_account, symbol=st.sampled_from((*TRADED, *TRADED, NO_SYMBOL, "N1")),
          how=st.sampled_from(("all", "over", "some", "zero", "big", "small")))
    def money(self, action: str, account: str, symbol: str, how: str) -> None:
        """Deposits and withdrawals of cash and units, some of which must be refused."""
        ts = self._next_ts()
        if action == "add_api_key":
            self._run(AddApiKey(ts=ts, account=account, api_key_hash="h-extra"))
        elif action == "deposit_cash":
            amount = {"all": 20_000, "over": MAX_CASH, "some": 500, "zero": 0,
                      "big": MAX_CASH + 1, "small": 1}[how]
            self._run(DepositCash(ts=ts, account=account, amount=amount))
        elif action == "withdraw_cash":
            available = self._available_cash(account)
            amount = {"all": available, "over": available + 1, "some": available // 3 + 1,
                      "zero": 0, "big": MAX_CASH + 1, "small": 1}[how]
            self._run(WithdrawCash(ts=ts, account=account, amount=amount))
        elif action == "deposit_units":
            qty = {"all": 10, "over": MAX_QTY, "some": 3, "zero": 0, "big": MAX_QTY + 1,
                   "small": 1}[how]
            self._run(DepositUnits(ts=ts, account=account, symbol=symbol, qty=qty))
        else:
            available = self._available_units(account, symbol)
            qty = {"all": available, "over": available + 1, "some": available // 2 + 1,
                   "zero": 0, "big": MAX_QTY + 1, "small": 1}[how]
            self._run(WithdrawUnits(ts=ts, account=account, symbol=symbol, qty=qty))

    # --- instruments and offerings --------------------------------------------------------

    @rule(symbol=st.sampled_from((*TRADED, NO_SYMBOL, "N1", "N2")),
          status=st.sampled_from(("trading", "trading", "halted", "pre_open", "closed")))
    def set_status(self, symbol: str, status: TradingStatus) -> None:
        self._run(SetInstrumentStatus(ts=self._next_ts(), symbol=symbol, status=status))

    # --- market phases --------------------------------------------------------------------

    @rule(symbol=st.sampled_from((*TRADED, *TRADED, NO_SYMBOL)),
          band=st.sampled_from((-1, 0, 2, 5, 10, 101)),
          interruption=st.sampled_from((-1, 0, 1, 120, 86_401)),
          open_in=st.sampled_from((None, 0, -1, 2, 10)),
          close_in=st.sampled_from((None, None, 0, -1, 3, 30)))
    def set_rules(self, symbol: str, band: int, interruption: int, open_in: int | None,
                  close_in: int | None) -> None:
        """Steps from now for open_at and close_at; None keeps, 0 clears, -1 is past."""
        ts = self._next_ts()

        def at(steps: int | None) -> int:
            return -1 if steps is None else 0 if steps == 0 else ts + steps * STEP_NS

        self._run(SetTradingRules(ts=ts, symbol=symbol, band_pct=band,
                                  interruption_s=interruption, open_at=at(open_in),
                                  close_at=at(close_in)))

    @rule(symbol=traded, accounts4=st.permutations(ACCOUNTS), up=st.integers(-4, 4),
          qty=qtys, other_qty=qtys, display=st.integers(1, 6), ice_side=sides,
          kind=st.sampled_from(("stop", "stop_limit")), away=st.integers(1, 4),
          stop_tif=st.sampled_from(("gtc", "gtc", "ioc", "fok", "day")),
          far=st.sampled_from((0, 0, 4, 6, 8)))
    def auction_with_stops_and_icebergs(
        self, symbol: str, accounts4: Sequence[str], up: int, qty: int, other_qty: int,
        display: int, ice_side: Side, kind: OrderType, away: int, stop_tif: TimeInForce,
        far: int,
    ) -> None:  # fmt: skip
        """A call auction with an iceberg crossing a plain order and a stop waiting near the
        last price; its uncross (hidden quantity included) may trigger the stop, which then
        trades, and may meet a far order beyond the band (a volatility interruption)."""
        stopper, ice, other, far_one = accounts4
        last = self.engine.books[symbol].last_price or 100
        self._run(SetInstrumentStatus(ts=self._next_ts(), symbol=symbol, status="pre_open"))
        stop_side: Side = "buy" if up >= 0 else "sell"
        sign = 1 if stop_side == "buy" else -1
        if far:  # the stop's far side: what a triggered market stop might reach
            self._run(PlaceOrder(ts=self._next_ts(), account=far_one, symbol=symbol,
                                 side="sell" if stop_side == "buy" else "buy",
                                 price=last + up + sign * far, qty=qty))
        self._run(PlaceOrder(ts=self._next_ts(), account=stopper, symbol=symbol, side=stop_side,
                             type=kind, price=last + up + sign if kind == "stop_limit" else 0,
                             qty=qty, tif=stop_tif, trigger_price=last + sign * away,
                             max_notional=5_000 if stop_side == "buy" and kind == "stop" else 0))
        self._run(PlaceOrder(ts=self._next_ts(), account=ice, symbol=symbol, side=ice_side,
                             price=last + up, qty=qty + display, display_qty=display))
        self._run(PlaceOrder(ts=self._next_ts(), account=other, symbol=symbol,
                             side="sell" if ice_side == "buy" else "buy", price=last + up,
                             qty=other_qty + display))
        self._run(Uncross(ts=self._next_ts(), symbol=symbol))

    @rule(symbol=st.sampled_from((*TRADED, *TRADED, NO_SYMBOL)))
    def uncross(self, symbol: str) -> None:
        self._run(Uncross(ts=self._next_ts(), symbol=symbol))

    @rule(seconds=st.sampled_from((0, 1, 60, 121)))
    def time_passes(self, seconds: int) -> None:
        """The clock jumps; the sequencer sends a Timer if a deadline passed."""
        self.ts += seconds * 1_000_000_000
        deadline = self.engine.next_deadline()
        if deadline is not None and deadline <= self.ts + STEP_NS:
            self._run(Timer(ts=self._next_ts()))

    @rule(fresh=st.sampled_from((True, True, False)), issuer=any_account,
          tick=st.sampled_from((1, 5, 5, 0, MAX_TICK + 1)),
          fees=st.sampled_from(((0, 0), (0, 0), (5, 20), (-20, 20), (-21, 20), (21, 20))))
    def list_instrument(self, fresh: bool, issuer: str, tick: int, fees: tuple[int, int]) -> None:
        if fresh and self.new_symbols >= MAX_NEW_SYMBOLS:
            return
        symbol = f"N{self.new_symbols + 1}" if fresh else "XA"
        events = self._run(ListInstrument(ts=self._next_ts(), symbol=symbol, kind="fund",
                                          tick=tick, issuer=issuer, maker_bps=fees[0],
                                          taker_bps=fees[1]))
        if any(isinstance(e, InstrumentListed) for e in events):
            self.new_symbols += 1

    @rule(symbol=st.sampled_from(("N1", "N1", "N2", "XA", NO_SYMBOL)),
          price=st.sampled_from((0, 80, 100, MAX_PRICE_TICKS + 1)),
          qty=st.sampled_from((0, 10, 50, 5_000)),
          window=st.sampled_from((0, 0, 2, 6)),
          underwriter=st.sampled_from(("", "", "A1", "A2", "A4", NOBODY)),
          fee_bps=st.sampled_from((0, 0, 333, 700, MAX_OFFERING_FEE_BPS,
                                   MAX_OFFERING_FEE_BPS + 1)),
          commitment=st.sampled_from(("best_efforts", "firm", "firm")))
    def open_offering(self, symbol: str, price: int, qty: int, window: int, underwriter: str,
                      fee_bps: int, commitment: Commitment) -> None:
        closes_at = self.ts + window * STEP_NS if window else 0
        self._run(OpenOffering(ts=self._next_ts(), symbol=symbol, price=price, qty=qty,
                               closes_at=closes_at, underwriter=underwriter, fee_bps=fee_bps,
                               commitment=commitment))

    @rule(account=any_account, pick=picks, qty=st.sampled_from((0, 1, 7, 13, 30, 60, 400)))
    def subscribe(self, account: str, pick: int, qty: int) -> None:
        offering_id = 77 if pick % 8 == 7 or not self.offering_ids else (
            self.offering_ids[-1 - pick % len(self.offering_ids)]
        )
        self._run(SubscribeOffering(ts=self._next_ts(), account=account,
                                    offering_id=offering_id, qty=qty))

    @rule(symbol=st.sampled_from((*TRADED, *TRADED, NO_SYMBOL)),
          maker_bps=st.sampled_from((-30, -25, -10, 0, 0, 5, 25, 40, MAX_TRADE_FEE_BPS)),
          taker_bps=st.sampled_from((0, 0, 10, 25, 33, MAX_TRADE_FEE_BPS,
                                     MAX_TRADE_FEE_BPS + 1, -5)))
    def set_fees(self, symbol: str, maker_bps: int, taker_bps: int) -> None:
        self._run(SetInstrumentFees(ts=self._next_ts(), symbol=symbol, maker_bps=maker_bps,
                                    taker_bps=taker_bps))

    @rule(pick=picks)
    def close_offering(self, pick: int) -> None:
        offering_id = 77 if pick % 8 == 7 or not self.offering_ids else (
            self.offering_ids[-1 - pick % len(self.offering_ids)]
        )
        self._run(CloseOffering(ts=self._next_ts(), offering_id=offering_id))


EngineVsReference.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineVsReference = EngineVsReference.TestCase
