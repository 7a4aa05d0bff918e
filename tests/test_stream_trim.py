"""The stream's trim rule (exchange/streamtrim.py), unit by unit: the point is the smallest
of what each kind of starter needs and the margin behind the stream's end; a kind with no
usable point, or fewer than two snapshots, trims nothing; the trim never passes a point
a kept snapshot needs."""

import pytest

from exchange.buckets import Placed, Stored, parse_engine_name, parse_name
from exchange.streamfloor import StreamFloor
from exchange.streamtrim import TRIM_BASIS, basis, trim_point


def test_the_point_is_the_smallest_need() -> None:
    # engine snapshot's next message 500, read snapshot's message 450 (and any third)
    assert trim_point(1, 10_000, [500, 450, 480], margin=100) == 450
    assert trim_point(1, 10_000, [500, 700, 480], margin=100) == 480


def test_the_margin_behind_the_end_is_kept() -> None:
    assert trim_point(1, 1_000, [900, 950, 980], margin=200) == 801


def test_a_kind_without_a_point_trims_nothing() -> None:
    assert trim_point(1, 10_000, [500, None, 480], margin=100) is None


def test_nothing_to_trim_below_the_first_message() -> None:
    assert trim_point(450, 10_000, [500, 450, 480], margin=100) is None
    assert trim_point(451, 10_000, [500, 450, 480], margin=100) is None
    assert trim_point(1, 0, [5, 5, 5], margin=1) is None  # an empty stream


def test_a_margin_below_one_message_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one message"):
        trim_point(1, 10, [5], margin=0)


def test_each_kind_counts_from_its_second_newest_snapshot() -> None:
    assert TRIM_BASIS == 2
    engine = [Placed(300, 290), Placed(200, 190), Placed(100, 95)]  # newest first
    assert basis(engine) == Placed(200, 190)
    assert basis(engine[:1]) is None, "one snapshot only: no fallback, no trim"
    assert basis([]) is None


@pytest.mark.parametrize("margin", [1, 50, 400, 999])
def test_the_trim_never_passes_what_a_kept_snapshot_needs(margin: int) -> None:
    """Whatever the numbers, every snapshot at or after each kind's basis can still start:
    an engine one needs the message after `after`, a read one its own message."""
    engine = [Placed(seq, seq - 3) for seq in (900, 700, 500)]
    read = [Stored(seq, seq - 1) for seq in (850, 650)]
    journal_point = 480
    engine_basis, read_basis = basis(engine), basis(read)
    assert engine_basis is not None
    assert read_basis is not None
    needs = [engine_basis.after + 1, read_basis.stream_seq, journal_point]
    point = trim_point(1, 1_000, needs, margin)
    assert point is not None
    assert all(p.after + 1 >= point for p in engine[:TRIM_BASIS])
    assert all(s.stream_seq >= point for s in read[:TRIM_BASIS])
    assert journal_point >= point
    assert point <= 1_000 - margin + 1


def test_names_round_trip() -> None:
    assert parse_engine_name(Placed(12, 7).name) == Placed(12, 7)
    assert parse_name(Stored(12, 7).name) == Stored(12, 7)
    assert parse_engine_name(Stored(12, 7).name) is None
    assert parse_engine_name("engine-12-7") is None


def test_a_journal_is_pruned_below_its_oldest_snapshot_or_the_streams_first_record() -> None:
    """Whichever comes first: the stream and the journal together hold every record from
    the stream's first, so the trim needs no journal term."""
    floor = StreamFloor()
    assert floor.prune_below(500) == 1, "before any look: nothing pruned"
    floor.saw(300)
    assert floor.prune_below(500) == 300
    assert floor.prune_below(200) == 201
    floor.saw(None)  # the stream holds no record (lost): keep everything
    assert floor.prune_below(500) == 1
