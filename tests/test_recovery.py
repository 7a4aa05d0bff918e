"""Recovery refuses a journal whose replay does not give back what it recorded."""

from pathlib import Path

import pytest

from exchange.domain.commands import CreateAccount, DepositCash
from exchange.domain.events import AccountCreated, CashDeposited, Event
from exchange.journal.journal import Journal
from exchange.journal.records import JournalEntry, encode_entry
from exchange.journal.storage import FileSegmentStore
from exchange.recovery import JOURNAL_DIR, RecoveryError, recover


def write(data_dir: Path, entries: list[JournalEntry]) -> None:
    journal = Journal.open(FileSegmentStore(data_dir / JOURNAL_DIR))
    journal.write_batch([encode_entry(e) for e in entries])
    journal.close()


def opened(seq: int) -> JournalEntry:
    command = CreateAccount(ts=seq, name="n")
    return JournalEntry(seq, command, [AccountCreated(f"A{seq}", "n", "")])


def test_a_faithful_journal_recovers(tmp_path: Path) -> None:
    write(tmp_path, [opened(1), opened(2)])
    recovered = recover(tmp_path)
    assert recovered.replayed == 2
    assert sorted(recovered.engine.accounts) == ["A1", "A2"]


def test_events_that_replay_differently_are_refused(tmp_path: Path) -> None:
    deposit = DepositCash(ts=2, account="A1", amount=100)
    claimed: list[Event] = [CashDeposited("A1", 100, 999)]  # the balance would be 100
    write(tmp_path, [opened(1), JournalEntry(2, deposit, claimed)])
    with pytest.raises(RecoveryError, match=r"seq 2 \(DepositCash\) gave other events"):
        recover(tmp_path)


def test_an_entry_filed_under_another_seq_is_refused(tmp_path: Path) -> None:
    write(tmp_path, [opened(1), opened(7)])
    with pytest.raises(RecoveryError, match="record 2 holds entry seq 7"):
        recover(tmp_path)
