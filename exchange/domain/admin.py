"""Accounts and instruments admin: creating accounts, adding API keys and listing
instruments (CreateAccount, AddApiKey, ListInstrument). An instrument's status changes are
market_phases.py's.
"""

import re

from exchange.domain.accounts import Account
from exchange.domain.book import OrderBook
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import AddApiKey, CreateAccount, ListInstrument
from exchange.domain.events import (
    AccountCreated,
    ApiKeyAdded,
    Event,
    InstrumentListed,
)
from exchange.domain.fees import fee_problem, open_fee_account
from exchange.domain.instruments import Instrument
from exchange.domain.limits import MAX_TICK, SYMBOL_PATTERN
from exchange.domain.market import Market
from exchange.domain.replies import refuse

_SYMBOL = re.compile(SYMBOL_PATTERN)


def create_account(market: Market, cmd: CreateAccount) -> list[Event]:
    account_id = f"A{market.next_account}"
    market.next_account += 1
    account = market.accounts[account_id] = Account(account_id, cmd.name)
    if cmd.api_key_hash:
        account.api_key_hashes.append(cmd.api_key_hash)
    return [AccountCreated(account=account_id, name=cmd.name, api_key_hash=cmd.api_key_hash)]


def add_api_key(market: Market, cmd: AddApiKey) -> list[Event]:
    account = market.accounts.get(cmd.account)
    if account is None:
        return refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
    account.api_key_hashes.append(cmd.api_key_hash)
    return [ApiKeyAdded(account=cmd.account, api_key_hash=cmd.api_key_hash)]


def list_instrument(market: Market, cmd: ListInstrument) -> list[Event]:
    if not _SYMBOL.fullmatch(cmd.symbol):
        return refuse(cmd, Code.BAD_SYMBOL, "symbol: 1-16 of A-Z 0-9 . _ -")
    if cmd.symbol in market.instruments:
        return refuse(cmd, Code.DUPLICATE_SYMBOL, "symbol already listed")
    if cmd.issuer not in market.accounts:
        return refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such issuer account")
    if not 0 < cmd.tick <= MAX_TICK:
        return refuse(cmd, Code.BAD_TICK_SIZE, "tick out of range")
    problem = fee_problem(cmd.maker_bps, cmd.taker_bps)
    if problem:
        return refuse(cmd, Code.BAD_FEE, problem)
    events: list[Event] = []
    open_fee_account(market, events, cmd.maker_bps, cmd.taker_bps)
    market.instruments[cmd.symbol] = Instrument(
        cmd.symbol, cmd.kind, cmd.tick, cmd.issuer, "listed", cmd.maker_bps, cmd.taker_bps
    )
    market.books[cmd.symbol] = OrderBook(cmd.symbol)
    events.append(
        InstrumentListed(
            symbol=cmd.symbol, kind=cmd.kind, tick=cmd.tick, issuer=cmd.issuer,
            maker_bps=cmd.maker_bps, taker_bps=cmd.taker_bps,
        )
    )  # fmt: skip
    return events
