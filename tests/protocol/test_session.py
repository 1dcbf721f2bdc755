"""The session state machine on its own: every (state, input) pair, hello and frame checks,
flow control. Sync and pure, in the manner of h2's tests/test_state_machines.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.protocol import frames
from chatd.protocol.errors import ProtocolError, SessionError
from chatd.protocol.session import TRANSITIONS, Input, Session, State, Welcome

PROPS = settings(max_examples=60, deadline=None)
HELLO = frames.Hello("token", None)
HELLO_SINCE = frames.Hello("token", 3)
OTHER_FRAMES: list[frames.ClientFrame] = [
    frames.Send("r", "bob", None, "hi"),
    frames.History("h", "dm:a:b", None, None),
    frames.Read("dm:a:b", 1),
    frames.Typing("dm:a:b"),
    frames.Ping(),
]


def welcome(session: Session, hello: frames.Hello = HELLO, head: int = 5) -> Welcome:
    return session.accept_hello(hello, user_id="alice", device_id="d1", inbox_head=head)


# Each input as the shell feeds it, with arguments its state's side conditions accept (a frame
# the state allows, a seq above last_seq, a request in flight to finish), so that whether it
# raises SessionError depends on the (state, input) pair alone.
FEED: dict[Input, Callable[[Session], object]] = {
    Input.FRAME: lambda s: s.check(HELLO if s.state is State.AWAIT_HELLO else frames.Ping()),
    Input.HELLO: lambda s: welcome(s, HELLO),
    Input.HELLO_SINCE: lambda s: welcome(s, HELLO_SINCE),
    Input.REPLAYED: lambda s: s.replayed(s.last_seq + 1),
    Input.SYNCED: lambda s: s.synced(),
    Input.OFFER: lambda s: s.offer(s.last_seq + 1),
    Input.STARTED: lambda s: s.started(),
    Input.FINISHED: lambda s: s.finished(),
    Input.CLOSE: lambda s: s.close(),
}


def in_state(state: State) -> Session:
    """A session put in ``state`` directly (as h2's tests do), with one request in flight."""
    session = Session(max_inflight=8)
    session.state = state
    session.last_seq = 3
    session.inflight = 1
    return session


def test_every_input_has_a_feed_and_every_state_a_way_out() -> None:
    assert set(FEED) == set(Input)
    for state in State:
        assert TRANSITIONS[(state, Input.CLOSE)] is State.CLOSED


def check_pair(state: State, event: Input) -> None:
    """A legal pair leads where TRANSITIONS says; an illegal one raises and closes."""
    session = in_state(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(SessionError):
            FEED[event](session)
        assert session.state is State.CLOSED
    else:
        FEED[event](session)
        assert session.state is expected


@PROPS
@given(state=st.sampled_from(State), event=st.sampled_from(Input))
def test_state_transitions(state: State, event: Input) -> None:
    check_pair(state, event)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Input))
def test_every_pair_is_legal_or_closes(state: State, event: Input) -> None:
    """The same, exhaustively: the machine is small enough to enumerate every pair."""
    check_pair(state, event)


@PROPS
@given(events=st.lists(st.sampled_from(Input), max_size=30))
def test_any_input_sequence_follows_the_table_and_an_error_is_permanent(
    events: list[Input],
) -> None:
    """From a fresh session, any sequence of inputs: the state is always the table's, and after
    the first SessionError it is CLOSED whatever comes next (only CLOSED's own self-loops are
    still accepted, and they change nothing)."""
    session = Session(max_inflight=4)
    failed = False
    for event in events:
        before = session.state
        legal = (before, event) in TRANSITIONS
        try:
            FEED[event](session)
        except SessionError:
            failed = True
            assert not legal or event is Input.FINISHED  # finished with nothing in flight
            assert session.state is State.CLOSED
            continue
        assert legal
        assert session.state is TRANSITIONS[(before, event)]
        if failed:
            assert session.state is State.CLOSED


# -- the peer's frames


@pytest.mark.parametrize("frame", OTHER_FRAMES, ids=lambda f: type(f).__name__)
def test_before_hello_anything_but_hello_is_unauthorized_and_fatal(
    frame: frames.ClientFrame,
) -> None:
    session = Session()
    with pytest.raises(ProtocolError) as info:
        session.check(frame)
    assert info.value.code == "unauthorized"
    assert info.value.frame() == {
        "type": "error",
        "code": "unauthorized",
        "message": "the first frame must be hello",
    }
    assert session.state is State.CLOSED and not session.authenticated


@pytest.mark.parametrize("hello", [HELLO, HELLO_SINCE])
def test_a_hello_is_allowed_once(hello: frames.Hello) -> None:
    session = Session()
    session.check(hello)
    assert session.state is State.AWAIT_HELLO
    welcome(session, hello)
    state = session.state
    with pytest.raises(ProtocolError) as info:
        session.check(frames.Hello("again", None))
    assert info.value.code == "bad_request" and info.value.ref is None
    assert session.state is state and session.authenticated  # not fatal
    for frame in OTHER_FRAMES:
        session.check(frame)
    assert session.state is state


def test_no_frame_is_checked_once_closed() -> None:
    session = Session()
    session.close()
    with pytest.raises(SessionError):
        session.check(frames.Ping())
    assert session.state is State.CLOSED


# -- hello


