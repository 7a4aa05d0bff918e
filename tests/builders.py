"""Small builders for engine tests: a market with accounts and instruments in a few lines."""

from typing import Any, TypeVar

import msgspec

from exchange.domain.commands import (
    Command,
    CreateAccount,
    DepositCash,
    DepositUnits,
    ListInstrument,
    PlaceOrder,
    SetInstrumentStatus,
)
from exchange.domain.engine import Engine
from exchange.domain.events import Event, OrderAccepted, OrderRejected

E = TypeVar("E")


class Market:
    """An engine plus a clock that advances one second per command."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.ts = 1_700_000_000_000_000_000
        self.issuer = self.account(cash=0)

    def do(self, command: Command) -> list[Event]:
        self.ts += 1_000_000_000
        return self.engine.apply(msgspec.structs.replace(command, ts=self.ts))

    def account(self, cash: int = 1_000_000, units: dict[str, int] | None = None) -> str:
        (created,) = self.do(CreateAccount(name="trader"))
        account_id: str = created.account  # type: ignore[union-attr]
        if cash:
            self.do(DepositCash(account=account_id, amount=cash))
        for symbol, qty in (units or {}).items():
            self.do(DepositUnits(account=account_id, symbol=symbol, qty=qty))
        return account_id

    def instrument(self, symbol: str = "ACME", tick: int = 1, trading: bool = True) -> str:
        self.do(ListInstrument(symbol=symbol, kind="share", tick=tick, issuer=self.issuer))
        if trading:
            self.do(SetInstrumentStatus(symbol=symbol, status="trading"))
        return symbol

    def place(
        self, account: str, side: str, qty: int, price: int = 0, **fields: Any
    ) -> list[Event]:
        fields.setdefault("symbol", "ACME")
        fields.setdefault("type", "limit" if price else "market")
        return self.do(PlaceOrder(account=account, side=side, qty=qty, price=price, **fields))  # type: ignore[arg-type]

    def rest(self, account: str, side: str, qty: int, price: int, **fields: Any) -> int:
        """Place a limit order that must be accepted; returns its order id."""
        events = self.place(account, side, qty, price, **fields)
        accepted = of_type(events, OrderAccepted)
        assert len(accepted) == 1, f"expected one acceptance, got {events}"
        return accepted[0].order_id


def of_type(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def rejection(events: list[Event]) -> str:
    """The code of the single rejection these events must be."""
    assert len(events) == 1, f"expected a single rejection, got {events}"
    (event,) = events
    code = getattr(event, "code", None)
    assert isinstance(event, OrderRejected) or code is not None, f"not a rejection: {event}"
    return str(code)
