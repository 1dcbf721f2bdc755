"""Message reassembly (chatd/net/reassembly.py): pure, on wsproto's message events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.events import BytesMessage, TextMessage

from chatd.net.reassembly import MAX_FRAGMENTS, TooBig, feed


def pieces(data: bytes, cuts: list[int]) -> list[BytesMessage]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    parts = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] or [b""]
    return [
        BytesMessage(p, frame_finished=True, message_finished=i == len(parts) - 1)
        for i, p in enumerate(parts)
    ]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
def test_pieces_come_back_whole(data: bytes, cuts: list[int]) -> None:
    partial, out = None, None
    for event in pieces(data, cuts):
        assert out is None
        partial, out = feed(partial, event, 4096)
    assert partial is None and out == data


def test_the_cap_counts_utf8_bytes_not_characters() -> None:
    fits = TextMessage("é" * 5, frame_finished=True, message_finished=True)  # 10 bytes
    assert feed(None, fits, 10) == (None, "é" * 5)
    with pytest.raises(TooBig):
        feed(None, TextMessage("€" * 4, frame_finished=True, message_finished=True), 11)
    partial, _ = feed(None, TextMessage("€€", frame_finished=True, message_finished=False), 11)
    with pytest.raises(TooBig):
        feed(partial, TextMessage("€€", frame_finished=True, message_finished=True), 11)


def test_a_message_in_too_many_frames_is_refused() -> None:
    partial = None
    empty = BytesMessage(b"", frame_finished=True, message_finished=False)
    for _ in range(MAX_FRAGMENTS - 1):
        partial, out = feed(partial, empty, 1 << 20)
        assert out is None
    with pytest.raises(TooBig):
        feed(partial, empty, 1 << 20)
