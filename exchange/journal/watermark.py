"""The durable watermark: the newest record known to be on disk, kept apart from the journal.

A crash can tear only the last write, which was never synced and so never acknowledged;
recovery may cut that and nothing else. A journal cut in half, or a newest segment
deleted, looks from the segments alone just like a torn tail. The watermark tells them
apart: after a sync the journal records here (at most MARK_EVERY_S later) which record
that sync made durable, and recovery refuses a journal that ends before it.

The store keeps the mark as two slots written in turn (like TigerBeetle's copies of its
superblock), SLOT_SPACING apart so that no one sector or page holds both: tearing the slot
being written leaves the other one whole. A process starts with the slot that does not
hold the newest mark.

    offset  size  field            (one slot; the second begins at SLOT_SPACING)
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
# A page: disks write sectors (512 B or 4 KiB) whole or not at all, but never two slots
# this far apart in one piece.
SLOT_SPACING = 4096


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


def slot_offset(slot: int) -> int:
    return (slot % SLOTS) * SLOT_SPACING


def decode(data: bytes) -> tuple[Mark, int] | None:
    """The newest whole slot of a mark file's bytes and its index; None when no slot is
    whole (no file, or a file torn before its first write completed)."""
    best: tuple[Mark, int] | None = None
    for index in range(SLOTS):
        start = index * SLOT_SPACING
        if start + SLOT_SIZE > len(data):
            break
        magic, version, _, seq, segment, end, chain, crc = SLOT.unpack_from(data, start)
        if magic != MAGIC or version != VERSION:
            continue
        if crc != zlib.crc32(data[start : start + _COVERED.size]):
            continue
        if best is None or seq > best[0].seq:
            best = (Mark(seq, segment, end, chain), index)
    return best
