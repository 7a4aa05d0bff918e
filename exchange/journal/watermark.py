"""The durable watermark: the newest record known to be on disk, kept apart from the journal.

A crash can tear only the last write, which was never synced and so never acknowledged;
recovery may cut that and nothing else. A journal cut in half, or a newest segment
deleted, looks from the segments alone just like a torn tail. The watermark tells them
apart: after a sync the journal records here (at most MARK_EVERY_S later) which record
that sync made durable, and recovery refuses a journal that ends before it.

The store keeps the mark as two slots written in turn (like TigerBeetle's copies of its
superblock), so tearing the slot being written leaves the other one whole:

    offset  size  field            (one slot; the second follows at SLOT_SIZE)
    0       4     magic b"EXW1"
    4       2     version (u16) = 1
    6       2     reserved, 0
    8       8     seq: the newest record durable when the slot was written (u64)
    16      8     segment: the first seq of the segment holding it (its name)
    24      8     end: the offset just past that record in its segment
    32      4     chain: that record's chain value
    36      4     CRC-32 of bytes 0..36
"""

import struct
import zlib

import msgspec

MAGIC = b"EXW1"
VERSION = 1
_COVERED = struct.Struct("<4sHHQQQI")
SLOT = struct.Struct("<4sHHQQQII")
SLOT_SIZE = SLOT.size
SLOTS = 2


class Mark(msgspec.Struct, frozen=True):
    """A record known durable: its seq and chain, and where it ends on disk."""

    seq: int
    segment: int
    end: int
    chain: int


NOTHING_DURABLE = Mark(0, 0, 0, 0)


def encode(mark: Mark) -> bytes:
    covered = _COVERED.pack(MAGIC, VERSION, 0, mark.seq, mark.segment, mark.end, mark.chain)
    return covered + struct.pack("<I", zlib.crc32(covered))


def slot_offset(writes: int) -> int:
    """Where the `writes`-th mark goes: the slots take turns."""
    return (writes % SLOTS) * SLOT_SIZE


def decode(data: bytes) -> Mark | None:
    """The newest whole slot of a mark file's bytes; None when no slot is whole (no file,
    or a file torn before its first write completed)."""
    best: Mark | None = None
    for index in range(SLOTS):
        start = index * SLOT_SIZE
        if start + SLOT_SIZE > len(data):
            break
        magic, version, _, seq, segment, end, chain, crc = SLOT.unpack_from(data, start)
        if magic != MAGIC or version != VERSION:
            continue
        if crc != zlib.crc32(data[start : start + _COVERED.size]):
            continue
        if best is None or seq > best.seq:
            best = Mark(seq, segment, end, chain)
    return best
