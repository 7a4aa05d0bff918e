"""The WebSocket protocol's requests, decoded strictly at the edge, and its error mapping.

Each request is a tagged msgspec Struct (`op`), unknown fields forbidden. Prices and cash
stay decimal strings here; they become integers only against the instrument's tick.
"""

import re
from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import Meta

from exchange.domain.codes import RejectCode
from exchange.domain.limits import MAX_ID_LENGTH, MAX_QTY, MAX_TIMESTAMP
from exchange.domain.text import VisibleId

# A frame larger than this is refused with close code 1009 (aiohttp's max_msg_size).
MAX_FRAME_BYTES = 64 * 1024
# Symbols one subscribe may name; channels are three.
MAX_SUBSCRIBE_SYMBOLS = 100

# A req_id is echoed, never read: any string up to 64 characters, or an int64.
ReqId = (
    Annotated[str, Meta(max_length=MAX_ID_LENGTH)]
    | Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    | None
)
Qty = Annotated[int, Meta(gt=0, le=MAX_QTY)]
Id = VisibleId
Channel = Literal["book", "trades", "ticker"]
Channels = Annotated[list[Channel], Meta(max_length=3)]
Symbols = Annotated[
    list[Annotated[str, Meta(max_length=16)]], Meta(max_length=MAX_SUBSCRIBE_SYMBOLS)
]


class _Request(msgspec.Struct, frozen=True, kw_only=True, tag_field="op",
               forbid_unknown_fields=True):  # fmt: skip
    req_id: ReqId = None


class Auth(_Request, frozen=True, kw_only=True, tag="auth"):
    api_key: Annotated[str, Meta(max_length=256)]
    cancel_on_disconnect: bool = False


class Place(_Request, frozen=True, kw_only=True, tag="place"):
    client_order_id: Id = ""
    symbol: Annotated[str, Meta(max_length=16)]
    side: Literal["buy", "sell"]
    type: Literal["limit", "market", "stop", "stop_limit"] = "limit"
    price: str | None = None
    qty: Qty
    tif: Literal["gtc", "ioc", "fok", "gtd", "day"] = "gtc"
    post_only: bool = False
    stp: Literal["cancel_newest", "cancel_oldest", "cancel_both"] = "cancel_newest"
    max_notional: str | None = None
    expire_at: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)] | None = None  # gtd: ns
    trigger_price: str | None = None  # stop and stop_limit (issue 16)
    display_qty: Qty | None = None  # iceberg: the most the book shows at once (issue 16)


class Cancel(_Request, frozen=True, kw_only=True, tag="cancel"):
    order_id: Id | None = None
    client_order_id: Id | None = None


class CancelAll(_Request, frozen=True, kw_only=True, tag="cancel_all"):
    symbol: Annotated[str, Meta(max_length=16)] | None = None


class Replace(_Request, frozen=True, kw_only=True, tag="replace"):
    order_id: Id
    qty: Qty | None = None
    price: str | None = None


class SubscribeOffering(_Request, frozen=True, kw_only=True, tag="subscribe_offering"):
    offering_id: Id
    qty: Qty


class Subscribe(_Request, frozen=True, kw_only=True, tag="subscribe"):
    channels: Channels
    symbols: Symbols
    # From now on this session gets each durable batch's market data for a symbol as one
    # "batch" frame (an extension of the contract; see docs/PROTOCOL.md).
    batched: bool = False


class Unsubscribe(_Request, frozen=True, kw_only=True, tag="unsubscribe"):
    channels: Channels
    symbols: Symbols


class Ping(_Request, frozen=True, kw_only=True, tag="ping"):
    pass


Request = (
    Auth | Place | Cancel | CancelAll | Replace | SubscribeOffering | Subscribe | Unsubscribe | Ping
)


class _JustReqId(msgspec.Struct):
    req_id: ReqId = None


T = TypeVar("T")
request_decoder: msgspec.json.Decoder[Request] = msgspec.json.Decoder(Request)
_req_id_decoder = msgspec.json.Decoder(_JustReqId)


def decode(decoder: msgspec.json.Decoder[T], data: str | bytes) -> T:
    """`decoder.decode(data)`, with every way the input can be bad raised as
    msgspec.DecodeError: msgspec raises RecursionError for arrays or objects nested deeper
    than the interpreter's stack allows (it skips unknown values recursively, so even a
    ping can carry them), and UnicodeDecodeError for bytes that are not UTF-8."""
    try:
        return decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise msgspec.DecodeError("not UTF-8 text") from None


def decode_request(frame: str | bytes) -> Request:
    """A frame as a request; raises msgspec.DecodeError (see `decode`)."""
    return decode(request_decoder, frame)


def req_id_of(frame: str | bytes) -> str | int | None:
    """The req_id of a frame that failed to decode as a request, if it has a usable one."""
    try:
        return decode(_req_id_decoder, frame).req_id
    except msgspec.DecodeError:
        return None


# msgspec's words for a string that fails a pattern, which quote the whole regex.
_PATTERN_FAILED = re.compile(r"Expected `str` matching regex .* - at (`[^`]*`)\Z", re.DOTALL)


def describe(error: msgspec.DecodeError) -> str:
    """The error's message for a client: msgspec's, except that a failed pattern says which
    rule failed instead of quoting the regex (which holds control characters)."""
    text = str(error)
    failed = _PATTERN_FAILED.match(text)
    if failed is None:
        return text
    if "[A-Z0-9][A-Z0-9._-]" in text:
        return f"a symbol is 1-16 of A-Z 0-9 . _ - (a letter or digit first) - at {failed[1]}"
    return f"control or invisible characters are not allowed - at {failed[1]}"


def code_for(error: msgspec.DecodeError) -> RejectCode:
    """The reject code for a frame that did not decode: BAD_QTY or BAD_PRICE when the
    field at fault says so, else BAD_REQUEST."""
    text = str(error)
    if "$.qty" in text or "$.display_qty" in text:
        return RejectCode.BAD_QTY
    if "$.trigger_price" in text:
        return RejectCode.BAD_TRIGGER
    if "$.price" in text or "$.max_notional" in text:
        return RejectCode.BAD_PRICE
    if "$.expire_at" in text:
        return RejectCode.BAD_EXPIRY
    return RejectCode.BAD_REQUEST
