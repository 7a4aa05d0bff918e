"""The Binance dialect's errors: `{"code":..,"msg":..}` with Binance's codes and messages,
and the one table that maps each of our reject codes to its Binance equivalent.

ccxt picks its exception from the message first (exact text, or a word such as
`LOT_SIZE` / `PRICE_FILTER` anywhere in the body), then from the code, so both are
chosen to land on the exception a Binance client expects (docs/BINANCE.md lists them).
"""

from dataclasses import dataclass

from exchange.domain.codes import RejectCode


class BinanceError(Exception):
    """An answer `{"code": code, "msg": msg}` with HTTP `status`."""

    def __init__(
        self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Mapped:
    status: int
    code: int
    msg: str


INSUFFICIENT = "Account has insufficient balance for requested action."
# Our reject code -> Binance's (HTTP status, code, message). UNKNOWN_ORDER differs between
# a cancel (-2011) and a query (-2013): see `unknown_order`.
REJECTS: dict[str, Mapped] = {
    RejectCode.BAD_REQUEST: Mapped(400, -1102, "Mandatory parameter was not sent, was "
        "empty/null, or malformed."),
    RejectCode.BAD_PRICE: Mapped(400, -1013, "Filter failure: PRICE_FILTER"),
    RejectCode.BAD_QTY: Mapped(400, -1013, "Filter failure: LOT_SIZE (quantities are whole "
        "units, stepSize 1)"),
    RejectCode.BAD_AMOUNT: Mapped(400, -1111, "Precision is over the maximum defined for this "
        "asset."),
    RejectCode.BAD_SYMBOL: Mapped(400, -1121, "Invalid symbol."),
    RejectCode.BAD_TICK_SIZE: Mapped(400, -1013, "Filter failure: PRICE_FILTER"),
    RejectCode.OFF_TICK: Mapped(400, -1013, "Filter failure: PRICE_FILTER"),
    RejectCode.UNKNOWN_SYMBOL: Mapped(400, -1121, "Invalid symbol."),
    RejectCode.UNKNOWN_ORDER: Mapped(400, -2013, "Order does not exist."),
    RejectCode.UNKNOWN_OFFERING: Mapped(400, -1013, "Unknown offering."),
    RejectCode.UNKNOWN_ACCOUNT: Mapped(401, -2015, "Invalid API-key, IP, or permissions for "
        "action."),
    RejectCode.DUPLICATE_SYMBOL: Mapped(400, -1013, "The symbol is listed already."),
    RejectCode.INSUFFICIENT_FUNDS: Mapped(400, -2010, INSUFFICIENT),
    RejectCode.INSUFFICIENT_UNITS: Mapped(400, -2010, INSUFFICIENT),
    RejectCode.NOT_TRADING: Mapped(400, -1013, "Market is closed."),
    RejectCode.BAD_STATUS: Mapped(400, -1013, "Market is closed."),
    RejectCode.OFFERING_CLOSED: Mapped(400, -1013, "The offering is closed."),
    RejectCode.POST_ONLY_WOULD_TAKE: Mapped(400, -2010, "Order would immediately match and take."),
    RejectCode.DUPLICATE_CLIENT_ORDER_ID: Mapped(400, -2010, "Duplicate order sent."),
    RejectCode.TOO_MANY_ORDERS: Mapped(400, -2010, "Filter failure: MAX_NUM_ORDERS"),
    RejectCode.RATE_LIMITED: Mapped(429, -1003, "Too much request weight used; please use "
        "WebSocket Streams for live updates to avoid polling the API."),
    RejectCode.BUSY: Mapped(503, -1008, "Server is currently overloaded with other requests. "
        "Please try again in a few minutes."),
    RejectCode.UNAVAILABLE: Mapped(503, -1007, "Timeout waiting for response from backend "
        "server. Send status unknown; execution status unknown."),
    RejectCode.NOT_AUTHENTICATED: Mapped(401, -2014, "API-key format invalid."),
    RejectCode.AUTH_FAILED: Mapped(401, -2015, "Invalid API-key, IP, or permissions for action."),
    RejectCode.FORBIDDEN: Mapped(403, -1002, "You are not authorized to execute this request."),
    RejectCode.NOT_FOUND: Mapped(404, -1020, "This operation is not supported."),
    RejectCode.BAD_FEE: Mapped(400, -1013, "Filter failure: fee rate out of bounds"),
    RejectCode.PRICE_OUT_OF_BAND: Mapped(400, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
    RejectCode.NOT_IN_PHASE: Mapped(400, -1013, "Market is closed."),
    RejectCode.BAD_EXPIRY: Mapped(400, -1013, "Filter failure: EXPIRY (expire_at not ahead)"),
    RejectCode.BAD_TRIGGER: Mapped(400, -2010, "Stop price would trigger immediately."),
}
# A code added to RejectCode after this table (tests/test_binance_signing.py insists that
# every one is listed): refused as a generic order rejection, our code in the message.
UNLISTED = Mapped(400, -2010, "Order rejected")
CANCEL_UNKNOWN = Mapped(400, -2011, "Unknown order sent.")


def mapped(code: str) -> Mapped:
    found = REJECTS.get(code)
    if found is None:
        return Mapped(UNLISTED.status, UNLISTED.code, f"{UNLISTED.msg}: {code}")
    return found


def from_reject(code: str, *, cancelling: bool = False) -> BinanceError:
    """Our reject as Binance's error; an unknown order on a cancel is -2011."""
    found = CANCEL_UNKNOWN if cancelling and code == RejectCode.UNKNOWN_ORDER else mapped(code)
    return BinanceError(found.code, found.msg, found.status)
