"""The demo market `exchange serve --demo` seeds on a fresh data directory.

A share (ACME) that went through an oversubscribed offering underwritten by a bank (firm,
a 7% gross spread), opened through an opening auction and trades with fees (a maker rebate
of 2 bps, a taker fee of 10), a bond (BOND) listed straight into trading without fees, six
accounts with cash and units, and a market maker's resting orders on both, so a newcomer
sees a live book at once. The API keys are printed and written to a keys file (mode 0600):
DATA_DIR/demo-keys.json for `exchange serve --demo`, the `--demo-keys FILE` of `exchange
gateway --demo`. Everything goes through a Bus as ordinary commands, so it is journaled
like any other activity and never seeded twice.
"""

import json
import os
from pathlib import Path
from typing import Any

from exchange.bus import Bus
from exchange.domain import commands as cmd
from exchange.domain.events import AccountCreated, OfferingOpened
from exchange.domain.money import parse_cash
from gateway.auth import hash_api_key, new_api_key
from gateway.binance import signing

DEMO_KEYS_FILE = "demo-keys.json"
# The underwriter comes last, so the first five keep the ids they had before it.
ACCOUNTS = ("acme-issuer", "bond-issuer", "alice", "bob", "market-maker", "acme-bank")
CASH = {
    "alice": "250000.00", "bob": "250000.00", "market-maker": "1000000.00",
    "acme-bank": "200000.00",
}  # fmt: skip
# ACME's fees: makers get 0.02%, takers pay 0.10%.
ACME_MAKER_BPS, ACME_TAKER_BPS = -2, 10
# The bank's gross spread on ACME's offering: 7%, a typical IPO's.
ACME_OFFERING_FEE_BPS = 700


async def _do(sequencer: Bus, command: cmd.Command) -> list[Any]:
    done = await sequencer.submit(command)
    return list(done.events)


async def seed(
    sequencer: Bus, keys_path: Path, admin_token: str | None = None
) -> dict[str, dict[str, str]]:
    """Create the demo market and write its keys to `keys_path`; returns
    {name: {"account": id, "api_key": key}}, with each key's "api_secret" (the Binance
    dialect's signing secret) when the admin token it derives from is given."""
    keys: dict[str, dict[str, str]] = {}
    secret_key = signing.secret_key(admin_token) if admin_token is not None else None
    for name in ACCOUNTS:
        api_key = new_api_key()
        new = cmd.CreateAccount(name=name, api_key_hash=hash_api_key(api_key))
        created = (await _do(sequencer, new))[0]
        assert isinstance(created, AccountCreated)
        keys[name] = {"account": created.account, "api_key": api_key}
        if secret_key is not None:
            keys[name]["api_secret"] = signing.api_secret(secret_key, api_key)
        if name in CASH:
            cash = parse_cash(CASH[name])
            await _do(sequencer, cmd.DepositCash(account=created.account, amount=cash))
    acct = {name: entry["account"] for name, entry in keys.items()}

    # ACME: a share, 10.00 a unit, 10,000 new units underwritten firm (the bank's 100,000.00
    # held until the close), oversubscribed 14,000: the bank takes up none and earns 7,000.00.
    issuer = acct["acme-issuer"]
    listing = cmd.ListInstrument(
        symbol="ACME", kind="share", tick=1, issuer=issuer, maker_bps=ACME_MAKER_BPS,
        taker_bps=ACME_TAKER_BPS,
    )  # fmt: skip
    await _do(sequencer, listing)
    offering = cmd.OpenOffering(
        symbol="ACME", price=1000, qty=10_000, underwriter=acct["acme-bank"],
        fee_bps=ACME_OFFERING_FEE_BPS, commitment="firm",
    )  # fmt: skip
    opened = (await _do(sequencer, offering))[0]
    assert isinstance(opened, OfferingOpened)
    for name, qty in (("alice", 4_000), ("bob", 4_000), ("market-maker", 6_000)):
        subscribe = cmd.SubscribeOffering(
            account=acct[name], offering_id=opened.offering_id, qty=qty
        )
        await _do(sequencer, subscribe)
    await _do(sequencer, cmd.CloseOffering(offering_id=opened.offering_id))

    # BOND: listed straight into trading, units handed to holders.
    issuer = acct["bond-issuer"]
    await _do(sequencer, cmd.ListInstrument(symbol="BOND", kind="bond", tick=1, issuer=issuer))
    await _do(sequencer, cmd.SetInstrumentStatus(symbol="BOND", status="trading"))
    for name, qty in (("market-maker", 5_000), ("bob", 1_000)):
        await _do(sequencer, cmd.DepositUnits(account=acct[name], symbol="BOND", qty=qty))

    # The market maker's quotes: five levels a side, a tick apart.
    maker = acct["market-maker"]
    for symbol, mid in (("ACME", 1_000), ("BOND", 9_950)):
        for level in range(1, 6):
            for side, price in (("buy", mid - 5 * level), ("sell", mid + 5 * level)):
                await _do(
                    sequencer,
                    cmd.PlaceOrder(
                        account=maker, client_order_id=f"demo-{symbol}-{side}-{level}",
                        symbol=symbol, side=side, price=price, qty=100 * level,  # type: ignore[arg-type]
                    ),
                )  # fmt: skip
    # ACME's offering left it pre_open: the quotes above rested in its opening auction,
    # which now uncrosses (they do not cross, so nothing trades) and trading begins.
    await _do(sequencer, cmd.Uncross(symbol="ACME"))
    fd = os.open(keys_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f, indent=2)
    return keys


def saved_keys(path: Path) -> dict[str, dict[str, str]]:
    """The keys a seed wrote to `path`; {} when there is no such file."""
    if not path.exists():
        return {}
    keys: dict[str, dict[str, str]] = json.loads(path.read_text())
    return keys


def key_lines(keys: dict[str, dict[str, str]], data_dir: Path) -> list[str]:
    """The demo keys as people read them at start (serve's welcome, the cluster's banner)."""
    lines = [f"demo API keys (also in {data_dir / DEMO_KEYS_FILE}):"]
    lines.extend(
        f"  {name:<13} {entry['account']:<4} {entry['api_key']}"
        + (f"  secret {entry['api_secret']}" if "api_secret" in entry else "")
        for name, entry in keys.items()
    )
    return lines
