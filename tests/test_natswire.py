"""The messages of the NATS bus: a durable batch split under the message bound with its
end marked once, commands refused when malformed, too big or of another version."""

import msgspec
import pytest

from exchange import natswire as w
from exchange.domain.commands import CreateAccount

COMMAND = CreateAccount(name="n", api_key_hash="0" * 64)


def test_a_small_batch_is_one_message_marked_as_its_end() -> None:
    ((start, data),) = w.batch_messages(41, [b"\x01", b"\x02"])  # msgpack 1 and 2
    batch = w.decode_batch(data)
    assert (start, batch.first_seq, batch.batch_end) == (41, 41, True)
    assert [bytes(r) for r in batch.records] == [b"\x01", b"\x02"]


def test_a_big_batch_is_split_under_the_bound_and_only_its_last_part_ends_it() -> None:
    record = msgspec.msgpack.encode(b"x" * (w.MAX_BATCH_MESSAGE_BYTES // 3))
    parts = w.batch_messages(10, [record] * 7)
    batches = [w.decode_batch(data) for _, data in parts]
    assert [start for start, _ in parts] == [b.first_seq for b in batches] == [10, 12, 14, 16]
    assert [len(b.records) for b in batches] == [2, 2, 2, 1]
    assert [b.batch_end for b in batches] == [False, False, False, True]
    assert all(len(data) <= w.MAX_BATCH_MESSAGE_BYTES + 64 for _, data in parts)


def test_one_record_past_the_bound_still_goes_alone() -> None:
    huge = msgspec.msgpack.encode(b"y" * (w.MAX_BATCH_MESSAGE_BYTES + 1))
    small = msgspec.msgpack.encode("a")
    parts = w.batch_messages(1, [small, huge, small])
    assert [len(w.decode_batch(d).records) for _, d in parts] == [1, 1, 1]


def test_a_command_message_round_trips_and_names_its_origin() -> None:
    data = w.encode(w.CommandMessage(w.WIRE_VERSION, "00ff00ff", [w.Sent(7, COMMAND)]))
    message = w.decode_command(data)
    assert [s.command for s in message.commands] == [COMMAND]
    origin = w.origin_of(message.gateway, message.commands[0].token)
    assert w.split_origin(origin) == ("00ff00ff", 7)
    assert w.split_origin("") is None
    assert w.split_origin("gw:²") is None


BAD_COMMANDS = {
    "not msgpack": b"\xc1",
    "too big": b"\x94" + bytes(w.MAX_COMMAND_BYTES),
    "a gateway id that is not hex": w.encode([w.WIRE_VERSION, "GW", [[1, COMMAND]]]),
    "a negative token": w.encode([w.WIRE_VERSION, "00ff00ff", [[-1, COMMAND]]]),
    "an unknown command": w.encode([w.WIRE_VERSION, "00ff00ff", [[1, {"type": "Nope"}]]]),
    "no command": w.encode([w.WIRE_VERSION, "00ff00ff", []]),
    "past the commands bound": w.encode(
        [w.WIRE_VERSION, "00ff00ff", [[1, COMMAND]] * (w.MAX_COMMANDS_PER_MESSAGE + 1)]
    ),
}


@pytest.mark.parametrize("case", BAD_COMMANDS)
def test_a_bad_command_message_is_refused(case: str) -> None:
    with pytest.raises(msgspec.DecodeError):
        w.decode_command(BAD_COMMANDS[case])


def test_a_command_of_another_wire_version_is_refused() -> None:
    data = w.encode(w.CommandMessage(w.WIRE_VERSION + 1, "00ff00ff", [w.Sent(1, COMMAND)]))
    with pytest.raises(w.VersionError):
        w.decode_command(data)
