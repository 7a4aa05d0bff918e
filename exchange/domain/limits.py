"""Named bounds of the core: the largest values and counts the engine accepts, and why.

Everything the engine stores is bounded by one of these, so memory and integer
sizes stay predictable (all money fits in a signed 64-bit integer).
"""

from typing import Final

# Cash is kept in the currency's minor unit: 0.01, two decimals.
CASH_DECIMALS: Final = 2
# One unit per order ... a billion units: beyond any real order, far inside int64.
MAX_QTY: Final = 1_000_000_000
# Prices are in ticks; a billion ticks is 10 million currency units at tick 0.01.
MAX_PRICE_TICKS: Final = 1_000_000_000
# Largest tick, in cash minor units (10,000.00 per tick).
MAX_TICK: Final = 1_000_000
# Largest cash amount of one deposit, withdrawal or notional cap: 10^16 minor units
# (100 trillion). A buy can only hold what was deposited, so no trade exceeds it either.
MAX_CASH: Final = 10**16
# Open (resting) orders one account may have at once; a bound on book memory per account.
# (This one and the next are not Final: tests lower them, and the compiled core would
# have inlined a Final one.)
MAX_OPEN_ORDERS_PER_ACCOUNT = 10_000
# Client order ids and names: short strings, never megabytes kept forever.
MAX_ID_LENGTH: Final = 64
MAX_NAME_LENGTH: Final = 128
# Client order ids remembered per account for idempotent resends: the newest 100,000.
# Older ids of orders that have ended are forgotten (a resend of one is a new order);
# ids of open orders are always kept (there are at most MAX_OPEN_ORDERS_PER_ACCOUNT).
MAX_CLIENT_ORDER_IDS_PER_ACCOUNT = 100_000
# A symbol: 1 to 16 of A-Z, 0-9, ".", "_" and "-", starting with a letter or digit.
SYMBOL_PATTERN: Final = r"^[A-Z0-9][A-Z0-9._-]{0,15}$"
# Timestamps (ns since the epoch) and entity ids (orders, offerings, trades) a client may
# name: int64, as the journal and every client language hold them (ns reach 2262).
MAX_TIMESTAMP: Final = 2**63 - 1
MAX_ENTITY_ID: Final = 2**63 - 1
# Units one offering may issue.
MAX_OFFERING_QTY: Final = MAX_QTY
# A price band wider than the reference price itself bounds nothing below; percent.
MAX_BAND_PCT: Final = 100
# A volatility interruption (or re-opening auction) lasts at most a day, in seconds.
MAX_INTERRUPTION_S: Final = 86_400
# An instrument's interruption unless the admin sets another: Xetra's two minutes.
DEFAULT_INTERRUPTION_S: Final = 120
NS_PER_S: Final = 1_000_000_000
# Fees in basis points (1 bps = 0.01% of a fill's cash value; fees.BPS_PER_UNIT in one).
# A trading fee of at most 10%: real venues charge 0.1-0.5%, so this only stops an admin's
# slip of a digit. A maker rebate (negative maker fee) is at most the taker fee (fees.py).
MAX_TRADE_FEE_BPS: Final = 1_000
# An offering's gross spread: at most all of the proceeds (the issuer would get nothing);
# a typical IPO's is 700 (7%).
MAX_OFFERING_FEE_BPS: Final = 10_000
