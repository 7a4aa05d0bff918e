"""The sequencer hands a batch on (to the stream, in cluster mode) only once it is synced:
a power cut at the moment of the hand-on loses none of it.

The journal on the fault-injecting store (exchange/journal/faulty.py); at each hand-on a
copy of what is durable at that moment (what a power cut would leave) is opened as a
journal, and it must hold the batch, byte for byte. With tests/test_journal_power_loss.py
(a synced record survives every crash mode, the journal opens after any of them) this is
the sequencer's side of "the sequencer's machine loses power" in docs/CLUSTER.md.
"""

import asyncio
import itertools

from exchange.domain.engine import Engine
from exchange.journal.faulty import FaultySegmentStore
from exchange.journal.journal import Journal
from exchange.sequencer import Sequencer
from tests.streams import START_TS, mixed_stream

COMMANDS = 120


async def test_every_batch_handed_on_survives_a_power_cut_at_that_moment() -> None:
    store = FaultySegmentStore()
    sequencer = Sequencer(
        Engine(), Journal.open(store), clock=itertools.count(START_TS, 1_000).__next__
    )
    handed: list[int] = []
    lost: list[str] = []

    def hand_on(first_seq: int, payloads: list[bytes]) -> None:
        after_power_cut = Journal.open(store.durable_copy())
        kept = [bytes(r.payload) for r in after_power_cut.read_from(first_seq)]
        if kept[: len(payloads)] != payloads:
            lost.append(f"batch at seq {first_seq}: {len(kept)} of {len(payloads)} records kept")
        handed.append(len(payloads))

    sequencer.durable_batch_listeners.append(hand_on)
    task = asyncio.create_task(sequencer.run())
    commands = list(mixed_stream(5, COMMANDS))
    for start in range(0, COMMANDS, 10):  # some batches of several records, one at a time
        await asyncio.gather(*(sequencer.submit(c) for c in commands[start : start + 10]))
    await sequencer.stop()
    await task
    assert lost == []
    assert sum(handed) == sequencer.durable_seq == COMMANDS
    assert max(handed) > 1, "batches of several records were handed on"
