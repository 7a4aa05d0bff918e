"""Every stable reject code the exchange can answer with, in one place.

The strings are part of the public protocol (docs/PROTOCOL.md lists them all):
never rename one; add new ones at the end of their group.
"""

from enum import StrEnum


class RejectCode(StrEnum):
    # Input that fails validation at the edge or in the engine.
    BAD_REQUEST = "BAD_REQUEST"
    BAD_PRICE = "BAD_PRICE"
    BAD_QTY = "BAD_QTY"
    BAD_AMOUNT = "BAD_AMOUNT"
    BAD_SYMBOL = "BAD_SYMBOL"
    BAD_TICK_SIZE = "BAD_TICK_SIZE"
    OFF_TICK = "OFF_TICK"
    BAD_FEE = "BAD_FEE"  # fee bps out of range, or a maker rebate larger than the taker fee
    # References to things that do not exist.
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    UNKNOWN_OFFERING = "UNKNOWN_OFFERING"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    DUPLICATE_SYMBOL = "DUPLICATE_SYMBOL"
    # Business rules.
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INSUFFICIENT_UNITS = "INSUFFICIENT_UNITS"
    NOT_TRADING = "NOT_TRADING"
    BAD_STATUS = "BAD_STATUS"
    OFFERING_CLOSED = "OFFERING_CLOSED"
    POST_ONLY_WOULD_TAKE = "POST_ONLY_WOULD_TAKE"
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    TOO_MANY_ORDERS = "TOO_MANY_ORDERS"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"  # a limit beyond the static band
    NOT_IN_PHASE = "NOT_IN_PHASE"  # halted or closed; market, IOC and FOK in a call auction
    BAD_EXPIRY = "BAD_EXPIRY"  # a gtd order's expire_at missing or not in the future
    # Stop orders (issue 16): a trigger missing, off tick, or already reached by the last trade.
    BAD_TRIGGER = "BAD_TRIGGER"
    # Produced outside the engine (gateway and sequencer), listed here so the set is whole.
    RATE_LIMITED = "RATE_LIMITED"
    BUSY = "BUSY"
    UNAVAILABLE = "UNAVAILABLE"  # no answer in time (cluster): outcome unknown, resend
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    AUTH_FAILED = "AUTH_FAILED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