def test_hello_without_since_is_live_from_the_head() -> None:
    session = Session()
    assert not session.authenticated
    got = welcome(session, HELLO, head=42)
    assert got == Welcome(
        {"type": "welcome", "user_id": "alice", "device_id": "d1", "inbox_head": 42}, None
    )
    assert session.state is State.LIVE and session.authenticated
    assert (session.user_id, session.device_id, session.last_seq) == ("alice", "d1", 42)
    assert not session.offer(42) and session.offer(43)


@pytest.mark.parametrize("since", [0, 3, 41, 42])
def test_hello_with_since_replays_from_it(since: int) -> None:
    session = Session()
    got = welcome(session, frames.Hello("t", since), head=42)
    assert got.replay_from == since and got.frame["inbox_head"] == 42
    assert session.state is State.SYNCING and session.authenticated
    assert session.last_seq == since
    # ``synced.head`` is ``since`` when nothing was replayed, never the head of the welcome.
    assert session.synced() == {"type": "synced", "head": since}
    assert session.state is State.LIVE


@pytest.mark.parametrize("since", [43, 1000])
def test_a_since_past_the_inbox_head_replays_from_the_head(since: int) -> None:
    """Entries committed after the welcome are not taken for ones the device has (it cannot
    have them), and ``synced.head`` below ``since`` shows the device where the inbox is."""
    session = Session()
    got = welcome(session, frames.Hello("t", since), head=42)
    assert got.replay_from == 42 and session.last_seq == 42
    assert not session.offer(43)  # syncing: the replay reads it
    session.replayed(43)
    assert session.synced() == {"type": "synced", "head": 43}
    assert session.offer(44)


def test_a_since_past_an_empty_inbox_syncs_at_zero() -> None:
    session = Session()
    welcome(session, frames.Hello("t", 5), head=0)
    assert session.synced() == {"type": "synced", "head": 0}


def test_a_second_accept_hello_is_a_session_error() -> None:
    session = Session()
    welcome(session)
    with pytest.raises(SessionError):
        welcome(session)
    assert session.state is State.CLOSED


# -- sync


def test_synced_head_is_the_last_seq_replayed() -> None:
    session = Session()
    welcome(session, frames.Hello("t", 2), head=4)
    assert not session.offer(3)  # syncing: the replay reads it
    for seq in (3, 4, 7):  # 5 and 6 need not be there (another device's entry, say)
        session.replayed(seq)
    assert session.synced() == {"type": "synced", "head": 7}
    assert [session.offer(seq) for seq in (5, 7, 8, 8, 9)] == [False, False, True, False, True]
    assert session.last_seq == 9


@pytest.mark.parametrize("seq", [2, 1, 0])
def test_replaying_backwards_or_twice_is_a_session_error(seq: int) -> None:
    session = Session()
    welcome(session, frames.Hello("t", 1))
    session.replayed(2)
    with pytest.raises(SessionError):
        session.replayed(seq)
    assert session.state is State.CLOSED


def test_after_close_deliveries_are_dropped_and_late_answers_accepted() -> None:
    session = Session()
    welcome(session, frames.Hello("t", 0))
    session.replayed(1)
    session.started()
    session.close()
    session.replayed(2)  # a chunk being written when the close came: ignored
    assert not session.offer(3)
    assert session.last_seq == 1
    session.finished()
    assert session.inflight == 0
    session.close()
    assert session.state is State.CLOSED and not session.authenticated


# -- flow control


@pytest.mark.parametrize("cap", [1, 2, 3, 8, 256])
def test_paused_at_max_inflight_and_resumed_below_half(cap: int) -> None:
    session = Session(max_inflight=cap)
    welcome(session)
    for _ in range(cap - 1):
        session.started()
    assert not session.paused
    session.started()
    assert session.paused and session.inflight == cap
    resumed = []
    while session.inflight:
        resumed.append(session.finished())
        assert not session.paused
    # Reading resumes once fewer than half are in flight, and stays allowed from there on.
    first = resumed.index(True)
    assert cap - (first + 1) == (cap - 1) // 2
    assert all(resumed[first:])
    if cap == 256:
        assert first + 1 == 129  # as before the machine existed: below 128 in flight


@PROPS
@given(cap=st.integers(1, 10), steps=st.lists(st.booleans(), max_size=40))
def test_inflight_counts_starts_less_finishes(cap: int, steps: list[bool]) -> None:
    session = Session(max_inflight=cap)
    welcome(session)
    count = 0
    for start in steps:
        if start:
            session.started()
            count += 1
        elif count:
            assert session.finished() == (2 * (count - 1) < cap)
            count -= 1
        assert session.inflight == count
        assert session.paused == (count >= cap)


def test_finished_with_nothing_in_flight_is_a_session_error() -> None:
    session = Session()
    welcome(session)
    session.started()
    session.finished()
    with pytest.raises(SessionError):
        session.finished()
    assert session.state is State.CLOSED


def test_no_request_starts_before_hello() -> None:
    session = Session()
    with pytest.raises(SessionError):
        session.started()
    assert session.state is State.CLOSED


@pytest.mark.parametrize("cap", [0, -1])
def test_max_inflight_must_be_positive(cap: int) -> None:
    with pytest.raises(ValueError):
        Session(max_inflight=cap)


def test_a_session_is_a_few_slots() -> None:
    session = Session()
    assert not hasattr(session, "__dict__")
    assert not hasattr(welcome(session), "__dict__")
    with pytest.raises(AttributeError):
        session.anything = 1  # type: ignore[attr-defined]
    assert "live" in repr(session) and "alice" in repr(session)
