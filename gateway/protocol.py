"""The WebSocket protocol's requests, decoded strictly at the edge, and its error mapping.

Each request is a tagged msgspec Struct (`op`), unknown fields forbidden. Prices and cash
stay decimal strings here; they become integers only against the instrument's tick.
"""

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from exchange.domain.codes import RejectCode
from exchange.domain.limits import MAX_ID_LENGTH, MAX_QTY

# A frame larger than this is refused with close code 1009 (aiohttp's max_msg_size).
MAX_FRAME_BYTES = 64 * 1024
# Symbols one subscribe may name; channels are three.
MAX_SUBSCRIBE_SYMBOLS = 100

ReqId = Annotated[str, Meta(max_length=MAX_ID_LENGTH)] | int | None
Qty = Annotated[int, Meta(gt=0, le=MAX_QTY)]
Id = Annotated[str, Meta(max_length=MAX_ID_LENGTH)]
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
    type: Literal["limit", "market"] = "limit"
    price: str | None = None
    qty: Qty
    tif: Literal["gtc", "ioc", "fok"] = "gtc"
    post_only: bool = False
    stp: Literal["cancel_newest", "cancel_oldest", "cancel_both"] = "cancel_newest"
    max_notional: str | None = None


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


request_decoder = msgspec.json.Decoder(Request)
_req_id_decoder = msgspec.json.Decoder(_JustReqId)


def req_id_of(frame: str | bytes) -> str | int | None:
    """The req_id of a frame that failed to decode as a request, if it has a usable one."""
    try:
        return _req_id_decoder.decode(frame).req_id
    except msgspec.DecodeError:
        return None


def code_for(error: msgspec.DecodeError) -> RejectCode:
    """The reject code for a frame that did not decode: BAD_QTY or BAD_PRICE when the
    field at fault says so, else BAD_REQUEST."""
    text = str(error)
    if "$.qty" in text:
        return RejectCode.BAD_QTY
    if "$.price" in text or "$.max_notional" in text:
        return RejectCode.BAD_PRICE
    return RejectCode.BAD_REQUEST
