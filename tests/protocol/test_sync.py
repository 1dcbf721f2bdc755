"""The sync rules of the session machine (docs/protocol.md "Sync"), as properties.

1. Any interleaving of replayed seqs, live offers and ``synced`` the machine accepts: every seq
   reaches the device at most once and in increasing order, and ``synced.head`` is the last
   seq replayed (or ``since``; the welcome's inbox head if ``since`` is past it).
2. A model of the server around one device (an inbox committed in seq order, commit hooks that
   run later in commit order, a replay reading chunks from snapshots and going live in the same
   step as its empty read): whatever the interleaving, the device gets every seq after its
   cursor exactly once, in order.
"""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from chatd.protocol import frames
from chatd.protocol.errors import SessionError
from chatd.protocol.session import Session, State

SINCE = st.none() | st.integers(0, 12)
STEP = st.one_of(
    st.tuples(st.just("offer"), st.integers(0, 25)),
    st.tuples(st.just("replayed"), st.integers(0, 25)),
    st.tuples(st.just("synced"), st.none()),
)


@settings(max_examples=60, deadline=None)
@given(since=SINCE, head=st.integers(0, 12), steps=st.lists(STEP, max_size=40))
def test_any_interleaving_delivers_each_seq_at_most_once_in_order(
    since: int | None, head: int, steps: list[tuple[str, int | None]]
) -> None:
    session = Session()
    session.accept_hello(frames.Hello("t", since), user_id="u", device_id="d", inbox_head=head)
    start = head if since is None else min(since, head)
    sent: list[int] = []
    replayed: list[int] = []
    for kind, seq in steps:
        before = session.last_seq
        try:
            if kind == "offer":
                assert seq is not None
                if session.offer(seq):
                    assert session.state is State.LIVE
                    sent.append(seq)
            elif kind == "replayed":
                assert seq is not None
                session.replayed(seq)
                sent.append(seq)
                replayed.append(seq)
            else:
                synced = session.synced()
                assert synced == {"type": "synced", "head": replayed[-1] if replayed else start}
        except SessionError:
            # Misuse (a replay out of order, one after synced, synced twice) ends the session
            # for good; nothing more is ever sent.
            assert session.state is State.CLOSED
            assert kind != "offer"
            assert not session.offer(before + 1)
            break
        assert session.last_seq == (sent[-1] if sent else start)
    assert sent == sorted(set(sent)), sent
    assert all(seq > start for seq in sent)


class OneDevice(RuleBasedStateMachine):
    """The server around one device: commits, their hooks, the replay, as the shell runs them."""

    @initialize(
        backlog=st.integers(0, 6), unhooked=st.integers(0, 3), since=SINCE, chunk=st.integers(1, 4)
    )
    def connect(self, backlog: int, unhooked: int, since: int | None, chunk: int) -> None:
        # ``backlog`` entries committed and hooked before the device came; ``unhooked`` more
        # committed whose hooks have not run yet.
        self.head = backlog + unhooked
        self.hooks: deque[int] = deque(range(backlog + 1, self.head + 1))
        self.chunk = chunk
        self.session = Session()
        hello = frames.Hello("t", since)
        welcome = self.session.accept_hello(hello, user_id="u", device_id="d", inbox_head=self.head)
        self.start = self.head if since is None else min(since, self.head)
        assert welcome.replay_from == (None if since is None else self.start)
        self.cursor = self.start
        self.sent: list[int] = []
        self.replayed: list[int] = []

    @rule()
    def commit(self) -> None:
        """The writer thread commits the next inbox entry; its hook runs later."""
        self.head += 1
        self.hooks.append(self.head)

    @precondition(lambda self: self.hooks)
    @rule()
    def run_hook(self) -> None:
        """The oldest pending hook runs on the event loop and offers its entry."""
        seq = self.hooks.popleft()
        syncing = self.session.state is State.SYNCING
        if self.session.offer(seq):
            assert not syncing
            self.sent.append(seq)

    @precondition(lambda self: self.session.state is State.SYNCING)
    @rule()
    def replay_read(self) -> None:
        """One replay read (a snapshot of entries after the cursor); an empty read and the
        switch to live happen in the same step, as in the shell."""
        page = list(range(self.cursor + 1, min(self.head, self.cursor + self.chunk) + 1))
        if not page:
            synced = self.session.synced()
            assert synced["head"] == (self.replayed[-1] if self.replayed else self.start)
            return
        for seq in page:
            self.session.replayed(seq)
            self.sent.append(seq)
            self.replayed.append(seq)
        self.cursor = page[-1]

    @invariant()
    def at_most_once_in_order(self) -> None:
        assert self.sent == sorted(set(self.sent))
        assert self.session.last_seq == (self.sent[-1] if self.sent else self.start)

    def teardown(self) -> None:
        """Let everything settle: the replay runs to its end, then every pending hook. The
        device then has each entry after its cursor, once."""
        if not hasattr(self, "session"):
            return
        while self.session.state is State.SYNCING:
            self.replay_read()
        while self.hooks:
            self.run_hook()
        assert self.session.state is State.LIVE
        assert self.sent == list(range(self.start + 1, self.head + 1))


OneDevice.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestOneDevice = OneDevice.TestCase
