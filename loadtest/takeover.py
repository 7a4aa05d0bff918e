"""The takeover figures of `loadtest.bench_failover`, from what it saw: its kills, its
clients' answers and the sequencers' heartbeats, each stamped on one monotonic clock (s).

Pure computation over event lists (no clock, no I/O), so it is tested on made-up lists.
For each kill of the leader, over its window (from the kill to the next kill, or the end):

- `to_leader_s`: from the kill to the first heartbeat of another node saying `leader`;
- `to_accepted_s`: from the kill to the first `accepted` answer to an order sent after the
  kill (an answer arriving just after the kill may be for a batch the dead leader had
  already stored; an order sent after the kill can only be sequenced by the new leader);
- `unavailable`: answers `UNAVAILABLE` that arrived in the window (`others`: any other
  code but `accepted`, e.g. `BUSY`);
- `silence_s`: the longest time no `accepted` answer arrived, from the last one at or
  before the kill to that first one after the takeover; `quiet_s` the same for answers
  of any kind (an `UNAVAILABLE` is an answer, if not a useful one).
"""

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

ACCEPTED = "accepted"
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class Answer:
    """One answer a client got: when its request went out, when the answer came, and
    `accepted` or the refusal's code."""

    sent: float
    at: float
    outcome: str


@dataclass(frozen=True)
class Beat:
    """One sequencer heartbeat, as heard."""

    at: float
    node: str
    role: str


@dataclass(frozen=True)
class Kill:
    at: float
    node: str


@dataclass(frozen=True)
class Takeover:
    """What one kill of the leader cost; None where the thing never happened in its window."""

    killed: str
    new_leader: str | None
    to_leader_s: float | None
    to_accepted_s: float | None
    unavailable: int
    others: int
    silence_s: float | None
    quiet_s: float | None

    @property
    def taken_over(self) -> bool:
        return self.to_leader_s is not None and self.to_accepted_s is not None


def _longest_gap(times: Sequence[float]) -> float:
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def _gap_until(answers: Sequence[Answer], start: float, end: float) -> float:
    """The longest time without one of `answers` from the last at or before `start` (or
    `start` itself if none) to `end`."""
    before = [a.at for a in answers if a.at <= start]
    times = [max(before, default=start), end]
    times += [a.at for a in answers if start < a.at < end]
    return _longest_gap(times)


def takeover(
    kill: Kill, window_end: float, answers: Sequence[Answer], beats: Sequence[Beat]
) -> Takeover:
    """The figures of one kill, from the events up to `window_end` (the next kill)."""
    in_window = [a for a in answers if kill.at <= a.at < window_end]
    leaders = sorted(
        (b for b in beats if kill.at < b.at < window_end and b.role == "leader"
         and b.node != kill.node),
        key=lambda b: b.at,
    )  # fmt: skip
    new_leader = leaders[0] if leaders else None
    first_accepted = min(
        (a.at for a in in_window if a.outcome == ACCEPTED and a.sent >= kill.at), default=None
    )
    silence = quiet = None
    if first_accepted is not None:
        accepted = [a for a in answers if a.outcome == ACCEPTED]
        silence = _gap_until(accepted, kill.at, first_accepted)
        quiet = _gap_until(answers, kill.at, first_accepted)
    return Takeover(
        killed=kill.node,
        new_leader=new_leader.node if new_leader else None,
        to_leader_s=new_leader.at - kill.at if new_leader else None,
        to_accepted_s=first_accepted - kill.at if first_accepted is not None else None,
        unavailable=sum(1 for a in in_window if a.outcome == UNAVAILABLE),
        others=sum(1 for a in in_window if a.outcome not in (ACCEPTED, UNAVAILABLE)),
        silence_s=silence,
        quiet_s=quiet,
    )


def takeovers(
    kills: Sequence[Kill], end: float, answers: Sequence[Answer], beats: Sequence[Beat]
) -> list[Takeover]:
    """One Takeover a kill, each over its window: up to the next kill, the last up to `end`."""
    ordered = sorted(kills, key=lambda k: k.at)
    ends = [k.at for k in ordered[1:]] + [end]
    return [takeover(k, e, answers, beats) for k, e in zip(ordered, ends, strict=True)]


def _spread(values: Sequence[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    return {
        "median": round(statistics.median(known), 4) if known else None,
        "max": round(max(known), 4) if known else None,
    }


def summary(found: Sequence[Takeover]) -> dict[str, Any]:
    """Median and max of each timing over the kills, the clients' cost in all, and each
    kill's own figures."""
    return {
        "kills": len(found),
        "taken_over": sum(1 for t in found if t.taken_over),
        "to_leader_s": _spread([t.to_leader_s for t in found]),
        "to_accepted_s": _spread([t.to_accepted_s for t in found]),
        "silence_s": _spread([t.silence_s for t in found]),
        "quiet_s": _spread([t.quiet_s for t in found]),
        "unavailable": {
            "total": sum(t.unavailable for t in found),
            "max": max((t.unavailable for t in found), default=0),
        },
        "others": sum(t.others for t in found),
        "each": [asdict(t) for t in found],
    }
