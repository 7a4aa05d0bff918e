"""Binance-style request signing: each API key's secret, and the checks of a signed request
(key, HMAC-SHA256 signature over the bytes as received, timestamp within recvWindow).

The secret is never stored: it is derived, `hex HMAC-SHA256(K, api_key)` with
`K = HMAC-SHA256(admin token, SECRET_CONTEXT)`. Only the key's hash is journaled (as for
the native protocol); a gateway that sees the key on a request (X-MBX-APIKEY) derives the
secret it signs with, so every gateway of a cluster (they share the admin token) verifies
alike, and neither the journal nor a snapshot ever holds a secret. Changing the admin
token therefore changes every secret (docs/BINANCE.md).
"""

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl

from gateway.binance.errors import BinanceError

SECRET_CONTEXT = b"exchange binance-dialect api secret v1"
# Binance's rules: a request is good for recvWindow ms after its timestamp (default 5000,
# at most 60000), and may not come from more than 1000 ms in the future.
RECV_WINDOW_DEFAULT_MS = 5_000
RECV_WINDOW_MAX_MS = 60_000
AHEAD_ALLOWED_MS = 1_000
# An API key as sent in X-MBX-APIKEY: ours are ~35 characters; anything longer is not one.
MAX_API_KEY_LENGTH = 128
# Parameters one request may carry (Binance's biggest endpoint takes ~25).
MAX_PARAMS = 64


def secret_key(admin_token: str) -> bytes:
    """K: the key every API secret is derived with."""
    return hmac.new(admin_token.encode(), SECRET_CONTEXT, hashlib.sha256).digest()


def api_secret(key: bytes, api_key: str) -> str:
    """The secret that signs requests made with `api_key` (64 hex digits)."""
    return hmac.new(key, api_key.encode(), hashlib.sha256).hexdigest()


def signature_of(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Signed:
    """A request's parameters (signature taken out) and the bytes its signature covers."""

    params: dict[str, str]
    payload: bytes
    signature: str | None


def split_signed(query: str, body: str) -> Signed:
    """The parameters of the query string and the form body together, and the signed
    payload: the query then the body as received, without the `signature` parameter
    (Binance's totalParams). A parameter given twice is refused (-1102)."""
    signature: str | None = None
    parts: list[str] = []
    for text in (query, body):
        if not text:
            continue
        kept = []
        for piece in text.split("&"):
            if piece.startswith("signature="):
                if signature is not None:
                    raise BinanceError(-1102, "Duplicate values for parameter 'signature'.")
                signature = piece[len("signature="):]
            else:
                kept.append(piece)
        if kept:
            parts.append("&".join(kept))
    payload = "".join(parts)  # Binance: the query string concatenated with the body
    params: dict[str, str] = {}
    pairs = parse_qsl("&".join(parts), keep_blank_values=True)
    if len(pairs) > MAX_PARAMS:
        raise BinanceError(-1101, f"Too many parameters; expected at most {MAX_PARAMS}.")
    for name, value in pairs:
        if name in params:
            raise BinanceError(-1102, f"Duplicate values for parameter '{name[:32]}'.")
        params[name] = value
    return Signed(params, payload.encode(), signature)


def check_signature(secret: str, signed: Signed) -> None:
    if not signed.signature:
        raise BinanceError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, "
            "or malformed.")
    expected = signature_of(secret, signed.payload)
    if not hmac.compare_digest(expected.encode(), signed.signature.lower().encode()):
        raise BinanceError(-1022, "Signature for this request is not valid.")


def check_timestamp(params: dict[str, str], now_ms: int) -> None:
    """-1021 unless `timestamp` is within `recvWindow` ms before now and at most
    AHEAD_ALLOWED_MS after (Binance's rule); -1102 / -1131 for missing or bad values."""
    text = params.get("timestamp")
    if not text or not text.isascii() or not text.isdigit() or len(text) > 16:
        raise BinanceError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, "
            "or malformed.")
    timestamp = int(text)
    window_text = params.get("recvWindow")
    window = RECV_WINDOW_DEFAULT_MS
    if window_text is not None:
        if not window_text.isascii() or not window_text.isdigit() or len(window_text) > 8:
            raise BinanceError(-1131, "recvWindow must be less than 60000")
        window = int(window_text)
        if not 0 < window <= RECV_WINDOW_MAX_MS:
            raise BinanceError(-1131, "recvWindow must be less than 60000")
    if timestamp > now_ms + AHEAD_ALLOWED_MS:
        raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's "
            "time.")
    if now_ms - timestamp > window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def sorted_payload(params: dict[str, str]) -> bytes:
    """What a WebSocket API request's signature covers: its params but `signature`,
    sorted by name, as `k=v&...` (values as sent)."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature").encode()
