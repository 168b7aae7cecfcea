"""Framing: several envelopes per network message, one per line, split below a size limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from serendib.transports.framing import frames, split_frames


def test_one_payload_is_its_own_frame() -> None:
    assert list(frames([b'{"a":1}'], 100)) == [b'{"a":1}']


def test_payloads_that_fit_travel_as_one_frame_of_lines() -> None:
    assert list(frames([b"a", b"bb", b"ccc"], 100)) == [b"a\nbb\nccc"]


def test_frames_are_split_so_none_exceeds_the_limit() -> None:
    payloads = [bytes([65 + i]) * 4 for i in range(5)]  # five 4-byte payloads
    out = list(frames(payloads, 10))
    assert out == [b"AAAA\nBBBB", b"CCCC\nDDDD", b"EEEE"]
    assert all(len(frame) <= 10 for frame in out)


def test_a_payload_over_the_limit_gets_a_frame_of_its_own() -> None:
    out = list(frames([b"a", b"x" * 50, b"b"], 10))
    assert out == [b"a", b"x" * 50, b"b"]


def test_split_frames_returns_the_payloads_in_order_and_skips_empty_lines() -> None:
    assert split_frames(b"one") == [b"one"]
    assert split_frames(b"one\ntwo\n\nthree\n") == [b"one", b"two", b"three"]
    assert split_frames(b"") == []
    assert split_frames(b"\n\n") == []


@given(
    st.lists(st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"_")), max_size=60),
    st.integers(min_value=40, max_value=400),
)
def test_framing_round_trips_in_order_within_the_limit(payloads: list[bytes], limit: int) -> None:
    out = list(frames(payloads, limit))
    assert [p for frame in out for p in split_frames(frame)] == payloads
    assert all(len(frame) <= limit for frame in out)


def test_direct_messages_merge_past_other_agents_but_never_past_a_broadcast() -> None:
    from serendib.transports.nats import NatsTransport

    transport = NatsTransport("nats://127.0.0.1:1")
    a, b, everyone = "serendib.w.to.a", "serendib.w.to.b", "serendib.w.all"
    for subject, payload in [
        (a, b"a1"),
        (b, b"b1"),
        (a, b"a2"),
        (everyone, b"all1"),
        (everyone, b"all2"),
        (a, b"a3"),
        (b, b"b2"),
        (a, b"a4"),
    ]:
        transport._queue(subject, payload)
    assert transport._runs == [
        (a, [b"a1", b"a2"]),
        (b, [b"b1"]),
        (everyone, [b"all1", b"all2"]),
        (a, [b"a3", b"a4"]),
        (b, [b"b2"]),
    ]
