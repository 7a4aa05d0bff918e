"""The read model's market data: one update a durable batch, carrying net level changes
that rebuild the engine's book exactly, with a trade seq a trade and a book seq an update."""

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.bus import Sequenced
from exchange.domain.commands import CancelOrder, Command, PlaceOrder
from exchange.domain.engine import Engine
from exchange.domain.events import TradeExecuted
from gateway.client import book_checksum
from gateway.readmodel import Published, ReadModel
from tests.streams import START_TS, mixed_stream

STREAM_LENGTH = 400


class Feed:
    """A primary engine and a read model fed batch by batch, as the sequencer does."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.read = ReadModel()
        self.seq = 0
        self.published: list[Published] = []
        self.records: list[int] = []
        self.read.listen_market_data(self.published.append)
        self.read.listen(lambda sequenced: self.records.append(sequenced.seq))

    def batch(self, commands: list[Command]) -> Published | None:
        """Apply and deliver one batch; the batch's market data, if it had any."""
        before = len(self.published)
        for command in commands:
            self.seq += 1
            self.read(Sequenced(self.seq, command, self.engine.apply(command)))
        self.read.end_batch()
        assert len(self.published) - before <= 1, "one publication a batch at most"
        return self.published[-1] if len(self.published) > before else None


def _rest(account: str, side: str, price: int, qty: int, ts: int, **extra: object) -> PlaceOrder:
    fields = {"symbol": "ACME", "side": side, "type": "limit", "qty": qty, "price": price}
    return PlaceOrder(account=account, ts=ts, **fields | extra)  # type: ignore[arg-type]


def _market() -> Feed:
    """A feed that has applied mixed_stream's set-up: ACME trades, A2..A8 hold units."""
    feed = Feed()
    feed.batch(mixed_stream(seed=0, count=0))
    return feed


def test_a_level_added_and_taken_within_one_batch_is_not_published() -> None:
    feed = _market()
    ts = START_TS + 10**12
    placed = feed.batch([_rest("A1", "buy", 9_900, 5, ts), _rest("A2", "sell", 10_100, 7, ts)])
    assert placed is not None
    assert placed.levels["ACME"] == [("buy", 9_900, 5), ("sell", 10_100, 7)]
    tape = feed.read.tapes["ACME"]
    book_seq, trade_seq = tape.book_seq, tape.trade_seq
    bid = feed.engine.books["ACME"].bids.levels[9_900].head
    assert bid is not None
    batch: list[Command] = [
        _rest("A3", "buy", 9_800, 2, ts + 1, client_order_id="brief"),  # a new level...
        _rest("A3", "buy", 9_950, 4, ts + 2),
        CancelOrder(account="A3", client_order_id="brief", ts=ts + 3),  # ...gone again
        CancelOrder(account="A1", order_id=bid.order_id, ts=ts + 4),
        _rest("A4", "buy", 10_100, 7, ts + 5),  # takes the ask: that level goes...
        _rest("A2", "sell", 10_100, 7, ts + 6),  # ...and comes back as it was
    ]
    published = feed.batch(batch)
    assert published is not None
    assert published.levels["ACME"] == [("buy", 9_900, 0), ("buy", 9_950, 4)]
    assert len(published.trades["ACME"]) == 1
    assert (tape.book_seq, tape.trade_seq) == (book_seq + 1, trade_seq + 1)
    assert feed.records[-6:] == list(range(feed.seq - 5, feed.seq + 1))


def test_trades_take_a_trade_seq_each_and_the_batch_one_book_seq() -> None:
    feed = _market()
    ts = START_TS + 10**12
    feed.batch([_rest("A2", "sell", 10_100, 5, ts)])
    tape = feed.read.tapes["ACME"]
    book_seq, trade_seq = tape.book_seq, tape.trade_seq
    published = feed.batch([
        _rest("A1", "buy", 10_100, 3, ts + 1, tif="ioc"),
        _rest("A3", "buy", 10_100, 2, ts + 2, tif="ioc"),
    ])  # fmt: skip
    assert published is not None
    assert [t.qty for t in published.trades["ACME"]] == [3, 2]
    assert published.levels["ACME"] == [("sell", 10_100, 0)]
    assert (tape.book_seq, tape.trade_seq) == (book_seq + 1, trade_seq + 2)


def test_a_batch_without_public_change_publishes_nothing() -> None:
    feed = _market()
    assert feed.batch([]) is None


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=STREAM_LENGTH),
)
def test_published_changes_rebuild_every_book_exactly(seed: int, cuts: list[int]) -> None:
    """A subscriber applying each batch's changes holds the engine's book after every
    batch, level for level, and its checksum matches; seqs count trades + updates (and
    auction messages)."""
    feed = Feed()
    stream = mixed_stream(seed, STREAM_LENGTH)
    books: dict[str, dict[tuple[str, int], int]] = {}
    start, cut = 0, 0
    while start < len(stream):  # bounded: each batch takes at least one command
        size = cuts[cut % len(cuts)]
        cut += 1
        batch = stream[start : start + size]
        start += size
        seqs = {s: (t.book_seq, t.trade_seq) for s, t in feed.read.tapes.items()}
        trades_before = {s: len(t.trades) for s, t in feed.read.tapes.items()}
        published = feed.batch(batch) or Published()
        for symbol, changes in published.levels.items():
            book = books.setdefault(symbol, {})
            for side, price, total in changes:
                assert book.get((side, price), 0) != total, "a change must change something"
                if total:
                    book[side, price] = total
                else:
                    del book[side, price]
        for symbol, tape in feed.read.tapes.items():
            trades = len(published.trades.get(symbol, []))
            assert all(isinstance(t, TradeExecuted) for t in published.trades.get(symbol, []))
            if symbol in trades_before and len(tape.trades) < tape.trades.maxlen:  # type: ignore[operator]
                assert len(tape.trades) - trades_before[symbol] == trades
            book_seq, trade_seq = seqs.get(symbol, (0, 0))
            updated = 1 if symbol in published.levels else 0
            updated += 1 if symbol in published.auctions else 0  # a call auction's indicative
            assert (tape.book_seq, tape.trade_seq) == (book_seq + updated, trade_seq + trades)
        for symbol, replica_book in feed.engine.books.items():
            wanted = {("buy", p): lv.total for p, lv in replica_book.bids.levels.items()} | {
                ("sell", p): lv.total for p, lv in replica_book.asks.levels.items()
            }
            assert books.get(symbol, {}) == wanted
            wire = feed.read.price
            bids = {wire(symbol, p): q for (side, p), q in wanted.items() if side == "buy"}
            asks = {wire(symbol, p): q for (side, p), q in wanted.items() if side == "sell"}
            assert book_checksum(bids, asks) == feed.read.checksum(symbol)


def test_order_records_stay_out_of_the_cyclic_collectors_sight() -> None:
    # Tracked, a busy hour's records filled the young generation and made single young
    # collections take tens of milliseconds; they hold only strings and integers.
    feed = _market()
    commands = mixed_stream(seed=3, count=STREAM_LENGTH)
    for start in range(0, STREAM_LENGTH, 50):
        feed.batch(commands[start : start + 50])
    records = [*feed.read.state.open_orders.values()]
    records += [r for kept in feed.read.state.history.values() for r in kept]
    records += [f for kept in feed.read.state.fills.values() for f in kept]  # type: ignore[misc]
    assert len(records) > 50
    assert not any(gc.is_tracked(record) for record in records)
