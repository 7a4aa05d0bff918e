"""What the journal stores and how one record is laid out on disk.

A record holds one sequenced command and the events the engine produced from it:

    offset  size  field
    0       4     crc       zlib CRC-32 of bytes 8..end (length, seq, payload): the record alone
    4       4     chain     CRC-32 of bytes 0..4 (`crc`), seeded with the previous record's chain
    8       4     length    payload bytes that follow the header (low 31 bits, u32 little
                            endian); the top bit (BATCH_END) marks the last record of its
                            write: a durable batch, released to clients as one
    12      8     seq       the command's sequence number (u64)
    20      ...   payload   a JournalEntry, MessagePack

(The CRC covers one contiguous range, so checking a record is one zlib call.)

`crc` lets a scan recognise an intact record anywhere; `chain` ties every record to
all before it, so a record swapped, dropped or replaced from elsewhere breaks it. The
batch marks let the read side rebuild exactly what clients were sent (one book update
per symbol and batch) after a crash; a version-1 segment has none (journal.py).
"""

import struct
import zlib

import msgspec

from exchange.domain.commands import Command
from exchange.domain.events import Event

RECORD_HEADER = struct.Struct("<IIIQ")  # crc, chain, length, seq
RECORD_HEADER_SIZE = RECORD_HEADER.size
CRC_START = 8  # the CRC covers the record from here to its end
SEQ_AT = 12  # where the seq field lies in the header
_CRC_COVERED = struct.Struct("<IQ")
_CHAIN_INPUT = struct.Struct("<I")
# A command with its events encodes to well under a kilobyte; a cancel-all of 10,000
# orders is the largest, near 1.5 MB. Anything past this bound is damage, not a record.
MAX_PAYLOAD = 16 * 1024 * 1024
BATCH_END = 1 << 31  # in the length field
LENGTH_MASK = BATCH_END - 1
CHAIN_SEED = 0


class JournalEntry(msgspec.Struct, frozen=True, array_like=True, gc=False, omit_defaults=True):
    """One sequenced command and what the engine made of it."""

    seq: int
    command: Command  # as the sequencer stamped it: its ts is the time of the record
    events: list[Event]
    # Who sent it, for routing its answer: "GATEWAY_ID:TOKEN" when it came over the bus
    # from a gateway process, else empty (and then not encoded at all). Opaque: recovery
    # and the engine ignore it.
    origin: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(JournalEntry)


def encode_entry(entry: JournalEntry) -> bytes:
    return _encoder.encode(entry)


def decode_entry(payload: bytes | memoryview) -> JournalEntry:
    return _decoder.decode(payload)


def frame(
    seq: int, payload: bytes, prev_chain: int, *, batch_end: bool = False
) -> tuple[bytes, int]:
    """The record's bytes and its chain value."""
    field = len(payload) | (BATCH_END if batch_end else 0)
    covered = _CRC_COVERED.pack(field, seq)
    crc = zlib.crc32(payload, zlib.crc32(covered))
    chain = zlib.crc32(_CHAIN_INPUT.pack(crc), prev_chain)
    return RECORD_HEADER.pack(crc, chain, field, seq) + payload, chain


def record_crc(field: int, seq: int, payload: bytes | memoryview) -> int:
    """The CRC of a record whose length field (the length and its batch mark) is `field`."""
    return zlib.crc32(payload, zlib.crc32(_CRC_COVERED.pack(field, seq)))


def chain_after(crc: int, prev_chain: int) -> int:
    return zlib.crc32(_CHAIN_INPUT.pack(crc), prev_chain)
