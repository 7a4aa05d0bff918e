"""Cutting a journal back to a seq: the one way records that were durable leave it.

Only a replicated sequencer does this, and only to records the replicated stream does not
hold (a fenced leader's tail, or a restarted node's tail that another leader overwrote):
such records were never acknowledged, since an answer needs the record in the stream.
Everything else about the journal is append-only.

The order makes a crash at any point safe to start from: first the snapshots past the
cut go (recovery refuses a journal that ends before its newest snapshot), then both
watermark slots name the new last record (it refuses one that ends before the
watermark), and only then are the records cut. A crash in between leaves an intact tail
past the watermark, which a start takes as records, and a standby cuts again once it
finds them unlike the stream's.
"""

import logging
from dataclasses import dataclass

from exchange.journal import watermark
from exchange.journal.journal import (
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    Journal,
    JournalCorruptError,
)
from exchange.journal.records import RECORD_HEADER, RECORD_HEADER_SIZE
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import SEGMENT_SUFFIX, SegmentStore

log = logging.getLogger(__name__)


class RewindError(Exception):
    """The cut would reach records a snapshot already pruned away; nothing was changed."""


@dataclass(frozen=True)
class Rewound:
    kept_seq: int  # the journal's last seq now
    cut_records: int  # how many records were cut


def rewind(store: SegmentStore, snapshots: SnapshotStore, keep_seq: int) -> Rewound:
    """Cut every record past `keep_seq` from the journal in `store` (closed: no Journal
    may have it open), durably, and with them a batch `keep_seq` ends inside of. Returns
    what was kept and cut (nothing when it ends at or before `keep_seq`)."""
    journal = Journal.open(store, repair=True)
    try:
        last_seq = journal.last_seq
        if last_seq <= keep_seq:
            return Rewound(last_seq, 0)
        if keep_seq < journal.first_seq - 1:
            msg = (
                f"cannot cut the journal back to seq {keep_seq}: it starts at seq "
                f"{journal.first_seq} (older records were pruned after a snapshot)"
            )
            raise RewindError(msg)
        mark, cut_segment, cut_offset = _cut_point(journal, store, keep_seq)
    finally:
        store.close()
    keep_seq = mark.seq
    snapshots.discard_after(keep_seq)
    for slot in range(watermark.SLOTS):  # both: the newer slot must not name the cut tail
        store.write_mark(watermark.slot_offset(slot), watermark.encode(mark))
    for name in reversed(store.list_segments()):  # newest first: never a gap behind a tail
        if name > cut_segment:
            store.delete(name)
    if cut_offset == SEGMENT_HEADER_SIZE and _first_seq_of(cut_segment) > 1:
        store.delete(cut_segment)  # nothing of it is kept; the one before continues
    else:
        store.truncate(cut_segment, cut_offset)
    store.close()
    cut = last_seq - keep_seq
    log.warning("journal: cut %d records past seq %d (seqs %d..%d)", cut, keep_seq,
                keep_seq + 1, last_seq)  # fmt: skip
    return Rewound(keep_seq, cut)


def _cut_point(
    journal: Journal, store: SegmentStore, keep_seq: int
) -> tuple[watermark.Mark, str, int]:
    """Where the cut falls: after the last batch end at or before `keep_seq` (a batch is
    kept whole or not at all, as it was written; the stream holds it again for a standby
    to fetch). The watermark naming the record kept last, and where the cut begins."""
    names = store.list_segments()
    # Writes never span segments, so the segment holding keep_seq+1 starts a batch.
    segment = [n for n in names if _first_seq_of(n) <= keep_seq + 1][-1]
    start = _first_seq_of(segment)
    data = store.read(segment)
    # Until a batch end is found: the record before this segment (its header's chain).
    # The mark names this segment for it: a mark's segment only says where syncing may
    # start on the next open, and its `end` is for messages.
    chain_before = SEGMENT_HEADER.unpack_from(data)[4]
    kept = watermark.Mark(start - 1, start, SEGMENT_HEADER_SIZE, chain_before)
    cut_at = (segment, SEGMENT_HEADER_SIZE)
    for record in journal.read_from(start):  # within one segment: it stops past keep_seq
        if record.seq > keep_seq:
            mark = watermark.NOTHING_DURABLE if kept.seq == 0 else kept
            return mark, cut_at[0], cut_at[1]
        if record.batch_end:
            end = record.offset + RECORD_HEADER_SIZE + len(record.payload)
            chain = RECORD_HEADER.unpack_from(data, record.offset)[1]
            kept = watermark.Mark(record.seq, _first_seq_of(segment), end, chain)
            cut_at = (segment, end)
    raise JournalCorruptError("", 0, f"record {keep_seq + 1} vanished while cutting")


def _first_seq_of(name: str) -> int:
    return int(name.removesuffix(SEGMENT_SUFFIX))
