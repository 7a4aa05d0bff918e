"""The client's local book: applies snapshots and updates, catches gaps and bad checksums."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.client import LocalBook, Message, book_checksum

SNAPSHOT: Message = {
    "type": "book_snapshot",
    "symbol": "ACME",
    "seq": 10,
    "trade_seq": 4,
    "bids": [["9.95", 100], ["9.90", 200]],
    "asks": [["10.05", 100]],
    "checksum": book_checksum({"9.95": 100, "9.90": 200}, {"10.05": 100}),
}


def update(
    seq: int, changes: list[list[object]], bids: dict[str, int], asks: dict[str, int]
) -> Message:
    return {
        "type": "book_update",
        "symbol": "ACME",
        "seq": seq,
        "changes": changes,
        "checksum": book_checksum(bids, asks),
    }


def test_checksum_follows_the_contract() -> None:
    # "A" + asks lowest first + "|B" + bids highest first, ten a side, wire prices.
    import zlib

    assert book_checksum({"9.90": 2, "9.95": 1}, {"10.10": 3, "10.05": 4}) == zlib.crc32(
        b"A10.05:4;10.10:3|B9.95:1;9.90:2"
    )


def test_updates_in_sequence_keep_the_book() -> None:
    book = LocalBook("ACME")
    assert book.apply(SNAPSHOT)
    # Trades are numbered on their own sequence: the book's next update is still 11.
    trade: Message = {"type": "trade", "symbol": "ACME", "seq": 5}
    assert book.apply(trade)
    assert book.apply(update(11, [["sell", "10.05", 0], ["buy", "9.96", 5]],
                             {"9.96": 5, "9.95": 100, "9.90": 200}, {}))  # fmt: skip
    assert book.levels() == ([["9.96", 5], ["9.95", 100], ["9.90", 200]], [])
    assert book.apply({"type": "book_update", "symbol": "OTHER", "seq": 99})  # not ours


def test_a_gap_or_a_bad_checksum_asks_for_a_resubscribe() -> None:
    book = LocalBook("ACME")
    book.apply(SNAPSHOT)
    assert not book.apply(update(12, [], {"9.95": 100, "9.90": 200}, {"10.05": 100}))
    assert book.gaps == 1
    book.apply(SNAPSHOT)
    assert not book.apply(update(11, [["buy", "9.95", 1]], {"9.95": 100}, {}))
    assert book.bad_checksums == 1
    book.apply(SNAPSHOT)
    assert not book.apply({"type": "trade", "symbol": "ACME", "seq": 6})  # 5 is missing
    assert book.gaps == 2


def test_a_book_only_subscriber_sees_no_gap_across_trades() -> None:
    """Trades take numbers of their own: the book's updates stay consecutive however many
    trades there were between them (issue 13: a book-only client saw false gaps)."""
    book = LocalBook("ACME")
    assert book.apply(SNAPSHOT)
    bids, asks = {"9.95": 100, "9.90": 200}, {"10.05": 100}
    for seq, qty in ((11, 90), (12, 80), (13, 70)):
        asks["10.05"] = qty
        assert book.apply(update(seq, [["sell", "10.05", qty]], bids, asks))
    assert (book.gaps, book.seq) == (0, 13)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.decimals(min_value="0.01", max_value="99.99", places=2).map(str),
            st.integers(0, 3),
        ),
        max_size=200,
    )
)
def test_kept_sorted_book_checksums_as_the_from_scratch_one(
    changes: list[tuple[str, str, int]],
) -> None:
    """The book keeps its levels sorted as they come and go; its checksum and levels are
    those of the plain dicts sorted from scratch."""
    book = LocalBook("ACME")
    book.apply({"type": "book_snapshot", "symbol": "ACME", "seq": 0, "bids": [], "asks": [],
                "checksum": book_checksum({}, {})})  # fmt: skip
    bids: dict[str, int] = {}
    asks: dict[str, int] = {}
    for seq, (side, price, qty) in enumerate(changes, start=1):
        plain = bids if side == "buy" else asks
        if qty:
            plain[price] = qty
        else:
            plain.pop(price, None)
        assert book.apply(update(seq, [[side, price, qty]], bids, asks))
    wanted_bids = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
    wanted_asks = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))
    assert book.levels() == ([list(kv) for kv in wanted_bids], [list(kv) for kv in wanted_asks])


def test_an_auction_message_takes_a_book_seq_and_a_status_none() -> None:
    book = LocalBook("ACME")
    assert book.apply(SNAPSHOT)
    auction = {"type": "auction", "symbol": "ACME", "seq": 11, "indicative_price": None}
    status = {"type": "status", "symbol": "ACME", "seq": 11, "status": "pre_open"}
    assert book.apply(status)
    assert book.apply(auction)
    bids = {"9.95": 100, "9.90": 200}
    assert book.apply(update(12, [["sell", "10.10", 5]], bids, {"10.05": 100, "10.10": 5}))
    assert book.gaps == 0
    assert not book.apply({**auction, "seq": 14})  # 13 is missing
    assert book.gaps == 1
