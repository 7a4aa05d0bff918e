"""What crosses NATS between gateway processes and the sequencer: subjects, the stream, and
the MessagePack messages, each with a version and bounds. No NATS client here: both
sides' roles (exchange/sequencer_node.py, gateway/natsbus.py) use these shapes.

    gateway --(core NATS, COMMANDS)--> sequencer     CommandMessage: version, gateway id,
                                                     and (token, command) pairs: what the
                                                     gateway gathered since its last send
    sequencer --(core NATS, refused.<gateway>)-->    Refusal: a command not taken, or taken
                                          gateway    and then refused (the sequencer stopped)
    sequencer --(JetStream STREAM, BATCHES)-->       BatchMessage: one durable batch's
                                  every gateway      records as the journal holds them (each
                                                     JournalEntry carries its origin,
                                                     "GATEWAY:TOKEN")

A batch is published only once its records are durable in the sequencer's own journal;
a gateway answers a client only from the stream, so an answer means: on the sequencer's
disk and stored in the stream.
"""

from typing import Annotated

import msgspec

from exchange.domain.commands import Command
from exchange.domain.text import parse_bounded_int

# The schema of every message here: a message of another version is refused (logged),
# never guessed at. Bump it with any change of these shapes or of Command/Event.
WIRE_VERSION = 1
COMMANDS = "exchange.commands"
REFUSED_PREFIX = "exchange.refused."
BATCHES = "exchange.batches"
STREAM = "EXCHANGE"
# Commands one message carries at most: a gateway sends what it gathered in one go (one
# NATS message and one callback on each side instead of one per command).
MAX_COMMANDS_PER_MESSAGE = 1_024
# A command is a few hundred bytes; a message past this is not one of ours (refused unread).
MAX_COMMAND_BYTES = 1024 * 1024
# A batch message carries at most this many bytes of records; a bigger durable batch
# (thousands of records, or a cancel-all of thousands of orders) goes as several
# messages, the last marked as the batch's end. Under the NATS servers' max_payload.
MAX_BATCH_MESSAGE_BYTES = 4 * 1024 * 1024
NATS_MAX_PAYLOAD = 8 * 1024 * 1024
# A gateway id: a fresh one every start, so tokens of a restarted gateway never collide.
GatewayId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{8,32}\Z")]
MAX_TOKEN = 2**63 - 1
Token = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKEN)]


class Sent(msgspec.Struct, frozen=True, array_like=True):
    """One command, and the token its gateway will know its answer by."""

    token: Token
    command: Command


class CommandMessage(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    version: int
    gateway: GatewayId
    commands: Annotated[list[Sent], msgspec.Meta(min_length=1, max_length=MAX_COMMANDS_PER_MESSAGE)]


class Refusal(msgspec.Struct, frozen=True, array_like=True):
    version: int
    token: Token
    code: str  # BUSY (full or stopping), BAD_REQUEST (breaks the schema), UNAVAILABLE
    message: str


class BatchMessage(msgspec.Struct, frozen=True, array_like=True):
    version: int
    first_seq: int
    records: list[msgspec.Raw]  # JournalEntry payloads, as journaled
    batch_end: bool  # the last message of its durable batch


class VersionError(Exception):
    """A message of another wire version."""


_command_decoder = msgspec.msgpack.Decoder(CommandMessage)
_refusal_decoder = msgspec.msgpack.Decoder(Refusal)
_batch_decoder = msgspec.msgpack.Decoder(BatchMessage)
encode = msgspec.msgpack.Encoder().encode


def origin_of(gateway: str, token: int) -> str:
    return f"{gateway}:{token}"


def split_origin(origin: str) -> tuple[str, int] | None:
    """(gateway, token) of a journaled origin; None for an empty or foreign one."""
    gateway, _, text = origin.partition(":")
    token = parse_bounded_int(text, 0, MAX_TOKEN)
    if not gateway or token is None:
        return None
    return gateway, token


def decode_command(data: bytes) -> CommandMessage:
    """Raises msgspec.DecodeError (malformed, a bound broken) or VersionError."""
    if len(data) > MAX_COMMAND_BYTES:
        raise msgspec.DecodeError(f"{len(data)} bytes, past the bound {MAX_COMMAND_BYTES}")
    message = _command_decoder.decode(data)
    if message.version != WIRE_VERSION:
        raise VersionError(f"wire version {message.version}, this build speaks {WIRE_VERSION}")
    return message


def decode_refusal(data: bytes) -> Refusal:
    return _refusal_decoder.decode(data)


def decode_batch(data: bytes) -> BatchMessage:
    message = _batch_decoder.decode(data)
    if message.version != WIRE_VERSION:
        raise VersionError(f"wire version {message.version}, this build speaks {WIRE_VERSION}")
    return message


def batch_messages(first_seq: int, payloads: list[bytes]) -> list[tuple[int, bytes]]:
    """One durable batch as stream messages, each under MAX_BATCH_MESSAGE_BYTES (but one
    record, whatever its size), the last marked as the batch's end: (its first seq, its
    bytes) each."""
    messages: list[tuple[int, bytes]] = []
    start, size = 0, 0
    for i, payload in enumerate(payloads):  # bounded by the batch
        if i > start and size + len(payload) > MAX_BATCH_MESSAGE_BYTES:
            records = [msgspec.Raw(p) for p in payloads[start:i]]
            message = BatchMessage(WIRE_VERSION, first_seq + start, records, False)
            messages.append((first_seq + start, encode(message)))
            start, size = i, 0
        size += len(payload)
    records = [msgspec.Raw(p) for p in payloads[start:]]
    message = BatchMessage(WIRE_VERSION, first_seq + start, records, True)
    messages.append((first_seq + start, encode(message)))
    return messages
