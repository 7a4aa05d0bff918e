"""Settlement outside matching: cash and units moved in and out of accounts, and holds.

Owns deposits and withdrawals of cash and units (DepositCash, WithdrawCash, DepositUnits,
WithdrawUnits) and the release and resizing of the holds an order keeps while it is open.
Placing a hold at entry (order_entry) and settling each fill (matching) are inlined where they
happen: they are the hot path, and a call per fill costs more than the rule it would name.
"""

from exchange.domain.book import Order
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import DepositCash, DepositUnits, WithdrawCash, WithdrawUnits
from exchange.domain.events import (
    CashDeposited,
    CashWithdrawn,
    Event,
    UnitsDeposited,
    UnitsWithdrawn,
)
from exchange.domain.fees import buy_hold
from exchange.domain.limits import MAX_CASH, MAX_QTY
from exchange.domain.market import Market
from exchange.domain.replies import refuse


def deposit_cash(market: Market, cmd: DepositCash) -> list[Event]:
    account = market.accounts.get(cmd.account)
    if account is None:
        return refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
    if not 0 < cmd.amount <= MAX_CASH:
        return refuse(cmd, Code.BAD_AMOUNT, "amount must be positive", cmd.account)
    account.cash += cmd.amount
    return [CashDeposited(account=cmd.account, amount=cmd.amount, balance=account.cash)]


def withdraw_cash(market: Market, cmd: WithdrawCash) -> list[Event]:
    account = market.accounts.get(cmd.account)
    if account is None:
        return refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
    if not 0 < cmd.amount <= MAX_CASH:
        return refuse(cmd, Code.BAD_AMOUNT, "amount must be positive", cmd.account)
    if cmd.amount > account.cash - account.cash_held:
        return refuse(cmd, Code.INSUFFICIENT_FUNDS, "not enough available cash", cmd.account)
    account.cash -= cmd.amount
    return [CashWithdrawn(account=cmd.account, amount=cmd.amount, balance=account.cash)]


def deposit_units(market: Market, cmd: DepositUnits) -> list[Event]:
    refusal = _check_units(market, cmd)
    if refusal:
        return refusal
    positions = market.accounts[cmd.account].positions
    position = positions[cmd.symbol] = positions.get(cmd.symbol, 0) + cmd.qty
    return [
        UnitsDeposited(account=cmd.account, symbol=cmd.symbol, qty=cmd.qty, position=position)
    ]


def withdraw_units(market: Market, cmd: WithdrawUnits) -> list[Event]:
    refusal = _check_units(market, cmd)
    if refusal:
        return refusal
    account = market.accounts[cmd.account]
    if cmd.qty > account.available_units(cmd.symbol):
        return refuse(cmd, Code.INSUFFICIENT_UNITS, "not enough available units", cmd.account)
    position = account.positions[cmd.symbol] = account.positions[cmd.symbol] - cmd.qty
    return [
        UnitsWithdrawn(account=cmd.account, symbol=cmd.symbol, qty=cmd.qty, position=position)
    ]


def _check_units(market: Market, cmd: DepositUnits | WithdrawUnits) -> list[Event]:
    if cmd.account not in market.accounts:
        return refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
    if cmd.symbol not in market.instruments:
        return refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument", cmd.account)
    if not 0 < cmd.qty <= MAX_QTY:
        return refuse(cmd, Code.BAD_QTY, "quantity out of range", cmd.account)
    return []


def release_holds(market: Market, order: Order) -> None:
    account = order.account
    if order.is_buy:
        if order.type in {"limit", "stop_limit"}:
            tick = market.instruments[order.symbol].tick
            account.cash_held -= buy_hold(order.price, tick, order.remaining, order.taker_bps)
        elif order.type == "stop":  # a waiting stop buy holds its budget (fees included)
            account.cash_held -= order.budget
    else:
        account.units_held[order.symbol] -= order.remaining


def resize_holds(order: Order, new_price: int, new_remaining: int, tick: int) -> None:
    account = order.account
    if order.is_buy:
        bps = order.taker_bps
        account.cash_held += buy_hold(new_price, tick, new_remaining, bps) - buy_hold(
            order.price, tick, order.remaining, bps
        )
    else:
        account.units_held[order.symbol] += new_remaining - order.remaining


def add_units(positions: dict[str, int], symbol: str, qty: int) -> None:
    positions[symbol] = positions.get(symbol, 0) + qty
