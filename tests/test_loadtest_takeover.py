"""The failover benchmark's takeover figures (loadtest/takeover.py), from made-up events:
what counts as the takeover's first accepted answer, which heartbeat says a new leader,
which answers fall in which kill's window, the longest silences, and median and max."""

from loadtest.takeover import Answer, Beat, Kill, summary, takeover, takeovers


def ok(sent: float, at: float) -> Answer:
    return Answer(sent, at, "accepted")


def unavailable(sent: float, at: float) -> Answer:
    return Answer(sent, at, "UNAVAILABLE")


def test_the_first_accepted_answer_counts_only_for_an_order_sent_after_the_kill() -> None:
    answers = [
        ok(9.0, 9.5),
        ok(9.9, 10.2),  # the dead leader's last batch, answered after the kill
        unavailable(10.1, 15.1),
        ok(12.4, 12.5),  # sent after the kill: the new leader took it
        ok(12.6, 12.7),
    ]
    found = takeover(Kill(10.0, "s1"), 100.0, answers, [])
    assert found.to_accepted_s == 2.5
    assert found.unavailable == 1
    assert found.others == 0


def test_the_new_leaders_heartbeat_is_another_nodes_after_the_kill() -> None:
    beats = [
        Beat(9.0, "s1", "leader"),
        Beat(9.5, "s2", "standby"),
        Beat(10.5, "s1", "leader"),  # heard after the kill, sent before it: not a takeover
        Beat(11.0, "s2", "standby"),
        Beat(12.0, "s2", "leader"),
        Beat(13.0, "s2", "leader"),
    ]
    found = takeover(Kill(10.0, "s1"), 100.0, [ok(12.1, 12.2)], beats)
    assert (found.new_leader, found.to_leader_s) == ("s2", 2.0)
    assert found.taken_over


def test_the_longest_silence_runs_from_the_last_accepted_before_the_kill() -> None:
    answers = [
        ok(8.0, 8.1),
        ok(9.0, 9.6),  # the last accepted before the kill
        ok(9.9, 10.3),  # after the kill, the old leader's: silence 9.6 -> 10.3 is short
        unavailable(10.2, 15.2),
        ok(15.0, 15.3),  # the first the new leader took: 10.3 -> 15.3 is the silence
        ok(15.4, 15.5),
    ]
    found = takeover(Kill(10.0, "s1"), 100.0, answers, [])
    assert found.silence_s == 5.0
    assert round(found.quiet_s or 0, 6) == 4.9  # 10.3 -> 15.2: the UNAVAILABLE is an answer


def test_no_takeover_in_the_window_gives_none_and_is_not_counted() -> None:
    answers = [ok(9.0, 9.5), unavailable(10.1, 15.1), ok(21.0, 21.1)]
    found = takeover(Kill(10.0, "s1"), 20.0, answers, [Beat(25.0, "s2", "leader")])
    assert (found.to_accepted_s, found.to_leader_s, found.new_leader) == (None, None, None)
    assert found.silence_s is None
    assert not found.taken_over
    assert found.unavailable == 1


def test_each_kill_has_its_window_up_to_the_next() -> None:
    answers = [
        ok(0.0, 0.1),
        unavailable(10.1, 15.1),
        ok(12.0, 12.1),
        unavailable(30.1, 35.1),
        unavailable(30.2, 35.2),
        ok(33.0, 33.2),
    ]
    beats = [Beat(11.0, "s2", "leader"), Beat(31.5, "s1", "leader")]
    first, second = takeovers([Kill(30.0, "s2"), Kill(10.0, "s1")], 50.0, answers, beats)
    assert (first.killed, first.new_leader, first.unavailable) == ("s1", "s2", 1)
    assert (second.killed, second.new_leader, second.unavailable) == ("s2", "s1", 2)
    assert round(first.to_accepted_s or 0, 6) == 2.1
    assert round(second.to_accepted_s or 0, 6) == 3.2
    assert round(second.to_leader_s or 0, 6) == 1.5


def test_summary_gives_median_and_max_and_leaves_out_what_never_happened() -> None:
    answers = [ok(11.0, 11.0), ok(22.0, 22.0), ok(36.0, 36.0)]
    beats = [Beat(10.5, "b", "leader"), Beat(21.0, "a", "leader"), Beat(33.0, "b", "leader")]
    kills = [Kill(10.0, "a"), Kill(20.0, "b"), Kill(30.0, "a"), Kill(40.0, "b")]
    found = summary(takeovers(kills, 50.0, answers, beats))
    assert (found["kills"], found["taken_over"]) == (4, 3)
    assert found["to_accepted_s"] == {"median": 2.0, "max": 6.0}
    assert found["to_leader_s"] == {"median": 1.0, "max": 3.0}
    assert found["unavailable"] == {"total": 0, "max": 0}
    assert [each["new_leader"] for each in found["each"]] == ["b", "a", "b", None]


def test_summary_of_no_kills() -> None:
    found = summary([])
    assert found["kills"] == 0
    assert found["to_accepted_s"] == {"median": None, "max": None}
